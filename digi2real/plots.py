"""The report's figures: the evaluation's distributions with their thresholds marked, and image
pairs a person judges at a glance (sources beside generated faces, collisions, leaks).

Every function reads what `evaluate` and `aggregate` wrote and draws one PNG; none computes a
measure. Images that cannot be read (a dataset root not mounted where the report runs) are
drawn as grey tiles labelled with their path, never a failure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from digi2real.atomic import atomic_path
from digi2real.errors import DataError
from digi2real.formats import ArchivedImage

TILE = 112  # pixels of one face in the image grids
LABEL = 14  # pixels of the label strip under a tile


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # no display on a cluster node
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100, bbox_inches="tight")
    _figure().close(figure)


def _bins(histogram: dict) -> tuple[np.ndarray, np.ndarray]:
    counts = np.asarray(histogram["counts"], float)
    edges = np.linspace(histogram["low"], histogram["high"], len(counts) + 1)
    return edges, counts


def _no_data(axes, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes)


def verification_plot(evaluation: dict, path: Path) -> None:
    """Genuine and impostor score histograms (each as a share), the EER threshold marked."""
    plt = _figure()
    figure, axes = plt.subplots(figsize=(7, 3.5))
    verify = (evaluation.get("generated") or {}).get("verification") or {}
    if verify.get("eer") is None:
        _no_data(axes, "no genuine or no impostor pairs among the passed images")
    else:
        for key, colour in (("genuine", "tab:green"), ("impostor", "tab:red")):
            edges, counts = _bins(verify[f"{key}_histogram"])
            share = counts / max(counts.sum(), 1)
            axes.stairs(share, edges, color=colour, fill=True, alpha=0.4, label=key)
        axes.axvline(verify["eer_threshold"], color="black", linestyle="--")
        axes.set_title(
            f"EER {100 * verify['eer']:.2f}% at cosine {verify['eer_threshold']:.3f}, "
            f"FDR {verify['fdr']:.2f}"
        )
        axes.legend()
    axes.set_xlabel("cosine of an image pair")
    axes.set_ylabel("share of pairs")
    _save(figure, path)


def leakage_plot(evaluation: dict, sources_nearest: np.ndarray, path: Path) -> None:
    """Each passed image's and each DigiFace prototype's cosine to its nearest real face, with
    the flag threshold."""
    plt = _figure()
    figure, axes = plt.subplots(figsize=(7, 3.5))
    leakage = (evaluation.get("generated") or {}).get("leakage")
    if leakage is None:
        _no_data(axes, "no real faces to compare with, or no passed images")
    else:
        edges, counts = _bins(leakage["images"]["histogram"])
        axes.stairs(counts / max(counts.sum(), 1), edges, fill=True, alpha=0.4, label="images")
    sources = sources_nearest[np.isfinite(sources_nearest)]
    if sources.size:
        counts, edges = np.histogram(sources, bins=200, range=(-1, 1))
        axes.stairs(counts / counts.sum(), edges, label="DigiFace prototypes")
    threshold = evaluation["settings"]["leak_threshold"]
    axes.axvline(threshold, color="black", linestyle="--", label=f"flag, {threshold}")
    axes.set_xlabel("cosine to the nearest real face")
    axes.set_ylabel("share")
    axes.legend()
    _save(figure, path)


def quality_plot(manifest, thresholds: dict, path: Path) -> None:
    """Cosine to the prototype and detection score of every generated image with a face,
    with the quality thresholds."""
    plt = _figure()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    ok = np.asarray(manifest.column("status").to_pylist(), dtype=object) == "ok"
    for axes, column, key in (
        (left, "cos_prototype", "min_cos_prototype"),
        (right, "det_score", "min_det_score"),
    ):
        values = manifest.column(column).to_numpy(zero_copy_only=False).astype(float)[ok]
        values = values[np.isfinite(values)]
        if values.size:
            axes.hist(values, bins=50)
        else:
            _no_data(axes, "no generated image with a face")
        axes.axvline(thresholds[key], color="black", linestyle="--")
        axes.set_xlabel(f"{column} (quality.{key} dashed)")
    left.set_ylabel("images")
    _save(figure, path)


def pose_plot(images, path: Path) -> None:
    """Yaw, pitch and roll of the passed images (digi2real.pose: a weak-perspective fit of the
    five landmarks to a mean 3D face)."""
    plt = _figure()
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for plot, angle in zip(axes, ("yaw", "pitch", "roll"), strict=True):
        values = (
            np.asarray(images.column(angle).to_pylist(), float)
            if angle in images.column_names
            else np.zeros(0)
        )
        values = values[np.isfinite(values)]
        if values.size:
            plot.hist(values, bins=36, range=(-90, 90))
        else:
            _no_data(plot, "no landmarks")
        plot.set_xlabel(f"{angle} (degrees)")
    axes[0].set_ylabel("images")
    _save(figure, path)


def _tile(path: Path | ArchivedImage | None, label: str) -> Image.Image:
    tile = Image.new("RGB", (TILE, TILE + LABEL), (255, 255, 255))
    face = None
    if path is not None:
        try:
            with path.open() if isinstance(path, ArchivedImage) else Image.open(path) as image:
                face = image.convert("RGB").resize((TILE, TILE))
        except (OSError, DataError):
            face = None
    if face is None:
        face = Image.new("RGB", (TILE, TILE), (200, 200, 200))
        ImageDraw.Draw(face).text((4, TILE // 2 - 6), "not found", fill=(80, 80, 80))
    tile.paste(face, (0, 0))
    ImageDraw.Draw(tile).text((2, TILE + 1), label[-18:], fill=(0, 0, 0))
    return tile


def image_rows(
    rows: list[list[tuple[Path | ArchivedImage | None, str]]], path: Path, empty: str
) -> None:
    """A grid: each row a list of (image file, archived image or None, label) tiles."""
    columns = max((len(row) for row in rows), default=1)
    grid = Image.new("RGB", (TILE * columns, (TILE + LABEL) * max(1, len(rows))), "white")
    if not rows:
        ImageDraw.Draw(grid).text((4, TILE // 2), empty, fill=(0, 0, 0))
    for r, row in enumerate(rows):
        for c, (image, label) in enumerate(row):
            grid.paste(_tile(image, label), (TILE * c, (TILE + LABEL) * r))
    with atomic_path(path) as temporary:
        grid.save(temporary, format="PNG")
