"""The demo's recognizer trained and benchmarked by the workflow, over a finished run: the
training's jobs, a stop and Snakemake's retry, the baseline, the outputs' contracts. A module of
its own, so that pytest-xdist runs it beside the other workflow tests."""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from digi2real.config import resolve_config
from digi2real.demo import build_demo_benchmark
from tests.conftest import REPO
from tests.workflow_runs import change_config, copy_run, planned_jobs, snakemake

pytestmark = pytest.mark.workflow

# The log of one job of each training rule, under the results: the run's own and the
# baseline's sub-run (baseline/digiface/) each have their logs.
TRAINING_LOGS = {
    "embed_benchmarks": "logs/embed_benchmarks/embeddings.log",
    "train": "logs/train.log",
    "benchmark": "baseline/digiface/logs/benchmark.log",
    "export_digiface": "baseline/digiface/logs/export_digiface.log",
    "report_training": "logs/report_training.log",
    "mixin_leaks": "logs/mixin_leaks.log",
}


@dataclass
class Trained:
    """The finished run trained by the workflow: its folder and the train settings used."""

    workdir: Path
    train: dict
    faults: Path  # one marker per training job stopped once

    @property
    def results(self) -> Path:
        return self.workdir / "results"


@pytest.fixture(scope="module")
def trained(run, tmp_path_factory) -> Trained:
    """The demo's training (demo.yaml: an IResNet-18, the DigiFace baseline, the fine-tuning
    on its real mix-in, the demo's verification file) over the finished run; each training job
    gets SIGTERM after step 1, as SLURM sends before a time limit, exits 143, and Snakemake's
    retry resumes it. Made once, checked by the tests below: several tests rather than one, so
    that pytest-xdist hands this worker its next module only when they are nearly done."""
    base = tmp_path_factory.mktemp("training")
    workdir = copy_run(run, base / "trained")
    # The run's own config (its demo folder may be another test worker's), training on.
    demo_bin = base / "benchmarks/demo.bin"
    build_demo_benchmark(demo_bin)
    # demo.yaml's training, 4 steps of its 8: the stop and the retry as well, at half the cost
    train = {**yaml.safe_load((REPO / "demo.yaml").read_text())["train"], "max_steps": 4}
    change_config(workdir, "train", train)
    change_config(workdir, "benchmark.bins", {"demo": str(demo_bin)})
    planned = planned_jobs(workdir)
    # The dataset stays as it was: only the certificate (now searching the benchmark's faces
    # too), the pages that show it, and the training's jobs run.
    assert set(planned) == {
        "embed_benchmarks", "evaluate", "mixin_leaks", "report", "card", "train",
        "export_digiface", "benchmark", "report_training", "all",
    }, planned  # fmt: skip
    # The run's own (synthetic identities), its fine-tuning on the mix-in, the baseline.
    assert planned["train"] == 3 and planned["benchmark"] == 3
    faults = base / "faults"
    env = {
        "DIGI2REAL_TRAIN_TERM_AFTER_STEPS": "1",
        "DIGI2REAL_TRAIN_FAULT_ONCE_DIR": str(faults),
    }
    snakemake(workdir, "--retries", "1", env=env)
    return Trained(workdir, train, faults)


@pytest.mark.parametrize("run_prefix", ["", "mixin/", "baseline/digiface/"])
def test_each_training_is_stopped_resumed_and_benchmarked(trained, run_prefix):
    """The run's own recognizer, its fine-tuning on the mix-in, and the baseline."""
    assert len(list(trained.faults.iterdir())) == 3  # each training job was stopped once
    results = trained.results
    log = (results / f"{run_prefix}logs/train.log").read_text()
    # SIGTERM after step 1: the trainer stops after the step under way, 2, and checkpoints.
    assert "train: resumed at step 2 of 4" in log, log[-2000:]
    lines = (results / f"{run_prefix}train/metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records if "loss" in r] == [2, 4]  # none twice
    # Before training, after each epoch, and after the last step, each once.
    per_epoch = records[0]["steps_per_epoch"]
    evaluated = sorted({0, 4, *range(per_epoch, 4, per_epoch)})
    assert [r["step"] for r in records if "verification" in r] == evaluated
    benchmark = json.loads((results / f"{run_prefix}benchmark.json").read_text())
    demo_figure = benchmark["verification"]["demo"]
    assert demo_figure["pairs"] == 20 and 0 <= demo_figure["accuracy"] <= 1
    assert benchmark["network"] == "iresnet18" and benchmark["ijb"] is None
    # The last evaluation during training is the benchmark's own figure.
    assert records[-1]["verification"]["demo"] == demo_figure["accuracy"]
    from digi2real.iresnet import load_backbone

    load_backbone(results / f"{run_prefix}train/backbone.pt", "iresnet18")


def test_the_baseline_trains_the_same_identities_on_their_sources(trained):
    """The baseline trains the same identities, labelled alike, on their DigiFace sources."""
    results = trained.results
    dataset = (results / "export/recordio/labels.csv").read_text().splitlines()
    baseline = (results / "baseline/digiface/export/recordio/labels.csv").read_text().splitlines()
    synthetic = [row for row in dataset if row.endswith(",synthetic")]
    assert dataset[1 : len(baseline)] == synthetic
    assert [row.split(",")[:2] for row in dataset[: len(baseline)]] == [
        row.split(",")[:2] for row in baseline
    ]


def test_the_mixin_fine_tunes_without_the_benchmarks_person(trained):
    """The mix-in: its real identities after the synthetic ones; the one that is the
    verification file's person (demo "5") flagged and left out of the fine-tuning, which starts
    from the synthetic-only backbone at train.finetune's learning rates."""
    results = trained.results
    dataset = (results / "export/recordio/labels.csv").read_text().splitlines()
    synthetic = [row for row in dataset if row.endswith(",synthetic")]
    real = [row.split(",") for row in dataset if row.endswith(",real")]
    assert [name for _, name, _, _ in real] == ["0", "2", "3", "5", "6"]
    first = len(synthetic)
    assert [int(label) for label, _, _, _ in real] == list(range(first, first + 5))
    leaks = (results / "mixin/benchmark_leaks.csv").read_text().splitlines()
    assert [row.split(",")[:3] for row in leaks[1:]] == [["5", "demo", "0"]]
    tuning = (results / "mixin/logs/train.log").read_text()
    assert "16 images of 4 identities (real)" in tuning
    assert "1 left out as benchmark leaks" in tuning
    assert "fine-tuning results/train/backbone.pt" in tuning
    metrics = (results / "mixin/train/metrics.jsonl").read_text().splitlines()
    steps = [record for record in map(json.loads, metrics) if "loss" in record]
    recipe = resolve_config({})["train"]  # config.yaml's lr and train.finetune scales
    lr = recipe["lr"] * recipe["finetune"]["backbone_lr_scale"]
    head_lr = recipe["lr"] * recipe["finetune"]["head_lr_scale"]
    assert steps and all(r["lr"] == pytest.approx(lr) for r in steps)
    assert all(r["head_lr"] == pytest.approx(head_lr) for r in steps)
    card = json.loads((results / "dataset_card.json").read_text())
    assert card["mixin"]["identities"] == 5 and card["mixin"]["benchmark_leaks"] == 1
    page = (results / "report/training.html").read_text()
    assert "Real mix-in&#x27;s gain" in page
    assert (results / "evaluation/benchmark_leaks.csv").read_text().startswith("identity,")


def test_every_training_rule_logged_and_benchmarked(trained):
    results = trained.results
    for rule, log in TRAINING_LOGS.items():
        assert (results / log).is_file(), rule
        benchmark_file = log.replace("logs/", "benchmarks/").removesuffix(".log") + ".tsv"
        assert (results / benchmark_file).is_file(), rule
    assert (results / "report/training.html").is_file()


def test_mixing_instead_of_fine_tuning_trains_only_the_mixin_again(trained):
    """Mixing instead of fine-tuning trains the mix-in's sub-run again, from scratch on both
    sources, and nothing else: not the synthetic-only recognizer, nor the baseline."""
    workdir = trained.workdir
    assert planned_jobs(workdir) == {}
    # Dry runs only, and the config put back: the other tests read the trained run as made
    # (a copy would copy its three training checkpoints, 276 MB).
    change_config(workdir, "train", {**trained.train, "mixin_mode": "mix"})
    try:
        planned = planned_jobs(workdir)
        printed = snakemake(workdir, "-n", "-p").stdout
    finally:
        change_config(workdir, "train", trained.train)
    assert planned == {"train": 1, "benchmark": 1, "report_training": 1, "all": 1}
    assert "--classes all" in printed
