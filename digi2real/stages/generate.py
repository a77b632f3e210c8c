"""Rule `generate`: one identity shard, generated, checked and committed (a GPU job).

A shard is a commit: each image is written under a temporary name and renamed, then packed
into the shard's archive, and the shard's manifest is written last; a rerun of a killed shard
resumes from the images whose key still matches (digi2real/shard_generation.py; the
files: digi2real/shard_store.py).
"""

from __future__ import annotations

import time
from pathlib import Path

from digi2real.config import Config
from digi2real.stages import Argument

CONFIG_KEYS = [
    "models",
    "generation",
    "images",
    "delta.scale",
    "plan.images_per_identity",
    "quality.face",
]

HELP = "generate and check one shard (GPU job)"
ARGUMENTS = (
    Argument("--plan", "plan/<shard>.h5", dest="plan_path"),
    Argument("--delta", "delta.h5", dest="delta_path"),
    Argument("--models", "models.json, the model hashes", dest="models_path"),
    Argument("--out", "shards/<shard>/manifest.parquet to commit"),
    Argument(
        "--donors",
        "other shard folders whose archives may hold this shard's images, made with the same "
        "keys (a sweep's: the run's shard, the other generation folders')",
        nargs="*",
        default=[],
    ),
)


def run(
    config: Config,
    plan_path: Path,
    delta_path: Path,
    models_path: Path,
    out: Path,
    donors: list[Path] | None = None,
) -> int:
    """Generate the shard planned in `plan_path` into the folder of `out`, its manifest, with
    the model hashes of `models_path` in each image's key; returns the process exit code. An
    image a `donors` shard made with the same key is copied, not generated again."""
    import torch

    from digi2real import faces, formats, generation, models, shard_generation, shard_store
    from digi2real.progress import STOPPED, StopFlag, log
    from digi2real.testing import Faults

    # 1. Inputs and settings, checked before any model loads; what a killed job left half
    # written goes.
    plan = formats.read_plan(plan_path)
    delta = formats.read_delta(delta_path)
    model_hashes = formats.read_model_hashes(models_path)
    settings = generation.GenerationSettings.from_config(config)
    face_settings = faces.FaceSettings.from_config(config, "quality")
    image_formats = shard_store.ImageFormats.from_config(config)
    generation_models = models.ModelPaths.from_config(config, *settings.models())
    face_models = models.ModelPaths.from_config(config, *face_settings.models(models.ARCFACE))
    images_per_identity = config["plan"]["images_per_identity"]
    generation.check_inputs(generation_models, delta.delta, delta_path)
    shard_dir = out.parent
    shard_dir.mkdir(parents=True, exist_ok=True)
    shard_store.remove_leftovers(shard_dir)
    # The job's thread count, not the machine's: pixels and embeddings are then bitwise the
    # same on a rerun that got other CPUs (generation.cpu_threads).
    torch.set_num_threads(settings.cpu_threads)
    checker = faces.face_pipeline(face_settings, face_models, threads=settings.cpu_threads)
    faults = Faults(plan.shard)
    checked: dict = {}
    failures: dict[int, str] = {}
    keys: list[str] = []
    with StopFlag() as stop:
        # 2. Generate the images with no stored bytes of their key (new, or made with other
        # settings); each batch is stored and checked in the background while the next one
        # is generated.
        if len(plan):
            # The keys take the device and dtype build_pipeline loads into: the models load
            # only when an image is missing, so that a rerun whose images are all kept (a plan
            # gate dropped an identity, a model moved) reads no weights.
            device, dtype = generation.device_and_dtype(settings)
            shard_key = shard_generation.settings_key(
                model_hashes, settings, device.type, str(dtype), delta.delta, image_formats
            )
            conditions_and_seeds = zip(plan.condition, plan.seed, strict=True)
            keys = [
                shard_generation.image_key(shard_key, c, seed) for c, seed in conditions_and_seeds
            ]
            stored = shard_store.locate_raw_images(plan, keys, shard_dir, image_formats)
            shard_store.adopt_donated(stored, keys, donors or [])
            started = time.monotonic()
            with shard_generation.BackgroundStore(checker, stored, keys, faults) as store:
                if stored.missing():
                    pipeline = generation.build_pipeline(generation_models, settings)
                    if (pipeline.device.type, pipeline.unet.dtype) != (device.type, dtype):
                        raise RuntimeError(  # the keys would name other pixels than these
                            f"pipeline on {pipeline.device.type} in {pipeline.unet.dtype}, "
                            f"keyed as {device.type} in {dtype}"
                        )
                    generator = generation.Arc2FaceGenerator(pipeline, settings, delta.delta)
                    try:
                        failures = shard_generation.generate_missing(
                            generator, stored, store, stop, faults
                        )
                    except generation.Interrupted:
                        pass
            checked = store.checks
            log.info(
                "shard %d: %d images generated, stored and checked in %.3f s",
                plan.shard,
                len(checked),
                time.monotonic() - started,
            )
            generation.log_peak_gpu_memory(device)
            if stop():
                log.warning("shard %d: stopped; images on disk are kept for the rerun", plan.shard)
                return STOPPED
        else:  # only skipped identities: nothing to generate
            stored = shard_store.locate_raw_images(plan, keys, shard_dir, image_formats)
    # 3. Check the images reused from earlier runs, embed every crop, and pack the images and
    # crops into the shard's archive, renamed into place once whole.
    started = time.monotonic()
    checks, cropped = shard_generation.embed_and_pack(
        checker, stored, keys, checked, failures, faults
    )
    # 4. Commit: the embeddings of the checked images, then the manifest, last; then the loose
    # images, which the archive now holds, go.
    faults.before_commit()
    embeddings = shard_store.checked_embeddings(plan, checks)
    shard_store.write_generated_embeddings(shard_dir / shard_store.EMBEDDINGS, embeddings)
    table = shard_store.manifest_table(
        plan, checks, keys, images_per_identity, image_formats, cropped
    )
    shard_store.write_manifest(table, out)
    shard_store.remove_loose_images(shard_dir)
    log.info("shard %d: committed %s in %.3f s", plan.shard, out, time.monotonic() - started)
    return 0
