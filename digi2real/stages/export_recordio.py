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
    """The export of the aggregated `manifest` (paths under `results`) and of the real
    identities of `mixin`, labelled after them, into the folder `out`, built aside and renamed
    into place."""
    import pyarrow.parquet as pq

    from digi2real.atomic import atomic_folder
    from digi2real.exports import REAL, export_samples, write_recordio
    from digi2real.progress import log

    classes, samples = export_samples(pq.read_table(manifest), results, mixin)
    with atomic_folder(out) as staging:
        write_recordio(staging, classes, samples, config["export"]["jpeg_quality"])
    real = classes.sources.count(REAL)
    log.info(
        "export_recordio: %d images of %d identities (%d of them real)",
        len(samples), len(classes), real,
    )  # fmt: skip
