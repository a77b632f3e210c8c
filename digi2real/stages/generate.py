"""Rule `generate`: one identity shard, generated, checked and committed (a GPU job).

A shard is a commit: each image is written under a temporary name and renamed, then packed
into the shard's archive, and the shard's manifest is written last; a rerun of a killed shard
resumes from the images whose key still matches (digi2real/shards.py).
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
STOPPED = 143  # exit code after SIGTERM, as a shell reports a process ended by it

HELP = "generate and check one shard (GPU job)"
ARGUMENTS = (
    Argument("--plan", "plan/<shard>.h5", dest="plan_path"),
    Argument("--delta", "delta.h5", dest="delta_path"),
    Argument("--models", "models.json, the model hashes", dest="models_path"),
    Argument("--out", "shards/<shard>/manifest.parquet to commit"),
)


def run(config: Config, plan_path: Path, delta_path: Path, models_path: Path, out: Path) -> int:
    """Generate the shard planned in `plan_path` into the folder of `out`, its manifest, with
    the model hashes of `models_path` in each image's key; returns the process exit code."""
    import torch

    from digi2real import faces, formats, generation, shards
    from digi2real.progress import log
    from digi2real.testing import Faults

    # 1. Inputs and settings, checked before any model loads; what a killed job left half
    # written goes.
    plan = formats.read_plan(plan_path)
    delta = formats.read_delta(delta_path)
    model_hashes = formats.read_model_hashes(models_path)
    settings = generation.GenerationSettings.from_config(config)
    image_formats = formats.ImageFormats.from_config(config)
    generation.check_inputs(config, settings, delta.delta, delta_path)
    shard_dir = out.parent
    shard_dir.mkdir(parents=True, exist_ok=True)
    shards.remove_leftovers(shard_dir)
    # The job's thread count, not the machine's: pixels and embeddings are then bitwise the
    # same on a rerun that got other CPUs (generation.cpu_threads).
    torch.set_num_threads(settings.cpu_threads)
    checker = faces.face_pipeline_from_config(config, "quality", threads=settings.cpu_threads)
    faults = Faults(plan.shard)
    checked: dict = {}
    failures: dict[int, str] = {}
    keys: list[str] = []
    with shards.StopFlag() as stop:
        # 2. Generate the images with no stored bytes of their key (new, or made with other
        # settings); each batch is stored and checked in the background while the next one
        # is generated.
        if len(plan):
            pipeline = generation.build_pipeline(config, settings)
            generator = generation.Arc2FaceGenerator(pipeline, settings, delta.delta)
            shard_key = shards.settings_key(
                model_hashes,
                settings,
                pipeline.device.type,
                str(pipeline.unet.dtype),
                delta.delta,
                image_formats,
            )
            conditions_and_seeds = zip(plan.condition, plan.seed, strict=True)
            keys = [shards.image_key(shard_key, c, seed) for c, seed in conditions_and_seeds]
            raw = shards.locate_raw_images(plan, keys, shard_dir, image_formats)
            started = time.monotonic()
            with shards.BackgroundStore(checker, raw, keys, faults) as store:
                try:
                    failures = shards.generate_missing(generator, raw, store, stop, faults)
                except generation.Interrupted:
                    pass
            checked = store.results
            log.info(
                "shard %d: %d images generated, stored and checked in %.3f s",
                plan.shard,
                len(checked),
                time.monotonic() - started,
            )
            generation.log_peak_gpu_memory(pipeline.device)
            if stop():
                log.warning("shard %d: stopped; images on disk are kept for the rerun", plan.shard)
                return STOPPED
        else:  # only skipped identities: nothing to generate
            raw = shards.locate_raw_images(plan, keys, shard_dir, image_formats)
    # 3. Check the images reused from earlier runs, embed every crop, and pack the images and
    # crops into the shard's archive, renamed into place once whole.
    started = time.monotonic()
    results, cropped = shards.embed_and_pack(checker, raw, keys, checked, failures, faults)
    # 4. Commit: the embeddings of the checked images, then the manifest, last; then the loose
    # images, which the archive now holds, go.
    faults.before_commit()
    embeddings = shards.checked_embeddings(plan, results)
    formats.write_generated_embeddings(shard_dir / formats.EMBEDDINGS, embeddings)
    images_per_identity = config["plan"]["images_per_identity"]
    table = shards.manifest_table(plan, results, keys, images_per_identity, image_formats, cropped)
    formats.write_manifest(table, out)
    shards.remove_loose_images(shard_dir)
    log.info("shard %d: committed %s in %.3f s", plan.shard, out, time.monotonic() - started)
    return 0
