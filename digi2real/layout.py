"""How many shards a run has, from the config alone (standard library only).

The workflow imports this at parse time, in whatever Python runs Snakemake, so the DAG is
static and `snakemake -n` shows the whole run before anything has been computed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def natural_key(name: str) -> tuple[int, int | str]:
    return (0, int(name)) if name.isdigit() else (1, name)


def list_identities(root: Path) -> list[str]:
    """DigiFace subject folders under `root`, in numeric order."""
    from digi2real.errors import DataError

    if not root.is_dir():
        raise DataError(f"config key digiface.root: {root} is not a folder")
    with os.scandir(root) as entries:
        names = [entry.name for entry in entries if entry.is_dir()]
    if not names:
        raise DataError(f"config key digiface.root: {root} holds no identity folders")
    return sorted(names, key=natural_key)


def count_selected_identities(config: dict) -> int:
    selection = config["digiface"].get("selection") or {}
    mode = selection.get("mode", "range")
    if mode == "random":
        return int(selection["count"])
    if mode == "list":
        lines = Path(selection["file"]).read_text().splitlines()
        return len(dict.fromkeys(line.strip() for line in lines if line.strip()))
    count = selection.get("count")
    if count is not None:
        # Known without listing a folder of 100,000 subjects; shards past the end are empty.
        return int(count)
    start = int(selection.get("start", 0))
    return max(0, len(list_identities(Path(config["digiface"]["root"]))) - start)


def count_ffhq_images(config: dict) -> int:
    count = config["ffhq"].get("count")
    if count is not None:
        return int(count)
    root = Path(config["ffhq"]["root"])
    return sum(1 for _ in root.rglob("*.png"))


def n_shards(items: int, per_shard: int) -> int:
    return max(1, math.ceil(items / per_shard))
