"""The offline demo: make a talking-head clip with a known audio delay, then fix it.

Everything it needs ships with the package: the face photo (scikit-image), the voice
synthesiser (:mod:`lipsync_fix.data.synth`), ffmpeg (imageio-ffmpeg) and the small model
trained on such clips (``demo-small`` in the registry).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from lipsync_fix import media
from lipsync_fix.data.synth import make_talking_head
from lipsync_fix.errors import UsageError
from lipsync_fix.sync import SyncEstimate, SyncOptions, estimate_sync, fix_video
from lipsync_fix.sync.frontend import Progress

DEMO_DELAY_MS = 200.0
DEMO_SECONDS = 8.0
MIN_SECONDS, MAX_SECONDS = 2.0, 600.0


@dataclass
class DemoResult:
    clip: Path
    fixed: Path
    true_audio_delay_ms: float
    estimate: SyncEstimate
    residual_ms: float  # what is left after fixing (true - estimated)

    def to_json(self) -> dict:
        return self.estimate.to_json() | {
            "true_audio_delay_ms": self.true_audio_delay_ms,
            "output": str(self.fixed),
            "residual_ms": round(self.residual_ms, 1),
        }


def make_demo_clip(path: Path, audio_delay_ms: float, seconds: float, seed: int) -> Path:
    """Render a synthetic talking head whose audio is ``audio_delay_ms`` late, as mp4."""
    clip = make_talking_head(seed, duration_s=seconds, audio_delay_ms=audio_delay_ms)
    media.write_video(path, clip.frames, clip.fps, audio=clip.audio,
                      sample_rate=clip.sample_rate)
    return path


def check_demo(out_dir: Path, audio_delay_ms: float, seconds: float,
               options: SyncOptions) -> None:
    """Refuse a demo that cannot show what it promises, before anything is loaded or
    written: the delay must lie inside the searched range (``options.max_offset_ms``), or
    the demo would show a failure the tool itself reports as out of range."""
    if not (math.isfinite(seconds) and MIN_SECONDS <= seconds <= MAX_SECONDS):
        raise UsageError(f"the demo clip must last {MIN_SECONDS:g} to {MAX_SECONDS:g} s, "
                         f"got {seconds}")
    limit = min(options.max_offset_ms, 1000 * seconds / 4)
    if not (math.isfinite(audio_delay_ms) and abs(audio_delay_ms) <= limit):
        raise UsageError(f"the demo's audio delay must be within +-{limit:.0f} ms (the searched "
                         f"range), got {audio_delay_ms}")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} is a file; --out-dir must be a folder")


def run_demo(
    model: nn.Module,
    out_dir: Path,
    audio_delay_ms: float = DEMO_DELAY_MS,
    seconds: float = DEMO_SECONDS,
    seed: int = 2024,
    options: SyncOptions | None = None,
    progress: Progress | None = None,
) -> DemoResult:
    """Make the clip, estimate its delay, and write the fixed copy beside it (after
    :func:`check_demo`)."""
    options = options or SyncOptions()
    check_demo(out_dir, audio_delay_ms, seconds, options)
    out_dir.mkdir(parents=True, exist_ok=True)
    clip = make_demo_clip(out_dir / "demo_out_of_sync.mp4", audio_delay_ms, seconds, seed)
    estimate = estimate_sync(clip, model, options, progress)
    fixed = out_dir / "demo_fixed.mp4"
    fix_video(clip, fixed, estimate, force=True, apply_uncertain=True)
    return DemoResult(clip, fixed, audio_delay_ms, estimate,
                      audio_delay_ms - estimate.audio_delay_ms)
