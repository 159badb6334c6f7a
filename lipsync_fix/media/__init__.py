"""Media I/O through the ``ffmpeg`` binary alone: probe, decode, encode, remux.

The first stage of the pipeline (media -> faces -> features -> scores -> offsets -> remux)
and its last: nothing else in lipsync-fix runs ffmpeg.
"""

from lipsync_fix.media.decode import (
    count_frames_at,
    decode_audio,
    iter_video_frames,
    video_packets_md5,
)
from lipsync_fix.media.encode import write_video
from lipsync_fix.media.ffmpeg import PathLike, ffmpeg_exe
from lipsync_fix.media.probe import (
    VIDEO_SUFFIXES,
    MediaInfo,
    StreamInfo,
    probe,
    require_audio,
    require_video,
    require_video_and_audio,
)
from lipsync_fix.media.remux import (
    CONTAINERS,
    FALLBACK_SUFFIX,
    AudioStreamReport,
    AudioTransform,
    RewriteReport,
    ShiftReport,
    check_destination,
    check_rewrite,
    output_container,
    output_suffix_for,
    rewrite_audio,
    shift_audio,
)

__all__ = [
    "CONTAINERS",
    "FALLBACK_SUFFIX",
    "VIDEO_SUFFIXES",
    "AudioStreamReport",
    "AudioTransform",
    "MediaInfo",
    "PathLike",
    "RewriteReport",
    "ShiftReport",
    "StreamInfo",
    "check_destination",
    "check_rewrite",
    "count_frames_at",
    "decode_audio",
    "ffmpeg_exe",
    "iter_video_frames",
    "output_container",
    "output_suffix_for",
    "probe",
    "require_audio",
    "require_video",
    "require_video_and_audio",
    "rewrite_audio",
    "shift_audio",
    "video_packets_md5",
    "write_video",
]
