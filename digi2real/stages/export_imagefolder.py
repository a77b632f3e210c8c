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
    """The export of the aggregated `manifest` (paths under `results`) and of the real
    identities of `mixin`, labelled after them, into the folder `out`, built aside and renamed
    into place."""
    import pyarrow.parquet as pq

    from digi2real.atomic import atomic_folder
    from digi2real.exports import REAL, export_samples, write_imagefolder
    from digi2real.progress import log

    classes, samples = export_samples(pq.read_table(manifest), results, mixin)
    with atomic_folder(out) as staging:
        write_imagefolder(staging, classes, samples)
    real = classes.sources.count(REAL)
    log.info(
        "export_imagefolder: %d images of %d identities (%d of them real)",
        len(samples), len(classes), real,
    )  # fmt: skip
