"""Say which PyTorch build `make` is about to install, from `pip install --dry-run --report`.

Usage: python scripts/torch_plan.py REPORT.json. The Makefile runs it before installing, so a
CUDA build of several GB (what PyPI gives for torch on Linux x86-64) is named before it
downloads.
"""

from __future__ import annotations

import json
import sys


def describe(report: dict) -> str:
    installs = report.get("install", [])
    names = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in installs}
    torch = names.get("torch")
    if torch is None:
        return "pip would install no torch (already there?)"
    cuda = sorted(n for n in names if n.startswith(("nvidia-", "cuda-")))
    if cuda:
        build = f"the CUDA build, with {len(cuda)} NVIDIA/CUDA wheels ({', '.join(cuda[:3])}, ...)"
    elif "+cpu" in torch:
        build = "the CPU build"
    else:
        build = "a build without NVIDIA wheels (CPU, or macOS)"
    return f"pip will install torch {torch}: {build}; {len(installs)} wheels in all"


if __name__ == "__main__":
    with open(sys.argv[1]) as stream:
        print(describe(json.load(stream)))
