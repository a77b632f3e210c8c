"""Rule `embed`: one shard of a dataset's index (DigiFace, FFHQ or the gallery) embedded with one
recognizer: the generator's ArcFace (`models.arcface`), or `evaluation.recognizer`, a model the
generator was not steered by, for the evaluation."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config
from digi2real.stages import Argument

# `{dataset}` is the rule's wildcard; `{recognizer}` the config key of the model it embeds
# with, that of its embedding space.
CONFIG_KEYS = ["{recognizer}", "models.detector", "{dataset}.face"]
# Each embedding space: its folder under the results (the rule's wildcard `space`) -> the
# config key of the model it is embedded with (the files' `recognizer` attribute).
SPACES = {"embeddings": "models.arcface", "evaluation/embeddings": "evaluation.recognizer"}
DATASETS = ("digiface", "ffhq", "gallery")  # the datasets the workflow indexes
# What an index row of an identity folder holding no image points at (see digi2real.indexing).
EMPTY_IDENTITY = "identity folder holds no images"

# The model of an embedding space, by its config key: embed's and embed_benchmarks' argument.
RECOGNIZER_ARGUMENT = Argument(
    "--recognizer",
    "config key of the model to embed with (default: the generator's ArcFace)",
    type=str,
    default="models.arcface",
    choices=tuple(SPACES.values()),
)

HELP = "embeddings of one shard of an index, with one recognizer"
ARGUMENTS = (
    Argument("dataset", "the dataset the index lists", type=str, choices=DATASETS),
    Argument("--index", "index .parquet of the dataset", dest="index_path"),
    Argument("--shard", "the shard to embed", type=int, default=0),
    Argument("--shard-size", "groups per shard", type=int, default=1 << 62),
    Argument("--out", "embeddings .h5 to write"),
    RECOGNIZER_ARGUMENT,
)


def run(
    config: Config,
    dataset: str,
    index_path: Path,
    shard: int,
    shard_size: int,
    out: Path,
    recognizer: str = "models.arcface",
) -> None:
    """Embed the index rows of `shard` (`shard_size` groups: identities or images) into `out`;
    every row gets a status. `recognizer`: the config key of the model to embed with, that of
    one of SPACES."""
    import numpy as np

    from digi2real import models
    from digi2real.faces import FaceResult, FaceSettings, face_pipeline
    from digi2real.formats import EmbeddingTable, read_index, write_embeddings
    from digi2real.progress import Progress, log
    from digi2real.status import Status

    # 1. The shard's index rows, the face settings and the models, checked before any loads.
    index = read_index(index_path)
    rows = index.rows_of_shard(shard, shard_size)
    spec = {spec.key: spec for spec in (models.ARCFACE, models.RECOGNIZER)}[recognizer]
    settings = FaceSettings.from_config(config, dataset)
    paths = models.ModelPaths.from_config(config, *settings.models(spec))
    # 2. Every image of the shard through the face pipeline; an identity folder with no
    # image gets its row too.
    pipeline = face_pipeline(settings, paths, spec)
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
    # 3. The embeddings, with what made them: the settings and the models' hashes.
    attrs = {
        "dataset": dataset,
        "dataset_root": str(root),
        "mode": "prealigned" if settings.prealigned else "detect",
        "det_size": settings.det_size,
        "pad": settings.pad,
        "arcface_sha256": models.model_sha256(paths[spec], spec),
        "recognizer": spec.key,
        "shard": shard,
    }
    if not settings.prealigned:
        attrs["detector_sha256"] = models.model_sha256(paths[models.DETECTOR], models.DETECTOR)
    table = EmbeddingTable(
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
    write_embeddings(out, table)
    counts = np.bincount(table.status.astype(np.int64), minlength=len(Status))
    log.info(
        "%s shard %d: %d images, %s",
        dataset,
        shard,
        len(table),
        ", ".join(f"{Status(code).label} {n}" for code, n in enumerate(counts) if n),
    )
