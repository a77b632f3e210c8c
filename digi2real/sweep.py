"""Sweeps (config `sweep:`): variants of the run's settings, compared in one report.

A variant is the run's resolved config with some keys changed (`sweep.settings` maps each key
to the values to try; `sweep.mode` combines them). Its name says what it changes, as
Snakemake's Paramspace names an instance, `key~value` joined by `_` (e.g.
`delta.scale~0.5_plan.t.high~0.7`); the run's own settings are `base`. The workflow runs each
variant as a sub-run under results/sweep/<variant>/ (workflow/rules/sweep.smk):

- what the run computes before the plan (the index, the embeddings, Δ, the model hashes, the
  benchmark faces) is the run's own, shared by every variant: a key those stages read cannot
  be swept;
- the plan and the images are made in a generation folder, results/sweep/generated/<name>/,
  named by the swept keys the plan and the generation read: variants that agree on those
  share it, so a variant that changes only a threshold generates nothing;
- the rest (aggregate, evaluate, the certificate, the export and the recognizer) is each
  variant's own.

Only the standard library, PyYAML and jsonschema (through digi2real.config): Snakemake
imports this at parse time.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digi2real.config import Config, check_value, lookup, resolve_config, stage_keys, subschema
from digi2real.errors import ConfigError
from digi2real.stages import stage

BASE = "base"  # the name of the variant that changes nothing (one_at_a_time's reference)
GENERATED = "generated"  # results/sweep/generated/<name>/: the generation folders
SUMMARY = "summary.csv"
# The stages whose outputs every variant shares with the run.
SHARED_STAGES = (
    "demo_assets",
    "index_digiface",
    "index_real",
    "embed",
    "merge_embeddings",
    "estimate_delta",
    "hash_models",
    "embed_benchmarks",
)
# The stages of a generation folder, shared by the variants that agree on the keys they read.
GENERATION_STAGES = ("plan", "generate", "embed_generated")
# Each variant's own stages.
VARIANT_STAGES = (
    "aggregate",
    "evaluate",
    "report",
    "export_recordio",
    "export_webdataset",
    "export_imagefolder",
    "train",
    "benchmark",
)
# Keys a variant cannot change although only its own stages read them, and why.
FIXED = {
    "plan.identities_per_shard": "the sweep cuts its identities into the run's shards",
    "train.enabled": "every variant is trained, or none, as the run is",
}
# The values a stage's templated key takes (embed's `{recognizer}`, `{dataset}.face`).
TEMPLATE_VALUES = {
    "dataset": ("digiface", "ffhq", "gallery"),
    "recognizer": ("models.arcface", "evaluation.recognizer"),
}
# A value as it is written into a variant's name, which is a folder's.
NAME_VALUE = re.compile(r"^[A-Za-z0-9.+_-]+$")


@dataclass(frozen=True)
class Variant:
    """One variant: its name, the swept keys' values, its resolved config, and the name of
    the generation folder it takes its plan and images from."""

    name: str
    settings: dict[str, Any]
    config: Config
    generation: str


@dataclass(frozen=True)
class Sweep:
    """The variants of `sweep:` (none when sweep.settings is empty), in the order the summary
    lists them, and the generation shards they cover."""

    variants: list[Variant]
    keys: list[str]
    identities: int
    shards: int

    def variant(self, name: str) -> Variant:
        return next(variant for variant in self.variants if variant.name == name)

    def generations(self) -> dict[str, Config]:
        """Each generation folder's config: that of the first variant taking images from it
        (the others agree with it on every key the generation stages read)."""
        folders: dict[str, Config] = {}
        for variant in self.variants:
            folders.setdefault(variant.generation, variant.config)
        return folders


def stage_reads(name: str) -> list[str]:
    """Every key stage `name` reads (its CONFIG_KEYS), its templated keys filled with each
    value they take."""
    keys = stage(name).CONFIG_KEYS
    if isinstance(keys, dict):
        return sorted({key for group in keys.values() for key in group})
    filled = set()
    for values in itertools.product(*TEMPLATE_VALUES.values()):
        filled.update(stage_keys(keys, **dict(zip(TEMPLATE_VALUES, values, strict=True))))
    return sorted(filled)


def reads(keys: list[str], key: str) -> bool:
    """Whether a stage reading `keys` reads `key` (or a section holding it, or a part of it)."""
    return any(
        key == read or key.startswith(f"{read}.") or read.startswith(f"{key}.") for read in keys
    )


def run_value(config: Config, key: str) -> Any:
    """The value at `key`, None where the config leaves it out (plan.t.low with plan.t fixed)."""
    try:
        return lookup(config, key)
    except ConfigError:
        return None


def value_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def variant_name(settings: dict[str, Any]) -> str:
    """`key~value` of each changed key, joined by `_`; `base` for none."""
    if not settings:
        return BASE
    return "_".join(f"{key}~{value_name(value)}" for key, value in settings.items())


def with_settings(config: Config, settings: dict[str, Any]) -> Config:
    """`config` with the dotted `settings` set and no sweep of its own."""
    changed = copy.deepcopy(config)
    changed["sweep"] = {**changed.get("sweep", {}), "settings": {}}
    for key, value in settings.items():
        node = changed
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return changed


def check_key(source: str, key: str, values: list) -> bool:
    """Each value of the swept `key` checked, one line naming it; whether the generation
    stages read the key."""
    where = f"{source}: config key sweep.settings.{key}"
    try:
        subschema(key)
    except ConfigError:
        raise ConfigError(f"{where}: {key} is not a setting") from None
    if key in FIXED:
        raise ConfigError(f"{where}: cannot be swept ({FIXED[key]})")
    for shared in SHARED_STAGES:
        if reads(stage_reads(shared), key):
            raise ConfigError(
                f"{where}: cannot be swept: {shared} reads it, whose output every variant "
                "shares with the run (a sweep varies the settings from the plan on)"
            )
    own = [s for s in GENERATION_STAGES + VARIANT_STAGES if reads(stage_reads(s), key)]
    if not own:
        raise ConfigError(f"{where}: no stage of a variant reads it, so no variant would differ")
    names = []
    for value in values:
        if isinstance(value, (dict, list)):
            raise ConfigError(
                f"{where}: a swept value is a number, a string, true, false or null, not {value!r}"
            )
        check_value(value, key, source, f"sweep.settings.{key}")
        if not NAME_VALUE.match(value_name(value)):
            raise ConfigError(
                f"{where}: {value!r} cannot name a folder (letters, digits, '.', '+', '-', '_')"
            )
        names.append(value_name(value))
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated or len({repr(v) for v in values}) != len(values):
        raise ConfigError(f"{where}: lists {repeated[0] if repeated else values} twice")
    return any(name in GENERATION_STAGES for name in own)


def plan_sweep(config: Config, digiface_identities: int, source: str = "config") -> Sweep:
    """The variants of the resolved `config`'s sweep, each checked and resolved; errors are one
    line naming the key. `digiface_identities`: the run's, of which the sweep takes the first
    sweep.identities."""
    sweep = config["sweep"]
    swept: dict[str, list] = sweep["settings"]
    per_shard = config["plan"]["identities_per_shard"]
    identities = min(sweep["identities"], digiface_identities)
    shards = math.ceil(identities / per_shard) if swept else 0
    generation_keys = [key for key, values in swept.items() if check_key(source, key, values)]
    if not swept:
        choices: list[dict] = []
    elif sweep["mode"] == "grid":
        choices = [
            dict(zip(swept, values, strict=True)) for values in itertools.product(*swept.values())
        ]
    else:
        choices = [{}]
        for key, values in swept.items():
            choices += [{key: value} for value in values if value != run_value(config, key)]
    variants = []
    for settings in choices:
        name = variant_name(settings)
        resolved = resolve_config(
            with_settings(config, settings), f"{source}, sweep variant {name}"
        )
        generation = variant_name({k: v for k, v in settings.items() if k in generation_keys})
        variants.append(Variant(name, settings, resolved, generation))
    return Sweep(variants, list(swept), identities, shards)


def cost_lines(
    sweep: Sweep, seconds_per_image: float, rate_source: str, shard_identities: list[int]
) -> list[str]:
    """What the dry run says: each variant's images to generate and their GPU-hours at
    `seconds_per_image` (measured, as `rate_source` says); a variant whose generation folder
    an earlier one made costs none. `shard_identities`: the identities of each sweep shard."""
    lines = [
        f"sweep: {len(sweep.variants)} variants of {', '.join(sweep.keys)} over the first "
        f"{sweep.identities} identities ({sweep.shards} generation shards), at "
        f"{seconds_per_image:.3g} s an image ({rate_source}); images whose key an earlier run "
        "made are reused, not counted off here:"
    ]
    paid: set[str] = set()
    for variant in sweep.variants:
        if variant.generation in paid:
            lines.append(f"  {variant.name}: 0 images (generated with {variant.generation})")
            continue
        paid.add(variant.generation)
        images = sum(shard_identities) * variant.config["plan"]["images_per_identity"]
        hours = images * seconds_per_image / 3600
        lines.append(f"  {variant.name}: {images} images, {hours:.3g} GPU-hours")
    return lines


# --- the comparison (rule report_sweep) --------------------------------------------------------

# summary.csv's headline columns: the certificate's figures by their place in evaluation.json.
HEADLINE = {
    "consistency_0.3": ("generated", "consistency", "share_at", "0.3"),
    "consistency_0.4": ("generated", "consistency", "share_at", "0.4"),
    "u_class_0.3": ("generated", "uniqueness", "0.3", "u_class"),
    "eer_percent": ("generated", "verification", "eer"),
    "fdr": ("generated", "verification", "fdr"),
    "nearest_real_p99": ("generated", "leakage", "images", "p99"),
}


def _at(node: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def summary_rows(
    variants: list[dict], keys: list[str], evaluations: list[dict], benchmarks: list[dict | None]
) -> list[dict]:
    """One row per variant (`described`'s): the value of each swept key (the run's where the
    variant keeps it), its generation folder, its yield, the headline
    figures of its evaluation (null where not computed) and its benchmark accuracies."""
    rows = []
    for variant, evaluation, benchmark in zip(variants, evaluations, benchmarks, strict=True):
        images = _at(evaluation, ("yield", "images")) or {}
        row: dict[str, Any] = {"variant": variant["name"]}
        row.update({key: variant["values"][key] for key in keys})
        row["generation"] = variant["generation"]
        row["identities_kept"] = _at(evaluation, ("yield", "identities", "kept"))
        row["images_passed"] = images.get("passed")
        planned = images.get("planned")
        row["yield"] = images["passed"] / planned if planned else None
        for column, path in HEADLINE.items():
            row[column] = _at(evaluation, path)
        if row["eer_percent"] is not None:
            row["eer_percent"] = 100 * row["eer_percent"]
        for name, result in sorted(((benchmark or {}).get("verification") or {}).items()):
            row[f"accuracy_{name}"] = result["accuracy"]
        rows.append(row)
    return rows


def write_summary(rows: list[dict], path) -> None:
    """summary.csv: one row per variant, every row's columns (null written empty)."""
    import csv
    import io

    from digi2real.atomic import atomic_path

    columns = list(dict.fromkeys(column for row in rows for column in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    with atomic_path(path) as temporary:
        temporary.write_text(buffer.getvalue(), encoding="utf-8")


def described(sweep: Sweep) -> list[dict]:
    """The variants as report_sweep reads them: name, changed settings, every swept key's
    value (the run's where the variant keeps it), generation folder."""
    return [
        {
            "name": variant.name,
            "settings": variant.settings,
            "values": {key: run_value(variant.config, key) for key in sweep.keys},
            "generation": variant.generation,
        }
        for variant in sweep.variants
    ]


def measured_seconds_per_image(results: Path) -> tuple[float, int] | None:
    """The run's own generation rate: the seconds of its generation jobs (Snakemake's
    benchmark files, results/benchmarks/generate/<shard>.tsv) over the images of those shards'
    manifests, and how many jobs it is measured on; None before any shard was generated."""
    import csv

    import pyarrow.parquet as pq

    seconds = images = jobs = 0
    for tsv in sorted((results / "benchmarks/generate").glob("*.tsv")):
        manifest = results / "shards" / tsv.stem / "manifest.parquet"
        try:
            with open(tsv, encoding="utf-8") as stream:
                rows = list(csv.DictReader(stream, delimiter="\t"))
            count = pq.read_metadata(manifest).num_rows
        except (OSError, ValueError):
            continue
        if rows and count:
            seconds, images, jobs = seconds + float(rows[-1]["s"]), images + count, jobs + 1
    return (seconds / images, jobs) if images else None
