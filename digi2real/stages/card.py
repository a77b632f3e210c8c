"""Rule `card`: the dataset card, once everything it reports exists: what the dataset holds
(the same counts the certificate gives), how it was made (the settings, the model files' and
the images' fingerprints), what it cost (each job's seconds, from the benchmark files of every
job before it, its inputs) and what it takes on disk (the shards and each export, its inputs
too). As JSON, and as a page of the report."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config
from digi2real.stages import Argument
from digi2real.stages.sample_mixin import MIXIN_ARGUMENT, MIXIN_LEAKS_ARGUMENT

CONFIG_KEYS = [
    "seed",
    "models",
    "digiface",
    "ffhq",
    "gallery",
    "delta",
    "plan",
    "generation",
    "quality",
    "evaluation",
    "export.formats",
]

HELP = "the dataset card, once the exports are written"
ARGUMENTS = (
    Argument("--results", "results folder"),
    Argument("--manifest", "the aggregated manifest.parquet"),
    Argument("--models", "models.json, the model hashes", dest="models_path"),
    Argument("--evaluation", "evaluation.json", dest="evaluation_path"),
    Argument("--out", "dataset_card.json to write"),
    Argument("--page", "the card's page (.html) to write"),
    MIXIN_ARGUMENT,
    MIXIN_LEAKS_ARGUMENT,
    Argument("benchmarks", "benchmark files of the jobs to account for", nargs="*"),
)


def run(
    config: Config,
    results: Path,
    manifest: Path,
    models_path: Path,
    evaluation_path: Path,
    benchmarks: list[Path],
    out: Path,
    page: Path,
    mixin: Path | None = None,
    mixin_leaks: Path | None = None,
) -> dict:
    """The card of the aggregated `manifest` into `out` (JSON) and `page` (HTML), with the
    model hashes of `models_path`, the certificate's headline from `evaluation_path`, the
    seconds of the jobs whose `benchmarks` files are given and the real identities of the
    mix-in's sample `mixin`."""
    import pyarrow.parquet as pq

    from digi2real import certificate
    from digi2real.dataset import dataset_card
    from digi2real.formats import read_evaluation, read_model_hashes, write_card
    from digi2real.mixin import card_section

    # 1. What the dataset holds and how it was made: first, whether real faces are in it.
    table = pq.read_table(manifest)
    content = {
        "mixin": card_section(mixin, mixin_leaks),
        **dataset_card(table, config, read_model_hashes(models_path)),
    }
    # 2. The certificate's headline, what it cost, what it takes on disk.
    content["certificate"] = certificate.headline(read_evaluation(evaluation_path))
    content["job_seconds"] = job_seconds(results / "benchmarks", benchmarks)
    passed = content["images"]["passed"]
    content["storage"] = storage(results, config["export"]["formats"], passed)
    # 3. Written: the page, then the JSON.
    write_card_page(page, content)
    write_card(out, content)
    return content


def benchmark_seconds(path: Path) -> float | None:
    """Seconds a job ran, from its Snakemake benchmark file (column `s` of the last row: a
    repeated benchmark's last run); None where it holds none."""
    import csv

    with open(path, newline="") as stream:
        rows = list(csv.DictReader(stream, delimiter="\t"))
    if not rows or rows[-1].get("s") in (None, "", "NA"):
        return None
    return float(rows[-1]["s"])


def job_seconds(folder: Path, benchmarks: list[Path]) -> dict:
    """Seconds each rule's jobs ran, summed over its jobs, from their benchmark files (under
    `folder`, as `<rule>.tsv` or `<rule>/<wildcards>.tsv`): the compute a run took, without
    the idle time between separate snakemake invocations."""

    totals: dict[str, float] = {}
    jobs: dict[str, int] = {}
    for path in sorted(benchmarks):
        rule = path.relative_to(folder).parts[0].removesuffix(".tsv")
        jobs[rule] = jobs.get(rule, 0) + 1
        seconds = benchmark_seconds(path)
        if seconds is not None:
            totals[rule] = totals.get(rule, 0.0) + seconds
    return {
        "by_rule": {rule: round(s, 1) for rule, s in totals.items()},
        "jobs_by_rule": jobs,
        "total": round(sum(totals.values()), 1),
    }


def storage(results: Path, formats: list[str], passed: int) -> dict:
    """Files and bytes of the generation shards and of each export, and bytes per passed image:
    what a run costs a cluster's file-count and space quotas."""
    import os

    def usage(folder: Path) -> dict:
        files = [Path(root, name) for root, _, names in os.walk(folder) for name in names]
        size = sum(path.stat().st_size for path in files)
        per_image = round(size / passed) if passed else None
        return {"files": len(files), "bytes": size, "bytes_per_passed_image": per_image}

    return {
        "shards": usage(results / "shards"),
        **{f"export/{name}": usage(results / "export" / name) for name in formats},
    }


def write_card_page(path: Path, card: dict) -> None:
    from digi2real.pages import Table, write_page

    identities, images, seconds = card["identities"], card["images"], card["job_seconds"]
    lead = [
        f"{images['passed']:,} images of {identities['kept']:,} synthetic identities: "
        "DigiFace-1M's rendered identities (no real person) made photo-realistic by Arc2Face, "
        "then filtered.",
        f"Certificate: {card['certificate']['status']}.",
    ]
    mixin = card.get("mixin")
    # A dataset with real faces mixed in says so before anything else.
    warnings = [mixin["statement"]] if mixin else []
    tables = [
        Table(
            "Identities",
            ["", "identities"],
            [
                ["selected from DigiFace-1M", identities["selected"]],
                [
                    "skipped by the plan (its gates, too few usable sources)",
                    identities["skipped_by_plan"],
                ],
                ["planned", identities["planned"]],
                ["kept in the dataset", identities["kept"]],
            ],
        ),
        Table(
            "Images",
            ["", "images"],
            [
                ["planned", images["planned"]],
                ["generated", images["generated"]],
                ["with a face detected", images["detected"]],
                ["passed: in the dataset", images["passed"]],
                ["per kept identity", images["per_kept_identity"]],
                *[[f"rejected: {r}", n] for r, n in images["rejected_by_reason"].items()],
            ],
        ),
        Table(
            "The generated images' faces (percentiles of the images with a face)",
            ["", "p5", "p25", "p50", "p75", "p95"],
            [
                [name, *(values.get(f"p{q}") for q in (5, 25, 50, 75, 95))]
                for name, values in card["similarity"].items()
            ],
        ),
        Table(
            "Storage",
            ["folder", "files", "bytes", "bytes per passed image"],
            [[name, *usage.values()] for name, usage in card["storage"].items()],
        ),
        Table(
            "Compute (seconds the jobs ran, from their benchmark files)",
            ["rule", "jobs", "seconds"],
            [
                [rule, seconds["jobs_by_rule"].get(rule), total]
                for rule, total in seconds["by_rule"].items()
            ]
            + [["all", sum(seconds["jobs_by_rule"].values()), seconds["total"]]],
        ),
        Table(
            "Fingerprints",
            ["", "sha256"],
            [
                ["settings (the card's config slice)", card["config_sha256"]],
                ["every generated image's key", card["image_keys_sha256"]],
                *[[key, value] for key, value in card["model_sha256"].items()],
            ],
            note="Two datasets with equal image-key fingerprints were made from the same "
            "settings, models and Δ.",
        ),
    ]
    if mixin:
        tables.insert(
            0,
            Table(
                "Real identities mixed in (export.mixin)",
                ["", ""],
                [
                    ["source", mixin["source"]],
                    ["kind", mixin["kind"]],
                    ["seed", mixin["seed"]],
                    ["real identities", mixin["identities"]],
                    ["real images", mixin["images"]],
                    ["identities of the source with enough images", mixin["eligible_identities"]],
                    ["flagged as benchmark leaks", mixin["benchmark_leaks"]],
                ],
                note="Labels after the synthetic ones; labels.csv's `source` column says which "
                "is which. The other tables are of the synthetic identities alone.",
            ),
        )
    write_page(path, "Dataset card", lead, tables, warnings)
