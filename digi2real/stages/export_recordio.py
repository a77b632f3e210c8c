"""Rule `export_recordio`: the passed images as MXNet RecordIO (train.rec, train.idx,
property), what insightface's arcface_torch reads (digi2real/exports.py)."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config
from digi2real.stages import Argument
from digi2real.stages.sample_mixin import MIXIN_ARGUMENT

CONFIG_KEYS: list[str] = ["export.jpeg_quality"]

HELP = "the passed images as recordio"
ARGUMENTS = (
    Argument("--results", "results folder"),
    Argument("--manifest", "the aggregated manifest.parquet"),
    Argument("--out", "export/recordio folder to write"),
    MIXIN_ARGUMENT,
)


def run(
    config: Config, results: Path, manifest: Path, out: Path, mixin: Path | None = None
) -> None:
    """The export of the aggregated `manifest` and the mix-in `mixin` into the folder `out`
    (exports.build_export): JPEG at export.jpeg_quality."""
    from digi2real.exports import build_export, write_recordio

    quality = config["export"]["jpeg_quality"]
    build_export(
        "export_recordio",
        manifest,
        results,
        mixin,
        out,
        lambda folder, classes, samples: write_recordio(folder, classes, samples, quality),
    )
