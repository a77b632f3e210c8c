"""Generation throughput, needing no weights: the reference (diffusers' pipeline as Arc2Face's
README runs it) against this project's generation job, on models with random weights.

    python scripts/benchmark_generation.py             # CUDA: SD 1.5-size models, 512x512
    python scripts/benchmark_generation.py --tiny      # anywhere, in a minute: the demo's tiny
                                                       # models at 64x64 (what the tests run)

Models: the encoder (CLIP ViT-L/14 text), UNet and VAE at SD 1.5's published sizes with random
weights (digi2real/demo/hf_models.py), SD 1.5's scheduler config, the demo's tokenizer and face
models; 25 DPM-Solver++ steps, guidance 3. One run measures and prints:

(a) the reference: diffusers' StableDiffusionPipeline loaded from those folders and called as
    Arc2Face's README does (float16 on CUDA, DPM-Solver++ from the scheduler's config, 4 images
    per call, no compile, PIL images out), after one warm-up call;
(b) `python -m digi2real generate` at this project's defaults (channels-last and compile on
    CUDA, the background store and face check, writing and packing the archive), as its own
    process: its log's phase times give the steady rate (every batch after the first, and the
    commit), and the rest of the job (imports, loading, the first batch with any compiling)
    is its startup;

their ratio; the FLOPs of an image (torch's FlopCounterMode on one UNet call with guidance's
batch of two, times the steps, and one VAE decode) and so each one's achieved TFLOP/s and share
of the device's measured peak (a large matmul in the same dtype); each generation batch size's
rate (generation alone) and the fastest; the seconds per image for `cluster.seconds_per_image`
at a shard's size; and the job's peak host memory (wait4) and GPU memory (its log).

The face models are the demo's tiny ones, and a random detector finds no face: the jobs run
with DIGI2REAL_FORCE_DETECTIONS=1 (alignment and the recognizer on the template's points), so
the face path is exercised but a real SCRFD and ArcFace R100 cost more than timed here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from digi2real.demo import build_tiny_models  # noqa: E402
from digi2real.formats import Delta, ShardPlan, write_delta, write_model_hashes, write_plan  # noqa: E402

SHARD_IMAGES = 2000  # the default shard: 100 identities x 20 images
JOB_BATCH = 4  # the job's generation.batch_size: the schema's default


def models_section(root: Path) -> dict[str, str]:
    return {
        "arc2face_encoder": str(root / "arc2face/encoder"),
        "arc2face_unet": str(root / "arc2face/arc2face"),
        "vae": str(root / "sd15/vae"),
        "tokenizer": str(root / "sd15/tokenizer"),
        "scheduler": str(root / "sd15/scheduler"),
        "arcface": str(root / "arc2face/arcface.onnx"),
        "detector": str(root / "antelopev2/scrfd_10g_bnkps.onnx"),
    }


def write_job_inputs(folder: Path, images: int, hidden: int) -> None:
    """plan.h5 of `images` images (identities of 4), a zero Δ and models.json."""
    rng = np.random.default_rng(0)
    plan = ShardPlan(shard=0, attrs={"seed": 0, "n_shards": 1, "images_per_identity": 4})
    for k in range(0, images, 4):
        identity = f"id{k // 4}"
        prototype = rng.normal(size=512).astype(np.float32)
        prototype /= np.linalg.norm(prototype)
        plan.identities.append(identity)
        plan.prototypes.append(prototype)
        plan.n_sources_ok.append(2)
        plan.identity_status.append("planned")
        plan.identity_reason.append("")
        for index in range(min(4, images - k)):
            condition = prototype + 0.3 * rng.normal(size=512).astype(np.float32)
            plan.image_identity.append(identity)
            plan.image_index.append(index)
            plan.source_path.append(f"{identity}/{index}.png")
            plan.t.append(0.5)
            plan.seed.append(int(rng.integers(2**62)))
            plan.condition.append(condition / np.linalg.norm(condition))
    write_plan(folder / "plan.h5", plan)
    zeros = np.zeros((77, hidden), np.float32)
    write_delta(folder / "delta.h5", Delta(zeros, zeros, zeros, 1, 1, "per_token"))
    write_model_hashes(folder / "models.json", {})


def run_job(config: Path, inputs: Path, shard: Path) -> dict:
    """`digi2real generate` as a process of its own: wall seconds, peak RSS, its log."""
    command = [sys.executable, "-m", "digi2real", "generate", "--config", str(config)]
    command += ["--plan", str(inputs / "plan.h5"), "--delta", str(inputs / "delta.h5")]
    command += ["--models", str(inputs / "models.json"), "--out", str(shard / "manifest.parquet")]
    env = {**os.environ, "DIGI2REAL_FORCE_DETECTIONS": "1"}
    log = shard.parent / f"{shard.name}.log"
    started = time.perf_counter()
    with open(log, "w") as stream:
        child = subprocess.Popen(command, cwd=REPO, env=env, stdout=stream, stderr=stream)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    text = log.read_text()
    if status != 0:
        sys.exit(f"generate failed (status {status}):\n{text[-3000:]}")
    gpu = re.search(r"peak GPU memory allocated: (\d+) MB", text)
    return {
        "seconds": seconds,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "peak_gpu_mb": int(gpu.group(1)) if gpu else None,
        "log": text,
    }


def reference_pipeline(root: Path, device: str, dtype: torch.dtype):
    """diffusers' own pipeline from the model folders, as Arc2Face's README builds it."""
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    from digi2real import models

    pipeline = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(root / "sd15/vae", torch_dtype=dtype),
        text_encoder=models.load_text_encoder(root / "arc2face/encoder").to(dtype=dtype),
        tokenizer=models.load_tokenizer(root / "sd15/tokenizer"),
        unet=UNet2DConditionModel.from_pretrained(root / "arc2face/arc2face", torch_dtype=dtype),
        scheduler=DPMSolverMultistepScheduler.from_pretrained(root / "sd15/scheduler"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


def reference_rate(pipeline, images: int, height: int, steps: int, device: str) -> float:
    """Images per second of the README's call: one identity, 4 images per prompt."""
    from digi2real.projection import Arc2FaceProjector

    projector = Arc2FaceProjector(pipeline.text_encoder, pipeline.tokenizer)
    face = torch.nn.functional.normalize(torch.randn(1, 512), dim=1)
    prompt_embeds = projector.project(face)

    def call() -> None:
        pipeline(
            prompt_embeds=prompt_embeds,
            num_inference_steps=steps,
            guidance_scale=3.0,
            num_images_per_prompt=4,
            height=height,
            width=height,
        )

    call()  # warm-up
    synchronize(device)
    started = time.perf_counter()
    calls = max(1, images // 4)
    for _ in range(calls):
        call()
    synchronize(device)
    return 4 * calls / (time.perf_counter() - started)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def flops_per_image(pipeline, height: int, steps: int, guidance: bool = True) -> float:
    """FLOPs of one image: the UNet on guidance's batch of two at every step, and one VAE
    decode, counted by torch on the models themselves."""
    from torch.utils.flop_counter import FlopCounterMode

    unet, vae = pipeline.unet, pipeline.vae
    latent = height // pipeline.vae_scale_factor
    dtype, device = unet.dtype, unet.device
    batch = 2 if guidance else 1
    sample = torch.randn(batch, 4, latent, latent, dtype=dtype, device=device)
    context = torch.randn(batch, 77, unet.config.cross_attention_dim, dtype=dtype, device=device)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            unet(sample, 999, encoder_hidden_states=context)
        unet_flops = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            vae.decode(sample[:1])
        vae_flops = counter.get_total_flops()
    return steps * unet_flops + vae_flops


def peak_tflops(device: str, dtype: torch.dtype) -> float:
    """The device's matmul rate in `dtype`: the ceiling a share of peak is taken of."""
    n = 8192 if device == "cuda" else 1024
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    synchronize(device)
    repeats = 20 if device == "cuda" else 3
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - started) / 1e12


def batch_rates(config: dict, batch_sizes: list[int], device: str) -> dict[int, float]:
    """Images per second of generation alone (UNet steps and decode) at each batch size."""
    from digi2real.config import resolve_config
    from digi2real.generation import Arc2FaceGenerator, GenerationSettings, build_pipeline
    from digi2real.models import ModelPaths

    rates = {}
    for batch_size in batch_sizes:
        given = {**config, "generation": {**config["generation"], "batch_size": batch_size}}
        resolved = resolve_config(given)
        settings = GenerationSettings.from_config(resolved)
        generator = Arc2FaceGenerator(
            build_pipeline(ModelPaths.from_config(resolved, *settings.models()), settings),
            settings,
            None,
        )
        conditions = np.eye(batch_size, 512, dtype=np.float32)
        seeds = list(range(batch_size))
        generator.generate(conditions, seeds)  # warm-up (and compile)
        synchronize(device)
        started = time.perf_counter()
        generator.generate(conditions, seeds)
        synchronize(device)
        rates[batch_size] = batch_size / (time.perf_counter() - started)
        del generator
        if device == "cuda":
            torch.cuda.empty_cache()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="the demo's tiny models, 64x64")
    parser.add_argument("--images", type=int, help="images of the timed job (64; tiny: 8)")
    parser.add_argument("--batch-sizes", help="generation batch sizes to time (4,8,16; tiny: 1,2)")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tiny = args.tiny or device == "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    height, steps = (64, 3) if tiny else (512, 25)
    images = args.images or (8 if tiny else 64)
    batch_sizes = [int(b) for b in (args.batch_sizes or ("1,2" if tiny else "4,8,16")).split(",")]
    if images < 2 * JOB_BATCH:
        parser.error(f"--images {images}: the steady rate needs two batches of {JOB_BATCH}")
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"device: {name} ({device}, {str(dtype).removeprefix('torch.')})")
    print(
        f"models: {'the demo tiny ones' if tiny else 'SD 1.5 sizes'}, random weights; "
        f"{height}x{height}, {steps} DPM-Solver++ steps, guidance 3"
    )
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        root = folder / "models"
        build_tiny_models(root, size="tiny" if tiny else "sd15")
        config = yaml.safe_load((REPO / "demo.yaml").read_text())
        config.pop("demo")
        config["models"] = models_section(root)
        config["results"] = str(folder / "results")
        config["generation"] = {"height": height, "width": height, "steps": steps}
        config["plan"]["images_per_identity"] = 4
        if not tiny:
            config["face"] = {"det_size": 640}
        config_path = folder / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))

        # (a) The reference, and what an image costs.
        pipeline = reference_pipeline(root, device, dtype)
        flops = flops_per_image(pipeline, height, steps)
        reference = reference_rate(pipeline, images, height, steps, device)
        hidden = pipeline.text_encoder.config.hidden_size
        del pipeline
        if device == "cuda":
            torch.cuda.empty_cache()
        peak = peak_tflops(device, dtype)
        print(f"FLOPs per image: {flops / 1e9:.1f} GFLOP (UNet x {steps} steps x 2, VAE decode)")
        print(f"peak: {peak:.1f} TFLOP/s (matmul, {str(dtype).removeprefix('torch.')})")

        def achieved(rate: float) -> str:
            tflops = rate * flops / 1e12
            return f"{tflops:.2f} TFLOP/s, {100 * tflops / peak:.1f}% of peak"

        print(
            f"(a) reference, diffusers' pipeline as Arc2Face's README (4 images a call, no "
            f"compile): {reference:.3f} images/s, {achieved(reference)}"
        )

        # (b) This project's job: its log's phases give the steady rate; the rest of the
        # job (imports, loading, the first batch with any compiling) is its startup.
        inputs = folder / "inputs"
        inputs.mkdir()
        write_job_inputs(inputs, images, hidden)
        job = run_job(config_path, inputs, folder / "shard")
        first = float(re.search(r"first batch of (\d+) generated in ([\d.]+) s", job["log"])[2])
        batch = int(re.search(r"first batch of (\d+)", job["log"])[1])
        generated = float(re.search(r"stored and checked in ([\d.]+) s", job["log"])[1])
        committed = float(re.search(r"committed \S+ in ([\d.]+) s", job["log"])[1])
        steady_seconds = generated - first + committed * (images - batch) / images
        steady = (images - batch) / steady_seconds
        startup = job["seconds"] - images / steady
        print(
            f"(b) digi2real generate at its defaults (background store and face check, "
            f"writing, packing): {steady:.3f} images/s steady, {achieved(steady)}; a job of "
            f"{images} images {job['seconds']:.1f} s, of which startup {startup:.1f} s "
            f"(first batch {first:.1f} s)"
        )
        print(f"ratio (b)/(a): {steady / reference:.2f}")
        speedups = re.search(r"generation speed-ups: (.*)", job["log"])
        providers = re.findall(r"onnxruntime providers (\[.*\])", job["log"])
        print(f"job's speed-ups: {speedups.group(1) if speedups else '?'}; face models on "
              f"{providers[0] if providers else '?'}")  # fmt: skip
        per_image = (startup + SHARD_IMAGES / steady) / SHARD_IMAGES
        print(
            f"cluster.seconds_per_image for shards of {SHARD_IMAGES} images: {per_image:.3f} "
            "(startup included)"
        )
        peak_gpu = job["peak_gpu_mb"]
        print(
            f"job's peak host memory: {job['peak_rss_mb']:.0f} MB; peak GPU "
            f"memory: {'n/a (no GPU)' if peak_gpu is None else f'{peak_gpu} MB'}"
        )

        # Batch sizes: generation alone.
        rates = batch_rates(config, batch_sizes, device)
        listed = ", ".join(f"{b}: {r:.3f}" for b, r in rates.items())
        best = max(rates, key=rates.get)
        print(f"generation alone, images/s by batch size: {listed}; fastest: {best}")
        print(json.dumps({"reference": reference, "ours": steady, "ratio": steady / reference}))


if __name__ == "__main__":
    main()
