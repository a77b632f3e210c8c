"""Rule `report_sweep`: a sweep's variants compared (config `sweep:`, digi2real/sweep.py):
results/sweep/summary.csv, one row per variant, and the report's sweep page with each figure
plotted against each swept setting and the same identities' images across the variants."""

from __future__ import annotations

import json
from pathlib import Path

from digi2real.config import Config
from digi2real.stages import Argument

CONFIG_KEYS = ["digiface.root"]

HELP = "a sweep's variants compared: summary.csv, its page and figures"
ARGUMENTS = (
    Argument("--results", "results folder (the manifests' archives lie under it)"),
    Argument("--variants", "the variants as JSON: [{name, settings, generation}]", type=str),
    Argument("--evaluations", "each variant's evaluation.json, in --variants' order", nargs="+"),
    Argument("--manifests", "each variant's manifest.parquet, in order", nargs="+"),
    Argument(
        "--benchmarks", "each variant's benchmark.json (train.enabled)", nargs="*", default=[]
    ),
    Argument("--summary", "summary.csv to write"),
    Argument("--page", "the sweep's page .html to write"),
    Argument("--figures", "the figures against each setting, .png to write", dest="figures_path"),
    Argument("--samples", "the same identities across the variants, .png to write"),
)
ROWS = 6  # identities shown across the variants
VARIANTS_PER_GRID = 4  # variants side by side in one grid section


def run(
    config: Config,
    results: Path,
    variants: str,
    evaluations: list[Path],
    manifests: list[Path],
    summary: Path,
    page: Path,
    figures_path: Path,
    samples: Path,
    benchmarks: list[Path] | None = None,
) -> None:
    """One row of figures per variant of `variants` (its `evaluations`, `manifests` and, with
    training, `benchmarks`, in the same order) into `summary`, `page` and two figures."""
    import pyarrow.parquet as pq

    from digi2real import plots
    from digi2real.errors import DataError
    from digi2real.formats import read_evaluation
    from digi2real.sweep import summary_rows, write_summary

    # 1. The inputs, one of each per variant, checked.
    described = json.loads(variants)
    benchmarks = benchmarks or []
    for name, paths in (("--evaluations", evaluations), ("--manifests", manifests)):
        if len(paths) != len(described):
            raise DataError(f"{name}: {len(paths)} files for {len(described)} variants")
    if benchmarks and len(benchmarks) != len(described):
        raise DataError(f"--benchmarks: {len(benchmarks)} files for {len(described)} variants")
    results_of = [read_evaluation(path) for path in evaluations]
    benchmark_of = [json.loads(path.read_text()) for path in benchmarks] or [None] * len(described)
    # 2. The summary: settings, headline figures, accuracies.
    keys = list(described[0]["values"]) if described else []
    rows = summary_rows(described, keys, results_of, benchmark_of)
    write_summary(rows, summary)
    # 3. The figures against each setting, the images across the variants, the page.
    plots.sweep_plot(rows, keys, figures_path)
    tables = [pq.read_table(path) for path in manifests]
    sections = across_variants(described, tables, results, Path(config["digiface"]["root"]))
    plots.image_rows(sections, samples, "no passed images in any variant")
    write_sweep_page(page, rows, keys, figures_path, samples)


def across_variants(described: list[dict], tables: list, results: Path, digiface: Path) -> list:
    """The first ROWS identities any variant kept: two DigiFace sources, then three passed
    crops of each variant, VARIANTS_PER_GRID variants to a section (plots.Section)."""
    from digi2real.dataset import passed_by_identity
    from digi2real.plots import Section
    from digi2real.stages.report import sources_by_identity

    passed = [passed_by_identity(table, results) for table in tables]
    sources: dict[str, list[str]] = {}
    for table in tables:
        for identity, paths in sources_by_identity(table).items():
            sources.setdefault(identity, paths)
    shown = list(dict.fromkeys(i for crops in passed for i in crops))[:ROWS]
    sections = []
    for start in range(0, len(described), VARIANTS_PER_GRID):
        chunk = range(start, min(start + VARIANTS_PER_GRID, len(described)))
        rows = []
        for identity in shown:
            source = [(digiface / p, f"identity {identity}\n{p}") for p in sources[identity][:2]]
            generated = tuple(
                [
                    (crop, f"identity {identity}\n{crop.member}")
                    for crop in passed[v].get(identity, [])[:3]
                ]
                for v in chunk
            )
            rows.append((source, *generated))
        headings = ("DigiFace source", *(described[v]["name"] for v in chunk))
        sections.append(Section(headings, rows))
    return sections if shown else []


def write_sweep_page(
    page: Path, rows: list[dict], keys: list[str], figures: Path, samples: Path
) -> None:
    from digi2real.pages import Table, write_page

    columns = [*dict.fromkeys(column for row in rows for column in row), "certificate"]
    lead = [
        f"{len(rows)} variants of {', '.join(keys)}, each generated from the same first "
        "identities and certified alone (results/sweep/<variant>/); the table is "
        "results/sweep/summary.csv.",
        f"Each figure against each swept setting: {figures.name}; the same identities across "
        f"the variants: {samples.name}.",
    ]
    # Each variant's certificate, from the sweep's folder (results/sweep/).
    table = Table(
        "Variants",
        columns,
        [
            [*(row.get(c) for c in columns[:-1]), f"{row['variant']}/report/certificate.html"]
            for row in rows
        ],
    )
    write_page(page, "Sweep", lead, [table])
