"""Deterministic demo assets: DigiFace/FFHQ-like images and tiny models in the real layouts.

Everything here runs on a laptop CPU in seconds and needs no download, so the whole pipeline
(detection, alignment, embedding, Arc2Face generation) can be exercised end to end. The models
are random or hand-built, never trained: their outputs are only meant to be well-formed and
loadable by the same code paths that load the real checkpoints.

faces.py draws the images, hf_models.py writes the Hugging Face models and onnx_models.py
builds the insightface ONNX models; build_demo_assets puts them all under one root.
"""

from __future__ import annotations

from pathlib import Path

from digi2real.demo.faces import (
    ARCFACE_TEMPLATE,
    KEYPOINT_FRACTIONS,
    build_demo_benchmark,
    build_demo_data,
    build_demo_mixin,
    draw_face,
    draw_ffhq_face,
    face_box,
    face_landmarks,
    ffhq_face_box,
    ffhq_face_landmarks,
)
from digi2real.demo.hf_models import (
    PROMPT,
    TINY_HIDDEN_SIZE,
    _build_encoder,
    write_encoder,
    write_scheduler,
    write_tokenizer,
    write_unet,
    write_vae,
)
from digi2real.demo.onnx_models import detector_model, recognizer_model

__all__ = [
    "ARCFACE_TEMPLATE",
    "KEYPOINT_FRACTIONS",
    "PROMPT",
    "TINY_HIDDEN_SIZE",
    "_build_encoder",  # tests build the encoder directly to compare it with the saved one
    "build_demo_assets",
    "build_demo_benchmark",
    "build_demo_mixin",
    "build_demo_data",
    "build_tiny_models",
    "draw_face",
    "draw_ffhq_face",
    "face_box",
    "face_landmarks",
    "ffhq_face_box",
    "ffhq_face_landmarks",
]


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
    build_demo_benchmark(root / "benchmarks" / "demo.bin", seed=seed)
    build_demo_mixin(root / "mixin", seed=seed)
    build_tiny_models(root / "models", seed=seed)


def build_tiny_models(models_root: Path, *, seed: int = 0, size: str = "tiny") -> None:
    """Random tiny Arc2Face/SD 1.5 models and hand-built ONNX face models, in the real layouts;
    with size "sd15", the encoder, UNet and VAE at SD 1.5's sizes (the benchmark's)."""
    import onnx

    models_root = Path(models_root)
    tokenizer_dir = models_root / "sd15" / "tokenizer"
    vocab = write_tokenizer(tokenizer_dir)
    write_scheduler(models_root / "sd15" / "scheduler")
    write_encoder(models_root / "arc2face" / "encoder", vocab, seed, size)
    write_unet(models_root / "arc2face" / "arc2face", seed, size)
    write_vae(models_root / "sd15" / "vae", seed, size)
    (models_root / "antelopev2").mkdir(parents=True, exist_ok=True)
    onnx.save(detector_model(), str(models_root / "antelopev2" / "scrfd_10g_bnkps.onnx"))
    onnx.save(recognizer_model(seed), str(models_root / "arc2face" / "arcface.onnx"))
