"""Rule `aggregate`: the shard manifests in one, the quality filter, the embeddings of the
generated images (the exports, export_*, build the datasets trainers read).

The quality thresholds are read here only: changing them reruns this rule and the report,
never a generation shard.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from digi2real.config import Config
from digi2real.stages import Argument

if TYPE_CHECKING:
    import numpy as np

CONFIG_KEYS = [
    "quality.min_det_score",
    "quality.min_cos_prototype",
    "quality.min_images_per_identity",
    "quality.max_real_similarity",
    "quality.max_identity_similarity",
]

HELP = "merge shard manifests, filter, keep the embeddings"
ARGUMENTS = (
    Argument("--results", "results folder the manifests lie in"),
    Argument("--out", "manifest.parquet to write"),
    Argument("--embeddings", "embeddings/generated.h5 to write"),
    Argument("--real", "real faces' embeddings .h5 (FFHQ, the gallery)", nargs="+", default=[]),
    Argument("manifests", "shard manifests", nargs="+"),
)


def run(
    config: Config,
    results: Path,
    manifests: list[Path],
    out: Path,
    embeddings: Path,
    real: list[Path] | None = None,
) -> None:
    """Shard `manifests` (under the results folder `results`) -> the manifest `out` and the
    `embeddings` of every generated image with a face, marked passed or not. `real`: the real
    faces' embeddings files (FFHQ, the gallery), for quality.max_real_similarity."""
    import numpy as np

    from digi2real.dataset import Thresholds, apply_filter
    from digi2real.errors import DataError
    from digi2real.shard_store import (
        EMBEDDINGS,
        GeneratedEmbeddings,
        read_generated_embeddings,
        read_shard_manifests,
        write_generated_embeddings,
        write_manifest,
    )

    # 1. The settings and the shards: their manifests in one table, their embeddings.
    thresholds = Thresholds.from_config(config)
    if thresholds.max_real_similarity is not None and not real:
        raise DataError("quality.max_real_similarity is set but no real embeddings were given")
    table = read_shard_manifests(manifests, results)
    shards = [read_generated_embeddings(manifest.parent / EMBEDDINGS) for manifest in manifests]
    # 2. What the gates beyond each image's own scores need: each row's embedding, and its
    # cosine to the nearest real face.
    row_embedding = real_cos = None
    if thresholds.max_real_similarity is not None or thresholds.max_identity_similarity is not None:
        row_embedding = embedding_of_each_row(table, shards)
    if thresholds.max_real_similarity is not None:
        real_cos = nearest_real_face(row_embedding, real or [])
    # 3. The filter, then the embeddings marked passed or not, and the manifest last.
    table = apply_filter(table, thresholds, real_cos, row_embedding)
    kept = table.filter(table.column("passed"))
    passed = set(image_names(kept))
    identity = [name for shard in shards for name in shard.identity]
    image_index = np.concatenate([shard.image_index for shard in shards])
    write_generated_embeddings(
        embeddings,
        GeneratedEmbeddings(
            identity=identity,
            image_index=image_index,
            embedding=np.concatenate([shard.embedding for shard in shards]),
            landmarks=np.concatenate([shard.landmarks for shard in shards]),
            passed=np.array(
                [key in passed for key in zip(identity, image_index.tolist(), strict=True)], bool
            ),
        ),
    )
    write_manifest(table, out)


def embedding_of_each_row(table, shards) -> np.ndarray:
    """(rows, 512) float32: each manifest row's embedding, zeros where it has no face."""
    import numpy as np

    row_of = {key: row for row, key in enumerate(image_names(table))}
    row_embedding = np.zeros((len(table), 512), np.float32)
    for shard in shards:
        keys = zip(shard.identity, shard.image_index.tolist(), strict=True)
        row_embedding[[row_of[key] for key in keys]] = shard.embedding
    return row_embedding


def nearest_real_face(row_embedding: np.ndarray, real: list[Path]) -> np.ndarray:
    """Each row's cosine to its nearest real face in the `real` embeddings files; NaN where the
    row has no face."""
    import numpy as np

    from digi2real.evaluation import nearest
    from digi2real.formats import read_real_faces

    faces, _ = read_real_faces(real)
    has_face = np.any(row_embedding != 0, axis=1)
    real_cos = np.full(len(row_embedding), np.nan)
    if len(faces):
        real_cos[has_face], _ = nearest(row_embedding[has_face], faces)
    return real_cos


def image_names(table) -> list[tuple[str, int]]:
    """(identity, image_index) of each manifest row."""
    columns = (table.column("identity").to_pylist(), table.column("image_index").to_pylist())
    return list(zip(*columns, strict=True))
