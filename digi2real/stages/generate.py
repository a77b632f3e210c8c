"""Rule `generate`: one identity shard, generated, checked and committed (a GPU job).

A shard is a commit: each image is written under a temporary name and renamed, then packed
into the shard's archive, and the shard's manifest is written last; a rerun of a killed shard
resumes from the images whose key still matches (digi2real/shards.py).
"""

from __future__ import annotations

import time
from pathlib import Path

from digi2real.config import Config

CONFIG_KEYS = [
    "models",
    "generation",
    "images",
    "delta.scale",
    "plan.images_per_identity",
    "quality.face",
]
STOPPED = 143  # exit code after SIGTERM, as a shell reports a process ended by it


def run(config: Config, plan_path: Path, delta_path: Path, models_path: Path, out: Path) -> int:
    """Generate the shard planned in `plan_path` into the folder of `out`, its manifest, with
    the model hashes of `models_path` in each image's key; returns the process exit code."""
    from digi2real.errors import DataError
    from digi2real.faces import face_pipeline_from_config
    from digi2real.formats import (
        EMBEDDINGS,
        ImageFormats,
        read_delta,
        read_model_hashes,
        read_plan,
        write_generated_embeddings,
        write_manifest,
    )
    from digi2real.generation import (
        Arc2FaceGenerator,
        GenerationSettings,
        Interrupted,
        build_pipeline,
        log_peak_gpu_memory,
    )
    from digi2real.progress import log
    from digi2real.shards import (
        BackgroundStore,
        StopFlag,
        checked_embeddings,
        embed_and_pack,
        generate_missing,
        image_key,
        locate_raw_images,
        manifest_table,
        remove_leftovers,
        remove_loose_images,
        settings_key,
    )
    from digi2real.testing import Faults

    # 1. Inputs and settings; what a killed job left half written goes.
    plan = read_plan(plan_path)
    delta = read_delta(delta_path)
    model_hashes = read_model_hashes(models_path)
    settings = GenerationSettings.from_config(config)
    formats = ImageFormats.from_config(config)
    shard_dir = out.parent
    shard_dir.mkdir(parents=True, exist_ok=True)
    remove_leftovers(shard_dir)
    stop = StopFlag()
    stop.install()
    faults = Faults(plan.shard)
    faces = face_pipeline_from_config(config, "quality")
    failures: dict[int, str] = {}
    checked: dict = {}
    keys: list[str] = []
    # 2. Generate the images with no stored bytes of their key (new, or made with other
    # settings); each batch is stored and checked in the background while the next one is
    # generated.
    if len(plan):
        pipeline = build_pipeline(config, settings)
        generator = Arc2FaceGenerator(pipeline, settings, delta.delta)
        shard_key = settings_key(
            model_hashes,
            settings,
            pipeline.device.type,
            str(pipeline.unet.dtype),
            delta.delta,
            formats,
        )
        keys = [image_key(shard_key, plan.condition[i], plan.seed[i]) for i in range(len(plan))]
        hidden = generator.projector.hidden_size
        if delta.delta.shape != (generator.projector.prompt_ids.shape[1], hidden):
            raise DataError(
                f"{delta_path}: delta has shape {delta.delta.shape}, the encoder gives "
                f"(77, {hidden}); was it estimated with another encoder?"
            )
        raw = locate_raw_images(plan, keys, shard_dir, formats)
        started = time.monotonic()
        with BackgroundStore(faces, raw, keys, faults) as store:
            try:
                failures = generate_missing(generator, raw, store, stop)
            except Interrupted:
                pass
        checked = store.results
        log.info(
            "shard %d: %d images generated, stored and checked in %.3f s",
            plan.shard,
            len(checked),
            time.monotonic() - started,
        )
        log_peak_gpu_memory(pipeline.device)
        if stop():
            log.warning("shard %d: stopped; images on disk are kept for the rerun", plan.shard)
            return STOPPED
    else:  # only skipped identities: nothing to generate
        raw = locate_raw_images(plan, keys, shard_dir, formats)
    # 3. Check the images reused from earlier runs, embed every crop, and pack the images and
    # crops into the shard's archive, renamed into place once whole.
    started = time.monotonic()
    results, cropped = embed_and_pack(faces, raw, keys, checked, failures, faults)
    # 4. Commit: the embeddings of the checked images, then the manifest, last; then the loose
    # images, which the archive now holds, go.
    faults.before_commit()
    write_generated_embeddings(shard_dir / EMBEDDINGS, checked_embeddings(plan, results))
    images_per_identity = config["plan"]["images_per_identity"]
    table = manifest_table(plan, results, keys, images_per_identity, formats, cropped)
    write_manifest(table, out)
    remove_loose_images(shard_dir)
    log.info("shard %d: committed %s in %.3f s", plan.shard, out, time.monotonic() - started)
    return 0
