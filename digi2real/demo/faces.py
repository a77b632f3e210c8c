"""Procedural DigiFace-like and FFHQ-like faces, where their landmarks and boxes fall, and the
demo's image folders (build_demo_data).

Faces are drawn with their features at the ArcFace template's proportions, so the tiny detector
in onnx_models, which reports keypoints at the same proportions, aligns them onto the template.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

_RGB = tuple[int, int, int]

# insightface's ArcFace alignment template: where norm_crop puts the eyes, nose and mouth.
ARCFACE_TEMPLATE = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)
# The face ellipse's bounding box in template coordinates. Faces are drawn with their features
# at the template's proportions inside this box and the detector reports keypoints at the same
# proportions of its box, so an aligned crop of a demo face matches the template.
_TEMPLATE_FACE_BOX = (16.0, 14.0, 96.0, 114.0)
KEYPOINT_FRACTIONS = tuple(
    (
        (x - _TEMPLATE_FACE_BOX[0]) / (_TEMPLATE_FACE_BOX[2] - _TEMPLATE_FACE_BOX[0]),
        (y - _TEMPLATE_FACE_BOX[1]) / (_TEMPLATE_FACE_BOX[3] - _TEMPLATE_FACE_BOX[1]),
    )
    for x, y in ARCFACE_TEMPLATE
)

# Seed streams keep DigiFace identities, their per-image variation and FFHQ faces independent
# (MODEL_STREAM seeds the ONNX recognizer's projection, in onnx_models).
_IDENTITY_STREAM, _SHOT_STREAM, _FFHQ_STREAM, MODEL_STREAM, _REAL_STREAM = 11, 12, 13, 14, 15
_SUPERSAMPLE = 2  # PIL draws aliased shapes: draw large, then downsample

# Skin is what the tiny detector looks for: red well above blue. Everything else (hair,
# backgrounds, clothes, hats) keeps red minus blue small so the detector ignores it.
_SKIN_TONES: tuple[_RGB, ...] = (
    (245, 205, 170),
    (236, 192, 160),
    (224, 172, 130),
    (210, 160, 120),
    (198, 134, 90),
    (170, 112, 75),
    (141, 90, 60),
    (112, 70, 40),
)
_FFHQ_SKIN_TONES: tuple[_RGB, ...] = (
    (232, 196, 168),
    (222, 180, 150),
    (205, 158, 128),
    (186, 136, 104),
    (160, 112, 84),
    (128, 88, 62),
)
_HAIR: tuple[_RGB, ...] = (
    (28, 24, 24),
    (54, 44, 42),
    (96, 90, 88),
    (140, 138, 138),
    (212, 210, 210),
    (44, 36, 36),
)
_EYES: tuple[_RGB, ...] = (
    (70, 45, 30),
    (60, 100, 150),
    (70, 110, 80),
    (110, 110, 115),
    (100, 80, 50),
)
_BACKGROUNDS: tuple[_RGB, ...] = (
    (70, 100, 160),
    (120, 125, 135),
    (80, 130, 100),
    (40, 60, 90),
    (170, 180, 195),
    (100, 150, 150),
    (60, 70, 70),
)
_CLOTHES: tuple[_RGB, ...] = (
    (30, 40, 70),
    (60, 60, 65),
    (40, 80, 60),
    (90, 100, 130),
    (20, 20, 25),
)
_HAT: tuple[_RGB, ...] = ((25, 30, 60), (50, 50, 55), (30, 70, 50), (120, 120, 130))
_GLASSES: tuple[_RGB, ...] = ((20, 20, 20), (50, 50, 60), (90, 90, 100))


@dataclass(frozen=True)
class _Identity:
    skin: _RGB
    half_width: float  # face ellipse half-width, in units of a 112-pixel frame
    aspect: float  # face ellipse height / width
    eye: _RGB
    hair: _RGB
    hair_style: int  # 0 short, 1 long, 2 buzz, 3 fringe
    hairline: float  # how far down the forehead the hair comes, as a template-box fraction
    eye_size: float
    brow: float
    nose_length: float
    nose_width: float
    mouth_width: float
    lip: _RGB


@dataclass(frozen=True)
class _Shot:
    angle: float  # degrees
    shift: tuple[float, float]  # pixels of a 112-pixel frame
    scale: float
    smile: float  # mouth curvature, negative frowns
    mouth_open: float
    eye_open: float
    light_angle: float
    light_strength: float
    background: tuple[_RGB, _RGB]  # top, bottom
    glasses: _RGB | None
    hat: _RGB | None
    clothes: _RGB


def _jitter(rng: np.random.Generator, colour: _RGB, amount: int) -> _RGB:
    r, g, b = (
        int(v) for v in np.clip(np.add(colour, rng.integers(-amount, amount + 1, 3)), 0, 255)
    )
    return (r, g, b)


def _shade(colour: _RGB, factor: float) -> _RGB:
    r, g, b = (int(min(255.0, c * factor)) for c in colour)
    return (r, g, b)


def _skin_like(colour: _RGB, margin: int = 70) -> _RGB:
    """Force red > green > blue with red - blue >= margin: the detector's notion of skin."""
    r, g, b = colour
    b = min(b, r - margin)
    g = min(max(g, b + 8), r - 8)
    return (r, g, b)


def _pick(rng: np.random.Generator, palette: tuple[_RGB, ...]) -> _RGB:
    return palette[int(rng.integers(len(palette)))]


def _identity(identity: int, seed: int, stream: int, tones: tuple[_RGB, ...]) -> _Identity:
    rng = np.random.default_rng([seed, stream, identity])
    skin = _skin_like(_jitter(rng, _pick(rng, tones), 6))
    lip = _skin_like((min(255, skin[0] - 10), int(skin[1] * 0.62), int(skin[2] * 0.62)), margin=80)
    return _Identity(
        skin=skin,
        half_width=float(rng.uniform(34.0, 38.0)),
        aspect=float(rng.uniform(1.2, 1.32)),
        eye=_jitter(rng, _pick(rng, _EYES), 10),
        hair=_jitter(rng, _pick(rng, _HAIR), 4),
        hair_style=int(rng.integers(4)),
        hairline=float(rng.uniform(0.17, 0.23)),
        eye_size=float(rng.uniform(0.85, 1.2)),
        brow=float(rng.uniform(0.6, 1.4)),
        nose_length=float(rng.uniform(0.8, 1.2)),
        nose_width=float(rng.uniform(0.8, 1.3)),
        mouth_width=float(rng.uniform(0.8, 1.1)),
        lip=lip,
    )


def _shot(identity: int, image_index: int, seed: int, stream: int) -> _Shot:
    rng = np.random.default_rng([seed, stream, identity, image_index])
    top = _jitter(rng, _pick(rng, _BACKGROUNDS), 12)
    bottom = _jitter(rng, _pick(rng, _BACKGROUNDS), 12)
    return _Shot(
        angle=float(rng.uniform(-8.0, 8.0)),
        shift=(float(rng.uniform(-3.0, 3.0)), float(rng.uniform(-3.0, 3.0))),
        scale=float(rng.uniform(0.94, 1.04)),
        smile=float(rng.uniform(-0.3, 1.0)),
        mouth_open=float(max(0.0, rng.uniform(-0.6, 1.0))),
        eye_open=float(rng.uniform(0.4, 1.0)),
        light_angle=float(rng.uniform(0.0, 2 * math.pi)),
        light_strength=float(rng.uniform(0.0, 0.18)),
        background=(_not_skin(top), _not_skin(bottom)),
        glasses=_pick(rng, _GLASSES) if rng.random() < 0.3 else None,
        hat=_pick(rng, _HAT) if rng.random() < 0.2 else None,
        clothes=_jitter(rng, _pick(rng, _CLOTHES), 10),
    )


def _not_skin(colour: _RGB) -> _RGB:
    r, g, b = colour
    return (min(r, b), g, b)


@dataclass(frozen=True)
class _Placement:
    """Where the face ellipse sits in the output frame, before pose."""

    size: int  # output frame side, pixels
    centre: tuple[float, float]  # pixels
    unit: float  # pixels per unit of a 112-pixel face frame


def _face_geometry(person: _Identity, shot: _Shot, place: _Placement) -> tuple[float, ...]:
    """(cx, cy, a, b) of the face ellipse after pose, in output pixels (rotation ignored)."""
    a = person.half_width * place.unit * shot.scale
    b = a * person.aspect
    cx = place.centre[0] + shot.shift[0] * place.unit
    cy = place.centre[1] + shot.shift[1] * place.unit
    return cx, cy, a, b


def _render(
    person: _Identity,
    shot: _Shot,
    place: _Placement,
    texture: np.random.Generator | None = None,
) -> Image.Image:
    """The face drawn over its scene; with a `texture` generator, in FFHQ's softer style."""
    k = _SUPERSAMPLE
    side = place.size * k
    a = person.half_width * place.unit * k
    b = a * person.aspect
    cx, cy = place.centre[0] * k, place.centre[1] * k

    def at(fx: float, fy: float) -> tuple[float, float]:
        return cx - a + 2 * a * fx, cy - b + 2 * b * fy

    def box(x: float, y: float, rx: float, ry: float) -> tuple[float, float, float, float]:
        return (x - rx, y - ry, x + rx, y + ry)

    layer = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    skin, hair = person.skin, person.hair

    # Clothes and neck first: the head overlaps them.
    neck_top = cy + 0.55 * b
    shoulder = cy + 1.3 * b
    draw.polygon(
        [
            (cx - 2.2 * a, side + k),
            (cx - 1.0 * a, shoulder),
            (cx + 1.0 * a, shoulder),
            (cx + 2.2 * a, side + k),
        ],
        fill=shot.clothes,
    )
    draw.rectangle(
        (cx - 0.48 * a, neck_top, cx + 0.48 * a, shoulder + 0.05 * b), fill=_shade(skin, 0.86)
    )
    if person.hair_style == 1:  # long hair falls behind the shoulders
        draw.rounded_rectangle(
            (cx - 1.18 * a, cy - 0.6 * b, cx + 1.18 * a, cy + 1.05 * b), radius=0.5 * a, fill=hair
        )
    if person.hair_style in (0, 1, 3):
        draw.ellipse(box(cx, cy - 0.22 * b, 1.1 * a, 0.86 * b), fill=hair)
    for side_sign in (-1, 1):
        ear_x, ear_y = cx + side_sign * 0.97 * a, at(0.5, 0.47)[1]
        draw.ellipse(box(ear_x, ear_y, 0.15 * a, 0.2 * b), fill=_shade(skin, 0.93))
    draw.ellipse(box(cx, cy, a, b), fill=skin)

    # Hair over the forehead: its lower edge is the hairline.
    hairline_y = cy - b + 2 * b * person.hairline
    if person.hair_style == 2:
        hairline_y = cy - b + 2 * b * (person.hairline - 0.06)
    cap_height = 0.55 * b
    draw.chord(
        (cx - 1.04 * a, hairline_y - 2 * cap_height, cx + 1.04 * a, hairline_y),
        0,
        360,
        fill=hair,
    )
    if person.hair_style == 3:  # fringe: a band down towards the brows
        fringe = at(0.5, 0.27)[1]
        draw.chord((cx - 0.9 * a, hairline_y - cap_height, cx + 0.9 * a, fringe), 0, 180, fill=hair)
    if shot.hat is not None:
        brim = cy - b + 2 * b * 0.16
        draw.ellipse(box(cx, brim - 0.55 * b, 1.08 * a, 0.62 * b), fill=shot.hat)
        draw.rectangle(
            (cx - 1.2 * a, brim - 0.12 * b, cx + 1.2 * a, brim + 0.02 * b),
            fill=_shade(shot.hat, 0.8),
        )

    # Eyes, brows, nose and mouth at the template's proportions of the face box.
    eye_rx = 0.17 * a * person.eye_size
    eye_ry = max(0.02 * b, 0.085 * b * person.eye_size * shot.eye_open)
    for fx, fy in KEYPOINT_FRACTIONS[:2]:
        ex, ey = at(fx, fy)
        draw.ellipse(box(ex, ey, eye_rx, eye_ry), fill=(236, 236, 232))
        iris = min(eye_ry, 0.5 * eye_rx)
        draw.ellipse(box(ex, ey, iris, iris), fill=person.eye)
        draw.ellipse(box(ex, ey, 0.45 * iris, 0.45 * iris), fill=(15, 15, 15))
        draw.arc(
            box(ex, ey, eye_rx, eye_ry),
            180,
            360,
            fill=_shade(skin, 0.45),
            width=max(1, int(0.015 * a)),
        )
        brow_y = ey - 0.11 * b - eye_ry * 0.5
        draw.line(
            [
                (ex - 1.1 * eye_rx, brow_y + 0.02 * b),
                (ex, brow_y - 0.015 * b),
                (ex + 1.1 * eye_rx, brow_y + 0.01 * b),
            ],
            fill=_shade(hair, 0.9),
            width=max(1, int(0.05 * a * person.brow)),
            joint="curve",
        )

    nose_x, nose_y = at(*KEYPOINT_FRACTIONS[2])
    bridge_top = nose_y - 0.22 * b * person.nose_length
    nose_rx = 0.13 * a * person.nose_width
    draw.polygon(
        [
            (nose_x - 0.02 * a, bridge_top),
            (nose_x - nose_rx, nose_y + 0.02 * b),
            (nose_x + nose_rx, nose_y + 0.02 * b),
            (nose_x + 0.02 * a, bridge_top),
        ],
        fill=_shade(skin, 0.9),
    )
    for side_sign in (-1, 1):
        draw.ellipse(
            box(
                nose_x + side_sign * 0.5 * nose_rx,
                nose_y + 0.01 * b,
                0.25 * nose_rx,
                0.12 * nose_rx,
            ),
            fill=_shade(skin, 0.55),
        )

    (lx, ly), (rx, ry) = (at(*f) for f in KEYPOINT_FRACTIONS[3:])
    mid_x, mid_y = (lx + rx) / 2, (ly + ry) / 2
    half = (rx - lx) / 2 * person.mouth_width
    bend = 0.07 * b * shot.smile
    opening = 0.06 * b * shot.mouth_open
    upper = [
        (mid_x + half * t, mid_y + bend * (1 - t * t) - opening * (1 - t * t))
        for t in np.linspace(-1, 1, 15)
    ]
    lower = [
        (mid_x + half * t, mid_y + bend * (1 - t * t) + (opening + 0.035 * b) * (1 - t * t))
        for t in np.linspace(1, -1, 15)
    ]
    draw.polygon(upper + lower, fill=person.lip)
    if opening > 0.01 * b:
        inner = [(x, y + 0.012 * b) for x, y in upper[2:-2]] + [
            (x, y - 0.03 * b) for x, y in lower[2:-2]
        ]
        draw.polygon(inner, fill=(60, 25, 30))

    if shot.glasses is not None:
        width = max(1, int(0.035 * a))
        for fx, fy in KEYPOINT_FRACTIONS[:2]:
            ex, ey = at(fx, fy)
            draw.rounded_rectangle(
                box(ex, ey, 1.55 * eye_rx, 0.13 * b),
                radius=0.06 * b,
                outline=shot.glasses,
                width=width,
            )
        (l_x, l_y), (r_x, r_y) = at(*KEYPOINT_FRACTIONS[0]), at(*KEYPOINT_FRACTIONS[1])
        draw.line(
            [(l_x + 1.55 * eye_rx, l_y), (r_x - 1.55 * eye_rx, r_y)], fill=shot.glasses, width=width
        )

    # Pose: rotate and scale about the face centre, then shift.
    theta = math.radians(shot.angle)
    dx, dy = shot.shift[0] * place.unit * k, shot.shift[1] * place.unit * k
    cos, sin = math.cos(theta) / shot.scale, math.sin(theta) / shot.scale
    # Image.transform wants the output-to-input map.
    ox, oy = cx + dx, cy + dy
    layer = layer.transform(
        layer.size,
        Image.Transform.AFFINE,
        (cos, -sin, cx - cos * ox + sin * oy, sin, cos, cy - sin * ox - cos * oy),
        resample=Image.Resampling.BILINEAR,
    )

    canvas = _background(shot, side, texture)
    canvas.alpha_composite(layer)
    image = canvas.convert("RGB").resize((place.size, place.size), Image.Resampling.LANCZOS)

    pixels = np.asarray(image, dtype=np.float32)
    ys, xs = np.mgrid[0 : place.size, 0 : place.size].astype(np.float32)
    half_side = place.size / 2
    along = (xs - half_side) * math.cos(shot.light_angle) + (ys - half_side) * math.sin(
        shot.light_angle
    )
    light = 1 + shot.light_strength * along / half_side
    pixels = pixels * np.clip(light, 0.8, 1.2)[..., None]
    if texture is not None:
        fcx, fcy, fa, fb = _face_geometry(person, shot, place)
        radius = ((xs - fcx) / fa) ** 2 + ((ys - fcy) / fb) ** 2
        pixels = pixels * (1.0 - 0.14 * np.clip(radius, 0.0, 1.3))[..., None]
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        image = image.filter(ImageFilter.GaussianBlur(0.7))
        pixels = np.asarray(image, dtype=np.float32)
        pixels = pixels + texture.normal(0.0, 3.0, size=pixels.shape)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def _background(shot: _Shot, side: int, texture: np.random.Generator | None) -> Image.Image:
    top, bottom = (np.asarray(c, dtype=np.float32) for c in shot.background)
    t = np.linspace(0.0, 1.0, side, dtype=np.float32)[:, None, None]
    pixels = np.broadcast_to(top + (bottom - top) * t, (side, side, 3)).copy()
    if texture is not None:
        # Out-of-focus clutter: a coarse random grid of non-skin colours, smoothly upsampled.
        coarse = texture.uniform(-35.0, 35.0, size=(4, 4, 3)).astype(np.float32)
        coarse[..., 0] = np.minimum(coarse[..., 0], coarse[..., 2])
        blobs = Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize(
            (side, side), Image.Resampling.BICUBIC
        )
        pixels = pixels + np.asarray(blobs, dtype=np.float32) - 128
        pixels[..., 0] = np.minimum(pixels[..., 0], pixels[..., 2] + 5)
    rgb = np.clip(pixels, 0, 255).astype(np.uint8)
    alpha = np.full((side, side, 1), 255, dtype=np.uint8)
    return Image.fromarray(np.concatenate([rgb, alpha], axis=2))


# Planted for the evaluation to find (digi2real.evaluation; demo.yaml's thresholds): identity
# PLANTED_TWIN[1] is PLANTED_TWIN[0] again, the same face in the same scenes a pixel apart, and
# identity PLANTED_LEAK is a real face: FFHQ-like image PLANTED_LEAK_FFHQ shows the same person,
# and its DigiFace-like images vary only its pose, so its prototype is that face. The demo's
# recognizer does not tell its drawn identities apart (any two prototypes can be 0.95 alike),
# so only a near-copy stands out, at 0.99.
PLANTED_TWIN = (6, 7)
PLANTED_LEAK = 5
PLANTED_LEAK_FFHQ = 23


def _digiface_parts(
    identity: int, image_index: int, size: int, seed: int
) -> tuple[_Identity, _Shot, _Placement]:
    unit = size / 112
    place = _Placement(size, (56.0 * unit, 60.0 * unit), unit)
    if identity == PLANTED_TWIN[1]:
        person, shot, _ = _digiface_parts(PLANTED_TWIN[0], image_index, size, seed)
        return person, replace(shot, shift=(shot.shift[0] + 1.0, shot.shift[1])), place
    person = _identity(identity, seed, _IDENTITY_STREAM, _SKIN_TONES)
    shot = _shot(identity, image_index, seed, _SHOT_STREAM)
    if identity == PLANTED_LEAK:
        scene = _shot(identity, 0, seed, _SHOT_STREAM)
        shot = replace(scene, angle=shot.angle / 4, shift=(shot.shift[0] / 3, shot.shift[1] / 3))
    return person, shot, place


def _ffhq_parts(index: int, size: int, seed: int) -> tuple[_Identity, _Shot, _Placement]:
    person = _identity(index, seed, _FFHQ_STREAM, _FFHQ_SKIN_TONES)
    shot = _shot(index, 0, seed, _FFHQ_STREAM)
    if index == PLANTED_LEAK_FFHQ:  # the real face behind DigiFace-like identity PLANTED_LEAK
        return _digiface_parts(PLANTED_LEAK, 0, size, seed)
    # FFHQ crops are looser than DigiFace's: the face ellipse spans about 55% of the width.
    unit = size / 112 * 0.82
    return person, shot, _Placement(size, (size / 2, size / 2 + 2 * unit), unit)


def draw_face(identity: int, image_index: int, size: int = 112, *, seed: int = 0) -> Image.Image:
    """One DigiFace-like image (RGB): identity fixes the face, image_index the pose and scene."""
    person, shot, place = _digiface_parts(identity, image_index, size, seed)
    return _render(person, shot, place)


def draw_ffhq_face(index: int, size: int = 128, *, seed: int = 0) -> Image.Image:
    """One FFHQ-like image (RGB): smoother shading, texture noise, a looser crop."""
    person, shot, place = _ffhq_parts(index, size, seed)
    texture = np.random.default_rng([seed, _FFHQ_STREAM, index, 1])
    return _render(person, shot, place, None if index == PLANTED_LEAK_FFHQ else texture)


def _landmarks(person: _Identity, shot: _Shot, place: _Placement) -> np.ndarray:
    """The drawn eyes, nose tip and mouth corners after pose, (5, 2) in output pixels."""
    a = person.half_width * place.unit
    b = a * person.aspect
    centre = np.array(place.centre)
    drawn = centre - (a, b) + 2 * np.array(KEYPOINT_FRACTIONS) * (a, b)
    cos, sin = math.cos(math.radians(shot.angle)), math.sin(math.radians(shot.angle))
    # The inverse of the output-to-input map _render hands to Image.transform.
    rotation = np.array([[cos, sin], [-sin, cos]])
    moved = (drawn - centre) @ rotation.T * shot.scale
    return centre + np.array(shot.shift) * place.unit + moved


def face_landmarks(
    identity: int, image_index: int, size: int = 112, *, seed: int = 0
) -> np.ndarray:
    """Where draw_face put the eyes, nose tip and mouth corners: (5, 2) pixels, ArcFace order."""
    return _landmarks(*_digiface_parts(identity, image_index, size, seed))


def ffhq_face_landmarks(index: int, size: int = 128, *, seed: int = 0) -> np.ndarray:
    """Where draw_ffhq_face put the eyes, nose tip and mouth corners, as face_landmarks."""
    return _landmarks(*_ffhq_parts(index, size, seed))


def face_box(
    identity: int, image_index: int, size: int = 112, *, seed: int = 0
) -> tuple[float, float, float, float]:
    """Where draw_face put the face ellipse: (x1, y1, x2, y2) pixels, in-plane rotation aside."""
    cx, cy, a, b = _face_geometry(*_digiface_parts(identity, image_index, size, seed))
    return (cx - a, cy - b, cx + a, cy + b)


def ffhq_face_box(
    index: int, size: int = 128, *, seed: int = 0
) -> tuple[float, float, float, float]:
    """Where draw_ffhq_face put the face ellipse, as face_box."""
    cx, cy, a, b = _face_geometry(*_ffhq_parts(index, size, seed))
    return (cx - a, cy - b, cx + a, cy + b)


def build_demo_data(
    root: Path,
    *,
    n_identities: int = 8,
    images_per_identity: int = 6,
    n_ffhq: int = 24,
    seed: int = 0,
) -> None:
    """DigiFace-1M-like `root/digiface/<subject>/<k>.png` and FFHQ-like `root/ffhq/...` images."""
    root = Path(root)
    for identity in range(n_identities):
        folder = root / "digiface" / str(identity)
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(images_per_identity):
            draw_face(identity, k, seed=seed).save(folder / f"{k}.png")
    for index in range(n_ffhq):
        # FFHQ groups its files in folders named after their first index: 00000, 01000, ...
        folder = root / "ffhq" / "thumbnails128x128" / f"{index // 1000 * 1000:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        draw_ffhq_face(index, seed=seed).save(folder / f"{index:05d}.png")


# The demo's verification file: identities held out of every demo selection (DigiFace-like
# subjects 1000 on), so that no trained identity is in its pairs. Ten: two pairs a fold, the
# fewest that give each fold both kinds: every evaluation (a few in each training, one in each
# benchmark) embeds its 40 faces and their flips with the real IResNet at 112x112, about 3 s
# on 2 CPU cores.
BENCHMARK_IDENTITIES = range(1000, 1010)


def build_demo_benchmark(path: Path, *, seed: int = 0) -> None:
    """A verification file in insightface's format (digi2real/verification.py): 20 pairs of
    112x112 JPEG faces of held-out identities, alternately the same identity (two of its
    images) and two identities, so each of the 10 folds holds both kinds."""
    import io

    from digi2real.verification import write_bin

    def jpeg(identity: int, image_index: int) -> bytes:
        buffer = io.BytesIO()
        draw_face(identity, image_index, seed=seed).save(buffer, format="JPEG", quality=95)
        return buffer.getvalue()

    identities = list(BENCHMARK_IDENTITIES)
    images, issame = [], []
    for k, identity in enumerate(identities):
        other = identities[(k + 1) % len(identities)]
        images += [jpeg(identity, 0), jpeg(identity, 1)]  # the same identity
        images += [jpeg(identity, 2), jpeg(other, 3)]  # two identities
        issame += [True, False]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bin(path, images, issame)


# The demo's real-data mix-in (export.mixin): FFHQ-like people, several aligned 112x112 images
# each, in identity folders named "0", "1", ... as the DigiFace-like subjects are, so that the
# exports must keep a real "0" and a synthetic "0" apart. One more has too few images to be
# drawn; one is the demo benchmark's first person (PLANTED_MIXIN_LEAK), which the leakage
# search must flag.
MIXIN_IDENTITIES = 7
MIXIN_IMAGES = 4
PLANTED_MIXIN_LEAK = "5"


def draw_real_face(identity: int, image_index: int, *, seed: int = 0) -> Image.Image:
    """One aligned 112x112 FFHQ-like image of a demo "real" person: FFHQ-like skin, shading
    and texture, DigiFace-like framing (aligned)."""
    person = _identity(identity, seed, _REAL_STREAM, _FFHQ_SKIN_TONES)
    shot = _shot(identity, image_index, seed, _REAL_STREAM)
    texture = np.random.default_rng([seed, _REAL_STREAM, identity, image_index])
    return _render(person, shot, _Placement(112, (56.0, 60.0), 1.0), texture)


def build_demo_mixin(root: Path, *, seed: int = 0) -> None:
    """`root/<identity>/<k>.png`: MIXIN_IDENTITIES people of MIXIN_IMAGES images, one of them
    the benchmark's first person (its first image there, each time), and one of a single
    image."""
    for identity in range(MIXIN_IDENTITIES):
        folder = root / str(identity)
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(MIXIN_IMAGES):
            if str(identity) == PLANTED_MIXIN_LEAK:
                image = draw_face(BENCHMARK_IDENTITIES[0], 0, seed=seed)
            else:
                image = draw_real_face(identity, k, seed=seed)
            image.save(folder / f"{k}.png")
    short = root / str(MIXIN_IDENTITIES)
    short.mkdir(parents=True, exist_ok=True)
    draw_real_face(MIXIN_IDENTITIES, 0, seed=seed).save(short / "0.png")
