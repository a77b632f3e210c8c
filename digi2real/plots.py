"""The report's figures: the evaluation's distributions with their thresholds marked, and image
pairs a person judges at a glance (sources beside generated faces, collisions, leaks).

Every function reads what `evaluate` and `aggregate` wrote and draws one PNG; none computes a
measure. Images that cannot be read (a dataset root not mounted where the report runs) are
drawn as grey tiles labelled with their path, never a failure.

The layout decisions are functions of their own, so they can be tested without looking at
pixels: `rebin` (a histogram's bins from the range its data occupy), `pair_label` and
`wrap_label` (labels shown whole, on as many lines as they need), `grid_layout` (where the
groups of an image grid and the dividers between them go).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from digi2real.atomic import atomic_path
from digi2real.errors import DataError
from digi2real.shard_store import ArchivedImage

TILE = 112  # pixels of one face in the image grids
FONT_SIZE = 12  # pixels of the labels' font
LINE = 15  # pixels of one line of label text
PAD = 3  # pixels around a label
GAP = 14  # pixels between two groups of tiles in a row: the divider runs down its middle
DIVIDER = (60, 60, 60)  # the divider's colour, two pixels wide
HEADING = (20, 40, 140)  # the colour of a group's heading
REBIN_TARGET = 50  # bins of a histogram plot over the range its data occupy
REBIN_MARGIN = 0.05  # share of that range added, empty, on each side

Tile = tuple[Path | ArchivedImage | None, str]  # an image (None: not found) and its label


# --- labels --------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The labels' font: Pillow's own (no system font needed), at FONT_SIZE where Pillow can
    scale it."""
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or without FreeType
        return ImageFont.load_default()


def text_width(text: str) -> float:
    return font().getlength(text)


# A label line is broken after one of the first of these that it has in its second half, else
# where the width runs out.
BREAK_AFTER = (" /:", "_-.")


def wrap_label(label: str, width: float) -> list[str]:
    """The lines `label` is drawn on within `width` pixels: its own lines (split at "\\n"),
    each broken where it would run wider, after a path separator or space where there is one.
    No character is dropped: the lines of each of its own lines join to that line again."""
    lines: list[str] = []
    for text in label.split("\n"):
        while text_width(text) > width and len(text) > 1:
            fits = 1
            while fits < len(text) and text_width(text[: fits + 1]) <= width:
                fits += 1
            cut = fits
            for separators in BREAK_AFTER:
                breaks = [k + 1 for k in range(fits // 2, fits) if text[k] in separators]
                if breaks:
                    cut = breaks[-1]
                    break
            lines.append(text[:cut])
            text = text[cut:]
        lines.append(text)
    return lines


def pair_label(identity: str, cosine: float | None) -> str:
    """An image's label in the pair grids: its identity on one line, the cosine on the next,
    so that neither runs into the other."""
    return f"identity {identity}\n" + ("cos n/a" if cosine is None else f"cos {cosine:.3f}")


# --- histograms ----------------------------------------------------------------------------


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # no display on a cluster node
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100, bbox_inches="tight")
    _figure().close(figure)


def _count_axis(axes) -> None:
    """Integer ticks on an axis of image counts."""
    from matplotlib.ticker import MaxNLocator

    axes.yaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))


def rebin(
    counts,
    low: float,
    high: float,
    target_bins: int = REBIN_TARGET,
    margin: float = REBIN_MARGIN,
) -> tuple[np.ndarray, np.ndarray]:
    """A histogram of equal fine bins over [low, high] (counts: one histogram, or several on
    the same bins stacked along the first axis) re-binned to about `target_bins` bins over the
    range its non-empty bins occupy, with `margin` of that range, empty, on each side (within
    [low, high]). Every coarse bin is a run of whole fine bins, so its count is exactly the
    count of the scores between its edges. The edges and the coarse counts (same leading
    shape as `counts`); all fine bins empty: about target_bins bins over [low, high]."""
    counts = np.asarray(counts, np.float64)
    n = counts.shape[-1]
    fine_edges = np.linspace(low, high, n + 1)
    occupied = np.flatnonzero(counts.reshape(-1, n).sum(axis=0))
    if occupied.size:
        first, last = int(occupied[0]), int(occupied[-1]) + 1  # fine bins [first, last)
    else:
        first, last = 0, n
    span = last - first
    step = max(1, math.ceil(span * (1 + 2 * margin) / target_bins))  # fine bins a coarse one
    pad = math.ceil(margin * span / step)  # coarse bins of margin on each side
    # Coarse bins on the grid of multiples of `step` from `low`: bin j is fine [j*step, ...).
    start = max(0, first // step - pad)
    stop = min(math.ceil(n / step), (last - 1) // step + 1 + pad)
    positions = np.minimum(np.arange(start, stop + 1) * step, n)
    coarse = np.add.reduceat(counts[..., : positions[-1]], positions[:-1], axis=-1)
    return fine_edges[positions], coarse


def _bins(histogram: dict) -> tuple[float, float, np.ndarray]:
    return histogram["low"], histogram["high"], np.asarray(histogram["counts"], np.float64)


def _share(counts: np.ndarray) -> np.ndarray:
    return counts / max(counts.sum(), 1)


def _no_data(axes, text: str) -> None:
    axes.text(
        0.5,
        0.5,
        text,
        ha="center",
        va="center",
        transform=axes.transAxes,
        zorder=4,
        bbox={"facecolor": "white", "edgecolor": "none"},
    )


def draw_verification(evaluation: dict):
    """The figure of verification_plot."""
    plt = _figure()
    figure, axes = plt.subplots(figsize=(7, 3.5))
    verify = (evaluation.get("generated") or {}).get("verification") or {}
    if verify.get("eer") is None:
        _no_data(axes, "no genuine or no impostor pairs among the passed images")
    else:
        keys = ("genuine", "impostor")
        low, high, _ = _bins(verify["genuine_histogram"])
        fine = np.stack([_bins(verify[f"{key}_histogram"])[2] for key in keys])
        edges, counts = rebin(fine, low, high)
        for key, colour, coarse in zip(keys, ("tab:green", "tab:red"), counts, strict=True):
            axes.stairs(_share(coarse), edges, color=colour, fill=True, alpha=0.4, label=key)
        threshold = verify["eer_threshold"]
        axes.axvline(
            threshold, color="black", linestyle="--", zorder=3, label=f"EER at {threshold:.4f}"
        )
        axes.set_title(
            f"EER {100 * verify['eer']:.2f}% at cosine {threshold:.3f}, FDR {verify['fdr']:.2f}"
        )
        axes.legend()
    axes.set_xlabel("cosine of an image pair")
    axes.set_ylabel("share of pairs")
    return figure


def verification_plot(evaluation: dict, path: Path) -> None:
    """Genuine and impostor score histograms (each as a share) over the range the scores
    occupy, the EER threshold marked."""
    _save(draw_verification(evaluation), path)


def draw_leakage(evaluation: dict, sources_nearest: np.ndarray):
    """The figure of leakage_plot."""
    from digi2real.evaluation import HISTOGRAM_BINS

    plt = _figure()
    figure, axes = plt.subplots(figsize=(7, 3.5))
    leakage = (evaluation.get("generated") or {}).get("leakage")
    histograms, names = [], []
    low, high = -1.0, 1.0
    if leakage is not None:
        low, high, counts = _bins(leakage["images"]["histogram"])
        histograms.append(counts)
        names.append("images")
    sources = np.asarray(sources_nearest, np.float64)
    sources = sources[np.isfinite(sources)]
    if sources.size:
        bins = len(histograms[0]) if histograms else HISTOGRAM_BINS
        counts, _ = np.histogram(np.clip(sources, low, high), bins=bins, range=(low, high))
        histograms.append(counts.astype(np.float64))
        names.append("DigiFace prototypes")
    if histograms:
        edges, coarse = rebin(np.stack(histograms), low, high)
        for name, counts in zip(names, coarse, strict=True):
            if name == "images":
                axes.stairs(_share(counts), edges, fill=True, alpha=0.4, label=name)
            else:
                axes.stairs(_share(counts), edges, color="tab:orange", linewidth=1.5, label=name)
    if leakage is None and histograms:
        axes.set_title("no passed images to compare: the DigiFace prototypes only")
    elif leakage is None:
        _no_data(axes, "no real faces to compare with, or no passed images")
    threshold = evaluation["settings"]["leak_threshold"]
    axes.axvline(threshold, color="black", linestyle="--", zorder=3, label=f"flag, {threshold}")
    axes.set_xlabel("cosine to the nearest real face")
    axes.set_ylabel("share")
    axes.legend()
    return figure


def leakage_plot(evaluation: dict, sources_nearest: np.ndarray, path: Path) -> None:
    """Each passed image's and each DigiFace prototype's cosine to its nearest real face, over
    the range they occupy, with the flag threshold."""
    _save(draw_leakage(evaluation, sources_nearest), path)


def value_bins(values: np.ndarray, target: int = REBIN_TARGET) -> np.ndarray:
    """Bin edges over the range of `values` (finite, at least one); a single value sits in the
    middle of a narrow range around it rather than in a bin one unit wide."""
    smallest, largest = float(values.min()), float(values.max())
    if largest > smallest:
        return np.histogram_bin_edges(values, bins=target, range=(smallest, largest))
    half = max(abs(smallest) * 0.01, 1e-3)
    return np.linspace(smallest - half, smallest + half, 12)


def draw_quality(manifest, thresholds: dict):
    """The figure of quality_plot."""
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
            axes.hist(values, bins=value_bins(values))
        else:
            _no_data(axes, "no generated image with a face")
        axes.axvline(thresholds[key], color="black", linestyle="--")
        axes.set_xlabel(f"{column} (quality.{key} dashed)")
        _count_axis(axes)
    left.set_ylabel("images")
    return figure


def quality_plot(manifest, thresholds: dict, path: Path) -> None:
    """Cosine to the prototype and detection score of every generated image with a face,
    over the range they occupy, with the quality thresholds."""
    _save(draw_quality(manifest, thresholds), path)


def draw_pose(images):
    """The figure of pose_plot."""
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
        plot.set_xlim(-90, 90)
        plot.set_xlabel(f"{angle} (degrees)")
        _count_axis(plot)
    axes[0].set_ylabel("images")
    return figure


def pose_plot(images, path: Path) -> None:
    """Yaw, pitch and roll of the passed images (digi2real.pose: a weak-perspective fit of the
    five landmarks to a mean 3D face), in 5-degree bins over ±90 degrees: one scale for every
    dataset, so a narrow spread shows as one."""
    _save(draw_pose(images), path)


# --- image grids ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """Rows of an image grid under one heading per group of tiles: each row holds one list of
    tiles per group (generated faces, then the sources or real faces they are compared with),
    and a divider runs between the groups."""

    headings: tuple[str, ...]
    rows: list[tuple[list[Tile], ...]] = field(default_factory=list)
    title: str = ""


@dataclass(frozen=True)
class GridLayout:
    """Where the parts of an image grid go, in pixels."""

    columns: tuple[int, ...]  # tiles of each group (the most any row has, at least one)
    group_x: tuple[int, ...]  # the left edge of each group's first tile
    dividers: tuple[int, ...]  # the x of each divider: between group k and k + 1
    label_lines: int  # lines of the label under every tile (the most any label needs)
    width: int

    @property
    def cell_height(self) -> int:
        return TILE + self.label_lines * LINE + 2 * PAD


def _lines(text: str, width: int) -> list[str]:
    return wrap_label(text, width - 2 * PAD) if text else []


def grid_layout(sections: list[Section]) -> GridLayout:
    """The columns of every group (aligned across the sections), the dividers between groups
    and the label lines the longest label needs."""
    groups = max(
        [len(s.headings) for s in sections] + [len(r) for s in sections for r in s.rows],
        default=1,
    )
    columns = tuple(
        max([1] + [len(row[k]) for s in sections for row in s.rows if k < len(row)])
        for k in range(groups)
    )
    group_x = [0]
    for k in range(1, groups):
        group_x.append(group_x[-1] + TILE * columns[k - 1] + GAP)
    labels = [label for s in sections for row in s.rows for group in row for _, label in group]
    lines = max([1] + [len(wrap_label(label, TILE - 2 * PAD)) for label in labels])
    return GridLayout(
        columns=columns,
        group_x=tuple(group_x),
        dividers=tuple(x - GAP // 2 for x in group_x[1:]),
        label_lines=lines,
        width=group_x[-1] + TILE * columns[-1],
    )


def _tile(path: Path | ArchivedImage | None, label: str, lines: int) -> Image.Image:
    tile = Image.new("RGB", (TILE, TILE + lines * LINE + 2 * PAD), (255, 255, 255))
    face = None
    if path is not None:
        try:
            with path.open() if isinstance(path, ArchivedImage) else Image.open(path) as image:
                face = image.convert("RGB").resize((TILE, TILE))
        except (OSError, DataError):
            face = None
    if face is None:
        face = Image.new("RGB", (TILE, TILE), (200, 200, 200))
        ImageDraw.Draw(face).text((4, TILE // 2 - 6), "not found", fill=(80, 80, 80), font=font())
    tile.paste(face, (0, 0))
    draw = ImageDraw.Draw(tile)
    for k, line in enumerate(wrap_label(label, TILE - 2 * PAD)):
        draw.text((PAD, TILE + PAD + k * LINE), line, fill=(0, 0, 0), font=font())
    return tile


def _band(sections: list[Section], layout: GridLayout) -> list[tuple[int, list, list]]:
    """Each section's heading band: its height, the title's lines and each heading's lines."""
    bands = []
    for section in sections:
        title = _lines(section.title, layout.width)
        headings = [
            _lines(heading, TILE * layout.columns[k]) for k, heading in enumerate(section.headings)
        ]
        lines = len(title) + max([0] + [len(h) for h in headings])
        bands.append((lines * LINE + 2 * PAD if lines else 0, title, headings))
    return bands


def draw_grid(sections: list[Section], empty: str) -> Image.Image:
    """The picture of image_rows."""
    if not any(section.rows for section in sections):
        width = max(3 * TILE, int(text_width(empty)) + 4 * PAD)
        grid = Image.new("RGB", (width, TILE // 2), "white")
        at = ((width - int(text_width(empty))) // 2, (TILE // 2 - LINE) // 2)
        ImageDraw.Draw(grid).text(at, empty, fill=(0, 0, 0), font=font())
        return grid
    layout = grid_layout(sections)
    bands = _band(sections, layout)
    heights = [
        band + (layout.cell_height * len(section.rows) if section.rows else LINE + 2 * PAD)
        for section, (band, _, _) in zip(sections, bands, strict=True)
    ]
    grid = Image.new("RGB", (layout.width, sum(heights) + GAP * (len(sections) - 1)), "white")
    draw = ImageDraw.Draw(grid)
    top = 0
    for s, (section, (band, title, headings)) in enumerate(zip(sections, bands, strict=True)):
        if s:  # a rule across the grid between two sections
            draw.line([(0, top - GAP // 2), (layout.width, top - GAP // 2)], DIVIDER, width=2)
        for k, line in enumerate(title):
            draw.text((PAD, top + PAD + k * LINE), line, fill=(0, 0, 0), font=font())
        for group, lines in enumerate(headings):
            for k, line in enumerate(lines):
                at = (layout.group_x[group] + PAD, top + PAD + (len(title) + k) * LINE)
                draw.text(at, line, fill=HEADING, font=font())
        y = top + band
        if not section.rows:
            draw.text((PAD, y + PAD), "none", fill=(0, 0, 0), font=font())
        for row in section.rows:
            for group, tiles in enumerate(row):
                for c, (image, label) in enumerate(tiles):
                    tile = _tile(image, label, layout.label_lines)
                    grid.paste(tile, (layout.group_x[group] + TILE * c, y))
            y += layout.cell_height
        below_title = top + (PAD + len(title) * LINE if title else 0)
        for x in layout.dividers:
            draw.line([(x, below_title), (x, top + heights[s] - 1)], DIVIDER, width=2)
        top += heights[s] + GAP
    return grid


def image_rows(sections: list[Section], path: Path, empty: str) -> None:
    """A grid of image tiles, each labelled under the image: the sections one below the other,
    each under its headings, a divider between the groups of a row; `empty` where no section
    has a row."""
    grid = draw_grid(sections, empty)
    with atomic_path(path) as temporary:
        grid.save(temporary, format="PNG")


# --- training ------------------------------------------------------------------------------


def curve(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """Steps and values of `key` over a metrics.jsonl's records (its logging intervals')."""
    points = [(r["step"], float(r[key])) for r in records if r.get(key) is not None]
    return [step for step, _ in points], [value for _, value in points]


def accuracy_curve(records: list[dict], benchmark: str) -> tuple[list[int], list[float]]:
    """Steps and accuracies (%) of `benchmark` over a metrics.jsonl's evaluations."""
    points = [
        (r["step"], 100 * float(r["verification"][benchmark]))
        for r in records
        if benchmark in (r.get("verification") or {})
    ]
    return [step for step, _ in points], [value for _, value in points]


def training_panels(curves: dict[str, list[dict]], benchmarks: list[str]) -> list[str]:
    """The panels of training_curves_plot: loss, learning rate, then each benchmark some sub-run
    evaluated during training, in the order given."""
    logged = [b for b in benchmarks if any(accuracy_curve(r, b)[0] for r in curves.values())]
    return ["loss", "lr", *logged]


def draw_training_curves(curves: dict[str, list[dict]], benchmarks: list[str]):
    """The figure of training_curves_plot."""
    plt = _figure()
    panels = training_panels(curves, benchmarks)
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    titles = {"loss": "training loss", "lr": "learning rate"}
    for plot, panel in zip(axes.flat, panels, strict=False):
        drawn = False
        for name, records in curves.items():
            if panel in titles:
                steps, values = curve(records, panel)
            else:
                steps, values = accuracy_curve(records, panel)
            if steps:
                # Markers: a short run logs a handful of points, an evaluation one per epoch.
                plot.plot(steps, values, marker="o", markersize=3, label=name)
                drawn = True
        if not drawn:
            _no_data(plot, "nothing logged")
        plot.set_title(titles.get(panel, f"{panel} accuracy (%)"))
        plot.set_xlabel("step")
        if drawn:
            plot.legend(fontsize=8)
    for plot in list(axes.flat)[len(panels) :]:
        plot.set_visible(False)
    figure.tight_layout()
    return figure


def training_curves_plot(curves: dict[str, list[dict]], benchmarks: list[str], path: Path) -> None:
    """Loss and learning rate against step, and each benchmark's accuracy against step, one
    line per trained sub-run (`curves`: its name to its metrics.jsonl records)."""
    _save(draw_training_curves(curves, benchmarks), path)


# --- a sweep's figures (rule report_sweep) ------------------------------------------------------

# The summary's columns plotted against each swept setting, with their axis labels.
SWEEP_FIGURES = {
    "yield": "yield (passed / planned images)",
    "consistency_0.3": "consistency at 0.3",
    "consistency_0.4": "consistency at 0.4",
    "u_class_0.3": "U_class at 0.3",
    "eer_percent": "verification EER (%)",
    "fdr": "Fisher discriminant ratio",
    "nearest_real_p99": "nearest real face, p99",
}


def sweep_positions(values: list) -> tuple[list[float], list[str] | None]:
    """Where each value of a swept setting goes on the x axis: numbers at themselves; other
    values (text, true/false, null) at 0, 1, ... in their first order, with their labels."""
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if numeric:
        return [float(v) for v in values], None
    labels = list(dict.fromkeys(str(v) for v in values))
    return [float(labels.index(str(v))) for v in values], labels


def draw_sweep(rows: list[dict], keys: list[str]):
    """One panel per figure (row) and swept setting (column): each variant a point at its
    value of the setting; the mean of the variants at each value joined by a line."""
    plt = _figure()
    figures = [f for f in SWEEP_FIGURES if f in rows[0]] if rows else list(SWEEP_FIGURES)
    figures += [column for column in (rows[0] if rows else {}) if column.startswith("accuracy_")]
    figure, axes = plt.subplots(
        len(figures), len(keys), figsize=(3.2 * len(keys), 2.2 * len(figures)), squeeze=False
    )
    for column, key in enumerate(keys):
        x, labels = sweep_positions([row[key] for row in rows])
        for line, name in enumerate(figures):
            panel = axes[line][column]
            points = [
                (xi, row[name]) for xi, row in zip(x, rows, strict=True) if row[name] is not None
            ]
            if not points:
                _no_data(panel, "not computed")
            else:
                panel.scatter(*zip(*points, strict=True), s=14)
                at = sorted({p[0] for p in points})
                means = [np.mean([y for xi, y in points if xi == a]) for a in at]
                panel.plot(at, means, linewidth=1)
            if labels is not None:
                panel.set_xticks(range(len(labels)), labels)
            if line == len(figures) - 1:
                panel.set_xlabel(key)
            if column == 0:
                panel.set_ylabel(SWEEP_FIGURES.get(name, name.replace("accuracy_", "accuracy ")))
    figure.tight_layout()
    return figure


def sweep_plot(rows: list[dict], keys: list[str], path: Path) -> None:
    _save(draw_sweep(rows, keys), path)
