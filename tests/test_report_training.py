"""The training's page of the report: each sub-run's benchmark.json in percent beside the
published figures, the 5-benchmark average only when all five were measured, the realism
transfer's gain over the baseline, the GPU-hours of the jobs' benchmark files, and the demo's
warning only in the demo. Built from fake inputs written here, through the stage's `run` and
through the CLI."""

import csv
import json
from pathlib import Path

import pytest

from digi2real import cli, plots
from digi2real.errors import DataError
from digi2real.stages import report_training
from digi2real.stages.report_training import PUBLISHED, Row, gain, placing, with_pretraining

pytestmark = pytest.mark.unit

FIVE = ("lfw", "cfp_fp", "agedb_30", "calfw", "cplfw")
# Fractions as benchmark.json holds them: this run's, the baseline's (each 0.02 lower, LFW
# 0.0123 lower) and a checkpoint's measured on LFW alone.
OWN = {"lfw": 0.99531, "cfp_fp": 0.9012, "agedb_30": 0.9105, "calfw": 0.9240, "cplfw": 0.8850}
BASELINE = {name: value - 0.02 for name, value in OWN.items()} | {"lfw": 0.99531 - 0.0123}


def verification(accuracies: dict[str, float], std: float = 0.00312) -> dict:
    return {
        name: {
            "accuracy": value,
            "std": std,
            "threshold": 1.4,
            "pairs": 6000,
            "fold_accuracies": [value] * 10,
            "fold_thresholds": [1.4] * 10,
        }
        for name, value in accuracies.items()
    }


def write_json(path: Path, content: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


def write_benchmark(results: Path, run: str, accuracies: dict, ijb: dict | None = None) -> Path:
    content = {
        "network": "iresnet50",
        "backbone": f"{results}/{run}train/backbone.pt",
        "verification": verification(accuracies),
        "ijb": ijb,
    }
    return write_json(results / f"{run}benchmark.json", content)


def write_metrics(results: Path, run: str, images: int = 480_000) -> Path:
    path = results / f"{run}train/metrics.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        {"step": 0, "images": images, "classes": 10_000, "steps": 4, "steps_per_epoch": 2},
        {"step": 2, "epoch": 0, "loss": 20.5, "lr": 0.1, "images_per_second": 900.0},
        {"step": 2, "epoch": 0, "verification": {"lfw": 0.6}},
        {"step": 4, "epoch": 1, "loss": 18.0, "lr": 0.01, "images_per_second": 910.0},
        {"step": 4, "epoch": 1, "verification": {"lfw": 0.7}},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def write_tsv(path: Path, seconds: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:00\t100\n")
    return path


def settings(gpus: int = 2, demo: str | None = None) -> dict:
    bins = {name: f"/data/{name}.bin" for name in FIVE}
    return {"demo": demo, "train": {"gpus": gpus, "mixin_mode": "mix"}, "benchmark": {"bins": bins}}


@pytest.fixture
def inputs(tmp_path) -> dict:
    """A run's results with this run, the DigiFace baseline and a checkpoint benchmarked, two
    generation shards of 1800 s and 5400 s, training jobs of 3600 s and 1800 s."""
    results = tmp_path / "results"
    ijb = {"target": "IJBC", "tar_at_far": {"1e-4": 0.9512, "1e-5": 0.9034, "1e-6": None}}
    return {
        "results": results,
        "benchmarks": [
            write_benchmark(results, "checkpoints/r50/", {"lfw": 0.998}, ijb),
            write_benchmark(results, "", OWN),
            write_benchmark(results, "baseline/digiface/", BASELINE),
        ],
        "metrics": [write_metrics(results, ""), write_metrics(results, "baseline/digiface/")],
        "generation": [
            write_tsv(results / "benchmarks/generate/0.tsv", 1800),
            write_tsv(results / "benchmarks/generate/1.tsv", 5400),
        ],
        "training": [
            write_tsv(results / "benchmarks/train.tsv", 3600),
            write_tsv(results / "baseline/digiface/benchmarks/train.tsv", 1800),
        ],
        "page": tmp_path / "report/training.html",
        "curves": tmp_path / "report/training_curves.png",
        "table": tmp_path / "report/benchmark.csv",
    }


def table(path: Path) -> dict[str, dict]:
    """benchmark.csv's rows by name (a published row by `name source`)."""
    rows = list(csv.DictReader(path.open()))
    return {
        row["name"] + (f" {row['source']}" if row["kind"] == "published" else ""): row
        for row in rows
    }


def mean(accuracies: dict[str, float]) -> float:
    return 100 * sum(accuracies[name] for name in FIVE) / 5


# --- the table -----------------------------------------------------------------------------


def test_accuracies_are_percents_with_two_decimals_and_their_std(inputs):
    report_training.run(settings(), **inputs)
    page = inputs["page"].read_text()
    assert "99.53 ± 0.31" in page  # lfw 0.99531, std 0.00312
    assert "90.12 ± 0.31" in page  # cfp_fp 0.9012
    rows = table(inputs["table"])
    own = rows["this run's dataset"]
    assert (own["kind"], own["lfw"], own["lfw_std"], own["cplfw"]) == (
        "this run",
        "99.53",
        "0.31",
        "88.50",
    )
    assert rows["checkpoint r50"]["lfw"] == "99.80"


def test_the_rows_are_this_run_then_the_baseline_then_the_checkpoints(inputs):
    rows = report_training.run(settings(), **inputs)
    assert [row.kind for row in rows] == ["this run", "baseline", "checkpoint"]
    assert [row.images for row in rows] == [480_000, 480_000, None]


def test_the_average_is_given_only_with_all_five(inputs):
    rows = {row.kind: row for row in report_training.run(settings(), **inputs)}
    assert rows["this run"].average == pytest.approx(mean(OWN))
    assert rows["checkpoint"].average is None  # LFW alone
    csv_rows = table(inputs["table"])
    assert csv_rows["this run's dataset"]["average_5"] == f"{mean(OWN):.2f}"
    assert csv_rows["checkpoint r50"]["average_5"] == ""
    four = {name: OWN[name] for name in FIVE[:4]}
    assert report_training.five_average({n: 100 * v for n, v in four.items()}) is None


def test_other_bins_and_ijb_get_columns_of_their_own(inputs):
    config = settings()
    config["benchmark"]["bins"]["cfp_ff"] = "/data/cfp_ff.bin"
    report_training.run(config, **inputs)
    rows = table(inputs["table"])
    columns = list(rows["this run's dataset"])
    assert columns.index("cplfw") < columns.index("cfp_ff") < columns.index("average_5")
    assert rows["checkpoint r50"]["IJB-C TAR@FAR 1e-4"] == "95.12"
    assert rows["checkpoint r50"]["IJB-C TAR@FAR 1e-5"] == "90.34"
    assert "IJB-C TAR@FAR 1e-6" not in columns  # not measurable, not shown
    assert "IJB-C TAR@FAR 1e-4" in inputs["page"].read_text()


# --- the published figures -----------------------------------------------------------------


def test_every_published_figure_is_on_the_page_and_in_the_table(inputs):
    report_training.run(settings(), **inputs)
    page = inputs["page"].read_text()
    rows = table(inputs["table"])
    for entry in PUBLISHED:
        assert entry.dataset in page and entry.source in page
        row = rows[f"{entry.dataset} {entry.source}"]
        assert row["kind"] == "published"
        if entry.published_average is not None:
            assert f"{entry.published_average:.2f}" in page
            assert row["average_5"] == f"{entry.published_average:.2f}"
        for name, value in entry.accuracy.items():
            assert f"{value:.2f}" in page
            assert row[name] == f"{value:.2f}"
    for figure in ("83.45", "88.20", "89.56", "91.73", "92.00", "93.89", "94.79", "96.17"):
        assert figure in page


def test_digiface_papers_average_is_computed_from_its_five():
    # as the page's row of it has it (Row.average)
    paper = next(row for row in report_training.published_rows() if row.published_average is None)
    assert paper.average == pytest.approx((96.17 + 89.81 + 81.10 + 82.55 + 82.23) / 5)


@pytest.mark.parametrize(
    "average, expected",
    [
        (90.0, "between DCFace (89.56) and Arc2Face (91.73)"),
        (89.56, "between DCFace (89.56) and Arc2Face (91.73)"),
        (95.0, "as high as CASIA-WebFace (real) (94.79), the highest, or higher"),
        (80.0, "below every one, DigiFace-1M (83.45) the lowest"),
    ],
)
def test_an_average_is_placed_among_the_published_ones(average, expected):
    assert placing(average) == expected


def test_the_page_says_where_this_runs_average_falls(inputs):
    report_training.run(settings(), **inputs)
    page = inputs["page"].read_text()
    assert f"is {mean(OWN):.2f}%: {placing(mean(OWN))} among the averages" in page
    assert "trained on 480,000 images" in page


def test_without_all_five_the_page_says_which_are_missing(inputs):
    inputs["benchmarks"][1].write_text(
        json.dumps({"network": "iresnet50", "verification": verification({"lfw": 0.99})})
    )
    report_training.run(settings(), **inputs)
    page = inputs["page"].read_text()
    assert "average is not computed: CFP-FP, AgeDB-30, CALFW, CPLFW not benchmarked" in page
    assert "among the averages" not in page


# --- the gain, the cost, the demo ----------------------------------------------------------


def test_the_gain_is_this_run_minus_the_baseline(inputs):
    rows = {row.kind: row for row in report_training.run(settings(), **inputs)}
    gains = gain(rows["this run"], rows["baseline"], list(FIVE))
    assert gains["lfw"] == pytest.approx(1.23)
    assert gains["cfp_fp"] == pytest.approx(2.0)
    assert gains["average"] == pytest.approx(mean(OWN) - mean(BASELINE))
    page = inputs["page"].read_text()
    assert "Realism transfer" in page
    assert "+1.23" in page and f"{gains['average']:+.2f}" in page


def test_a_negative_gain_keeps_its_sign():
    worse = Row("this run", "a", accuracy={"lfw": 90.0})
    better = Row("baseline", "b", accuracy={"lfw": 92.5})
    assert gain(worse, better, ["lfw"]) == {"lfw": pytest.approx(-2.5), "average": None}
    assert report_training.signed(-2.5) == "-2.50"


def test_without_a_baseline_there_is_no_gain(inputs):
    inputs["benchmarks"] = inputs["benchmarks"][:2]  # the checkpoint and this run
    report_training.run(settings(), **inputs)
    assert "Realism transfer" not in inputs["page"].read_text()


def test_gpu_hours_sum_the_benchmark_files(inputs):
    report_training.run(settings(gpus=2), **inputs)
    cost = report_training.cost_rows(
        inputs["results"], inputs["generation"], inputs["training"], gpus=2
    )
    assert cost == [
        ["generation", 2, 2.0, "GPU-hours"],  # (1800 + 5400) / 3600
        ["training: this run's dataset", 1, 2.0, "GPU-hours"],  # 3600 s x 2 GPUs
        ["training: DigiFace baseline (its source images)", 1, 1.0, "GPU-hours"],
    ]
    page = inputs["page"].read_text()
    assert "<td>2.000</td><td>GPU-hours</td>" in page
    assert "<td>1.000</td><td>GPU-hours</td>" in page


def test_a_cpu_run_is_counted_in_cpu_hours(inputs):
    report_training.run(settings(gpus=0), **inputs)
    cost = report_training.cost_rows(
        inputs["results"], inputs["generation"], inputs["training"], gpus=0
    )
    assert cost[1] == ["training: this run's dataset", 1, 1.0, "CPU-hours"]  # 3600 s, x 1
    assert "CPU-hours" in inputs["page"].read_text()


def test_the_demo_line_appears_only_in_the_demo(inputs):
    report_training.run(settings(demo=None), **inputs)
    assert report_training.DEMO_WARNING not in inputs["page"].read_text()
    report_training.run(settings(demo="demo"), **inputs)
    page = inputs["page"].read_text()
    assert report_training.DEMO_WARNING.replace("'", "&#x27;") in page
    # First thing after the title, and no comparison sentence beside it.
    assert page.index('class="warning"') < page.index('class="lead"')
    assert "among the averages" not in page


# --- the curves ----------------------------------------------------------------------------


def test_the_curves_have_a_panel_per_evaluated_benchmark(inputs):
    report_training.run(settings(), **inputs)
    assert inputs["curves"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = report_training.read_metrics(inputs["metrics"][0])
    curves = {"own": records}
    assert plots.training_panels(curves, list(FIVE)) == ["loss", "lr", "lfw"]
    assert plots.curve(records, "loss") == ([2, 4], [20.5, 18.0])
    assert plots.accuracy_curve(records, "lfw") == ([2, 4], [pytest.approx(60.0), 70.0])


# --- errors and the CLI --------------------------------------------------------------------


def test_a_benchmark_file_without_seconds_is_named(inputs):
    inputs["generation"][0].write_text("h:m:s\n0:00:01\n")
    with pytest.raises(DataError, match="generate/0.tsv: no seconds"):
        report_training.run(settings(), **inputs)


def test_an_input_outside_the_results_is_named(inputs, tmp_path):
    stray = write_benchmark(tmp_path / "elsewhere", "", OWN)
    inputs["benchmarks"].append(stray)
    with pytest.raises(DataError, match="elsewhere/benchmark.json: not under the results"):
        report_training.run(settings(), **inputs)


def test_a_benchmark_json_without_accuracies_is_named(inputs):
    write_json(inputs["benchmarks"][1], {"verification": {"lfw": {"std": 0.01}}})
    with pytest.raises(DataError, match="results/benchmark.json: verification lfw has no"):
        report_training.run(settings(), **inputs)


def test_a_broken_metrics_line_is_named(inputs):
    with inputs["metrics"][0].open("a") as file:
        file.write('{"step": 6, "lo\n')
    with pytest.raises(DataError, match=r"train/metrics.jsonl: line 6 is not JSON"):
        report_training.run(settings(), **inputs)


def test_the_cli_writes_the_page_the_curves_and_the_table(inputs):
    argv = ["report-training", "--config", json.dumps(settings()), "--results"]
    argv += [str(inputs["results"]), "--benchmarks", *map(str, inputs["benchmarks"])]
    argv += ["--metrics", *map(str, inputs["metrics"])]
    argv += ["--generation", *map(str, inputs["generation"])]
    argv += ["--training", *map(str, inputs["training"])]
    argv += ["--page", str(inputs["page"]), "--curves", str(inputs["curves"])]
    argv += ["--table", str(inputs["table"])]
    assert cli.main(argv) == 0
    assert "99.53 ± 0.31" in inputs["page"].read_text()
    assert inputs["curves"].exists()
    assert table(inputs["table"])["this run's dataset"]["lfw"] == "99.53"


def test_the_untrained_networks_accuracy_is_given_beside_the_trained_ones():
    records = {
        "this run's dataset": [
            {"step": 0, "images": 20},
            {"step": 0, "epoch": 0, "verification": {"demo": 0.75, "lfw": 0.5}},
            {"step": 2, "epoch": 0, "verification": {"demo": 0.875, "lfw": 0.6}},
        ],
        "DigiFace baseline": [{"step": 0, "images": 30}],  # evaluated on no benchmark
    }
    assert report_training.untrained_lines(records) == [
        "this run's dataset, before training (its initial weights): demo 75.00, lfw 50.00 (%)."
    ]


def test_a_fine_tuned_mix_in_row_counts_the_images_of_both_trainings():
    rows = [Row("this run", "own", images=20), Row("mix-in", "mixed", images=16)]
    assert [row.images for row in with_pretraining(rows)] == [20, "20 + 16 (fine-tuned)"]
    assert with_pretraining(rows[1:]) == rows[1:]  # no synthetic-only row: nothing to add
