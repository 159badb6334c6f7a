"""The folder pipeline: readers prepared ahead (in this process and in worker processes),
read-ahead threads, and several clips' windows batched into one forward pass (forced on
the CPU here, where it is off by default)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from lipsync_fix import batch, media
from lipsync_fix.data.synth import make_talking_head
from lipsync_fix.errors import LipsyncError
from lipsync_fix.evaluation.bench_main_job import time_front_end
from lipsync_fix.features.inputs import WAV2LIP
from lipsync_fix.models.vocalist import PRESETS, VocaLiST
from lipsync_fix.sync import SyncOptions, estimate_sync
from lipsync_fix.sync.estimate import first_reads
from lipsync_fix.sync.frontend import ClipReader, read_ahead
from lipsync_fix.sync.pipeline import ClipBatcher, ClipPrefetcher, FolderEstimates

OPTIONS = SyncOptions(context_frames=10, max_delay_ms=200.0, min_usable_windows=5)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("folder")
    paths = []
    for seed, delay in ((31, 0.0), (32, 80.0), (33, -120.0)):
        head = make_talking_head(seed, duration_s=1.6, audio_delay_ms=delay)
        paths.append(root / f"clip{seed}.mp4")
        media.write_video(paths[-1], head.frames, head.fps, audio=head.audio,
                          sample_rate=16000)
    broken = root / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    return [paths[0], broken, paths[1], paths[2]]


@pytest.fixture(scope="module")
def model() -> VocaLiST:
    torch.manual_seed(3)
    return VocaLiST(PRESETS["tiny"]).eval()


def alone(path: Path, model) -> dict:
    """The estimate of one clip on its own, or its error."""
    try:
        return estimate_sync(path, model, OPTIONS).to_json()
    except LipsyncError as exc:
        return {"error": str(exc)}


def through(folder_estimates: FolderEstimates, path: Path) -> dict:
    try:
        return folder_estimates.estimate(path).to_json()
    except LipsyncError as exc:
        return {"error": str(exc)}


# --------------------------------------------------------------------------- read-ahead


def test_read_ahead_keeps_the_order_raises_in_place_and_stops_its_source() -> None:
    def items():
        yield from range(5)
        raise ValueError("the sixth")

    seen = []
    with pytest.raises(ValueError, match="the sixth"):
        for item in read_ahead(items(), 2):
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]

    closed = threading.Event()

    def endless():
        try:
            k = 0
            while True:
                yield k
                k += 1
        finally:
            closed.set()

    ahead = read_ahead(endless(), 3)
    assert [next(ahead) for _ in range(4)] == [0, 1, 2, 3]
    ahead.close()  # the consumer stops early: the producer thread ends and closes its source
    assert closed.wait(5)
    assert list(read_ahead(iter("abc"), 0)) == ["a", "b", "c"]


# --------------------------------------------------------------------------- prepared readers


def test_a_prepared_reader_travels_and_gives_the_segments_a_fresh_one_reads(folder) -> None:
    path = folder[0]
    firsts, count = first_reads(ClipReader(path, WAV2LIP), 5, OPTIONS)
    assert len(firsts) == 5 and count == 10  # every 10-frame context of 1.6 s
    prepared = ClipReader(path, WAV2LIP)
    assert prepared.preload(firsts, count, max_bytes=1 << 30) == len(firsts)
    travelled = pickle.loads(pickle.dumps(prepared))  # as from a worker process
    assert travelled._detector is None  # OpenCV's cascades do not pickle; made if needed
    fresh = ClipReader(path, WAV2LIP)
    for first in firsts:
        ours, theirs = travelled.segment(first, count), fresh.segment(first, count)
        np.testing.assert_array_equal(ours.crops, theirs.crops)
        np.testing.assert_array_equal(ours.has_face, theirs.has_face)
        assert (ours.first, ours.faces_seen, ours.cuts) == \
            (theirs.first, theirs.faces_seen, theirs.cuts)
    assert travelled._detector is None  # every segment came prepared
    # a budget smaller than one segment's crops reads nothing ahead
    assert ClipReader(path, WAV2LIP).preload(firsts, count, max_bytes=1000) == 0


@pytest.mark.slow  # a worker process starts (it imports torch) and 3 clips are scored twice
def test_folder_estimates_with_a_worker_equal_the_estimates_one_by_one(folder, model) -> None:
    """One worker process prepares the next clips; the estimates and the error of the
    broken file are what each clip gives on its own. Asking out of order (skipping a
    clip, as a resumed batch does) still gives each clip's own estimate."""
    expected = {path: alone(path, model) for path in folder}
    with FolderEstimates(folder, model, OPTIONS, workers=1) as estimates:
        got = {path: through(estimates, path) for path in folder}
        assert estimates.prefetcher._pool is not None  # the worker did start
    assert got == expected
    assert "error" in got[folder[1]] and "error" not in got[folder[0]]
    with FolderEstimates(folder, model, OPTIONS, workers=1) as estimates:
        assert through(estimates, folder[2]) == expected[folder[2]]
        assert through(estimates, folder[3]) == expected[folder[3]]


def test_a_prefetcher_hands_out_each_reader_once_and_skips_what_is_passed() -> None:
    prefetcher = ClipPrefetcher(["a.mp4", "b.mp4"], VocaLiST(PRESETS["tiny"]), OPTIONS,
                                workers=0)
    assert prefetcher.reader("a.mp4") is None  # no workers: the caller reads every clip
    assert prefetcher.reader("elsewhere.mp4") is None
    prefetcher.close()


def test_likely_to_run_leaves_out_what_the_journal_holds_as_done(tmp_path) -> None:
    jobs = [batch.Job(tmp_path / f"{c}.mp4", None, Path(f"{c}.mp4")) for c in "abc"]
    report = tmp_path / "r.jsonl"
    journal = batch.Journal.beside(report)
    journal.append({"input": str(jobs[0].input), "audio_delay_ms": 0.0})
    journal.append({"input": str(jobs[1].input), "error": "broken"})
    assert batch.likely_to_run(jobs, report, force=False) == jobs[1:]
    assert batch.likely_to_run(jobs, report, force=True) == jobs
    assert batch.likely_to_run(jobs, None, force=False) == jobs


# --------------------------------------------------------------------------- batching


@pytest.mark.slow  # 3 clips scored alone and then together: ~10 s, more on a busy machine
def test_batched_clips_share_forward_passes_and_give_the_same_estimates(folder, model) -> None:
    """Three clips at once through one ClipBatcher (the GPU path, forced on the CPU):
    their encoder calls are merged into fewer forward passes, and every estimate is the
    clip's own (to float tolerance: a batch of other sizes may round differently)."""
    expected = {path: alone(path, model) for path in folder}
    with FolderEstimates(folder, model, OPTIONS, workers=0, at_once=3) as estimates:
        estimates._batcher.wait_s = 2.0  # merge whenever the clients meet, however slow
        got = {path: through(estimates, path) for path in folder}
        batcher = estimates._batcher
    assert batcher.forward_passes < batcher.requests
    for path in folder:
        if "error" in expected[path]:
            assert got[path] == expected[path]
            continue
        ours, theirs = got[path], expected[path]
        assert ours["audio_delay_ms"] == pytest.approx(theirs["audio_delay_ms"], abs=1e-3)
        assert ours["windows_used"] == theirs["windows_used"]
        np.testing.assert_allclose([s["score"] for s in ours["scores"]],
                                   [s["score"] for s in theirs["scores"]], atol=1e-3)


def test_a_batcher_encodes_each_clients_windows_as_the_model_does(model) -> None:
    batcher = ClipBatcher(model, clients=2, wait_s=2.0)
    rng = np.random.default_rng(0)
    inputs = [torch.tensor(rng.random((n, 15, 48, 96), dtype=np.float32)) for n in (3, 5)]
    out: dict[int, torch.Tensor] = {}
    both_in = threading.Barrier(2)

    def client(k: int) -> None:
        with batcher.client(), torch.inference_mode():
            both_in.wait()
            out[k] = batcher.encode_video(inputs[k])

    threads = [threading.Thread(target=client, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert batcher.forward_passes == 1 and batcher.requests == 2
    with torch.inference_mode():
        for k in range(2):
            torch.testing.assert_close(out[k], model.encode_video(inputs[k]), atol=1e-5,
                                       rtol=1e-4)
    assert batcher.family == model.family and batcher.window_frames == model.window_frames


# --------------------------------------------------------------------------- benchmarks


def test_front_end_timing_counts_every_frame_once(folder) -> None:
    run = time_front_end(folder[0], "front end, 1.6 s")
    assert run["frames"] == 40  # every frame of 1.6 s, those two segments share once
    assert run["fps"] == pytest.approx(run["frames"] / run["seconds"], rel=1e-2)
    assert run["times_real_time"] == pytest.approx(run["video_s"] / run["seconds"], rel=1e-2)
    assert run["face_share"] == 1.0 and run["ffmpeg_cpu_s"] > 0


@pytest.mark.slow  # three ways over two clips (one for one process per file)
def test_bench_folder_command(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lipsync_fix", "bench", "folder", "--work-dir", tmp_path,
         "--clips", "2", "--seconds", "1.6", "--workers", "1", "--per-file-clips", "1",
         "--json"],
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    bench = json.loads(result.stdout.strip().splitlines()[-1])
    ways = {w["name"]: w for w in bench["ways"]}
    assert set(ways) == {"per file", "one process", "pipeline"}
    for name, way in ways.items():
        clips = 1 if name == "per file" else 2
        assert way["clips"] == clips and way["failed"] == 0 and way["peak_rss_mb"] > 50
        assert way["clips_per_s"] == pytest.approx(clips / way["seconds"], rel=1e-3)
    summary = bench["summary"]
    assert summary["speedup_vs_per_file"] == pytest.approx(
        ways["pipeline"]["clips_per_s"] / ways["per file"]["clips_per_s"], rel=1e-2)


def test_what_was_read_ahead_of_a_file_replaced_since_is_not_used(folder, tmp_path) -> None:
    """A worker prepared a clip; the file was then replaced (before its turn in the run):
    the run's estimate reads the new file, never the crops read ahead of the old one."""
    import shutil

    from lipsync_fix.files import fingerprint
    from lipsync_fix.sync.frontend import open_reader
    from lipsync_fix.sync.pipeline import PrepareSpec, prepare_clip

    path = tmp_path / "clip.mp4"
    shutil.copy(folder[0], path)
    before = fingerprint(path)
    prepared = prepare_clip(path, PrepareSpec(WAV2LIP, 5, OPTIONS))
    assert prepared is not None and prepared.prepared_from == before
    shutil.copy(folder[2], path)  # another clip under the same name
    now = fingerprint(path)
    opened = []

    def estimate(key, model, options, progress=None):
        opened.append(open_reader(key, WAV2LIP))
        return "estimated"

    with FolderEstimates([path], VocaLiST(PRESETS["tiny"]), OPTIONS, workers=0,
                         estimate=estimate) as estimates:
        estimates.prefetcher.reader = lambda p: prepared  # as if a worker had it ready
        assert estimates.estimate(path, None, before) == "estimated"
        assert opened[-1] is prepared  # unchanged: what was read ahead is used
        estimates.estimate(path, None, now)
        assert opened[-1] is not prepared and opened[-1].prepared_from is None


def test_the_cpu_keeps_two_cores_for_the_model_and_a_gpu_one(monkeypatch) -> None:
    """On 2 cores a worker competing with the model's threads made a folder slower (0.81
    against 0.98 clips/s with demo-small): the CPU default leaves two cores to the model."""
    import torch

    from lipsync_fix.sync import pipeline

    for cores, cpu_workers in ((1, 0), (2, 0), (4, 2), (64, 16)):
        monkeypatch.setattr(pipeline.os, "sched_getaffinity", lambda _, n=cores: set(range(n)),
                            raising=False)
        assert pipeline.machine_workers("cpu") == cpu_workers
        assert pipeline.machine_workers(torch.device("cpu")) == cpu_workers
    monkeypatch.setattr(pipeline, "resolve_device", lambda _: torch.device("cuda"))
    monkeypatch.setattr(pipeline.os, "sched_getaffinity", lambda _: set(range(2)), raising=False)
    assert pipeline.machine_workers("cuda") == 1
