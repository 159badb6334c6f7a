"""Edited clips: several scenes joined by hard cuts, each with its own audio offset.

An edited video pastes together material from different sources, and each piece can come
with its own audio/video offset. Here each scene is a separate synthetic talking head (its
own speaker, voice, framing and background) whose audio is delayed within the scene
(silence padded where a late sound has not started yet, the tail trimmed at the cut),
so the truth is a constant offset per scene that changes exactly at each cut.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from lipsync_fix.data.synth.clips import TalkingHead, make_talking_head
from lipsync_fix.features.constants import FRAME_MS, SAMPLE_RATE

_BACKGROUNDS = ("noise", "plain", "photo")
"""Consecutive scenes cycle through these, so every cut changes the picture."""


def random_scene_plan(rng: np.random.Generator, scenes: int, shortest_s: float,
                      longest_s: float) -> tuple[list[float], list[float]]:
    """A scene clip's plan drawn at random, as the benchmark scripts make them: each
    scene's length (uniform between ``shortest_s`` and ``longest_s``, 10 ms steps) and its
    audio delay (a multiple of 10 ms within +-400 ms, at least two frames from the scene
    before, so that every cut is a step worth finding)."""
    lengths = [round(float(x), 2) for x in rng.uniform(shortest_s, longest_s, scenes)]
    delays = [float(rng.choice(np.arange(-400, 401, 10)))]
    while len(delays) < scenes:
        delay = float(rng.choice(np.arange(-400, 401, 10)))
        if abs(delay - delays[-1]) >= 2 * FRAME_MS:
            delays.append(delay)
    return lengths, delays


def make_scene_clip(
    seed: int,
    scene_seconds: Sequence[float],
    scene_delays_ms: Sequence[float],
    fps: float = 25.0,
    sample_rate: int = SAMPLE_RATE,
    size: tuple[int, int] = (256, 256),
) -> TalkingHead:
    """Join one talking head per scene, ``scene_seconds[k]`` long with its audio
    ``scene_delays_ms[k]`` late, by hard cuts.

    Every scene starts on a whole frame (its length is rounded to frames) and has exactly
    as many audio samples as its frames last, so the cuts are at the same instant in both
    streams. The result's ``scene_starts_s`` and ``scene_delays_ms`` hold the truth
    (:meth:`TalkingHead.true_delay_ms`); ``audio_delay_ms`` is the duration-weighted mean
    delay and ``syllables`` are in the joined clip's time.
    """
    if len(scene_seconds) != len(scene_delays_ms) or not scene_seconds:
        raise ValueError("give one delay per scene, and at least one scene")
    seeds = np.random.default_rng(seed).integers(0, 2**31, len(scene_seconds))
    scenes = [
        make_talking_head(int(s), duration_s=float(d), fps=fps, sample_rate=sample_rate,
                          audio_delay_ms=float(delay), size=size,
                          background=_BACKGROUNDS[k % len(_BACKGROUNDS)], flip=bool(k % 2))
        for k, (s, d, delay) in enumerate(zip(seeds, scene_seconds, scene_delays_ms,
                                              strict=True))
    ]
    starts = np.cumsum([0] + [len(c.frames) for c in scenes[:-1]]) / fps
    syllables = tuple(
        dataclasses.replace(syl, start=syl.start + t0, release=syl.release + t0,
                            vowel_start=syl.vowel_start + t0, end=syl.end + t0,
                            phrase=syl.phrase + 1000 * k)
        for k, (clip, t0) in enumerate(zip(scenes, starts, strict=True))
        for syl in clip.syllables
    )
    lengths = np.array([c.duration_s for c in scenes])
    delays = np.array([float(d) for d in scene_delays_ms])
    return TalkingHead(
        frames=np.concatenate([c.frames for c in scenes]),
        audio=np.concatenate([c.audio for c in scenes]),
        fps=fps,
        sample_rate=sample_rate,
        face_boxes=np.concatenate([c.face_boxes for c in scenes]),
        mouth_open=np.concatenate([c.mouth_open for c in scenes]),
        mouth_width=np.concatenate([c.mouth_width for c in scenes]),
        mouth_round=np.concatenate([c.mouth_round for c in scenes]),
        audio_delay_ms=float((lengths * delays).sum() / lengths.sum()),
        lip_lead_ms=0.0,
        syllables=syllables,
        scene_starts_s=tuple(float(t) for t in starts),
        scene_delays_ms=tuple(float(d) for d in delays),
    )
