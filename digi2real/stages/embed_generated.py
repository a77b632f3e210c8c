"""Rule `embed_generated`: the aligned crops of one generation shard, read from its archive,
embedded with `evaluation.recognizer` (they are already aligned: no detection), in the
generated-embeddings contract, landmarks kept from the shard's check."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config
from digi2real.stages import Argument

CONFIG_KEYS = ["evaluation.recognizer", "quality.face.providers", "quality.face.batch_size"]

HELP = "a generation shard's aligned crops embedded with evaluation.recognizer"
ARGUMENTS = (
    Argument("--manifest", "shards/<shard>/manifest.parquet", dest="manifest_path"),
    Argument("--out", "generated-embeddings .h5 to write"),
)


def run(config: Config, manifest_path: Path, out: Path) -> None:
    """The crops of the shard committed by `manifest_path`, every image with a face, into
    `out`, row for row as the shard's own embeddings.h5."""
    import numpy as np
    import pyarrow.parquet as pq

    from digi2real.errors import DataError
    from digi2real.faces import FaceSettings, UnreadableImage, decode_image, face_pipeline
    from digi2real.models import RECOGNIZER, ModelPaths
    from digi2real.progress import log
    from digi2real.shard_store import (
        EMBEDDINGS,
        IMAGE_ARCHIVE,
        GeneratedEmbeddings,
        ImageArchives,
        read_generated_embeddings,
        write_generated_embeddings,
    )
    from digi2real.status import Status

    # 1. The shard's images with a face and the crop its manifest lists for each, checked
    # before any model loads.
    shard = manifest_path.parent
    generated = read_generated_embeddings(shard / EMBEDDINGS)
    manifest = pq.read_table(manifest_path, columns=["identity", "image_index", "aligned_path"])
    aligned = {
        (identity, index): path
        for identity, index, path in zip(*(c.to_pylist() for c in manifest.columns), strict=True)
    }
    keys = list(zip(generated.identity, generated.image_index.tolist(), strict=True))
    missing = [key for key in keys if not aligned.get(key)]
    if missing:
        raise DataError(f"{manifest_path}: no aligned crop listed for {missing[:3]}")
    # 2. The recognizer alone (the crops are aligned already), with quality.face's settings.
    face = config["quality"]["face"]
    settings = FaceSettings.aligned(str(face["providers"]), int(face["batch_size"]))
    paths = ModelPaths.from_config(config, *settings.models(RECOGNIZER))
    pipeline = face_pipeline(settings, paths, RECOGNIZER)
    # 3. Every crop embedded, in the recognizer's batches, row for row as the shard's file.
    archives = ImageArchives()

    def crop(key: tuple[str, int]) -> np.ndarray | Exception:
        name = f"{shard / IMAGE_ARCHIVE}:{aligned[key]}"
        try:
            return decode_image(archives.read(shard / IMAGE_ARCHIVE, aligned[key]), name)
        except UnreadableImage as error:
            return error

    embeddings = np.zeros((len(keys), 512), np.float32)
    for start in range(0, len(keys), pipeline.batch_size):
        batch = keys[start : start + pipeline.batch_size]
        for row, result in enumerate(pipeline.process_images(map(crop, batch)), start=start):
            if result.status is not Status.OK:
                raise DataError(f"{shard / IMAGE_ARCHIVE}:{aligned[keys[row]]}: {result.message}")
            embeddings[row] = result.embedding
    write_generated_embeddings(
        out,
        GeneratedEmbeddings(
            identity=generated.identity,
            image_index=generated.image_index,
            embedding=embeddings,
            landmarks=generated.landmarks,
        ),
    )
    log.info("embed_generated %s: %d crops", shard.name, len(keys))
