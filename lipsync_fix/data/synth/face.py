"""The synthetic face: mouth articulation driven by the timeline, drawn on the astronaut photo.

The mouth follows the same timeline as the voice (bilabials close the lips, open vowels open
them wide, rounded vowels narrow them), so lip motion is predictable from the audio, as in
real speech. The face is :func:`skimage.data.astronaut` with its mouth replaced by a drawn
one, placed, moved, lit and coloured differently for every seed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import interpolate

from lipsync_fix.data.synth.speech import (
    CONSONANTS,
    REST_MOUTH,
    VOWELS,
    Syllable,
    phrases,
    smoothstep,
)
from lipsync_fix.faces import WAV2LIP_PADS

# ---------------------------------------------------------------------------------------------
# Articulation
# ---------------------------------------------------------------------------------------------


def _consonant_target(syllable: Syllable) -> tuple[float, float, float]:
    spec = CONSONANTS[syllable.consonant]
    vowel = VOWELS[syllable.vowel]
    width = vowel.width if spec.width is None else spec.width
    rounding = vowel.rounding if spec.rounding is None else spec.rounding
    opening = spec.opening + spec.coarticulation * vowel.opening * syllable.stress
    return opening, width, rounding


def _articulation_knots(
    syllables: Sequence[Syllable], duration_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Times and (opening, width, rounding) targets the mouth passes through.

    Bilabial closures contribute a closed knot at both ends so the interpolated lips stay shut
    for the whole closure; pauses contribute rest knots so the mouth is closed between phrases.
    """
    knots: list[tuple[float, tuple[float, float, float]]] = [(-1.0, REST_MOUTH)]
    for phrase in phrases(syllables):
        knots.append((phrase[0].start, REST_MOUTH))
        for syllable in phrase:
            vowel = VOWELS[syllable.vowel]
            if syllable.bilabial:
                closed = (0.0, 0.5 + 0.5 * vowel.width, 0.5 * vowel.rounding)
                knots += [(syllable.start, closed), (syllable.release, closed)]
            elif syllable.consonant:
                knots.append(
                    ((syllable.start + syllable.vowel_start) / 2, _consonant_target(syllable))
                )
            vowel_time = syllable.vowel_start + 0.45 * (syllable.end - syllable.vowel_start)
            opening = vowel.opening * (0.7 + 0.35 * syllable.stress)
            knots.append((vowel_time, (opening, vowel.width, vowel.rounding)))
        knots.append((phrase[-1].end + 0.06, REST_MOUTH))
    knots.append((max(duration_s, knots[-1][0]) + 1.0, REST_MOUTH))
    knots.sort(key=lambda knot: knot[0])
    times, values = [knots[0][0]], [knots[0][1]]
    for time, value in knots[1:]:
        if time - times[-1] > 1e-4:  # coinciding knots are both closed; keep one
            times.append(time)
            values.append(value)
    return np.array(times), np.array(values)


def articulation_tracks(
    syllables: Sequence[Syllable],
    n_frames: int,
    fps: float = 25.0,
    lip_lead_ms: float = 0.0,
) -> np.ndarray:
    """Mouth (opening, width, rounding) per video frame, shape ``(n_frames, 3)`` float32.

    Frame ``i`` shows the mouth at the centre of its audio window, ``(i + 0.5) / fps`` seconds,
    shifted by ``lip_lead_ms`` (lips lead the sound by a few tens of ms in real speech). Targets
    are joined by monotone cubic (PCHIP) interpolation: smooth like real articulators, with no
    overshoot, and exactly closed wherever a bilabial closure or pause covers the frame.
    Opening is 0 (closed) to 1 (wide /a/); width is relative to rest; rounding is 0..1.
    """
    duration_s = n_frames / fps
    times, values = _articulation_knots(syllables, duration_s)
    t = (np.arange(n_frames) + 0.5) / fps + lip_lead_ms / 1000.0
    tracks = interpolate.PchipInterpolator(times, values, axis=0)(t)
    tracks[:, 0] = np.clip(tracks[:, 0], 0.0, 1.0)
    return tracks.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Face
# ---------------------------------------------------------------------------------------------

# Geometry of the astronaut photograph (512x512), measured on the image.
_MOUTH_CENTRE = (224.0, 146.0)
"""Where the lips meet at the middle of the mouth (the smile spans x 203-245, y 139-153)."""
_ORIGINAL_MOUTH_AXES = (27, 11)
"""Half-axes of the ellipse that covers the photo's own smiling mouth, painted over as skin."""
_CHIN_Y = 177.0
"""Bottom of the chin at the face's centre line; the jaw moves the skin above it."""
_FACE_BOX = (170.0, 72.0, 110.0, 110.0)
"""S3FD-style face box (x, y, w, h): forehead to just below the chin, cheek to cheek."""
_PATCH = (168, 120, 280, 206)
"""Region (x0, y0, x1, y1) redrawn per frame: the mouth, the lips' reach and the jaw."""
_PERSON_OUTLINE = (
    (228, 15), (252, 17), (276, 29), (292, 47), (300, 70), (301, 92), (297, 112), (289, 124),
    (276, 131), (268, 140), (262, 150), (257, 158), (255, 172), (272, 185), (290, 200), (300, 215),
    (305, 230), (315, 237), (324, 241), (345, 260), (358, 288), (366, 340), (420, 345), (470, 360),
    (500, 390), (512, 430), (512, 512), (22, 512), (20, 440), (28, 360), (45, 290), (70, 245),
    (100, 216), (113, 200), (119, 184), (135, 168), (160, 155), (178, 150), (180, 136), (170, 126),
    (159, 106), (154, 84), (156, 64), (167, 44), (187, 30), (204, 21),
)  # fmt: skip
"""Outline of the astronaut (hair, face, collar ring, suit, helmet), traced on the photo."""


@dataclass(frozen=True)
class _MouthStyle:
    """Per-clip look of the drawn mouth, in photo pixels, so models see more than one mouth."""

    half_width: float
    max_opening: float
    upper_lip: float
    lower_lip: float
    lip_tint: tuple[float, float, float]
    teeth: float


@dataclass(frozen=True)
class _Look:
    """Per-clip placement, background and colour treatment of the face."""

    scale: float
    centre: tuple[float, float]
    flip: bool
    background: str
    gain: tuple[float, float, float]
    bias: float
    contrast: float
    gamma: float
    blur_sigma: float
    noise_sigma: float
    mouth: _MouthStyle


@functools.lru_cache(maxsize=1)
def _photo() -> np.ndarray:
    """The astronaut photo (RGB uint8) with its smiling mouth painted over with skin.

    The drawn mouth must be the only mouth in the picture, otherwise the smile's teeth would
    stay visible while the lips are meant to be closed.
    """
    from skimage import data

    photo = np.ascontiguousarray(data.astronaut())
    mask = np.zeros(photo.shape[:2], np.uint8)
    centre = (round(_MOUTH_CENTRE[0]), round(_MOUTH_CENTRE[1]) - 1)
    cv2.ellipse(mask, centre, _ORIGINAL_MOUTH_AXES, 0.0, 0.0, 360.0, 255, -1)
    painted = cv2.inpaint(photo, mask, 9, cv2.INPAINT_TELEA)
    # Inpainting leaves a flat smear; blend its edge and add skin-like grain to hide it.
    alpha = cv2.GaussianBlur(mask, (0, 0), 3.0).astype(np.float32)[..., None] / 255.0
    grain = np.random.default_rng(0).normal(0.0, 2.0, photo.shape).astype(np.float32)
    painted = painted.astype(np.float32) + alpha * grain
    return np.clip(photo * (1 - alpha) + painted * alpha, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def _person_alpha() -> np.ndarray:
    """Soft mask (float32, 1 = astronaut) used to swap the background."""
    mask = np.zeros((512, 512), np.uint8)
    cv2.fillPoly(mask, [np.array(_PERSON_OUTLINE, np.int32)], 255, cv2.LINE_AA)
    return cv2.GaussianBlur(mask, (0, 0), 2.0).astype(np.float32)[..., None] / 255.0


@functools.lru_cache(maxsize=1)
def _patch_grid() -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates of the mouth patch, the identity map that the jaw warp displaces."""
    x0, y0, x1, y1 = _PATCH
    xs, ys = np.arange(x1 - x0, dtype=np.float32), np.arange(y1 - y0, dtype=np.float32)
    grid_x, grid_y = np.meshgrid(xs, ys)
    return grid_x, grid_y


@functools.lru_cache(maxsize=1)
def _jaw_weight() -> np.ndarray:
    """How far each patch pixel moves with the jaw (1: fully, 0: not at all).

    Skin between the lower lip and the chin moves with the jaw. The moving region narrows
    from the mouth corners down to the chin, following the jaw line, and fades out just below
    the chin, so cheeks, neck and collar stay put (the chin slides over the neck).
    """
    x0, y0, x1, y1 = _PATCH
    xs = np.arange(x0, x1, dtype=np.float32) - _MOUTH_CENTRE[0]
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    jaw_half_width = np.interp(ys, [_MOUTH_CENTRE[1], _CHIN_Y], [44.0, 30.0])
    across = smoothstep((jaw_half_width - np.abs(xs)[None, :]) / 14.0)
    down = smoothstep((ys - (_MOUTH_CENTRE[1] - 4.0)) / 6.0) * smoothstep(
        (_CHIN_Y + 14.0 - ys) / 12.0
    )
    return (down * across).astype(np.float32)


def _draw_mouth_style(rng: np.random.Generator) -> _MouthStyle:
    tint = np.array([0.86, 0.60, 0.64]) * rng.uniform(0.92, 1.05, 3)
    return _MouthStyle(
        half_width=19.0 * rng.uniform(0.92, 1.08),
        max_opening=15.0 * rng.uniform(0.85, 1.15),
        upper_lip=3.6 * rng.uniform(0.8, 1.25),
        lower_lip=4.6 * rng.uniform(0.8, 1.25),
        lip_tint=(float(tint[0]), float(tint[1]), float(tint[2])),
        teeth=rng.uniform(0.5, 1.0),
    )


def _centre_coordinate(
    rng: np.random.Generator,
    extent: int,
    half_box: float,
    margin: float,
    reach: tuple[float, float],
) -> float:
    """Draw the face centre along one axis of the frame.

    The face box (plus ``margin`` for head motion) must stay inside the frame, and if possible
    the photo must still cover the frame: ``reach`` is how far the photo extends before and
    after the face centre, in frame pixels. Beyond the photo's edge only smeared border pixels
    could be shown.
    """
    low, high = half_box + margin, extent - half_box - margin
    covered_low, covered_high = max(low, extent - reach[1]), min(high, reach[0])
    if covered_high > covered_low:
        low, high = covered_low, covered_high
    return float(rng.uniform(low, high)) if high > low else extent / 2


def _draw_look(
    rng: np.random.Generator,
    size: tuple[int, int],
    background: str | None,
    flip: bool | None,
) -> _Look:
    """Random framing and colour for one clip; the face box stays inside the frame."""
    width, height = size
    box_side = rng.uniform(0.47, 0.7) * min(width, height)
    scale = box_side / _FACE_BOX[2]
    margin = 0.06 * box_side
    photo_h, photo_w = _photo().shape[:2]
    anchor_x, anchor_y = _FACE_BOX[0] + _FACE_BOX[2] / 2, _FACE_BOX[1] + _FACE_BOX[3] / 2
    # 10 % spare for head motion; the nearer photo edge either side, since the face may flip.
    side_reach = 0.9 * scale * min(anchor_x, photo_w - anchor_x)
    # The crop extends WAV2LIP_PADS[1] below the box, so the frame is that much shorter for it.
    vertical_reach = (
        0.9 * scale * anchor_y,
        0.9 * scale * (photo_h - anchor_y) - WAV2LIP_PADS[1],
    )
    centre_x = _centre_coordinate(rng, width, box_side / 2, margin, (side_reach, side_reach))
    centre_y = _centre_coordinate(
        rng, height - WAV2LIP_PADS[1], box_side / 2, margin, vertical_reach
    )
    centre = (centre_x, centre_y)
    return _Look(
        scale=scale,
        centre=centre,
        flip=bool(rng.random() < 0.5) if flip is None else flip,
        background=background or str(rng.choice(["photo", "photo", "plain", "noise"])),
        gain=tuple(float(g) for g in rng.uniform(0.9, 1.1, 3)),
        bias=rng.uniform(-20.0, 20.0),
        contrast=rng.uniform(0.75, 1.2),
        gamma=rng.uniform(0.8, 1.25),
        blur_sigma=rng.uniform(0.0, 1.0) if rng.random() < 0.5 else 0.0,
        noise_sigma=rng.uniform(0.0, 4.0),
        mouth=_draw_mouth_style(rng),
    )


def _background(rng: np.random.Generator, kind: str) -> np.ndarray:
    """A 512x512 RGB float32 backdrop: a plain gradient or smooth coloured noise."""
    if kind == "plain":
        top, bottom = rng.uniform(30, 230, 3), rng.uniform(30, 230, 3)
        ramp = np.linspace(0.0, 1.0, 512, dtype=np.float32)[:, None, None]
        return np.broadcast_to(top + (bottom - top) * ramp, (512, 512, 3)).astype(np.float32)
    if kind == "noise":
        coarse = rng.uniform(20, 235, (int(rng.integers(3, 12)),) * 2 + (3,)).astype(np.float32)
        smooth = cv2.resize(coarse, (512, 512), interpolation=cv2.INTER_CUBIC)
        return smooth + rng.normal(0.0, 6.0, (512, 512, 3)).astype(np.float32)
    raise ValueError(f"Unknown background {kind!r}; use 'photo', 'plain' or 'noise'.")


def _canvas(rng: np.random.Generator, kind: str) -> np.ndarray:
    """The mouthless photo with the clip's background behind the astronaut."""
    photo = _photo()
    if kind == "photo":
        return photo.copy()
    alpha = _person_alpha()
    mixed = photo * alpha + _background(rng, kind) * (1.0 - alpha)
    return np.clip(mixed, 0, 255).astype(np.uint8)


def _lip_curves(
    opening: float, width: float, rounding: float, style: _MouthStyle
) -> dict[str, np.ndarray]:
    """Outlines (patch pixel coordinates) of lips, opening, teeth and tongue for one frame.

    The lower lip carries three quarters of the opening because the jaw does most of the work.
    Spread mouths open as a lens with pointed corners, rounded ones as an ellipse; pursed lips
    protrude (look thicker) and stretched, open lips thin out.
    """
    cx = _MOUTH_CENTRE[0] - _PATCH[0]
    cy = _MOUTH_CENTRE[1] - _PATCH[1]
    half = style.half_width * width
    gap = style.max_opening * opening
    up, down = 0.25 * gap, 0.75 * gap

    def inner(u: np.ndarray) -> np.ndarray:
        return np.clip(1.0 - u * u, 0.0, 1.0) ** (0.5 + 0.4 * (1.0 - rounding))

    u = np.linspace(-1.0, 1.0, 41)
    x = cx + half * u
    taper = np.clip(1.0 - u * u, 0.0, 1.0)
    thickness = (1.0 + 0.35 * rounding) * (1.0 - 0.2 * opening)
    cupid_bow = (
        1.0 + 0.3 * np.exp(-(((np.abs(u) - 0.3) / 0.15) ** 2)) - 0.25 * np.exp(-((u / 0.1) ** 2))
    )
    upper_inner = cy - up * inner(u)
    lower_inner = cy + down * inner(u)
    upper_outer = upper_inner - style.upper_lip * thickness * taper**0.45 * cupid_bow
    lower_outer = lower_inner + style.lower_lip * thickness * taper**0.5
    lower_mid = lower_inner + 0.5 * (lower_outer - lower_inner)
    ut = np.linspace(-0.75, 0.75, 25)
    teeth_top = cy - up * inner(ut) - 1.0  # tucked under the upper lip
    # The incisors' biting edge is a gentle arc below the highest point of the opening.
    teeth_edge = cy - up + 1.0 + min(0.35 * gap, 3.5) * style.teeth * inner(ut / 0.75) ** 0.5
    teeth_bottom = np.maximum(teeth_edge, teeth_top)
    angle = np.linspace(0.0, 2.0 * np.pi, 25)
    tongue = np.stack(
        [cx + 0.55 * half * np.cos(angle), cy + down * (0.95 + 0.45 * np.sin(angle))], 1
    )

    def band(xs: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
        return np.stack([np.r_[xs, xs[::-1]], np.r_[top, bottom[::-1]]], 1)

    seam_x = cx + (half + 1.5) * u
    return {
        "upper_lip": band(x, upper_outer, upper_inner),
        "lower_lip": band(x, lower_inner, lower_outer),
        "lip_highlight": band(x[10:31], lower_mid[10:31] - 0.8, lower_mid[10:31] + 0.8),
        "cavity": band(x, upper_inner, lower_inner),
        "teeth": band(cx + half * ut, teeth_top, teeth_bottom),
        "tongue": tongue,
        "seam": np.stack([seam_x, upper_inner], 1),
    }


_SHIFT = 4
"""Sub-pixel bits for OpenCV drawing: outlines move smoothly, not in whole-pixel steps."""

_CAVITY_RGB = np.array([52.0, 18.0, 24.0], np.float32)
_TEETH_RGB = np.array([222.0, 214.0, 198.0], np.float32)
_TONGUE_RGB = np.array([135.0, 55.0, 62.0], np.float32)


def _fill(shape: tuple[int, int], polygon: np.ndarray, blur: float = 0.0) -> np.ndarray:
    """Anti-aliased coverage (float32, HxWx1) of a polygon, optionally softened."""
    mask = np.zeros(shape, np.uint8)
    points = np.round(polygon * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(mask, [points], 255, cv2.LINE_AA, _SHIFT)
    coverage = mask.astype(np.float32) / 255.0
    if blur > 0:
        coverage = cv2.GaussianBlur(coverage, (0, 0), blur)
    return coverage[..., None]


def _blend(image: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return image + (colour - image) * alpha


def _render_mouth(patch: np.ndarray, mouth: np.ndarray, style: _MouthStyle) -> np.ndarray:
    """Draw lips, mouth opening, teeth and tongue into a copy of the photo's mouth patch.

    The jaw first drags the skin below the mouth down with the lower lip. The lips are the
    underlying skin tinted lip-red, so they keep the photo's lighting and grain; the upper lip
    is shaded (it faces down), the lower lip carries a highlight.
    """
    opening, width, rounding = (float(v) for v in mouth)
    drop = 0.75 * style.max_opening * opening
    h, w = patch.shape[:2]
    grid_x, grid_y = _patch_grid()
    moved = cv2.remap(
        patch,
        grid_x,
        grid_y - drop * _jaw_weight(),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    ).astype(np.float32)
    curves = _lip_curves(opening, width, rounding, style)
    tint = np.array(style.lip_tint, np.float32)
    out = _blend(moved, moved * tint * 0.8, _fill((h, w), curves["upper_lip"], 0.8))
    out = _blend(out, moved * tint, _fill((h, w), curves["lower_lip"], 0.8))
    out = _blend(out, np.minimum(out * 1.12, 255.0), _fill((h, w), curves["lip_highlight"], 1.0))
    if opening > 0.02:
        cavity = _fill((h, w), curves["cavity"], 0.4)
        out = _blend(out, _CAVITY_RGB, cavity)
        out = _blend(out, _TONGUE_RGB, _fill((h, w), curves["tongue"], 1.5) * cavity * 0.6)
        out = _blend(out, _TEETH_RGB, _fill((h, w), curves["teeth"], 0.5) * cavity)
    seam = np.zeros((h, w), np.uint8)
    points = np.round(curves["seam"] * (1 << _SHIFT)).astype(np.int32)
    cv2.polylines(seam, [points], False, 255, 1, cv2.LINE_AA, _SHIFT)
    out = _blend(out, out * 0.35, 0.6 * seam.astype(np.float32)[..., None] / 255.0)
    return np.clip(out, 0, 255).astype(np.uint8)


def _head_motion(rng: np.random.Generator, n: int, fps: float, amount: float) -> np.ndarray:
    """Per-frame (dx, dy, rotation, log-scale) of the head: slow sway plus tiny jitter.

    Translations are in face-box widths, rotation in degrees. Each component is a sum of three
    slow sinusoids (0.05-0.8 Hz) so motion is smooth, never a random walk that wanders off.
    """
    t = np.arange(n) / fps
    limits = np.array([0.03, 0.025, 3.0, 0.02]) * amount
    motion = np.zeros((n, 4))
    for k, limit in enumerate(limits):
        for _ in range(3):
            frequency = rng.uniform(0.05, 0.8)
            motion[:, k] += np.sin(2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi)) / 3
        motion[:, k] = limit * (motion[:, k] + 0.08 * rng.standard_normal(n))
    return motion


def _frame_affine(look: _Look, motion: np.ndarray) -> tuple[np.ndarray, float]:
    """Photo-to-frame affine matrix for one frame, and the scale it applies."""
    dx, dy, angle, log_scale = motion
    scale = look.scale * float(np.exp(log_scale))
    box_x, box_y, box_w, box_h = _FACE_BOX
    anchor = (box_x + box_w / 2, box_y + box_h / 2)
    affine = cv2.getRotationMatrix2D(anchor, float(angle), scale)
    if look.flip:  # mirror the photo about the face's vertical centre line first
        affine[:, 2] += 2.0 * anchor[0] * affine[:, 0]
        affine[:, 0] *= -1.0
    side = look.scale * box_w
    target = (look.centre[0] + dx * side, look.centre[1] + dy * side)
    affine[:, 2] += np.array(target) - anchor
    return affine, scale


def _colour_lut(look: _Look, flicker: float) -> np.ndarray:
    """Per-channel lookup table: gamma, contrast, brightness, white balance, flicker."""
    levels = (np.arange(256) / 255.0) ** look.gamma * 255.0
    levels = (levels - 128.0) * look.contrast + 128.0 + look.bias
    lut = np.stack([levels * g * flicker for g in look.gain], axis=-1)
    return np.clip(lut, 0, 255).astype(np.uint8).reshape(1, 256, 3)


def render_frames(
    rng: np.random.Generator,
    tracks: np.ndarray,
    fps: float = 25.0,
    size: tuple[int, int] = (256, 256),
    background: str | None = None,
    flip: bool | None = None,
    head_motion: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Render the talking face for mouth ``tracks`` (from :func:`articulation_tracks`).

    ``size`` is (width, height). The face box takes 47-70 % of the shorter side (at 256x256 the
    face is over 100 px wide, enough for a Haar detector), with a random position, a slow head
    sway scaled by ``head_motion`` (0 for a still head), colour/brightness/contrast jitter, mild
    blur and sensor noise. ``background`` is ``"photo"``, ``"plain"``, ``"noise"`` or None
    (random); ``flip`` mirrors the face (None: random).

    Returns RGB frames ``(N, height, width, 3)`` uint8 and face boxes ``(N, 4)`` int32 as
    (x, y, w, h) in frame pixels: the S3FD-style box around the moving face.
    """
    width, height = size
    look = _draw_look(rng, size, background, flip)
    canvas = _canvas(rng, look.background)
    motion = _head_motion(rng, len(tracks), fps, head_motion)
    flicker = 1.0 + 0.01 * rng.standard_normal(len(tracks))
    noise = [rng.normal(0.0, look.noise_sigma, (height, width, 3)) for _ in range(3)]
    noise_pairs = [
        (np.clip(z, 0, 255).astype(np.uint8), np.clip(-z, 0, 255).astype(np.uint8)) for z in noise
    ]
    x0, y0, x1, y1 = _PATCH
    base_patch = canvas[y0:y1, x0:x1].copy()
    frames = np.empty((len(tracks), height, width, 3), np.uint8)
    boxes = np.empty((len(tracks), 4), np.int32)
    box_x, box_y, box_w, box_h = _FACE_BOX
    anchor = np.array([box_x + box_w / 2, box_y + box_h / 2, 1.0])
    for i, mouth in enumerate(tracks):
        canvas[y0:y1, x0:x1] = _render_mouth(base_patch, mouth, look.mouth)
        affine, scale = _frame_affine(look, motion[i])
        frame = cv2.warpAffine(
            canvas,
            affine,
            (width, height),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        frame = cv2.LUT(frame, _colour_lut(look, float(flicker[i])))
        if look.blur_sigma > 0:
            frame = cv2.GaussianBlur(frame, (0, 0), look.blur_sigma)
        positive, negative = noise_pairs[int(rng.integers(len(noise_pairs)))]
        frames[i] = cv2.subtract(cv2.add(frame, positive), negative)
        centre_x, centre_y = affine @ anchor
        box_width, box_height = scale * box_w, scale * box_h
        boxes[i] = np.round(
            [centre_x - box_width / 2, centre_y - box_height / 2, box_width, box_height]
        )
    return frames, boxes
