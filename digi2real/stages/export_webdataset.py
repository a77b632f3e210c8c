"""Rule `export_webdataset`: the passed images as WebDataset tar shards with a wids index
(digi2real/exports.py)."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config
from digi2real.stages import Argument
from digi2real.stages.sample_mixin import MIXIN_ARGUMENT

CONFIG_KEYS: list[str] = ["seed", "export.jpeg_quality", "export.samples_per_tar"]

HELP = "the passed images as webdataset"
ARGUMENTS = (
    Argument("--results", "results folder"),
    Argument("--manifest", "the aggregated manifest.parquet"),
    Argument("--out", "export/webdataset folder to write"),
    MIXIN_ARGUMENT,
)


def run(
    config: Config, results: Path, manifest: Path, out: Path, mixin: Path | None = None
) -> None:
    """The export of the aggregated `manifest` (paths under `results`) and of the real
    identities of `mixin`, labelled after them, into the folder `out`, built aside and renamed
    into place."""
    import pyarrow.parquet as pq

    from digi2real.atomic import atomic_folder
    from digi2real.exports import REAL, export_samples, write_webdataset
    from digi2real.progress import log

    classes, samples = export_samples(pq.read_table(manifest), results, mixin)
    with atomic_folder(out) as staging:
        write_webdataset(
            staging,
            classes,
            samples,
            config["export"]["jpeg_quality"],
            config["export"]["samples_per_tar"],
            config["seed"],
        )
    real = classes.sources.count(REAL)
    log.info(
        "export_webdataset: %d images of %d identities (%d of them real)",
        len(samples), len(classes), real,
    )  # fmt: skip
