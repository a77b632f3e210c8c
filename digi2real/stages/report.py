"""Rule `report`: the dataset card (counts, reject reasons, similarities, hashes) and a grid."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config

CONFIG_KEYS = ["seed", "models", "digiface", "ffhq", "delta", "plan", "generation", "quality"]


def run(
    config: Config, results: Path, manifest: Path, models_path: Path, out: Path, samples: Path
) -> dict:
    """The card of the aggregated `manifest` into `out` (JSON), with the model hashes of
    `models_path`; the sample grid into `samples`."""
    import time

    import pyarrow.parquet as pq

    from digi2real.dataset import dataset_card, sample_grid
    from digi2real.formats import read_model_hashes, write_card

    started = time.monotonic()
    table = pq.read_table(manifest)
    content = dataset_card(table, config, read_model_hashes(models_path))
    shard_times = [p.stat().st_mtime for p in (results / "shards").glob("*/manifest.parquet")]
    index_times = [p.stat().st_mtime for p in (results / "index").glob("*.parquet")]
    if shard_times and index_times:
        content["wall_time_s"] = round(max(shard_times) - min(index_times), 1)
    sample_grid(table, results, samples)
    write_card(out, content)
    content["report_seconds"] = time.monotonic() - started
    return content
