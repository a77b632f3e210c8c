"""Face pipeline: read any image, detect with SCRFD, align to 112x112, embed with ArcFace.

Every image gets a `FaceResult` with a status and a message; a bad image never stops a batch.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from digi2real.status import Status

if TYPE_CHECKING:
    from digi2real.models import ModelPaths, ModelSpec

ALIGNED_SIZE = 112


@dataclass
class FaceResult:
    status: Status
    message: str = ""
    embedding: np.ndarray | None = None  # (512,) float32, unit norm, only when status is OK
    det_score: float = math.nan
    aligned: np.ndarray | None = None  # (112, 112, 3) BGR uint8, when a face was found
    landmarks: np.ndarray | None = None  # (5, 2) float32 pixels of the input image, if detected


class UnreadableImage(Exception):
    pass


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image of any common mode (RGB, RGBA, L, 16-bit, palette) to 8-bit BGR."""
    return _decode(path, path)


def decode_image(data: bytes, name: str) -> np.ndarray:
    """`read_image` for encoded bytes (a member of a shard's archive), errors naming `name`."""
    return _decode(io.BytesIO(data), name)


def _decode(source, name) -> np.ndarray:
    try:
        with Image.open(source) as image:
            image.load()  # decodes fully, so a truncated file fails here rather than later
            return pil_to_bgr(image)
    except FileNotFoundError:
        raise UnreadableImage(f"{name}: file not found") from None
    except UnidentifiedImageError:
        raise UnreadableImage(f"{name}: not an image (or an empty file)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise UnreadableImage(f"{name}: cannot decode: {error}") from None


def pil_to_bgr(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if pixels.max(initial=0) > 255 else 255.0
        gray = np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        rgb = np.repeat(gray[..., None], 3, axis=2)
    elif image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # Transparent pixels go to black, the colour insightface pads with.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        rgb = np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    else:
        rgb = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(rgb[..., ::-1])


class FacePipeline:
    """SCRFD detection + 5-point alignment + batched ArcFace, as Arc2Face's own scripts do it."""

    def __init__(
        self,
        detector,
        recognizer,
        *,
        det_size: int = 640,
        det_thresh: float = 0.5,
        pad: float = 0.0,
        prealigned: bool = False,
        batch_size: int = 64,
        force_detections: bool = False,
    ) -> None:
        self.detector = detector
        # Benchmarks only (DIGI2REAL_FORCE_DETECTIONS): a random detector finds no face, so
        # where it finds none the template's five points are taken, and the alignment and
        # the recognizer are timed as with a real one.
        self.force_detections = force_detections
        self.recognizer = recognizer
        self.det_size = det_size
        self.pad = pad
        self.prealigned = prealigned
        self.batch_size = batch_size
        if detector is not None:
            # insightface's prepare(-1) switches the session to the CPU: only ask for that
            # where the session has no CUDA provider anyway.
            session = getattr(detector, "session", None)
            on_cuda = session is not None and "CUDAExecutionProvider" in session.get_providers()
            detector.prepare(
                0 if on_cuda else -1, det_thresh=det_thresh, input_size=(det_size, det_size)
            )

    def align(self, image: np.ndarray) -> FaceResult:
        """The largest face of `image` (BGR), aligned to 112x112; status NO_FACE when none."""
        from insightface.utils import face_align

        if self.prealigned:
            if image.shape[:2] != (ALIGNED_SIZE, ALIGNED_SIZE):
                image = cv2.resize(
                    image, (ALIGNED_SIZE, ALIGNED_SIZE), interpolation=cv2.INTER_AREA
                )
            return FaceResult(Status.OK, aligned=image)
        border = 0
        if self.pad > 0:
            # Tight crops (DigiFace, FFHQ) lose their face at large det_size; a border restores it.
            border = int(round(self.pad * max(image.shape[:2])))
            image = cv2.copyMakeBorder(image, *[border] * 4, cv2.BORDER_CONSTANT, value=0)
        boxes, landmarks = self.detector.detect(
            image, input_size=(self.det_size, self.det_size), max_num=1, metric="max"
        )
        if (boxes.shape[0] == 0 or landmarks is None) and self.force_detections:
            side = min(image.shape[:2])
            template = face_align.arcface_dst * (side / ALIGNED_SIZE)
            centre = (np.array(image.shape[1::-1]) - side) / 2
            landmarks = (template + centre)[None].astype(np.float32)
            boxes = np.array([[0, 0, side, side, 0.0]], np.float32)
        if boxes.shape[0] == 0 or landmarks is None:
            return FaceResult(Status.NO_FACE, "no face above the detection threshold")
        with warnings.catch_warnings():
            # insightface calls a scikit-image API that newer releases deprecate; not ours to fix.
            warnings.simplefilter("ignore", FutureWarning)
            aligned = face_align.norm_crop(image, landmark=landmarks[0], image_size=ALIGNED_SIZE)
        # Landmarks in the pixels of the image as given, the detection border taken off.
        keypoints = (landmarks[0] - border).astype(np.float32)
        return FaceResult(
            Status.OK, det_score=float(boxes[0, 4]), aligned=aligned, landmarks=keypoints
        )

    def embed_aligned(self, results: list[FaceResult]) -> None:
        """Fill the embedding of each OK result, in recognizer batches of `batch_size`."""
        pending = [result for result in results if result.status is Status.OK]
        for start in range(0, len(pending), self.batch_size):
            batch = pending[start : start + self.batch_size]
            features = np.asarray(
                self.recognizer.get_feat([result.aligned for result in batch]), dtype=np.float64
            )
            for result, feature in zip(batch, features.reshape(len(batch), -1), strict=True):
                norm = np.linalg.norm(feature)
                if not np.all(np.isfinite(feature)) or not norm > 0:
                    result.status = Status.NONFINITE
                    result.message = "embedding is not finite or has zero norm"
                    continue
                result.embedding = (feature / norm).astype(np.float32)

    def process_images(self, images: Iterable[np.ndarray | Exception]) -> list[FaceResult]:
        results = []
        for image in images:
            if isinstance(image, Exception):
                results.append(FaceResult(Status.UNREADABLE, str(image)))
            else:
                results.append(self.align(image))
        self.embed_aligned(results)
        return results

    def process_paths(self, paths: Iterable[Path]) -> Iterator[FaceResult]:
        """Results in the order of `paths`, streamed one recognizer batch at a time."""
        batch: list[np.ndarray | Exception] = []
        for path in paths:
            try:
                batch.append(read_image(path))
            except UnreadableImage as error:
                batch.append(error)
            if len(batch) == self.batch_size:
                yield from self.process_images(batch)
                batch = []
        if batch:
            yield from self.process_images(batch)


@dataclass(frozen=True)
class FaceSettings:
    """`<section>.face` of a resolved config (digiface, ffhq, gallery or quality): a key it
    leaves out was inherited from `face:` (digi2real.config.resolve_config)."""

    providers: str
    prealigned: bool
    batch_size: int
    # How faces are found, unused where they come aligned (no detector runs); None when
    # they were never set (FaceSettings.aligned).
    det_size: int | None
    det_thresh: float | None
    pad: float | None

    @classmethod
    def from_config(cls, config, section: str) -> FaceSettings:
        face = config[section]["face"]
        return cls(
            providers=str(face["providers"]),
            prealigned=bool(face["prealigned"]),
            batch_size=int(face["batch_size"]),
            det_size=int(face["det_size"]),
            det_thresh=float(face["det_thresh"]),
            pad=float(face["pad"]),
        )

    @classmethod
    def aligned(cls, providers: str, batch_size: int) -> FaceSettings:
        """For faces aligned already (112x112 crops): the recognizer alone."""
        return cls(providers, True, batch_size, det_size=None, det_thresh=None, pad=None)

    def models(self, recognizer: ModelSpec) -> tuple[ModelSpec, ...]:
        """The models the pipeline loads: the detector unless the faces come aligned."""
        from digi2real.models import DETECTOR

        return (recognizer,) if self.prealigned else (DETECTOR, recognizer)


def face_pipeline(
    settings: FaceSettings,
    paths: ModelPaths,
    recognizer: ModelSpec | None = None,
    threads: int | None = None,
) -> FacePipeline:
    """The face pipeline of `settings`, loading its models from `paths` (see
    FaceSettings.models). It embeds with `recognizer`'s model, by default the generator's
    ArcFace; with `threads`, onnxruntime computes with exactly that many (models._load_onnx)."""
    from digi2real.models import ARCFACE, DETECTOR, load_detector, load_recognizer, onnx_providers
    from digi2real.testing import forced_detections

    recognizer = recognizer or ARCFACE
    providers = onnx_providers(settings.providers)
    if settings.prealigned:
        embed = load_recognizer(paths[recognizer], providers, recognizer, threads)
        return FacePipeline(None, embed, prealigned=True, batch_size=settings.batch_size)
    assert settings.det_size is not None and settings.det_thresh is not None
    assert settings.pad is not None
    return FacePipeline(
        load_detector(paths[DETECTOR], providers, threads=threads),
        load_recognizer(paths[recognizer], providers, recognizer, threads),
        det_size=settings.det_size,
        det_thresh=settings.det_thresh,
        pad=settings.pad,
        batch_size=settings.batch_size,
        force_detections=forced_detections(),
    )
