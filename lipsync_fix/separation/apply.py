"""Applying a separator to a whole video: the main job's front end, then overlapping chunks.

Like demucs' ``apply``: one chunked applier with bounded memory, used by the ``separate``
command and by anything else that separates whole clips.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import Tensor

from lipsync_fix.errors import MediaError, OutputError, OutputExistsError, UsageError
from lipsync_fix.features.constants import SAMPLE_RATE, SAMPLES_PER_FRAME, VIDEO_FPS
from lipsync_fix.files import write_atomically
from lipsync_fix.separation.model import YNet, system_name
from lipsync_fix.sync.frontend import extract_features


def separate_clip(
    model: YNet, wav: Tensor, frames: Tensor, chunk_s: float = 4.0, overlap_s: float = 1.0,
    device: str | torch.device = "cpu",
) -> Tensor:
    """Target voice of a whole clip, in overlapping chunks with bounded memory.

    ``wav`` (n,) at 16 kHz, ``frames`` (N, 3, 48, 96) at 25 fps. Chunks are cut on video
    frame boundaries so each sees its own frames; they are cross-faded with a triangular
    window (overlap-add, weights normalised), so a chunk seam leaves no click.
    """
    n = wav.shape[-1]
    n_frames = frames.shape[0]
    need = -(-n // SAMPLES_PER_FRAME)
    if n_frames < need:  # video a little shorter than the audio: hold the last frame
        frames = torch.cat([frames, frames[-1:].expand(need - n_frames, -1, -1, -1)])
    chunk = max(1, round(chunk_s * VIDEO_FPS)) * SAMPLES_PER_FRAME
    hop = max(1, round((chunk_s - overlap_s) * VIDEO_FPS)) * SAMPLES_PER_FRAME
    out = torch.zeros(n)
    weight = torch.zeros(n)
    ramp = torch.ones(chunk)
    fade = chunk - hop
    if fade > 0:
        r = (torch.arange(fade, dtype=torch.float32) + 0.5) / fade
        ramp[:fade] = r
        ramp[-fade:] = r.flip(0)
    model = model.to(device).eval()
    start = 0
    with torch.inference_mode():
        while True:
            end = min(start + chunk, n)
            seg = wav[start:end].float()
            length = end - start
            padded = F.pad(seg, (0, chunk - length)) if length < chunk else seg
            f0 = start // SAMPLES_PER_FRAME
            seg_frames = frames[f0 : f0 + chunk // SAMPLES_PER_FRAME]
            if seg_frames.shape[0] < chunk // SAMPLES_PER_FRAME:
                missing = chunk // SAMPLES_PER_FRAME - seg_frames.shape[0]
                seg_frames = torch.cat([seg_frames, seg_frames[-1:].expand(missing, -1, -1, -1)])
            est = model(padded[None].to(device), seg_frames[None].to(device))[0].cpu()
            w = ramp[:length]  # positive everywhere, so the normalisation below is exact
            out[start:end] += est[:length] * w
            weight[start:end] += w
            if end == n:
                break
            start += hop
    return out / weight.clamp_min(1e-8)


def check_audio_output(dst: Path, force: bool = False) -> str:
    """The soundfile format of ``dst`` (told by its suffix), when it can be written: a
    usage error before any work for a suffix that is no audio format, a folder, a missing
    folder, or an existing file (unless ``force``)."""
    fmt = dst.suffix.lstrip(".").upper()
    if fmt not in sf.available_formats():
        raise UsageError(f"cannot write audio as {dst.suffix or 'a file without suffix'}; "
                         "use .wav or .flac")
    if dst.is_dir():
        raise UsageError(f"-o {dst} is a folder; give the audio file to write")
    if dst.exists() and not force:
        raise OutputExistsError(f"{dst} exists; use --force to overwrite it")
    if not dst.parent.is_dir():
        raise OutputError(f"the folder {dst.parent} of -o {dst} does not exist; create it "
                          "first")
    return fmt


def separate_video(
    path: str | Path, output: str | Path, model: YNet, *, detector: str = "auto",
    face_box: str | None = None, device: str | torch.device = "cpu", force: bool = False,
) -> dict[str, Any]:
    """Separate the voice of the person on screen in ``path`` and write it to ``output``.

    The video goes through the main job's pipeline (25 fps decode, face tracking, 96x96
    crops, 16 kHz audio), the model runs in overlapping chunks, and the audio file (any
    format soundfile writes, told by the suffix) appears only once complete.
    """
    dst = Path(output)
    fmt = check_audio_output(dst, force)
    features = extract_features(path, detector, face_box)
    if len(features.wav) < SAMPLES_PER_FRAME:
        raise MediaError(f"{path}: the audio is shorter than one video frame")
    voice = separate_clip(model, torch.from_numpy(np.ascontiguousarray(features.wav)),
                          features.frames, device=device)
    data = voice.clamp(-1.0, 1.0).numpy()
    write_atomically(dst, lambda tmp: sf.write(str(tmp), data, SAMPLE_RATE, format=fmt))
    return {"input": str(path), "output": str(dst),
            "system": system_name(model.visual, model.frozen_visual),
            "duration_s": round(len(data) / SAMPLE_RATE, 3),
            "face_coverage": round(features.face_coverage, 3)}
