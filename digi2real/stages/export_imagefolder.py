"""Rule `export_imagefolder`: the passed images as an ImageFolder, a folder per identity
named by its zero-padded label (digi2real/exports.py)."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config
from digi2real.stages import Argument
from digi2real.stages.sample_mixin import MIXIN_ARGUMENT

CONFIG_KEYS: list[str] = []

HELP = "the passed images as imagefolder"
ARGUMENTS = (
    Argument("--results", "results folder"),
    Argument("--manifest", "the aggregated manifest.parquet"),
    Argument("--out", "export/imagefolder folder to write"),
    MIXIN_ARGUMENT,
)


def run(
    config: Config, results: Path, manifest: Path, out: Path, mixin: Path | None = None
) -> None:
    """The export of the aggregated `manifest` and the mix-in `mixin` into the folder `out`
    (exports.build_export): the crops as stored."""
    from digi2real.exports import build_export, write_imagefolder

    build_export(
        "export_imagefolder",
        manifest,
        results,
        mixin,
        out,
        lambda folder, classes, samples: write_imagefolder(folder, classes, samples),
    )
