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
    """The export of the aggregated `manifest` and the mix-in `mixin` into the folder `out`
    (exports.build_export): shards of export.samples_per_tar shuffled with the seed."""
    from digi2real.exports import build_export, write_webdataset

    export = config["export"]
    build_export(
        "export_webdataset",
        manifest,
        results,
        mixin,
        out,
        lambda folder, classes, samples: write_webdataset(
            folder,
            classes,
            samples,
            export["jpeg_quality"],
            export["samples_per_tar"],
            config["seed"],
        ),
    )
