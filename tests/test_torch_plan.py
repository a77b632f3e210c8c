"""The Makefile names the PyTorch build pip is about to install, from pip's own report."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[1] / "scripts/torch_plan.py"


def said(tmp_path, *wheels: tuple[str, str]) -> str:
    report = {"install": [{"metadata": {"name": n, "version": v}} for n, v in wheels]}
    (tmp_path / "report.json").write_text(json.dumps(report))
    run = [sys.executable, str(SCRIPT), str(tmp_path / "report.json")]
    return subprocess.run(run, capture_output=True, text=True, check=True).stdout


def test_a_cuda_build_is_named_with_its_wheels(tmp_path):
    out = said(tmp_path, ("torch", "2.13.0"), ("nvidia-cublas", "13.1"), ("sympy", "1.14"))
    assert "torch 2.13.0: the CUDA build, with 1 NVIDIA/CUDA wheels" in out and "3 wheels" in out


def test_the_cpu_build_is_named(tmp_path):
    assert "the CPU build" in said(tmp_path, ("torch", "2.13.0+cpu"), ("sympy", "1.14"))
