"""The pipeline's stages as functions of files: what the CLI subcommands and the workflow call."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from digi2real import layout, models
from digi2real.config import Config, config_hash, get
from digi2real.delta import compute_delta, projected_mean, write_delta
from digi2real.errors import DataError
from digi2real.faces import FaceResult, face_pipeline_from_config, face_settings
from digi2real.formats import EmbeddingTable, iter_ok_embeddings, read_embeddings, write_embeddings
from digi2real.indexing import Index
from digi2real.planning import PlanSettings, plan_identities, write_plan
from digi2real.progress import Progress, log
from digi2real.status import Status

EMPTY_IDENTITY = "identity folder holds no images"


def embed(config: Config, dataset: str, index: Index, rows: list[int]) -> EmbeddingTable:
    """ArcFace embeddings of the index rows `rows`; every row gets a status."""
    pipeline = face_pipeline_from_config(config, dataset)
    root = Path(index.root)
    image_rows = [row for row in rows if not index.path[row].endswith("/")]
    progress = Progress(f"embed {dataset}", len(image_rows))
    by_row: dict[int, FaceResult] = {
        row: FaceResult(Status.UNREADABLE, EMPTY_IDENTITY)
        for row in rows
        if index.path[row].endswith("/")
    }
    results = pipeline.process_paths(root / index.path[row] for row in image_rows)
    for row, result in zip(image_rows, results, strict=True):
        by_row[row] = result
        progress.advance()
    ordered = [by_row[row] for row in rows]
    settings = face_settings(config, dataset)
    attrs = {
        "dataset": dataset,
        "dataset_root": str(root),
        "mode": "prealigned" if settings["prealigned"] else "detect",
        "det_size": int(settings["det_size"]),
        "pad": float(settings["pad"]),
        "arcface_sha256": models.model_sha256(models.model_path(config, models.ARCFACE)),
    }
    if not settings["prealigned"]:
        attrs["detector_sha256"] = models.model_sha256(models.model_path(config, models.DETECTOR))
    return EmbeddingTable(
        embedding=np.stack(
            [r.embedding if r.embedding is not None else np.zeros(512, np.float32) for r in ordered]
        ).astype(np.float32)
        if ordered
        else np.zeros((0, 512), np.float32),
        status=np.array([int(r.status) for r in ordered], dtype=np.int8),
        identity=[index.identity[row] for row in rows],
        path=[index.path[row] for row in rows],
        det_score=np.array([r.det_score for r in ordered], dtype=np.float32),
        message=[r.message for r in ordered],
        attrs=attrs,
    )


def embed_shard(
    config: Config, dataset: str, index: Index, shard: int, shard_size: int, output: Path
) -> None:
    table = embed(config, dataset, index, index.rows_of_shard(shard, shard_size))
    table.attrs["shard"] = shard
    write_embeddings(output, table)
    counts = np.bincount(table.status.astype(np.int64), minlength=len(Status))
    log.info(
        "%s shard %d: %d images, %s",
        dataset,
        shard,
        len(table),
        ", ".join(f"{Status(code).label} {n}" for code, n in enumerate(counts) if n),
    )


def estimate_delta(config: Config, real: Path, synthetic: Path, output: Path) -> None:
    from digi2real.projection import Arc2FaceProjector

    device = models.resolve_device(get(config, "generation.device", "auto", kind=str))
    encoder = models.load_text_encoder(models.model_path(config, models.ENCODER)).to(device)
    projector = Arc2FaceProjector(
        encoder, models.load_tokenizer(models.model_path(config, models.TOKENIZER))
    )
    chunk_size = get(config, "delta.chunk_size", 256, kind=int)
    means = {}
    for name, path in (("real", real), ("synthetic", synthetic)):
        means[name] = projected_mean(projector.project, iter_ok_embeddings(path, chunk_size))
        log.info("delta: %d %s embeddings projected", means[name].count, name)
    result = compute_delta(
        means["real"], means["synthetic"], get(config, "delta.mode", "per_token", kind=str)
    )
    result.attrs = {
        "encoder_sha256": models.model_sha256(models.model_path(config, models.ENCODER)),
        "tokenizer_sha256": models.model_sha256(models.model_path(config, models.TOKENIZER)),
        "real_embeddings": str(real),
        "synthetic_embeddings": str(synthetic),
    }
    write_delta(output, result)


def plan(config: Config, embeddings: Path, outputs: list[Path]) -> None:
    """The plan of each generation shard into `outputs` (shard 0, 1, ...), identities cut in
    selection order. Shards past the last identity (a selection larger than the folder) get
    empty plans, so the workflow's shard list can follow from the config alone."""
    table = read_embeddings(embeddings)
    identities = list(dict.fromkeys(table.identity))
    if not identities or identities == [""]:
        raise DataError(f"{embeddings}: holds no identities (is it an FFHQ file?)")
    settings = PlanSettings.from_config(config)
    per_shard = get(config, "plan.identities_per_shard", 50, kind=int)
    needed = layout.n_shards(len(identities), per_shard)
    if len(outputs) < needed:
        raise DataError(
            f"{embeddings}: {len(identities)} identities need {needed} shards of "
            f"plan.identities_per_shard={per_shard}, but {len(outputs)} outputs were given"
        )
    for shard, path in enumerate(outputs):
        shard_plan = plan_identities(
            table, identities[shard * per_shard : (shard + 1) * per_shard], settings, shard
        )
        shard_plan.attrs = {
            "n_shards": len(outputs),
            "seed": settings.seed,
            "images_per_identity": settings.images_per_identity,
            "config_sha256": config_hash(config),
        }
        write_plan(path, shard_plan)
    log.info("plan: %d identities in %d shards", len(identities), len(outputs))
