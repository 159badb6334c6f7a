"""The offline demo: make a talking-head clip with a known audio delay, then fix it.

Everything it needs ships with the package: the face photo (scikit-image), the voice
synthesiser (:mod:`lipsync_fix.data.synth`), ffmpeg (imageio-ffmpeg) and the small model
trained on such clips (``demo-small`` in the registry).

With ``drift_ms_per_min`` the clip's audio clock runs fast or slow, so the delay grows over
time; with ``scenes`` > 1 the clip is several scenes (another speaker each) with an offset
each. Then the demo fits the offset over time (:mod:`lipsync_fix.sync.timeline`), writes
the fix (:mod:`lipsync_fix.sync.retime`) and measures the fixed copy again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from torch import nn

from lipsync_fix import media
from lipsync_fix.data.synth import TalkingHead, make_scene_clip, make_talking_head
from lipsync_fix.errors import OutputExistsError, UsageError
from lipsync_fix.features.constants import FRAME_MS
from lipsync_fix.sync import SyncEstimate, SyncOptions, estimate_sync, fix_video
from lipsync_fix.sync.frontend import Progress
from lipsync_fix.sync.retime import fix_timeline
from lipsync_fix.sync.timeline import MAX_DRIFT_MS_PER_MIN, TimelineOptions, delay_words

DEMO_DELAY_MS = 200.0
DEMO_SECONDS = 8.0
MIN_SECONDS, MAX_SECONDS = 2.0, 600.0
MAX_SCENES = 6
MIN_SCENE_SECONDS = 4.0  # a scene needs a few 1-s segments to be told apart
DEMO_DRIFT_SECONDS = 60.0  # a drift needs time to show: 60 ms/min moves the offset 60 ms
DEMO_SCENE_SECONDS = 8.0  # per scene
SCENE_DELAY_STEPS_MS = (-320.0, 160.0, -240.0, 200.0, -160.0)
"""How each further scene's delay differs from the one before (all at least two frames)."""


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


def demo_seconds(seconds: float | None, drift_ms_per_min: float = 0.0, scenes: int = 1) -> float:
    """The clip length: as asked, or :data:`DEMO_SECONDS` for a constant delay,
    :data:`DEMO_DRIFT_SECONDS` for a drift and :data:`DEMO_SCENE_SECONDS` per scene."""
    if seconds is not None:
        return seconds
    if scenes > 1:
        return DEMO_SCENE_SECONDS * scenes
    return DEMO_DRIFT_SECONDS if drift_ms_per_min else DEMO_SECONDS


def timeline_limit_ms(options: SyncOptions) -> float:
    """How far a drift or scene demo's delay may go: the searched range less a frame, so
    the truth never sits on the edge where the estimate is called uncertain."""
    return options.max_delay_ms - FRAME_MS


def demo_outputs(out_dir: Path, drift_ms_per_min: float = 0.0, scenes: int = 1
                 ) -> tuple[Path, Path]:
    """The two files a demo writes into ``out_dir``: the clip and its fixed copy."""
    if scenes > 1:
        name = f"demo_{scenes}_scenes"
    elif drift_ms_per_min:
        name = "demo_drift"
    else:
        return out_dir / "demo_out_of_sync.mp4", out_dir / "demo_fixed.mp4"
    return out_dir / f"{name}.mp4", out_dir / f"{name}_fixed.mp4"


def check_demo(out_dir: Path, audio_delay_ms: float, seconds: float | None,
               options: SyncOptions, drift_ms_per_min: float = 0.0, scenes: int = 1,
               force: bool = False) -> None:
    """Refuse a demo that cannot show what it promises, before anything is loaded or
    written: the delay must stay inside the searched range (``options.max_delay_ms``), or
    the demo would show a failure the tool itself reports as out of range. Files of an
    earlier demo in ``out_dir`` are not replaced unless ``force``."""
    seconds = demo_seconds(seconds, drift_ms_per_min, scenes)
    if not (math.isfinite(seconds) and MIN_SECONDS <= seconds <= MAX_SECONDS):
        raise UsageError(f"the demo clip must last {MIN_SECONDS:g} to {MAX_SECONDS:g} s, "
                         f"got {seconds}")
    if not (1 <= scenes <= MAX_SCENES):
        raise UsageError(f"the demo makes 1 to {MAX_SCENES} scenes, got {scenes}")
    if scenes > 1 and drift_ms_per_min:
        raise UsageError("the demo makes either a drift or several scenes, not both")
    if scenes > 1 and seconds / scenes < MIN_SCENE_SECONDS:
        raise UsageError(f"{scenes} scenes need at least {scenes * MIN_SCENE_SECONDS:g} s "
                         f"(--seconds), got {seconds:g}")
    if not (math.isfinite(drift_ms_per_min) and abs(drift_ms_per_min) <= MAX_DRIFT_MS_PER_MIN):
        raise UsageError(f"the demo's drift must be within +-{MAX_DRIFT_MS_PER_MIN:.0f} ms/min, "
                         f"got {drift_ms_per_min}")
    if drift_ms_per_min or scenes > 1:
        limit = timeline_limit_ms(options)
        end_delay = audio_delay_ms + drift_ms_per_min * seconds / 60.0
        if not (math.isfinite(audio_delay_ms)
                and max(abs(audio_delay_ms), abs(end_delay)) <= limit):
            raise UsageError(f"the demo's delay must stay within +-{limit:.0f} ms (the "
                             f"searched range less a frame); it goes from "
                             f"{audio_delay_ms:.0f} to {end_delay:.0f} ms")
    else:
        limit = min(options.max_delay_ms, 1000 * seconds / 4)
        if not (math.isfinite(audio_delay_ms) and abs(audio_delay_ms) <= limit):
            raise UsageError(f"the demo's audio delay must be within +-{limit:.0f} ms (the "
                             f"searched range), got {audio_delay_ms}")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} is a file; --out-dir must be a folder")
    if not out_dir.exists() and not out_dir.parent.is_dir():
        raise UsageError(f"the folder {out_dir.parent} of --out-dir {out_dir} does not exist; "
                         "create it first")
    there = [p for p in demo_outputs(out_dir, drift_ms_per_min, scenes) if p.exists()]
    if there and not force:
        raise OutputExistsError(f"{there[0]} exists; use --force to overwrite it")
    for path in there:
        if path.is_dir():
            raise UsageError(f"{path} is a folder; the demo writes a video there")


def run_demo(
    model: nn.Module,
    out_dir: Path,
    audio_delay_ms: float = DEMO_DELAY_MS,
    seconds: float | None = None,
    seed: int = 2024,
    options: SyncOptions | None = None,
    progress: Progress | None = None,
    drift_ms_per_min: float = 0.0,
    scenes: int = 1,
    timeline: TimelineOptions | None = None,
    force: bool = False,
) -> DemoResult | TimelineDemoResult:
    """Make the clip, estimate its delay, and write the fixed copy beside it (after
    :func:`check_demo`: an earlier demo's files are replaced only with ``force``). With a
    drift or several scenes the offset over time is fitted, the clip fixed by it, and the
    fixed copy measured again."""
    options = options or SyncOptions()
    check_demo(out_dir, audio_delay_ms, seconds, options, drift_ms_per_min, scenes, force)
    seconds = demo_seconds(seconds, drift_ms_per_min, scenes)
    if drift_ms_per_min or scenes != 1:
        return _run_timeline_demo(model, out_dir, audio_delay_ms, seconds, seed, options,
                                  progress, drift_ms_per_min, scenes, timeline)
    out_dir.mkdir(exist_ok=True)
    clip, fixed = demo_outputs(out_dir)
    make_demo_clip(clip, audio_delay_ms, seconds, seed)
    estimate = estimate_sync(clip, model, options, progress)
    fix_video(clip, fixed, estimate, force=True, apply_uncertain=True)
    return DemoResult(clip, fixed, audio_delay_ms, estimate,
                      audio_delay_ms - estimate.audio_delay_ms)


@dataclass
class TimelineDemoResult:
    """A drift or multi-scene demo: the truth, the fitted model, and the fixed copy's."""

    clip: Path
    fixed: Path
    truth: TalkingHead
    found: SyncEstimate
    after_fix: SyncEstimate

    def true_model(self) -> dict:
        """The offset the clip was made with, in the estimate's words."""
        if self.truth.scene_delays_ms:
            return {"offset_model": "piecewise",
                    "scene_starts_s": list(self.truth.scene_starts_s),
                    "scene_delays_ms": list(self.truth.scene_delays_ms)}
        return {"offset_model": "drift", "audio_delay_ms": self.truth.audio_delay_ms,
                "drift_ms_per_min": round(self.truth.drift_ms_per_min, 3)}

    def worst_error_ms(self) -> float:
        """The largest gap between the fitted and the true offset over the clip (10 Hz),
        more than 0.5 s from a scene cut (a break that close to its cut is on target)."""
        t = np.arange(0.05, self.truth.duration_s, 0.1)
        cuts = np.asarray(self.truth.scene_starts_s[1:])
        if len(cuts):
            t = t[np.min(np.abs(t[:, None] - cuts[None, :]), axis=1) > 0.5]
        return float(np.max(np.abs(self.found.offset_at(t) - self.truth.true_delay_ms(t))))

    def to_json(self) -> dict:
        """The output contract of the clip's estimate, plus the truth it was made with,
        the worst error, the fixed copy and that copy's own estimate."""
        return self.found.to_json() | {
            "output": str(self.fixed), "truth": self.true_model(),
            "worst_error_ms": round(self.worst_error_ms(), 1),
            "after_fix": self.after_fix.to_json()}

    def lines(self) -> list[str]:
        """What the demo says, in words."""
        if self.truth.scene_delays_ms:
            made = "; ".join(f"from {t:.1f} s {delay_words(d)}" for t, d in
                             zip(self.truth.scene_starts_s, self.truth.scene_delays_ms,
                                 strict=True))
            made = f"{len(self.truth.scene_delays_ms)} scenes ({made})"
        else:
            made = (f"the {delay_words(self.truth.audio_delay_ms)}, "
                    f"drifting {self.truth.drift_ms_per_min:+.0f} ms/min")
        after = self.after_fix.offset_model
        verdict = "in sync" if after.in_sync() else "NOT in sync"
        return [f"made    {self.clip} with {made}",
                f"found   {self.found.offset_model.describe()} "
                f"(worst error {self.worst_error_ms():.0f} ms)",
                f"wrote   {self.fixed}",
                f"checked {self.fixed}: {after.describe()}: {verdict}"]


def clip_estimate(
    path: str | Path,
    model: nn.Module,
    options: SyncOptions | None = None,
    timeline: TimelineOptions | None = None,
    progress: Progress | None = None,
) -> SyncEstimate:
    """The main job's estimate of a video file, with another offset-model choice."""
    opts = options or SyncOptions()
    if timeline is not None:
        opts = replace(opts, timeline=timeline)
    return estimate_sync(path, model, opts, progress)


def scene_delays(first_ms: float, scenes: int, limit_ms: float) -> list[float]:
    """The demo's per-scene delays: ``first_ms``, then steps of
    :data:`SCENE_DELAY_STEPS_MS`, turned around where they would leave +-``limit_ms``."""
    delays = [first_ms]
    for k in range(scenes - 1):
        step = SCENE_DELAY_STEPS_MS[k % len(SCENE_DELAY_STEPS_MS)]
        nxt = delays[-1] + step
        if abs(nxt) > limit_ms:
            nxt = delays[-1] - step
        delays.append(float(np.clip(nxt, -limit_ms, limit_ms)))
    return delays


def make_timeline_clip(
    path: Path, audio_delay_ms: float, seconds: float, seed: int,
    drift_ms_per_min: float = 0.0, scenes: int = 1, limit_ms: float = 400.0,
) -> TalkingHead:
    """Render the drift or multi-scene clip as mp4 and return what it was made from."""
    if scenes > 1:
        clip = make_scene_clip(seed, [seconds / scenes] * scenes,
                               scene_delays(audio_delay_ms, scenes, limit_ms))
    else:
        clip = make_talking_head(seed, duration_s=seconds, audio_delay_ms=audio_delay_ms,
                                 audio_clock_ppm=drift_ms_per_min / 0.06)
    media.write_video(path, clip.frames, clip.fps, audio=clip.audio,
                      sample_rate=clip.sample_rate)
    return clip


def _run_timeline_demo(
    model: nn.Module, out_dir: Path, audio_delay_ms: float, seconds: float, seed: int,
    options: SyncOptions, progress: Progress | None, drift_ms_per_min: float, scenes: int,
    timeline: TimelineOptions | None,
) -> TimelineDemoResult:
    """Make a drifting or multi-scene clip, fit the offset over time, fix it, re-measure
    (:func:`run_demo` has checked the numbers)."""
    limit = timeline_limit_ms(options)
    out_dir.mkdir(exist_ok=True)
    clip_path, fixed = demo_outputs(out_dir, drift_ms_per_min, scenes)
    truth = make_timeline_clip(clip_path, audio_delay_ms, seconds, seed, drift_ms_per_min,
                               scenes, min(limit, 400.0))
    found = clip_estimate(clip_path, model, options, timeline, progress)
    fix_timeline(clip_path, fixed, found.offset_model, force=True)
    # the fixed copy is read on every window, so each part of it is checked, not a sample
    after = clip_estimate(fixed, model, replace(options, exhaustive=True), timeline, progress)
    return TimelineDemoResult(clip_path, fixed, truth, found, after)
