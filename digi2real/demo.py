"""Deterministic demo assets: DigiFace/FFHQ-like images and tiny models in the real layouts.

Everything here runs on a laptop CPU in seconds and needs no download, so the whole pipeline
(detection, alignment, embedding, Arc2Face generation) can be exercised end to end. The models
are random or hand-built, never trained: their outputs are only meant to be well-formed and
loadable by the same code paths that load the real checkpoints.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

TINY_HIDDEN_SIZE = 576
PROMPT = "photo of a id person"

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

# Seed streams keep DigiFace identities, their per-image variation and FFHQ faces independent.
_IDENTITY_STREAM, _SHOT_STREAM, _FFHQ_STREAM, _MODEL_STREAM = 11, 12, 13, 14
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


def _digiface_parts(
    identity: int, image_index: int, size: int, seed: int
) -> tuple[_Identity, _Shot, _Placement]:
    person = _identity(identity, seed, _IDENTITY_STREAM, _SKIN_TONES)
    shot = _shot(identity, image_index, seed, _SHOT_STREAM)
    unit = size / 112
    return person, shot, _Placement(size, (56.0 * unit, 60.0 * unit), unit)


def _ffhq_parts(index: int, size: int, seed: int) -> tuple[_Identity, _Shot, _Placement]:
    person = _identity(index, seed, _FFHQ_STREAM, _FFHQ_SKIN_TONES)
    shot = _shot(index, 0, seed, _FFHQ_STREAM)
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
    return _render(person, shot, place, texture)


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


def build_demo_assets(
    root: Path,
    *,
    n_identities: int = 8,
    images_per_identity: int = 6,
    n_ffhq: int = 24,
    seed: int = 0,
) -> None:
    """Demo images plus tiny models under `root/models`, byte-identical for equal arguments."""
    root = Path(root)
    build_demo_data(
        root,
        n_identities=n_identities,
        images_per_identity=images_per_identity,
        n_ffhq=n_ffhq,
        seed=seed,
    )
    build_tiny_models(root / "models", seed=seed)


# --- tiny models ----------------------------------------------------------------------------


def build_tiny_models(models_root: Path, *, seed: int = 0) -> None:
    """Random tiny Arc2Face/SD 1.5 models and hand-built ONNX face models, in the real layouts."""
    import onnx

    models_root = Path(models_root)
    tokenizer_dir = models_root / "sd15" / "tokenizer"
    vocab = _write_tokenizer(tokenizer_dir)
    _write_scheduler(models_root / "sd15" / "scheduler")
    _write_encoder(models_root / "arc2face" / "encoder", vocab, seed)
    _write_unet(models_root / "arc2face" / "arc2face", seed)
    _write_vae(models_root / "sd15" / "vae", seed)
    (models_root / "antelopev2").mkdir(parents=True, exist_ok=True)
    onnx.save(_detector_model(), str(models_root / "antelopev2" / "scrfd_10g_bnkps.onnx"))
    onnx.save(_recognizer_model(seed), str(models_root / "arc2face" / "arcface.onnx"))


def _write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _bytes_to_unicode() -> list[str]:
    """CLIP's byte alphabet: printable bytes stand for themselves, the rest map above U+0100."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return [chars[byte] for byte in sorted(chars, key=lambda b: (b not in printable, b))]


def _write_tokenizer(folder: Path) -> dict[str, int]:
    """A CLIP BPE tokenizer folder whose vocabulary holds PROMPT's words as whole tokens.

    Laid out like CLIP's own vocabulary: the byte alphabet, the same with `</w>`, merge results,
    then the two special tokens, so any text still tokenizes (letter by letter).
    """
    alphabet = _bytes_to_unicode()
    tokens = alphabet + [c + "</w>" for c in alphabet]
    merges: list[str] = []
    for word in dict.fromkeys(PROMPT.split()):
        symbols = [*word[:-1], word[-1] + "</w>"]
        while len(symbols) > 1:
            merge = f"{symbols[0]} {symbols[1]}"
            merged = symbols[0] + symbols[1]
            if merge not in merges:
                merges.append(merge)
                tokens.append(merged)
            symbols = [merged, *symbols[2:]]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8"
    )
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    }
    _write_json(folder / "special_tokens_map.json", special)
    _write_json(
        folder / "tokenizer_config.json",
        {
            **special,
            "add_prefix_space": False,
            "do_lower_case": True,
            "errors": "replace",
            "model_max_length": 77,
            "tokenizer_class": "CLIPTokenizer",
        },
    )
    return vocab


def _write_scheduler(folder: Path) -> None:
    # Stable Diffusion 1.5's scheduler/scheduler_config.json, value for value.
    _write_json(
        folder / "scheduler_config.json",
        {
            "_class_name": "PNDMScheduler",
            "_diffusers_version": "0.6.0",
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "clip_sample": False,
            "num_train_timesteps": 1000,
            "set_alpha_to_one": False,
            "skip_prk_steps": True,
            "steps_offset": 1,
            "trained_betas": None,
        },
    )


# The config keys transformers 4.36 wrote for a CLIPTextModel; newer versions add more.
_ENCODER_CONFIG_KEYS = (
    "attention_dropout",
    "bos_token_id",
    "eos_token_id",
    "hidden_act",
    "hidden_size",
    "initializer_factor",
    "initializer_range",
    "intermediate_size",
    "layer_norm_eps",
    "max_position_embeddings",
    "model_type",
    "num_attention_heads",
    "num_hidden_layers",
    "pad_token_id",
    "projection_dim",
    "vocab_size",
)


def _encoder_config(vocab: dict[str, int]):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=TINY_HIDDEN_SIZE,
        intermediate_size=2 * TINY_HIDDEN_SIZE,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
        hidden_act="quick_gelu",
    )


def _build_encoder(vocab: dict[str, int], seed: int):
    import torch
    from transformers import CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 100 + 1)
        return CLIPTextModel(_encoder_config(vocab)).eval()


def _write_encoder(folder: Path, vocab: dict[str, int], seed: int) -> None:
    """Saved as transformers 4.36 saved Arc2Face's encoder: a pickle with `text_model.` keys."""
    import torch

    model = _build_encoder(vocab, seed)
    config = model.config
    # transformers 5 dropped the `text_model` wrapper module; 4.x checkpoints still carry it.
    state = {
        (key if key.startswith("text_model.") else f"text_model.{key}"): value.contiguous()
        for key, value in model.state_dict().items()
    }
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "pytorch_model.bin")
    values = config.to_dict()
    saved = {key: values[key] for key in _ENCODER_CONFIG_KEYS if key in values}
    saved.update(
        architectures=["CLIPTextModel"],
        model_type="clip_text_model",
        torch_dtype="float32",
        transformers_version="4.36.2",
    )
    _write_json(folder / "config.json", saved)


def _write_unet(folder: Path, seed: int) -> None:
    import torch
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 100 + 2)
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=TINY_HIDDEN_SIZE,
            attention_head_dim=8,
            norm_num_groups=8,
        )
    unet.save_pretrained(folder, safe_serialization=True)


def _write_vae(folder: Path, seed: int) -> None:
    import torch
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 100 + 3)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            # Four blocks, three downsamplings: latents are 1/8 of the image, as in SD 1.5.
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 16, 16),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=64,
            scaling_factor=0.18215,
        )
        # Untrained, the decoder paints grey noise in which no detector finds a face, and the
        # demo's dataset would be empty. A faint skin-toned bias makes the tiny detector find
        # one at a score that varies with the latents (about 0.75-0.9), so the quality filter
        # has something to accept and something to reject.
        with torch.no_grad():
            vae.decoder.conv_out.weight.mul_(0.3)
            vae.decoder.conv_out.bias.copy_(torch.tensor([0.4, 0.2, 0.1]))
    vae.save_pretrained(folder, safe_serialization=True)


# --- hand-built ONNX face models ------------------------------------------------------------


class _Graph:
    """A tiny onnx.helper wrapper: every op gets a fresh output name and a prefixed node name."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list = []
        self.initializers: list = []

    def const(self, value, dtype=np.float32) -> str:
        from onnx import numpy_helper

        name = f"{self.prefix}const_{len(self.initializers)}"
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attributes) -> str:
        from onnx import helper

        index = len(self.nodes)
        output = output or f"{self.prefix}{op_type.lower()}_{index}_out"
        self.nodes.append(
            helper.make_node(
                op_type,
                list(inputs),
                [output],
                name=f"{self.prefix}{op_type.lower()}_{index}",
                **attributes,
            )
        )
        return output

    def model(self, name: str, inputs: list, outputs: list):
        from onnx import checker, helper

        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="digi2real.demo"
        )
        model.ir_version = 8  # opset 17's IR: loadable by every onnxruntime that knows opset 17
        checker.check_model(model)
        return model


# Skin: sigmoid(K * ((R - B) / 128 - T)) on insightface's (x - 127.5) / 128 input.
_SKIN_GAIN, _SKIN_THRESHOLD = 40.0, 34.0 / 128.0
# Face box from the skin moments, fitted on demo faces: centre (cx, cy + OY*sy), half sizes
# (KX*sx, KY*sy). Hair covers the forehead and the neck adds skin below, hence OY and KY.
_BOX_KX, _BOX_KY, _BOX_OY = 1.87, 2.15, -0.38
# Confidence: enough skin in the image (MASS, so a skin-coloured speck is no face) and that skin
# packed into its box (FILL, so scattered skin-coloured noise is no face). Demo faces have
# mass >= 0.2 unpadded (>= 0.05 with a border of half the image) and fill >= 0.6.
_MASS_GAIN, _MASS_MIN = 400.0, 0.01
_FILL_GAIN, _FILL_MIN = 20.0, 0.4
_STRIDES = (8, 16, 32)


def _detector_model():
    """An SCRFD-shaped ONNX detector (9 outputs, 2 anchors, strides 8/16/32) that finds the
    skin-coloured blob of an image and reports one face box with ArcFace-proportioned keypoints.
    """
    from onnx import TensorProto, helper

    g = _Graph("det_")
    image = "input.1"

    def channel(index: int) -> str:
        starts, ends = g.const([index], np.int64), g.const([index + 1], np.int64)
        return g.op("Slice", image, starts, ends, g.const([1], np.int64))

    # insightface feeds RGB (swapRB), so channel 0 is red and channel 2 is blue.
    red_minus_blue = g.op("Sub", channel(0), channel(2))
    skin = g.op(
        "Sigmoid",
        g.op("Mul", g.op("Sub", red_minus_blue, g.const(_SKIN_THRESHOLD)), g.const(_SKIN_GAIN)),
    )
    # Only the skin map is full resolution: moments come from its column and row profiles, so
    # a 640x640 input costs little more than a 128x128 one.
    column_mass = g.op("ReduceMean", skin, axes=[2], keepdims=1)  # (1, 1, 1, W)
    row_mass = g.op("ReduceMean", skin, axes=[3], keepdims=1)  # (1, 1, H, 1)
    mass = g.op("ReduceMean", column_mass, axes=[3], keepdims=1)  # skin fraction of the image

    def coordinates(profile: str, axis: int) -> tuple[str, str, str]:
        """Pixel indices and pixel centres along a profile, for any input size, and its length."""
        ones = g.op(
            "ConstantOfShape",
            g.op("Shape", profile),
            value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]),
        )
        count = g.op("CumSum", ones, g.const(axis, np.int64))
        length = g.op("ReduceSum", ones, g.const([axis], np.int64), keepdims=1)
        return g.op("Sub", count, g.const(1.0)), g.op("Sub", count, g.const(0.5)), length

    x_index, x_centre, image_width = coordinates(column_mass, 3)
    y_index, y_centre, image_height = coordinates(row_mass, 2)

    def moments(profile: str, centre: str, axis: int) -> tuple[str, str]:
        axes = g.const([axis], np.int64)
        weight = g.op("Add", g.op("ReduceSum", profile, axes, keepdims=1), g.const(1e-6))

        def average(values: str) -> str:
            summed = g.op("ReduceSum", g.op("Mul", profile, values), axes, keepdims=1)
            return g.op("Div", summed, weight)

        mean = average(centre)
        offset = g.op("Sub", centre, mean)
        spread = g.op("Sqrt", g.op("Add", average(g.op("Mul", offset, offset)), g.const(1e-6)))
        return mean, spread

    cx, sx = moments(column_mass, x_centre, 3)
    cy, sy = moments(row_mass, y_centre, 2)
    box_cx = cx
    box_cy = g.op("Add", cy, g.op("Mul", sy, g.const(_BOX_OY)))
    half_w, half_h = g.op("Mul", sx, g.const(_BOX_KX)), g.op("Mul", sy, g.const(_BOX_KY))
    x1, x2 = g.op("Sub", box_cx, half_w), g.op("Add", box_cx, half_w)
    y1, y2 = g.op("Sub", box_cy, half_h), g.op("Add", box_cy, half_h)
    width, height = g.op("Mul", half_w, g.const(2.0)), g.op("Mul", half_h, g.const(2.0))

    total = g.op("Mul", mass, g.op("Mul", image_width, image_height))
    fill = g.op("Div", total, g.op("Add", g.op("Mul", width, height), g.const(1e-6)))

    def gate(value: str, threshold: float, gain: float) -> str:
        return g.op("Sigmoid", g.op("Mul", g.op("Sub", value, g.const(threshold)), g.const(gain)))

    confidence = g.op("Mul", gate(mass, _MASS_MIN, _MASS_GAIN), gate(fill, _FILL_MIN, _FILL_GAIN))
    corners = g.op("Concat", *[x1, y1] * 5, axis=1)
    extents = g.op("Concat", *[width, height] * 5, axis=1)
    fractions = np.array(KEYPOINT_FRACTIONS, dtype=np.float32).reshape(1, 10, 1, 1)
    keypoints = g.op("Add", corners, g.op("Mul", extents, g.const(fractions)))  # (1, 10, 1, 1)

    def rows(feature: str, channels: int) -> str:
        # (1, C, h, w) -> (h*w*2, C) ordered (row, col, anchor), the layout SCRFD emits.
        flat = g.op(
            "Reshape",
            g.op("Transpose", feature, perm=[0, 2, 3, 1]),
            g.const([-1, channels], np.int64),
        )
        return g.op("Concat", flat, flat, axis=1)

    def anchor_centres(index: str, axis: int, stride: int) -> str:
        """index * stride for each whole cell: SCRFD's anchor centres along one axis."""
        step, axes = g.const([stride], np.int64), g.const([axis], np.int64)
        length = g.op("Slice", g.op("Shape", index), axes, g.const([axis + 1], np.int64))
        end = g.op("Mul", g.op("Div", length, step), step)
        return g.op("Slice", index, g.const([0], np.int64), end, axes, step)

    scores, boxes, points = [], [], []
    for stride in _STRIDES:
        column, row = anchor_centres(x_index, 3, stride), anchor_centres(y_index, 2, stride)
        # Broadcast (1, 1, 1, w) and (1, 1, h, 1) to full (1, 1, h, w) grids.
        ax = g.op("Add", column, g.op("Mul", row, g.const(0.0)))
        ay = g.op("Add", row, g.op("Mul", column, g.const(0.0)))
        inverse = g.const(1.0 / stride)
        dx, dy = g.op("Sub", ax, box_cx), g.op("Sub", ay, box_cy)
        distance = g.op("Add", g.op("Mul", dx, dx), g.op("Mul", dy, dy))
        nearness = g.op("Exp", g.op("Mul", distance, g.const(-1.0 / (2.0 * stride * stride))))
        # Only anchors near the face centre fire, as with a trained detector; their boxes are
        # identical, so NMS keeps one face.
        score = g.op("Mul", confidence, nearness)
        box = g.op(
            "Mul",
            g.op(
                "Concat",
                g.op("Sub", ax, x1),
                g.op("Sub", ay, y1),
                g.op("Sub", x2, ax),
                g.op("Sub", y2, ay),
                axis=1,
            ),
            inverse,
        )
        anchors = g.op("Concat", *[ax, ay] * 5, axis=1)
        point = g.op("Mul", g.op("Sub", keypoints, anchors), inverse)
        scores.append(
            g.op("Reshape", rows(score, 1), g.const([-1, 1], np.int64), output=f"score_{stride}")
        )
        boxes.append(
            g.op("Reshape", rows(box, 4), g.const([-1, 4], np.int64), output=f"bbox_{stride}")
        )
        points.append(
            g.op("Reshape", rows(point, 10), g.const([-1, 10], np.int64), output=f"kps_{stride}")
        )

    inputs = [helper.make_tensor_value_info(image, TensorProto.FLOAT, [1, 3, "height", "width"])]
    outputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"{name}_anchors", channels])
        for names, channels in ((scores, 1), (boxes, 4), (points, 10))
        for name in names
    ]
    return g.model("tiny_scrfd", inputs, outputs)


def _recognizer_model(seed: int):
    """An ArcFace-shaped ONNX recognizer: (N, 3, 112, 112) -> (N, 512).

    A fixed random projection of the crop's 8x8 colour layout: crops of one demo identity (same
    skin, hair and face shape) land closer together than crops of two.
    """
    from onnx import TensorProto, helper

    # insightface reads node names starting Sub/_minus and Mul/_mul among the first eight as
    # an mxnet model with normalisation built in; the prefix keeps it on mean/std 127.5.
    g = _Graph("rec_")
    image = "input.1"
    pooled = g.op("AveragePool", image, kernel_shape=[14, 14], strides=[14, 14])
    # Colour is kept, not centred away: skin tone is the demo identities' strongest cue.
    flat = g.op("Flatten", pooled, axis=1)
    rng = np.random.default_rng([seed, _MODEL_STREAM])
    # Scaled so embedding norms are in the tens, like a real ArcFace's.
    projection = rng.normal(0.0, 1.0, size=(192, 512)) * (2.5 / math.sqrt(192))
    g.op("MatMul", flat, g.const(projection), output="embedding")
    inputs = [helper.make_tensor_value_info(image, TensorProto.FLOAT, ["N", 3, 112, 112])]
    outputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 512])]
    return g.model("tiny_arcface", inputs, outputs)
