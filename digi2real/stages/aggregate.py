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


def run(config: Config, results: Path, manifests: list[Path], out: Path, dataset: Path) -> None:
    """Shard `manifests` (under `results`) -> the manifest `out` and the `dataset` folder."""
    from digi2real.dataset import Thresholds, apply_filter
    from digi2real.formats import read_shard_manifests, write_dataset, write_manifest

    table = apply_filter(read_shard_manifests(manifests, results), Thresholds.from_config(config))
    write_dataset(table, results, dataset)
    write_manifest(table, out)
