"""``bench lse``: our LSE pipeline (:func:`lipsync_fix.lse.lse_video`) against one that
does the reference's work frame by frame through files, on the same generated clips, with
the same model, in one process."""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf
from torch import nn

from lipsync_fix import faces, media
from lipsync_fix.compute import device_name, resolve_device, synchronize
from lipsync_fix.data.synth import make_talking_head
from lipsync_fix.errors import ClipTooShortError, LipsyncError, NoFaceError
from lipsync_fix.evaluation.golden import rule_weights
from lipsync_fix.faces.reference import REFERENCE_CROP_SIZE
from lipsync_fix.features.constants import (
    FRAMES_PER_WINDOW,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    VIDEO_FPS,
)
from lipsync_fix.features.mfcc import int16_scale
from lipsync_fix.lse import (
    FaceTrack,
    LseOptions,
    LseVideo,
    crop_tracks,
    evaluate_crops,
    longest,
    lse_video,
    score_tracks,
    tracks_reference,
)
from lipsync_fix.models.syncnet_v2 import SyncNetV2

JPEG_QUALITY = 95
"""Quality of the frame-by-frame pipeline's JPEGs (close to ffmpeg's ``-qscale:v 2``)."""

BENCH_MIN_TRACK = 10
"""The frame-by-frame pipeline's ``min_track`` in the benchmark: the reference's 100 would
reject every generated clip shorter than 4 s."""


def lse_video_frame_by_frame(
    path: str | Path,
    model: nn.Module,
    detector: faces.FaceDetector,
    scratch: Path,
    options: LseOptions,
) -> tuple[LseVideo, list[FaceTrack]]:
    """The same measurement done the way the reference pipeline does it, step by step
    through files, as the baseline of ``bench lse``.

    Every frame is written to a JPEG and read back, faces are detected on every frame
    (full-frame scans only), shots are tracked with the reference's ``track_shot``, each
    crop re-reads its frame's JPEG, the crops are written to JPEGs and read back (the
    reference's ``evaluate()`` dumps its cropped video that way), the audio goes through an
    int16 WAV file. Only the XVID encoding of the crops is left out. Returns the result and
    the face tracks it found.
    """
    path = Path(path)
    frames_dir, crops_dir = scratch / "frames", scratch / "crops"
    frames_dir.mkdir(parents=True)
    crops_dir.mkdir()
    names: list[Path] = []
    quality = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    for chunk in media.iter_video_frames(path, fps=VIDEO_FPS):
        for frame in chunk:
            names.append(frames_dir / f"{len(names) + 1:06d}.jpg")
            cv2.imwrite(str(names[-1]), frame, quality)
    wav = scratch / "audio.wav"
    sf.write(wav, int16_scale(media.decode_audio(path, SAMPLE_RATE)).astype(np.int16),
             SAMPLE_RATE, subtype="PCM_16")
    audio = sf.read(wav, dtype="int16")[0].astype(np.float64)

    def read_frames() -> Iterator[np.ndarray]:
        for name in names:
            yield cv2.imread(str(name))[None]

    tracks, n_frames = tracks_reference(read_frames(), detector, options.min_track,
                                            options.min_face_size)
    round_trip = []
    for k, clip in enumerate(crop_tracks(read_frames(), tracks)):
        folder = crops_dir / f"{k:03d}"
        folder.mkdir()
        files = [folder / f"{i + 1:06d}.jpg" for i in range(len(clip))]
        for file, crop in zip(files, clip, strict=True):
            cv2.imwrite(str(file), crop, quality)
        round_trip.append(np.stack([cv2.imread(str(file)) for file in files]))
    scored = score_tracks(model, round_trip, tracks, audio, options)
    if not scored:
        raise NoFaceError(f"{path}: the frame-by-frame pipeline found no face track to score")
    return LseVideo(str(path), n_frames, "reference", scored), tracks


@dataclass
class LseBenchmark:
    """``bench lse``: our pipeline against the frame-by-frame one on the same clips."""

    device: str
    clips: int
    seconds_per_clip: float
    frames: int
    ours_s: float
    frame_by_frame_s: float
    speedup: float
    lse_d_max_diff: float
    lse_c_max_diff: float
    offsets_equal: bool
    jpeg_lse_d_max_diff: float
    jpeg_lse_c_max_diff: float
    per_clip: list[dict]

    def to_json(self) -> dict:
        return asdict(self)


def benchmark_model() -> nn.Module:
    """A SyncNetV2 with the golden rule's weights (the benchmark needs no download)."""
    model = SyncNetV2()
    model.load_state_dict(rule_weights(model))
    return model.eval()


def run_lse_benchmark(
    clips: int = 2,
    seconds: float = 2.0,
    size: int = 256,
    detector: str = "auto",
    device: str = "cpu",
    seed: int = 0,
    model: nn.Module | None = None,
) -> LseBenchmark:
    """Time :func:`lse_video` and :func:`lse_video_frame_by_frame` on generated clips,
    alternating clip by clip in one process with one model.

    The numbers of the two are compared (offsets, LSE-D, LSE-C of each clip's main
    track); so that the codec's share of the difference is known, the frame-by-frame
    pipeline's own face tracks are also scored without any JPEG (untimed).
    """
    dev = resolve_device(device)
    model = (model or benchmark_model()).to(dev).eval()
    opts = LseOptions(detector=detector, device=str(dev))
    fbf_opts = LseOptions(detector=detector, device=str(dev), min_track=BENCH_MIN_TRACK)
    ours_s = fbf_s = 0.0
    frames = 0
    per_clip = []
    with tempfile.TemporaryDirectory(prefix="lse-bench-") as tmp:
        root = Path(tmp)
        paths = []
        for index in range(clips):
            clip = make_talking_head(seed + index, duration_s=seconds, size=(size, size))
            paths.append(root / f"clip{index}.mp4")
            media.write_video(paths[-1], clip.frames, clip.fps, clip.audio, clip.sample_rate)
        warm = np.zeros((FRAMES_PER_WINDOW + 1, REFERENCE_CROP_SIZE, REFERENCE_CROP_SIZE, 3),
                        np.uint8)
        evaluate_crops(model, warm, np.zeros(8 * SAMPLES_PER_FRAME), 1, device=dev)
        for index, path in enumerate(paths):
            start = time.perf_counter()
            try:
                ours = lse_video(path, model, opts)
                synchronize(dev)
                ours_s += time.perf_counter() - start
                start = time.perf_counter()
                fbf, tracks = lse_video_frame_by_frame(
                    path, model, faces.make_detector(detector), root / f"work{index}",
                    fbf_opts)
            except (NoFaceError, ClipTooShortError) as exc:
                # The clip is a temporary file, gone when this is read: say what it was.
                raise LipsyncError(
                    f"generated clip {index + 1} ({seconds:g} s, {size}x{size} px) cannot be "
                    f"scored: {str(exc).split(': ', 1)[-1]} (the reference tracker keeps faces "
                    f"of {fbf_opts.min_face_size:g} px or more, in tracks of more than "
                    f"{fbf_opts.min_track} frames); use a larger --size or --seconds"
                ) from None
            synchronize(dev)
            fbf_s += time.perf_counter() - start
            audio = int16_scale(media.decode_audio(path, SAMPLE_RATE))
            crops = crop_tracks(media.iter_video_frames(path, fps=VIDEO_FPS), tracks)
            lossless = score_tracks(model, crops, tracks, audio, fbf_opts)
            frames += ours.n_frames
            main = {"ours": ours.main.scores, "frame_by_frame": fbf.main.scores,
                    "frame_by_frame_no_jpeg": longest(lossless).scores}
            per_clip.append({"clip": path.name, "frames": ours.n_frames,
                             **{k: v.to_json() for k, v in main.items()}})
    return LseBenchmark(
        device=device_name(dev),
        clips=clips,
        seconds_per_clip=seconds,
        frames=frames,
        ours_s=round(ours_s, 3),
        frame_by_frame_s=round(fbf_s, 3),
        speedup=round(fbf_s / ours_s, 3) if ours_s > 0 else math.inf,
        lse_d_max_diff=_max_diff(per_clip, "ours", "frame_by_frame", "lse_d"),
        lse_c_max_diff=_max_diff(per_clip, "ours", "frame_by_frame", "lse_c"),
        offsets_equal=all(c["ours"]["syncnet_offset"] == c["frame_by_frame"]["syncnet_offset"]
                          for c in per_clip),
        jpeg_lse_d_max_diff=_max_diff(per_clip, "frame_by_frame", "frame_by_frame_no_jpeg",
                                      "lse_d"),
        jpeg_lse_c_max_diff=_max_diff(per_clip, "frame_by_frame", "frame_by_frame_no_jpeg",
                                      "lse_c"),
        per_clip=per_clip,
    )


def _max_diff(per_clip: list[dict], a: str, b: str, key: str) -> float:
    return round(max(abs(c[a][key] - c[b][key]) for c in per_clip), 4)
