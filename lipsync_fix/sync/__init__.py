"""The main job: scores -> offsets -> the estimate -> the fix.

``frontend`` turns a video into face crops and audio (shared with separation),
``scoring`` fills score matrices (every window against every shift), ``offsets`` turns
them into per-window offsets and accuracies, ``estimate`` decides a clip's delay and how
sure it is, ``fix`` writes the corrected video, ``plot`` draws the evidence.
"""

from lipsync_fix.sync.estimate import SyncEstimate, SyncOptions, estimate_sync
from lipsync_fix.sync.fix import fix_video

__all__ = ["SyncEstimate", "SyncOptions", "estimate_sync", "fix_video"]
