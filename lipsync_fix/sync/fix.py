"""The fix: a copy of the video with its audio moved into sync."""

from __future__ import annotations

from pathlib import Path

from lipsync_fix import media
from lipsync_fix.errors import UncertainEstimateError
from lipsync_fix.sync.estimate import SyncEstimate
from lipsync_fix.sync.retime import fix_timeline


def fix_video(
    src: str | Path,
    dst: str | Path,
    estimate: SyncEstimate,
    *,
    force: bool = False,
    apply_uncertain: bool = False,
) -> media.ShiftReport | media.RewriteReport:
    """Write ``dst``: ``src`` with its audio moved into sync.

    A constant offset moves every audio stream earlier by the estimated delay; an offset
    that drifts or changes between scenes is undone by resampling or by shifting each span
    (:func:`lipsync_fix.sync.retime.fix_timeline`). The video is copied bit for bit. An
    ``uncertain`` estimate is not acted on unless ``apply_uncertain``: writing a video
    shifted by a guess would make a good video worse as often as it fixes a bad one.
    """
    if estimate.verdict == "uncertain" and not apply_uncertain:
        raise UncertainEstimateError(
            f"{estimate.describe()}; not fixed (use --apply-uncertain to apply the best guess)"
        )
    offset = estimate.offset_model
    if offset.kind != "constant":
        return fix_timeline(src, dst, offset, force=force)
    return media.shift_audio(src, dst, -offset.spans[0].audio_delay_ms / 1000.0, force=force)
