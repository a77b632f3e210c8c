"""Rule `aggregate`: the shard manifests in one, the quality filter, the ImageFolder dataset.

The quality thresholds are read here only: changing them reruns this rule and the report,
never a generation shard.
"""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config

CONFIG_KEYS = [
    "quality.min_det_score",
    "quality.min_cos_prototype",
    "quality.min_images_per_identity",
]


def run(
    config: Config,
    results: Path,
    manifests: list[Path],
    out: Path,
    dataset: Path,
    embeddings: Path,
) -> None:
    """Shard `manifests` (under `results`) -> the manifest `out`, the `dataset` folder and the
    `embeddings` of every generated image with a face, marked passed or not."""
    import numpy as np

    from digi2real.dataset import Thresholds, apply_filter
    from digi2real.formats import (
        EMBEDDINGS,
        GeneratedEmbeddings,
        read_generated_embeddings,
        read_shard_manifests,
        write_dataset,
        write_generated_embeddings,
        write_manifest,
    )

    table = apply_filter(read_shard_manifests(manifests, results), Thresholds.from_config(config))
    shards = [read_generated_embeddings(manifest.parent / EMBEDDINGS) for manifest in manifests]
    kept = table.filter(table.column("passed"))
    passed = set(
        zip(
            kept.column("identity").to_pylist(), kept.column("image_index").to_pylist(), strict=True
        )
    )
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
    write_dataset(table, results, dataset)
    write_manifest(table, out)
