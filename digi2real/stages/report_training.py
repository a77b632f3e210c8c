"""Rule `report_training`: the training's page of the report. Every benchmarked sub-run (the
run's own dataset, the DigiFace baseline, each checkpoint) on the real benchmarks beside the
published figures of other synthetic sets; the realism transfer's gain over the baseline, the
paper's headline claim measured; what the run cost in GPU-hours; the training curves. As a page,
a figure and a CSV table."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from digi2real.config import Config
from digi2real.errors import DataError
from digi2real.stages import Argument

CONFIG_KEYS = ["demo", "train.gpus", "train.mixin_mode", "benchmark.bins"]

# The field's five verification benchmarks (benchmark.bins names, as insightface's files) and
# their headings; their mean is the figure synthetic-set papers compare.
FIVE = {
    "lfw": "LFW",
    "cfp_fp": "CFP-FP",
    "agedb_30": "AgeDB-30",
    "calfw": "CALFW",
    "cplfw": "CPLFW",
}
IJB_FARS = ("1e-4", "1e-5")  # the IJB columns shown: 1e-6 needs a million impostor pairs

VEC2FACE_PLUS = "the Vec2Face+ comparison table (IResNet-50, about 0.5M images)"
DIGIFACE_PAPER = "the DigiFace-1M paper (Bae et al., WACV 2023)"


@dataclass(frozen=True)
class Published:
    """A published recognizer's accuracies (%), by bin name, and its 5-benchmark average as
    published (None: its Row computes it from the five when all are given)."""

    dataset: str
    images: str
    accuracy: dict[str, float]
    published_average: float | None
    source: str


# Every published figure the page compares with, in one place, each with its source.
PUBLISHED: tuple[Published, ...] = (
    Published("CASIA-WebFace (real)", "about 0.5M", {}, 94.79, VEC2FACE_PLUS),
    Published("VFace10K", "about 0.5M", {}, 93.89, VEC2FACE_PLUS),
    Published("HSFace10K", "about 0.5M", {}, 92.00, VEC2FACE_PLUS),
    Published("Arc2Face", "about 0.5M", {}, 91.73, VEC2FACE_PLUS),
    Published("DCFace", "about 0.5M", {}, 89.56, VEC2FACE_PLUS),
    Published("IDiff-Face", "about 0.5M", {}, 88.20, VEC2FACE_PLUS),
    Published("DigiFace-1M", "about 0.5M", {}, 83.45, VEC2FACE_PLUS),
    Published(
        "DigiFace-1M",
        "1.22M",
        {"lfw": 96.17, "cfp_fp": 89.81, "agedb_30": 81.10, "calfw": 82.55, "cplfw": 82.23},
        None,
        DIGIFACE_PAPER,
    ),
)

# How the page names a baseline's source images (train.baseline).
SOURCE_NAMES = {"digiface": "DigiFace"}

DEMO_WARNING = (
    "Demo run: these figures show the machinery only (a few training steps of an IResNet-18 "
    "on a handful of images of a random tiny generator, benchmarked on a tiny file of "
    "procedural held-out identities). They must not be compared with the published figures."
)

HELP = "the training's page: benchmarks beside published figures, gain, cost, curves"
ARGUMENTS = (
    Argument("--results", "results folder: each input's sub-run is its prefix under it"),
    Argument("--benchmarks", "every sub-run's benchmark.json", nargs="*", default=[]),
    Argument("--metrics", "every trained sub-run's train/metrics.jsonl", nargs="*", default=[]),
    Argument("--generation", "generate's benchmark files (one GPU each)", nargs="*", default=[]),
    Argument("--training", "every trained sub-run's benchmarks/train.tsv", nargs="*", default=[]),
    Argument("--page", "training.html to write"),
    Argument("--curves", "training_curves.png to write"),
    Argument("--table", "benchmark.csv to write"),
)


@dataclass
class Row:
    """One row of the benchmark table: a sub-run of this run, or a published recognizer.
    Accuracies, their std and TARs in percent."""

    kind: str  # "this run", "baseline", "checkpoint", "published"
    name: str
    network: str | None = None
    images: str | int | None = None
    accuracy: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    tar: dict[str, float] = field(default_factory=dict)
    source: str = ""
    published_average: float | None = None  # a published row's, as published

    @property
    def average(self) -> float | None:
        if self.published_average is not None:
            return self.published_average
        return five_average(self.accuracy)


def run(
    config: Config,
    results: Path,
    benchmarks: list[Path],
    metrics: list[Path],
    generation: list[Path],
    training: list[Path],
    page: Path,
    curves: Path,
    table: Path,
) -> list[Row]:
    """The benchmark table of `benchmarks` with the published figures, the gain over the
    baseline, the cost from the `generation` and `training` benchmark files and the curves of
    `metrics`, into `page`, `curves` and `table`; the table's rows."""
    from digi2real import plots

    # 1. Inputs, each by its sub-run (its prefix under the results folder).
    results_json = {sub_run(results, path, ("benchmark.json",)): path for path in benchmarks}
    logs = {sub_run(results, path, ("train", "metrics.jsonl")): path for path in metrics}
    records = {run: read_metrics(path) for run, path in order_runs(logs).items()}
    headers = {run: lines[0] for run, lines in records.items() if lines}
    # 2. The table's rows, one per sub-run, and its benchmark columns.
    rows = [
        benchmark_row(run, read_benchmark(path), headers.get(run))
        for run, path in order_runs(results_json).items()
    ]
    if config["train"]["mixin_mode"] == "finetune":
        rows = with_pretraining(rows)
    bins = bin_columns(config["benchmark"]["bins"], rows)
    # 3. What the run cost.
    gpus = config["train"]["gpus"]
    cost = cost_rows(results, generation, training, gpus)
    # 4. Written: the CSV, the curves, then the page.
    write_table(table, rows, bins)
    plots.training_curves_plot({label(run): lines for run, lines in records.items()}, bins, curves)
    untrained = untrained_lines({label(run): lines for run, lines in records.items()})
    write_training_page(
        page,
        rows,
        bins,
        cost,
        demo=bool(config["demo"]),
        untrained=untrained,
        mixin_mode=config["train"]["mixin_mode"],
    )
    return rows


def with_pretraining(rows: list[Row]) -> list[Row]:
    """The fine-tuned mix-in's row with the images its backbone was trained on first: its
    metrics count the real images it was fine-tuned on alone."""
    import dataclasses

    own = next((row for row in rows if row.kind == "this run"), None)
    if own is None or own.images is None:
        return rows
    return [
        dataclasses.replace(row, images=f"{own.images} + {row.images} (fine-tuned)")
        if row.kind == "mix-in" and row.images is not None
        else row
        for row in rows
    ]


def untrained_lines(records: dict[str, list[dict]]) -> list[str]:
    """Each trained sub-run's accuracies before its first step (metrics.jsonl's step-0
    evaluation): what the trained figures are to be read against. An untrained network
    already tells apart identities that differ in colour, as the demo's do."""
    lines = []
    for name, lines_of_run in records.items():
        first = next((r for r in lines_of_run if r.get("step") == 0 and "verification" in r), None)
        if first is not None:
            figures = ", ".join(
                f"{bin_name} {100 * accuracy:.2f}"
                for bin_name, accuracy in sorted(first["verification"].items())
            )
            lines.append(f"{name}, before training (its initial weights): {figures} (%).")
    return lines


# --- inputs --------------------------------------------------------------------------------


def sub_run(results: Path, path: Path, tail: tuple[str, ...]) -> str:
    """The sub-run prefix of `path` under `results` ("" for the run's own, else e.g.
    "baseline/digiface/"), the path being <prefix><tail>."""
    import os

    try:
        parts = Path(os.path.abspath(path)).relative_to(os.path.abspath(results)).parts
    except ValueError:
        raise DataError(f"{path}: not under the results folder {results}") from None
    if parts[-len(tail) :] != tail:
        raise DataError(f"{path}: expected <sub-run>/{'/'.join(tail)} under {results}")
    return "".join(f"{part}/" for part in parts[: -len(tail)])


def run_kind(run: str) -> str:
    if run == "":
        return "this run"
    if run == "mixin/":
        return "mix-in"
    if run.startswith("baseline/"):
        return "baseline"
    if run.startswith("checkpoints/"):
        return "checkpoint"
    return run.rstrip("/")


def label(run: str) -> str:
    """How the page names a sub-run."""
    kind = run_kind(run)
    if kind == "this run":
        return "this run's dataset"
    if kind == "mix-in":
        return "this run's dataset with its real mix-in"
    if kind == "baseline":
        source = run.split("/")[1]
        return f"{SOURCE_NAMES.get(source, source)} baseline (its source images)"
    if kind == "checkpoint":
        return f"checkpoint {run.split('/')[1]}"
    return kind


def order_runs(by_run: dict[str, Path]) -> dict[str, Path]:
    """This run first, then the baseline, then the checkpoints (in their given order): the
    order the page reads them in, whatever order the inputs came in."""
    rank = {"this run": 0, "mix-in": 1, "baseline": 2, "checkpoint": 3}
    return dict(sorted(by_run.items(), key=lambda item: rank.get(run_kind(item[0]), 4)))


def read_benchmark(path: Path) -> dict:
    import json

    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable benchmark.json ({error})") from None
    if not isinstance(result, dict) or not isinstance(result.get("verification"), dict):
        raise DataError(f"{path}: no `verification` object, not a benchmark.json")
    for name, entry in result["verification"].items():
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(key), int | float) for key in ("accuracy", "std")
        ):
            raise DataError(f"{path}: verification {name} has no numeric accuracy and std")
    return result


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl's records: the header (step 0: images, classes, steps), then the logging
    intervals' and the evaluations'."""
    import json

    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            raise DataError(f"{path}: line {number} is not JSON") from None
    return records


def job_seconds(path: Path) -> float:
    """Seconds a job ran, from its Snakemake benchmark file, as the card reads them; one line
    naming the file where it holds none."""
    from digi2real.stages.card import benchmark_seconds

    try:
        seconds = benchmark_seconds(path)
    except ValueError:
        seconds = None
    if seconds is None:
        raise DataError(f"{path}: no seconds (column `s`) in this benchmark file")
    return seconds


# --- the table -----------------------------------------------------------------------------


def five_average(accuracy: dict[str, float]) -> float | None:
    """The mean of the five benchmarks, only when all five are measured: a mean of fewer is
    not the figure the papers compare."""
    if not all(name in accuracy for name in FIVE):
        return None
    return sum(accuracy[name] for name in FIVE) / len(FIVE)


def benchmark_row(run: str, result: dict, header: dict | None) -> Row:
    """A sub-run's row from its benchmark.json (fractions, made percents) and the header of
    its metrics.jsonl (the images it trained on), if it was trained here."""
    ijb = result.get("ijb") or {}
    tars = ijb.get("tar_at_far") or {}
    return Row(
        kind=run_kind(run),
        name=label(run),
        network=result.get("network"),
        images=header.get("images") if header else None,
        accuracy={n: 100 * v["accuracy"] for n, v in result["verification"].items()},
        std={n: 100 * v["std"] for n, v in result["verification"].items()},
        tar={
            f"{ijb_name(ijb.get('target', 'IJB'))} TAR@FAR {far}": 100 * tars[far]
            for far in IJB_FARS
            if tars.get(far) is not None
        },
    )


def ijb_name(target: str) -> str:
    """benchmark.json's target (IJBB, IJBC) as the papers write it (IJB-B, IJB-C)."""
    return f"IJB-{target[3:]}" if target.startswith("IJB") and len(target) > 3 else target


def bin_columns(configured: dict, rows: list[Row]) -> list[str]:
    """The benchmark columns: the five always (the published figures fill them), then every
    other bin configured or measured."""
    names = list(FIVE)
    for name in [*configured, *(n for row in rows for n in row.accuracy)]:
        if name not in names:
            names.append(name)
    return names


def tar_columns(rows: list[Row]) -> list[str]:
    return list(dict.fromkeys(name for row in rows for name in row.tar))


def heading(name: str) -> str:
    return FIVE.get(name, name)


def percent(value: float | None, std: float | None = None) -> str | None:
    """An accuracy as the page shows it: percent with 2 decimals, ± its std across folds."""
    if value is None:
        return None
    return f"{value:.2f}" if std is None else f"{value:.2f} ± {std:.2f}"


def signed(value: float | None) -> str | None:
    return None if value is None else f"{value:+.2f}"


def published_rows() -> list[Row]:
    return [
        Row(
            kind="published",
            name=entry.dataset,
            network="iresnet50" if entry.source == VEC2FACE_PLUS else None,
            images=entry.images,
            accuracy=dict(entry.accuracy),
            source=entry.source,
            published_average=entry.published_average,
        )
        for entry in PUBLISHED
    ]


def gain(run: Row, baseline: Row, bins: list[str]) -> dict[str, float | None]:
    """This run's accuracy minus the baseline's, in percentage points, per benchmark both
    measured, and of the 5-benchmark average when both have it."""
    both = [name for name in bins if name in run.accuracy and name in baseline.accuracy]
    gains: dict[str, float | None] = {n: run.accuracy[n] - baseline.accuracy[n] for n in both}
    averages = (run.average, baseline.average)
    gains["average"] = None if None in averages else averages[0] - averages[1]
    return gains


def gain_table(title: str, gains: dict[str, float | None], note: str):
    """One row of `gains` (gain's points per benchmark and on average) as a page's table."""
    from digi2real.pages import Table

    return Table(
        title,
        ["", *(heading(n) for n in gains if n != "average"), "5-benchmark average"],
        [
            ["gain", *(signed(gains[n]) for n in gains if n != "average")]
            + [signed(gains["average"])]
        ],
        note=note,
    )


def placing(average: float) -> str:
    """Where a 5-benchmark average falls among the Vec2Face+ comparison's averages."""
    anchors = sorted(
        (entry.published_average, entry.dataset)
        for entry in PUBLISHED
        if entry.source == VEC2FACE_PLUS and entry.published_average is not None
    )[::-1]
    (best, best_name), (worst, worst_name) = anchors[0], anchors[-1]
    if average >= best:
        return f"as high as {best_name} ({best:.2f}), the highest, or higher"
    if average < worst:
        return f"below every one, {worst_name} ({worst:.2f}) the lowest"
    for (high, high_name), (low, low_name) in zip(anchors, anchors[1:], strict=False):
        if average >= low:
            return f"between {low_name} ({low:.2f}) and {high_name} ({high:.2f})"
    raise AssertionError("unreachable: the average lies within the anchors' range")


def average_line(row: Row) -> str:
    """One sentence placing this run's 5-benchmark average among the published ones, or
    saying which of the five it lacks."""
    missing = [heading(name) for name in FIVE if name not in row.accuracy]
    if row.average is None:
        return (
            f"This run's 5-benchmark average is not computed: {', '.join(missing)} not "
            "benchmarked (benchmark.bins), so it is not placed among the published ones."
        )
    trained = [f"an {row.network}"] if row.network else []
    if isinstance(row.images, int):
        trained.append(f"trained on {row.images:,} images")
    what = f" ({' '.join(trained)})" if trained else ""
    return (
        f"This run's 5-benchmark average{what} is {row.average:.2f}%: "
        f"{placing(row.average)} among the averages of {VEC2FACE_PLUS}."
    )


def write_table(path: Path, rows: list[Row], bins: list[str]) -> None:
    """The table's numbers as CSV: one row per sub-run and per published row, `kind` saying
    which; percents to 2 decimals as on the page, std in its own column."""
    import csv
    import io

    from digi2real.atomic import atomic_path

    tars = tar_columns(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        ["kind", "name", "network", "images", *bins, *(f"{n}_std" for n in bins)]
        + ["average_5", *tars, "source"]
    )

    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    for row in [*rows, *published_rows()]:
        writer.writerow(
            [row.kind, row.name, row.network or "", "" if row.images is None else row.images]
            + [number(row.accuracy.get(n)) for n in bins]
            + [number(row.std.get(n)) for n in bins]
            + [number(row.average), *(number(row.tar.get(n)) for n in tars), row.source]
        )
    with atomic_path(path) as temporary:
        temporary.write_text(buffer.getvalue())


# --- cost ----------------------------------------------------------------------------------


def cost_rows(results: Path, generation: list[Path], training: list[Path], gpus: int) -> list:
    """[what, jobs, hours, unit]: generation's GPU-hours (one GPU a shard), then each trained
    sub-run's, its seconds times train.gpus (CPU-hours of the job when that is 0)."""
    rows: list = []
    if generation:
        hours = sum(job_seconds(path) for path in generation) / 3600
        rows.append(["generation", len(generation), round(hours, 3), "GPU-hours"])
    by_run = {sub_run(results, path, ("benchmarks", "train.tsv")): path for path in training}
    for run, path in order_runs(by_run).items():
        hours = job_seconds(path) * max(gpus, 1) / 3600
        unit = "GPU-hours" if gpus else "CPU-hours"
        rows.append([f"training: {label(run)}", 1, round(hours, 3), unit])
    return rows


# --- the page and the figure ---------------------------------------------------------------


def write_training_page(
    path: Path,
    rows: list[Row],
    bins: list[str],
    cost: list,
    demo: bool,
    untrained: list[str] | None = None,
    mixin_mode: str = "mix",
) -> None:
    from digi2real.pages import Table, write_page

    tars = tar_columns(rows)
    own = next((row for row in rows if row.kind == "this run"), None)
    baseline = next((row for row in rows if row.kind == "baseline"), None)
    mixed = next((row for row in rows if row.kind == "mix-in"), None)
    # 1. The lead: what was benchmarked, and where this run's average falls.
    lead = [
        f"{len(rows)} recognizer(s) benchmarked: "
        + (", ".join(row.name for row in rows) or "none")
        + ". Accuracies in percent, ± their std across the 10 folds."
    ]
    if mixed is not None:
        lead.append(
            "With a real mix-in (export.mixin), this run's dataset is trained on twice: its "
            "synthetic identities alone, and "
            + (
                "that recognizer fine-tuned on the real identities (train.mixin_mode finetune)."
                if mixin_mode == "finetune"
                else "both mixed from scratch (train.mixin_mode mix)."
            )
        )
    lead += untrained or []
    # Not in the demo: its figures are not to be compared with the published ones.
    if own is not None and not demo:
        lead.append(average_line(own))
    # 2. This run's table, then the published figures beside it.
    measured = Table(
        "Benchmarks: accuracy (%)",
        ["sub-run", "network", "training images", *map(heading, bins), "5-benchmark average"]
        + tars,
        [
            [row.name, row.network, row.images]
            + [percent(row.accuracy.get(n), row.std.get(n)) for n in bins]
            + [percent(row.average)]
            + [percent(row.tar.get(n)) for n in tars]
            for row in rows
        ],
        note="The 5-benchmark average is given only when all five (LFW, CFP-FP, AgeDB-30, "
        "CALFW, CPLFW) were measured.",
    )
    published = Table(
        "Published figures",
        ["dataset", "images", *map(heading, FIVE), "5-benchmark average", "source"],
        [
            [row.name, row.images]
            + [percent(row.accuracy.get(n)) for n in FIVE]
            + [percent(row.average), row.source]
            for row in published_rows()
        ],
        note=f"From {VEC2FACE_PLUS}: each set's 5-benchmark average as published; from "
        f"{DIGIFACE_PAPER}: its per-benchmark accuracies (their average computed here).",
    )
    tables = [measured, published]
    # 3. The realism transfer's gain over the baseline, when the baseline was trained.
    if own is not None and baseline is not None:
        tables.append(
            gain_table(
                "Realism transfer's gain: this run minus the DigiFace baseline (points)",
                gain(own, baseline, bins),
                note="The same recipe and seed trained on the DigiFace source images of the "
                "same identities: Digi2Real's headline claim is that this gain is positive.",
            )
        )
    # 4. The real mix-in's gain over the synthetic identities alone, when both were trained.
    if own is not None and mixed is not None:
        tables.append(
            gain_table(
                "Real mix-in's gain: with it minus the synthetic identities alone (points)",
                gain(mixed, own, bins),
                note="The Digi2Real paper found about 1,000 real identities close much of the "
                "remaining gap to training on real data.",
            )
        )
    # 5. What it cost.
    tables.append(
        Table(
            "Cost (from the jobs' benchmark files)",
            ["", "jobs", "hours", "unit"],
            [[what, jobs, f"{hours:,.3f}", unit] for what, jobs, hours, unit in cost],
            note="Generation: one GPU per shard. Training: the job's seconds times train.gpus; "
            "CPU-hours when train.gpus is 0 (the job's hours on the CPU).",
        )
    )
    warnings = [DEMO_WARNING] if demo else []
    write_page(path, "Training and benchmarks", lead, tables, warnings)
