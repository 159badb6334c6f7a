"""LSE-D and LSE-C, the lip-sync metrics of the talking-head literature (``lipsync-fix
lse``): the metric as the original SyncNet's ``evaluate()`` computes it
(:mod:`~lipsync_fix.lse.metric`) and its measurement on a video file, face tracks and
crops included (:mod:`~lipsync_fix.lse.video`). ``bench lse`` lives with the other
benchmarks, in :mod:`lipsync_fix.evaluation.bench_lse`.
"""

from lipsync_fix.lse.metric import (
    EVAL_BATCH,
    VSHIFT,
    LseScores,
    distance_matrix,
    embed_audio,
    embed_clip,
    embed_video,
    evaluate_crops,
    lse_from_distances,
    require_syncnet,
)
from lipsync_fix.lse.video import (
    LSE_RECORD,
    MIN_TRACK,
    MIN_TRACK_FRAMES,
    FaceTrack,
    FramePasses,
    LseOptions,
    LseVideo,
    TrackScores,
    crop_tracks,
    longest,
    lse_video,
    score_tracks,
    summarize,
    tracks_ours,
    tracks_reference,
)

__all__ = [
    "EVAL_BATCH", "LSE_RECORD", "MIN_TRACK", "MIN_TRACK_FRAMES", "VSHIFT", "FaceTrack",
    "FramePasses", "LseOptions", "LseScores", "LseVideo", "TrackScores", "crop_tracks",
    "distance_matrix", "embed_audio", "embed_clip", "embed_video", "evaluate_crops",
    "longest", "lse_from_distances", "lse_video", "require_syncnet", "score_tracks",
    "summarize", "tracks_ours", "tracks_reference",
]
