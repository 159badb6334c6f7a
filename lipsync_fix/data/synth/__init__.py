"""Synthetic talking heads whose audio/video offset is known exactly.

Real talking-face clips never come with a ground-truth offset, so the demo, the tests and
the training of the small bundled models use clips made here. ``speech`` makes the
timeline and the voice, ``face`` the mouth and the picture, ``clips`` puts them together
(:func:`make_talking_head`, with a drifting audio clock if asked), ``scenes`` joins several
with hard cuts, each with its own offset (:func:`make_scene_clip`), ``dataset`` writes
data sets in the authors' layout.
"""

from lipsync_fix.data.synth.clips import (
    TalkingHead,
    audio_at_16k,
    clip_crops,
    make_talking_head,
    write_clip_folder,
)
from lipsync_fix.data.synth.dataset import CROP_SOURCES, write_synthetic_dataset
from lipsync_fix.data.synth.face import articulation_tracks, render_frames
from lipsync_fix.data.synth.scenes import make_scene_clip, random_scene_plan
from lipsync_fix.data.synth.speech import (
    Syllable,
    delay_audio,
    speech_timeline,
    synthesize_voice,
)

__all__ = [
    "CROP_SOURCES",
    "Syllable",
    "TalkingHead",
    "articulation_tracks",
    "audio_at_16k",
    "clip_crops",
    "delay_audio",
    "make_scene_clip",
    "make_talking_head",
    "random_scene_plan",
    "render_frames",
    "speech_timeline",
    "synthesize_voice",
    "write_clip_folder",
    "write_synthetic_dataset",
]
