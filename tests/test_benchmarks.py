"""The generation and training benchmarks run where CI runs: on the CPU, with tiny models."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit


def run_benchmark(script: str, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """scripts/<script> run with `args`, and the figures of its last line (JSON)."""
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done, json.loads(done.stdout.strip().splitlines()[-1])


def test_generation_benchmark_measures_both_pipelines_on_the_cpu():
    done, figures = run_benchmark("benchmark_generation.py", "--tiny")
    assert figures["reference"] > 0 and figures["ours"] > 0
    assert figures["ratio"] == pytest.approx(figures["ours"] / figures["reference"])
    for line in ("(a) reference", "(b) digi2real generate", "cluster.seconds_per_image",
                 "peak host memory", "fastest:"):  # fmt: skip
        assert line in done.stdout, done.stdout
    assert "face models on ['CPUExecutionProvider']" in done.stdout


def test_training_benchmark_measures_the_loader_and_training_on_the_cpu():
    done, figures = run_benchmark("benchmark_training.py", "--tiny", "--steps", "1")
    assert figures["training_images_per_second"] > 0 and figures["fed_images_per_second"] > 0
    assert 0 <= figures["data_wait_share"] < 1
    assert figures["loader_margin"] == pytest.approx(
        figures["loader_images_per_second_per_worker"]
        * figures["workers"]
        / figures["training_images_per_second"]
    )
    for line in ("(a) loader, one worker", "(b) training alone", "(c) training with the loader",
                 "loader margin", "peak host memory"):  # fmt: skip
        assert line in done.stdout, done.stdout
