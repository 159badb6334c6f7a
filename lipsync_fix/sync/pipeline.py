"""A folder of clips through one model: the next clips are read while this one is scored.

Dataset curation scores thousands of short clips. Run one after the other, a clip costs
its front end (probe, audio, decoding, faces: ffmpeg and OpenCV) plus the model, and the
model waits while the front end works. :class:`ClipPrefetcher` overlaps them: worker
*processes* (the front end is partly Python, which threads would serialise) open each of
the next clips and read the segments its estimate will read first
(:func:`~lipsync_fix.sync.estimate.first_reads`, :meth:`ClipReader.preload`), and hand
back the :class:`ClipReader`, which :func:`estimate_sync` then scores without decoding.
At most ``depth`` clips are in the workers or waiting, and each holds at most
:data:`PRELOAD_MAX_BYTES` of crops, so memory stays bounded however long the folder.

A prefetched reader yields exactly the segments a reader opened in the main process would
(the same frames through the same tracker), so a clip's estimate does not depend on being
part of a folder. When a worker fails on a clip (a broken file), the main process opens
it again itself and meets the same error, with the same words, at the same place.

On a GPU the model outruns one clip's windows: :class:`ClipBatcher` runs the estimates of
several clips at once in threads and merges their encoder calls into one forward pass
(windows of several clips in one batch), which is exact because the encoders see each
window on its own (batch norm in eval mode).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import cv2
import torch
from torch import Tensor, nn

from lipsync_fix.compute import resolve_device
from lipsync_fix.features.constants import FRAMES_PER_WINDOW
from lipsync_fix.features.inputs import InputRecipe, recipe_for
from lipsync_fix.files import Fingerprint, fingerprint
from lipsync_fix.sync.estimate import SyncEstimate, SyncOptions, estimate_sync, first_reads
from lipsync_fix.sync.frontend import ClipReader, Progress, prepared_readers

PRELOAD_MAX_BYTES = 64 << 20
"""Crops one prepared clip may hold (about 190 s of 96x96 lower halves, 17 s of SyncNet's
224x224 crops); an estimate reads the rest itself."""


def machine_workers(device: str | torch.device = "cpu") -> int:
    """Front-end workers for this machine. On a GPU, every core but the one feeding it (at
    least one). On the CPU the model's own threads need cores too: two are left to it, so
    a 2-core machine reads clips in the scoring process (measured there with demo-small on
    3-s clips: 0.98 clips/s without a worker, 0.81 with one competing for the cores)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 2
    if resolve_device(device).type == "cuda":
        return max(1, min(cores - 1, 16))
    return max(0, min(cores - 2, 16))


@dataclass(frozen=True)
class PrepareSpec:
    """What a worker needs to prepare a clip the way the main process's estimate reads it."""

    recipe: InputRecipe
    window_frames: int
    options: SyncOptions


def prepare_clip(path: Path, spec: PrepareSpec) -> ClipReader | None:
    """Open ``path`` and read its first segments (runs in a worker). None when the clip
    cannot be opened: the main process then meets the error itself."""
    try:
        # taken before anything is read, so a file replaced while it was prepared is
        # caught when its run compares this with the fingerprint it measures
        before = fingerprint(path)
        reader = ClipReader(path, spec.recipe, spec.options.detector, spec.options.face_box)
        firsts, count = first_reads(reader, spec.window_frames, spec.options)
        if firsts:
            reader.preload(firsts, count, PRELOAD_MAX_BYTES)
    except Exception:  # reproduced, and reported, by the main process
        return None
    reader.prepared_from = before
    return reader


def _of(reader: ClipReader | None, expected: Fingerprint | None) -> ClipReader | None:
    """``reader`` when it was prepared from the content ``expected`` describes (any, when
    None); None for a reader of an input that has changed since: it is read again."""
    if reader is None or expected is None:
        return reader
    made = reader.prepared_from
    return reader if made is not None and made.same_content(expected) else None


def _worker_init(parent: int) -> None:
    """One thread each for OpenCV and torch in a worker (the workers are the
    parallelism), and a worker ends when its parent is gone (``kill -9`` of a run leaves
    no process behind)."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="lipsync-fix parent watch", daemon=True).start()


class ClipPrefetcher:
    """Readers for ``paths``, prepared in worker processes ahead of :meth:`reader`.

    ``reader(path)`` is asked in the order of ``paths`` (a path may be skipped: its
    reader, if prepared, is dropped); it returns the prepared reader, or None when the
    path was not prefetched or its worker failed, and the caller then opens the clip
    itself. At most ``depth`` clips (default: two per worker) are being prepared or wait.
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        model: nn.Module,
        options: SyncOptions,
        *,
        workers: int | None = None,
        depth: int | None = None,
    ) -> None:
        self.workers = workers if workers is not None else machine_workers(options.device)
        self.depth = max(1, depth if depth is not None else 2 * self.workers)
        self._spec = PrepareSpec(recipe_for(model),
                                 int(getattr(model, "window_frames", FRAMES_PER_WINDOW)),
                                 options)
        self._todo = [Path(p) for p in paths]
        self._index = {str(p): i for i, p in enumerate(self._todo)}
        self._next = 0  # index in _todo of the next path to submit
        self._pending: OrderedDict[str, Future] = OrderedDict()
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False

    def _fill(self) -> None:
        if self._pool is None and not self._closed and self.workers > 0 and \
                self._next < len(self._todo):
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init, initargs=(os.getpid(),))
        while self._pool is not None and len(self._pending) < self.depth and \
                self._next < len(self._todo):
            path = self._todo[self._next]
            try:
                self._pending[str(path)] = self._pool.submit(prepare_clip, path, self._spec)
            except (BrokenProcessPool, RuntimeError):
                # Workers that cannot start (a script without a ``__main__`` guard, a
                # killed worker): go on without them; the caller reads every clip.
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool, self.workers = None, 0
                return
            self._next += 1

    def reader(self, path: str | Path) -> ClipReader | None:
        """The prepared reader of ``path`` (waiting for it if its worker is busy). The
        workers start at the first call (the first clip is read by the caller while they
        start), so a run whose estimates never open a clip starts none."""
        key = str(Path(path))
        if key not in self._pending:
            index = self._index.get(key)
            if index is None or index < self._next:
                return None  # never asked for, or already handed out
            # The caller skipped the ones before (do not prepare them); the first clip
            # asked for is read by the caller while the workers start.
            self._next = index + (1 if self._pool is None else 0)
        while self._pending and next(iter(self._pending)) != key:
            _, skipped = self._pending.popitem(last=False)
            skipped.cancel()
        self._fill()
        future = self._pending.pop(key, None)
        self._fill()
        if future is None:
            return None
        try:
            return future.result()
        except Exception:  # a worker that died: the caller reads the clip
            return None

    def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            for future in self._pending.values():
                future.cancel()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending.clear()

    def __enter__(self) -> ClipPrefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- batching


class ClipBatcher(nn.Module):
    """A model shared by ``clients`` threads whose encoder calls are merged.

    Each thread runs its own clip's estimate with this module as the model. A call to
    :meth:`encode_video` or :meth:`encode_audio` waits until every active client has one
    of the same kind waiting (or ``wait_s`` has passed), then one forward pass encodes
    all their windows and each gets its own rows back. Everything else (the cross-modal
    pairs, attributes such as ``family`` or ``window_frames``) goes to the wrapped model
    unchanged. On a CPU one clip already fills the cores, so this is meant for GPUs; it is
    exact anywhere, because the encoders treat each window on its own.
    """

    def __init__(self, model: nn.Module, clients: int, wait_s: float = 0.05) -> None:
        super().__init__()
        self.model = model
        self.clients = clients
        self.wait_s = wait_s
        self._lock = threading.Condition()
        self._active = 0
        self._queues: dict[str, list[_Request]] = {"video": [], "audio": []}
        self.requests = 0  # encoder calls asked for by the clients
        self.forward_passes = 0  # encoder forward passes made for them

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)

    def client(self) -> _Client:
        """``with batcher.client(): estimate_sync(...)``: counts this thread as active."""
        return _Client(self)

    def encode_video(self, video: Tensor) -> Tensor:
        return self._merged("video", video)

    def encode_audio(self, audio: Tensor) -> Tensor:
        return self._merged("audio", audio)

    def forward(self, video: Tensor, audio: Tensor) -> Tensor:
        return self.model(video, audio)

    def _merged(self, kind: str, batch: Tensor) -> Tensor:
        request = _Request(batch)
        with self._lock:
            self._queues[kind].append(request)
            self._lock.notify_all()
            self.requests += 1
            deadline = time.monotonic() + self.wait_s
            # Wait while some active client is still working (it may bring windows of
            # this kind); once every client waits here or for the other encoder, lead.
            while not request.done and self._waiting() < self._active and \
                    time.monotonic() < deadline:
                self._lock.wait(timeout=max(0.0, deadline - time.monotonic()))
            if not any(r is request for r in self._queues[kind]):  # another leader has it
                while not request.done:
                    self._lock.wait()
            if request.done:
                return request.result()
            # This thread leads: it takes every waiting request of this kind.
            taken, self._queues[kind] = self._queues[kind], []
        encode = self.model.encode_video if kind == "video" else self.model.encode_audio
        try:
            sizes = [len(r.batch) for r in taken]
            out = encode(torch.cat([r.batch for r in taken]))
            self.forward_passes += 1
            parts: Sequence[Tensor | None] = torch.split(out, sizes)
            error = None
        except BaseException as exc:  # every thread of the batch sees the failure
            parts, error = [None] * len(taken), exc
        with self._lock:
            for r, part in zip(taken, parts, strict=True):
                r.finish(part, error)
            self._lock.notify_all()
        return request.result()

    def _waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def _enter(self) -> None:
        with self._lock:
            self._active += 1

    def _leave(self) -> None:
        with self._lock:
            self._active -= 1
            self._lock.notify_all()  # a leader waiting for this client must not wait on


class _Request:
    def __init__(self, batch: Tensor) -> None:
        self.batch = batch
        self.done = False
        self._out: Tensor | None = None
        self._error: BaseException | None = None

    def finish(self, out: Tensor | None, error: BaseException | None) -> None:
        self._out, self._error, self.done = out, error, True

    def result(self) -> Tensor:
        if self._error is not None:
            raise self._error
        assert self._out is not None
        return self._out


class _Client:
    def __init__(self, batcher: ClipBatcher) -> None:
        self.batcher = batcher

    def __enter__(self) -> _Client:
        self.batcher._enter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.batcher._leave()



# --------------------------------------------------------------------------- a folder


Estimate = Callable[..., SyncEstimate]
"""``estimate(path, model, options, progress)``: :func:`estimate_sync` or a stand-in."""


def clips_at_once(device: str | torch.device) -> int:
    """Clips whose estimates run together: several on a GPU (their windows share forward
    passes), one on a CPU (one clip's batches already keep every core busy)."""
    return 8 if resolve_device(device).type == "cuda" else 1


class FolderEstimates:
    """The estimates of a folder's clips, asked for one by one in the order of ``paths``
    (any may be skipped), with the next clips read ahead by a :class:`ClipPrefetcher`
    and, when ``at_once`` > 1, several estimated at a time through a
    :class:`ClipBatcher`.

    ``estimate(path, progress)`` returns what ``estimate(path, model, options, progress)``
    returns or raises what it raises (``estimate`` is :func:`estimate_sync` unless given).
    The prepared readers reach it through :func:`prepared_readers`, so it opens its clip
    as usual; the worker processes start when it first opens one. With ``at_once`` > 1
    the next clips' estimates start before they are asked for; one never asked for is
    dropped (an estimate writes nothing).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        model: nn.Module,
        options: SyncOptions,
        *,
        workers: int | None = None,
        at_once: int | None = None,
        estimate: Estimate | None = None,
    ) -> None:
        self.model = model
        self.options = options
        self.at_once = max(1, at_once if at_once is not None else clips_at_once(options.device))
        self.prefetcher = ClipPrefetcher(paths, model, options, workers=workers)
        self._estimate = estimate or estimate_sync
        self._paths = [str(Path(p)) for p in paths]
        self._index = {p: i for i, p in enumerate(self._paths)}
        self._batcher = ClipBatcher(model, self.at_once) if self.at_once > 1 else None
        self._threads = ThreadPoolExecutor(self.at_once) if self._batcher is not None else None
        self._started: OrderedDict[str, Future] = OrderedDict()
        self._next = 0
        # Started estimates take their prepared readers in path order (the prefetcher
        # drops what is asked for out of order): estimate number n waits for turn n.
        self._turns = threading.Condition()
        self._submitted = self._turn = 0
        self._closing = False

    def estimate(self, path: str | Path, progress: Progress | None = None,
                 fingerprint: Fingerprint | None = None) -> SyncEstimate:
        """The estimate of ``path``; with ``fingerprint`` (the input as its run found
        it), what was read ahead of a file that has changed since is not used."""
        key = str(Path(path))
        index = self._index.get(key)
        if self._batcher is None or index is None or index < self._next - len(self._started):
            with prepared_readers(lambda p: _of(self.prefetcher.reader(p), fingerprint)):
                return self._estimate(key, self.model, self.options, progress)
        while self._started and next(iter(self._started)) != key:
            self._started.popitem(last=False)  # skipped by the caller: its result is dropped
        if key not in self._started:
            self._next = index
        self._start()
        future = self._started.pop(key)
        self._start()
        estimate, made = future.result()
        if fingerprint is not None and not (made is not None and made.same_content(fingerprint)):
            return self._estimate(key, self.model, self.options, progress)  # read afresh
        return estimate

    def _start(self) -> None:
        if self._threads is None:
            return
        while len(self._started) < self.at_once and self._next < len(self._paths):
            key = self._paths[self._next]
            self._next += 1
            self._started[key] = self._threads.submit(self._run, key, self._submitted)
            self._submitted += 1

    def _run(self, key: str, number: int) -> tuple[SyncEstimate, Fingerprint | None]:
        if self._batcher is None:
            raise RuntimeError("FolderEstimates._run needs a batcher")
        with self._turns:
            while self._turn != number and not self._closing:
                self._turns.wait()
        try:
            if self._closing:
                raise RuntimeError("the folder's estimates were closed")
            reader = self.prefetcher.reader(key)
        finally:
            with self._turns:
                self._turn += 1
                self._turns.notify_all()
        made = reader.prepared_from if reader is not None else None
        with self._batcher.client(), \
                prepared_readers(lambda path: reader if str(path) == key else None):
            return self._estimate(key, self._batcher, self.options, None), made

    def close(self) -> None:
        with self._turns:
            self._closing = True
            self._turns.notify_all()
        if self._threads is not None:
            self._threads.shutdown(wait=True)
        self._started.clear()
        self.prefetcher.close()

    def __enter__(self) -> FolderEstimates:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
