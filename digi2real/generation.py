"""Generation with Arc2Face: diffusers' StableDiffusionPipeline fed with Arc2Face conditioning.

prompt_embeds = project(v) + λΔ; negative_prompt_embeds = encoder(""), which is what diffusers
computes itself when only prompt_embeds is given. Initial latents (and any noise a scheduler adds
between steps) are drawn per image from a CPU generator seeded with the image's own seed, so an
image does not depend on its batch, its shard or the device's RNG.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from digi2real.config import Config
from digi2real.errors import ModelFileError
from digi2real.models import ModelPaths, ModelSpec
from digi2real.projection import Arc2FaceProjector

LATENT_CHANNELS = 4
# Part of every image's key (digi2real.shard_generation.image_key): raise it with any change
# here, to the projection or to how diffusers is called, that changes pixels, so that a rerun
# remakes them.
GENERATION_CODE_VERSION = 1
# The model files an image's pixels depend on (the face models only check them).
PIXEL_MODELS = frozenset(
    {
        "models.arc2face_encoder",
        "models.arc2face_unet",
        "models.vae",
        "models.tokenizer",
        "models.scheduler",
        "models.lcm_lora",
    }
)


class Interrupted(Exception):
    """Raised between denoising steps when the job was asked to stop (SIGTERM, preemption)."""


@dataclass(frozen=True)
class GenerationSettings:
    """`generation:` and `delta.scale` of a resolved config (no defaults here: the schema's)."""

    steps: int
    guidance: float
    height: int
    width: int
    batch_size: int
    device: str
    dtype: str
    scheduler: str
    delta_scale: float
    channels_last: bool | None
    compile: bool | None
    compile_mode: str
    compile_cache: str | None
    cpu_threads: int

    @classmethod
    def from_config(cls, config: Config) -> GenerationSettings:
        generation = config["generation"]
        return cls(
            steps=generation["steps"],
            guidance=float(generation["guidance"]),
            height=generation["height"],
            width=generation["width"],
            batch_size=generation["batch_size"],
            device=generation["device"],
            dtype=generation["dtype"],
            scheduler=generation["scheduler"],
            delta_scale=float(config["delta"]["scale"]),
            channels_last=generation["channels_last"],
            compile=generation["compile"],
            compile_mode=generation["compile_mode"],
            compile_cache=generation["compile_cache"],
            cpu_threads=generation["cpu_threads"],
        )

    def models(self) -> tuple[ModelSpec, ...]:
        """The models a pipeline of these settings loads: the LCM-LoRA too for `lcm`."""
        from digi2real import models

        lcm = (models.LCM_LORA,) if self.scheduler == "lcm" else ()
        return (*models.GENERATION_MODELS, *lcm)


def check_inputs(paths: ModelPaths, delta: np.ndarray, delta_path: Path) -> None:
    """What can be checked before a model loads: Δ's shape against the encoder's (the
    tokenizer's prompt length x the encoder's width, from their config files), one line
    naming the file and the key."""
    import json

    from digi2real import models
    from digi2real.errors import DataError

    encoder = paths[models.ENCODER] / "config.json"
    tokenizer = paths[models.TOKENIZER] / "tokenizer_config.json"
    try:
        hidden = int(json.loads(encoder.read_text())["hidden_size"])
        length = int(json.loads(tokenizer.read_text()).get("model_max_length", 77))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelFileError(f"{encoder} or {tokenizer}: cannot read: {error!r}") from None
    if delta.shape != (length, hidden):
        raise DataError(
            f"{delta_path}: delta has shape {delta.shape}, the encoder gives ({length}, "
            f"{hidden}) (config key models.arc2face_encoder); was it estimated with another "
            "encoder?"
        )


def image_generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per image, seeded with the image's own seed."""
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]


def initial_latents(
    generators: list[torch.Generator], height: int, width: int, scale_factor: int
) -> torch.Tensor:
    """(N, 4, h, w) float32 noise, image i's drawn from generators[i], as diffusers draws it
    from a list of generators."""
    shape = (1, LATENT_CHANNELS, height // scale_factor, width // scale_factor)
    return torch.cat([torch.randn(shape, generator=generator) for generator in generators])


def device_and_dtype(settings: GenerationSettings) -> tuple[torch.device, torch.dtype]:
    """The device and dtype the pipeline computes in, resolved from the settings ("auto": CUDA
    where there is one, float16 there): what build_pipeline loads into, and what an image's
    key names without the models having to load."""
    from digi2real import models

    device = models.resolve_device(settings.device)
    return device, models.resolve_dtype(settings.dtype, device)


def build_pipeline(paths: ModelPaths, settings: GenerationSettings):
    """StableDiffusionPipeline from Arc2Face's UNet and encoder and SD 1.5's VAE and tokenizer,
    loaded from `paths` (see GenerationSettings.models), in device_and_dtype(settings)."""
    from diffusers import StableDiffusionPipeline

    from digi2real import models

    device, dtype = device_and_dtype(settings)
    pipeline = StableDiffusionPipeline(
        vae=models.load_vae(paths[models.VAE], dtype),
        text_encoder=models.load_text_encoder(paths[models.ENCODER]),
        tokenizer=models.load_tokenizer(paths[models.TOKENIZER]),
        unet=models.load_unet(paths[models.UNET], dtype),
        scheduler=models.load_scheduler(paths[models.SCHEDULER], settings.scheduler),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    if settings.scheduler == "lcm":
        _fuse_lcm_lora(pipeline, paths[models.LCM_LORA])
    # The UNet and VAE were loaded in `dtype`; casting the whole pipeline would also cast
    # modules diffusers keeps in float32.
    pipeline.text_encoder.to(dtype=dtype)
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    optimize(pipeline, settings)
    return pipeline


def optimize(pipeline, settings: GenerationSettings) -> None:
    """The exact speed-ups the settings ask for (null: on with CUDA): channels-last memory
    layout for the UNet and the VAE, torch.compile of the UNet and the VAE decoder. Same math:
    images differ by float noise only (tests/test_generation.py bounds it on the CPU)."""
    import os

    from digi2real.progress import log

    on_cuda = pipeline.device.type == "cuda"
    applied = []
    if on_cuda if settings.channels_last is None else settings.channels_last:
        pipeline.unet.to(memory_format=torch.channels_last)
        pipeline.vae.to(memory_format=torch.channels_last)
        applied.append("channels_last")
    if on_cuda if settings.compile is None else settings.compile:
        from torch import _dynamo

        if settings.compile_cache:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = settings.compile_cache
        # A node where compiling fails (no compiler, a Triton/driver mismatch) runs eagerly,
        # with dynamo's warning. Not fullgraph=True: that turns every failure into an error.
        _dynamo.config.suppress_errors = True
        mode = settings.compile_mode
        pipeline.unet = torch.compile(pipeline.unet, mode=mode)
        pipeline.vae.decode = torch.compile(pipeline.vae.decode, mode=mode)
        cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR", "torch's default, under /tmp")
        applied.append(f"torch.compile (mode {mode}; kernel cache: {cache})")
    log.info("generation speed-ups: %s", ", ".join(applied) or "none")


def _fuse_lcm_lora(pipeline, path: Path) -> None:
    try:
        pipeline.load_lora_weights(str(path.parent), weight_name=path.name)
    except (OSError, ValueError, ImportError) as error:
        raise ModelFileError(f"config key models.lcm_lora: {path}: cannot load: {error}") from None
    pipeline.fuse_lora()


class Arc2FaceGenerator:
    def __init__(self, pipeline, settings: GenerationSettings, delta: np.ndarray | None) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.projector = Arc2FaceProjector(pipeline.text_encoder, pipeline.tokenizer)
        self.delta = None if delta is None else torch.as_tensor(delta, dtype=torch.float32)

    def prompt_embeds(self, conditions: np.ndarray) -> torch.Tensor:
        embeds = self.projector.project(torch.as_tensor(np.asarray(conditions, np.float32)))
        if self.delta is not None and self.settings.delta_scale != 0:
            shift = self.settings.delta_scale * self.delta.to(embeds.device)
            embeds = (embeds.float() + shift).to(embeds.dtype)
        return embeds

    def generate(
        self,
        conditions: np.ndarray,
        seeds: list[int],
        should_stop: Callable[[], bool] = lambda: False,
    ) -> np.ndarray:
        """(N, 512) ArcFace conditions -> (N, H, W, 3) float32 RGB in [0, 1] (NaN if diverged)."""
        s = self.settings
        prompt_embeds = self.prompt_embeds(conditions)
        negative = self.projector.unconditional(len(prompt_embeds))
        # The same generators then draw any noise the scheduler adds between steps (LCM does),
        # so that too belongs to the image, not to its batch.
        generators = image_generators(seeds)
        latents = initial_latents(generators, s.height, s.width, self.pipeline.vae_scale_factor)

        def stop_between_steps(_pipeline, _step, _timestep, tensors):
            if should_stop():
                raise Interrupted("stop requested between denoising steps")
            return tensors

        return self.pipeline(
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative,
            latents=latents.to(prompt_embeds.device, prompt_embeds.dtype),
            generator=generators,
            num_inference_steps=s.steps,
            guidance_scale=s.guidance,
            height=s.height,
            width=s.width,
            output_type="np",
            callback_on_step_end=stop_between_steps,
        ).images


def log_peak_gpu_memory(device: torch.device) -> None:
    """The job's peak GPU memory, for sizing (scripts/benchmark_generation.py reads it)."""
    from digi2real.progress import log

    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        log.info("peak GPU memory allocated: %.0f MB", peak)


def to_uint8(images: np.ndarray) -> np.ndarray:
    return (np.clip(images, 0.0, 1.0) * 255.0).round().astype(np.uint8)
