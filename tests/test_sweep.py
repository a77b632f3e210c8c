"""Sweeps (config `sweep:`, digi2real/sweep.py, workflow/rules/sweep.smk): variants named by what
they change, shared work done once, images shared by key, a summary row per variant."""

import csv
import zipfile
from pathlib import Path

import pytest

from digi2real.config import resolve_config
from digi2real.errors import ConfigError
from digi2real.sweep import BASE, described, plan_sweep, summary_rows
from tests.workflow_runs import change_config, copy_run, planned_jobs, snakemake


def sweep_of(demo_config, identities=4, mode="grid", **settings):
    config = resolve_config(
        {**demo_config, "sweep": {"settings": settings, "mode": mode, "identities": identities}}
    )
    return plan_sweep(config, digiface_identities=8, source="my.yaml")


def test_a_grid_names_each_variant_by_the_keys_and_values_it_changes(demo_config):
    sweep = sweep_of(
        demo_config, **{"delta.scale": [0.5, 1.0], "quality.min_cos_prototype": [0.3, 0.45]}
    )
    names = [variant.name for variant in sweep.variants]
    assert names == [
        "delta.scale~0.5_quality.min_cos_prototype~0.3",
        "delta.scale~0.5_quality.min_cos_prototype~0.45",
        "delta.scale~1.0_quality.min_cos_prototype~0.3",
        "delta.scale~1.0_quality.min_cos_prototype~0.45",
    ]
    first = sweep.variants[0].config
    assert first["delta"]["scale"] == 0.5 and first["quality"]["min_cos_prototype"] == 0.3
    assert first["sweep"]["settings"] == {}
    # A threshold is read after the generation: the variants that share λ share their images.
    assert [variant.generation for variant in sweep.variants] == [
        "delta.scale~0.5",
        "delta.scale~0.5",
        "delta.scale~1.0",
        "delta.scale~1.0",
    ]
    # The first 4 of 8 identities, in the demo's shards of 4.
    assert (sweep.identities, sweep.shards) == (4, 1)


def test_one_at_a_time_varies_each_key_alone_beside_the_runs_settings(demo_config):
    # demo.yaml: delta.scale 1.0, quality.min_cos_prototype 0.45.
    sweep = sweep_of(
        demo_config,
        mode="one_at_a_time",
        **{"delta.scale": [0.5, 1.0], "quality.min_cos_prototype": [0.5]},
    )
    assert [(v.name, v.generation) for v in sweep.variants] == [
        (BASE, BASE),
        ("delta.scale~0.5", "delta.scale~0.5"),
        ("quality.min_cos_prototype~0.5", BASE),
    ]
    values = [row["values"] for row in described(sweep)]
    assert values == [
        {"delta.scale": 1.0, "quality.min_cos_prototype": 0.45},
        {"delta.scale": 0.5, "quality.min_cos_prototype": 0.45},
        {"delta.scale": 1.0, "quality.min_cos_prototype": 0.5},
    ]


def test_a_key_the_run_leaves_out_is_none_beside_its_variants(demo_config):
    demo_config["plan"]["t"] = {"mode": "fixed"}  # no plan.t.low
    sweep = sweep_of(demo_config, mode="one_at_a_time", **{"plan.t.low": [0.2]})
    assert [row["values"] for row in described(sweep)] == [
        {"plan.t.low": None},
        {"plan.t.low": 0.2},
    ]


def test_no_sweep_no_variants(demo_config):
    assert sweep_of(demo_config).variants == []


@pytest.mark.parametrize(
    "settings, named",
    [
        ({"delta.scal": [0.5]}, "sweep.settings.delta.scal: delta.scal is not a setting"),
        ({"quality.min_det_score": [0.5, 2]}, "sweep.settings.quality.min_det_score: 2 is greater"),
        ({"plan.t.mode": ["fixed", "gaussian"]}, "sweep.settings.plan.t.mode: 'gaussian' is not"),
        ({"delta.mode": ["pooled"]}, "sweep.settings.delta.mode: cannot be swept: estimate_delta"),
        ({"digiface.selection.count": [4]}, "sweep.settings.digiface.selection.count: cannot be"),
        (
            {"cluster.seconds_per_image": [1.0]},
            "sweep.settings.cluster.seconds_per_image: no stage",
        ),
        ({"delta.scale": [0.5, 0.5]}, "sweep.settings.delta.scale: lists 0.5 twice"),
        ({"plan.t": [{"mode": "fixed"}]}, "sweep.settings.plan.t: a swept value is a number"),
        ({"plan.identities_per_shard": [2]}, "sweep.settings.plan.identities_per_shard: cannot"),
        ({"train.enabled": [False]}, "sweep.settings.train.enabled: cannot be swept (every"),
    ],
)
def test_a_bad_sweep_is_one_line_naming_the_key(demo_config, settings, named):
    with pytest.raises(ConfigError) as error:
        sweep_of(demo_config, **settings)
    message = str(error.value)
    assert message.startswith("my.yaml: config key ") and named in message, message
    assert "\n" not in message


def test_a_variant_the_schema_refuses_as_a_whole_names_the_variant(demo_config):
    # plan.t.low above the run's plan.t.high (0.7): each value alone is a valid one.
    with pytest.raises(ConfigError, match=r"sweep variant plan.t.low~0.9: config key plan.t: low"):
        sweep_of(demo_config, **{"plan.t.low": [0.9]})


def test_the_summary_reads_the_headline_where_the_evaluation_writes_it():
    evaluation = {
        "yield": {"identities": {"kept": 3}, "images": {"planned": 16, "passed": 12}},
        "generated": {
            "consistency": {"share_at": {"0.3": 0.9, "0.4": 0.8}},
            "uniqueness": {"0.3": {"u_class": 0.75}},
            "verification": {"eer": 0.0125, "fdr": 7.5},
            "leakage": {"images": {"p99": 0.42}},
        },
    }
    variant = {"name": "delta.scale~0.5", "values": {"delta.scale": 0.5}, "generation": "g"}
    benchmark = {"verification": {"lfw": {"accuracy": 0.99}, "cfp_fp": {"accuracy": 0.9}}}
    empty = {"yield": {"identities": {"kept": 0}, "images": {"planned": 16, "passed": 0}}}
    rows = summary_rows([variant, variant], ["delta.scale"], [evaluation, empty], [benchmark, None])
    assert rows[0] == {
        "variant": "delta.scale~0.5",
        "delta.scale": 0.5,
        "generation": "g",
        "identities_kept": 3,
        "images_passed": 12,
        "yield": 0.75,
        "consistency_0.3": 0.9,
        "consistency_0.4": 0.8,
        "u_class_0.3": 0.75,
        "eer_percent": 1.25,
        "fdr": 7.5,
        "nearest_real_p99": 0.42,
        "accuracy_cfp_fp": 0.9,
        "accuracy_lfw": 0.99,
    }
    assert rows[1]["yield"] == 0.0 and rows[1]["eer_percent"] is None


# --- the workflow -------------------------------------------------------------------------------


def archive_keys(shard: Path) -> dict[str, bytes]:
    """Each raw image of a shard's archive by its key (the member's comment)."""
    with zipfile.ZipFile(shard / "images.zip") as archive:
        return {i.comment.decode(): archive.read(i) for i in archive.infolist() if i.comment}


def test_a_sweep_certifies_each_variant_and_shares_images_by_key(run, tmp_path):
    workdir = copy_run(run, tmp_path / "sweep")
    results = workdir / "results"
    change_config(
        workdir,
        "sweep",
        {"settings": {"delta.scale": [0.5]}, "mode": "one_at_a_time", "identities": 4},
    )
    summary, target = results / "sweep/summary.csv", "results/sweep/summary.csv"
    # With train.enabled each variant trains its recognizer on its export and benchmarks it.
    change_config(workdir, "train.enabled", True)
    trained = planned_jobs(workdir, target)
    assert [trained[f"sweep_{rule}"] for rule in ("export_recordio", "train", "benchmark")] == [
        2,
        2,
        2,
    ]
    change_config(workdir, "train.enabled", False)
    dry = snakemake(workdir, "-n", target)
    # The dry run prices each variant: base's images are the run's own, by key.
    assert "base: 16 images" in dry.stderr and "delta.scale~0.5: 16 images" in dry.stderr
    # The workflow's profile asks a GPU for a sweep's generation jobs as for the run's.
    generation_jobs = dry.stdout.split("rule sweep_generate:")[1:]
    assert generation_jobs and all(
        "gpu=1, mem_mb=12000" in job.split("resources:")[1].splitlines()[0]
        for job in generation_jobs
    ), dry.stdout
    snakemake(workdir, target)
    rows = list(csv.DictReader(summary.open()))
    assert [(r["variant"], r["delta.scale"]) for r in rows] == [
        (BASE, "1.0"),
        ("delta.scale~0.5", "0.5"),
    ]
    for variant in (BASE, "delta.scale~0.5"):
        assert (results / f"sweep/{variant}/report/certificate.html").is_file()
        assert (results / f"sweep/{variant}/evaluation.json").is_file()
    assert (results / "sweep/report/sweep.html").is_file()
    # Images: the run's λ gives the run's keys, so base copied the run's shard 0 and generated
    # nothing; λ = 0.5 changes every key and every image.
    run_keys = archive_keys(results / "shards/0")
    base = archive_keys(results / "sweep/generated/base/shards/0")
    half = archive_keys(results / "sweep/generated/delta.scale~0.5/shards/0")
    assert len(base) == len(half) == 16
    assert all(run_keys[key] == data for key, data in base.items())
    assert not set(half) & set(base)
    assert not set(half.values()) & set(base.values())
    base_log = (results / "sweep/generated/base/logs/generate/0.log").read_text()
    assert "16 images copied from other shards" in base_log and "0 images generated" in base_log

    # Adding a value runs that variant alone: its plan, its images, its certificate.
    change_config(workdir, "sweep.settings", {"delta.scale": [0.5, 0.75]})
    assert planned_jobs(workdir, target) == {
        "sweep_plan": 1,
        "sweep_generate": 1,
        "sweep_aggregate": 1,
        "sweep_evaluate": 1,
        "sweep_report": 1,
        "report_sweep": 1,
    }
    # A threshold's value adds a variant that takes base's images: nothing is generated.
    change_config(
        workdir, "sweep.settings", {"delta.scale": [0.5], "quality.min_cos_prototype": [0.5]}
    )
    assert planned_jobs(workdir, target) == {
        "sweep_aggregate": 1,
        "sweep_evaluate": 1,
        "sweep_report": 1,
        "report_sweep": 1,
    }


def test_a_bad_sweep_stops_the_dry_run_in_one_line(run, tmp_path):
    workdir = copy_run(run, tmp_path / "bad")
    change_config(workdir, "sweep", {"settings": {"delta.mode": ["pooled"]}})
    result = snakemake(workdir, "-n", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    # One line, after the dry run's summary of the input folders.
    named = [line for line in output.splitlines() if "sweep.settings.delta.mode" in line]
    assert len(named) == 1 and "cannot be swept: estimate_delta reads it" in named[0], output
    assert len(output.strip().splitlines()) <= 7, output
