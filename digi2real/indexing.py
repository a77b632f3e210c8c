"""Which input images a run uses: DigiFace identity selection and the FFHQ subset.

An index is a Parquet table with one row per image (`group`, `identity`, `path`), `path` being
relative to the dataset root. `group` is what embedding shards are cut by: the identity's
position for DigiFace (an identity never straddles two shards), the image's position for FFHQ.
An identity folder with no image gets one row whose path is the folder itself, so that it is
recorded downstream instead of silently vanishing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from digi2real.config import Config, get, resolve_path
from digi2real.errors import ConfigError, DataError
from digi2real.formats import atomic_path
from digi2real.layout import list_identities, natural_key
from digi2real.planning import stable_seed

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class Index:
    group: list[int]
    identity: list[str]
    path: list[str]
    root: str

    def __len__(self) -> int:
        return len(self.path)

    def rows_of_shard(self, shard: int, shard_size: int) -> list[int]:
        low, high = shard * shard_size, (shard + 1) * shard_size
        return [row for row, group in enumerate(self.group) if low <= group < high]


def select_identities(config: Config, available: list[str]) -> list[str]:
    selection = get(config, "digiface.selection", {"mode": "range"}, kind=dict)
    mode = selection.get("mode", "range")
    if mode == "range":
        start = int(selection.get("start", 0))
        count = selection.get("count")
        chosen = available[start : None if count is None else start + int(count)]
    elif mode == "list":
        list_file = resolve_path(config, "digiface.selection.file")
        if list_file is None or not list_file.is_file():
            raise ConfigError(f"config key digiface.selection.file: {list_file} does not exist")
        wanted = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
        known = set(available)
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise DataError(
                f"{list_file}: {len(unknown)} identities not under digiface.root, "
                f"e.g. {unknown[:3]}"
            )
        chosen = list(dict.fromkeys(wanted))
    elif mode == "random":
        count = int(selection.get("count", 0))
        if count > len(available):
            raise ConfigError(
                f"config key digiface.selection.count: {count} > {len(available)} identities"
            )
        rng = np.random.default_rng(stable_seed("select", selection.get("seed", 0)))
        picked = rng.choice(len(available), size=count, replace=False)
        chosen = [available[i] for i in sorted(picked)]
    else:
        raise ConfigError(
            f"config key digiface.selection.mode: {mode!r} is not range, list or random"
        )
    if not chosen:
        raise ConfigError("config key digiface.selection selects no identity")
    return chosen


def image_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.stem))


def index_digiface(config: Config) -> Index:
    root = resolve_path(config, "digiface.root")
    assert root is not None
    per_identity = get(config, "digiface.max_images_per_identity", None, kind=int)
    index = Index([], [], [], str(root))
    for group, identity in enumerate(select_identities(config, list_identities(root))):
        files = image_files(root / identity)[:per_identity]
        paths = [str(p.relative_to(root)) for p in files] or [identity + "/"]
        index.group += [group] * len(paths)
        index.identity += [identity] * len(paths)
        index.path += paths
    return index


def index_ffhq(config: Config) -> Index:
    root = resolve_path(config, "ffhq.root")
    assert root is not None
    if not root.is_dir():
        raise DataError(f"config key ffhq.root: {root} is not a folder")
    files = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: str(p.relative_to(root)),
    )
    if not files:
        raise DataError(f"config key ffhq.root: {root} holds no images")
    count = get(config, "ffhq.count", None, kind=int)
    if count is not None and count < len(files):
        rng = np.random.default_rng(stable_seed("ffhq", get(config, "ffhq.seed", 0, kind=int)))
        files = [files[i] for i in sorted(rng.choice(len(files), size=count, replace=False))]
    paths = [str(p.relative_to(root)) for p in files]
    return Index(list(range(len(paths))), [""] * len(paths), paths, str(root))


def write_index(path: str | Path, index: Index) -> None:
    table = pa.table(
        {
            "group": pa.array(index.group, pa.int64()),
            "identity": pa.array(index.identity, pa.string()),
            "path": pa.array(index.path, pa.string()),
        },
        metadata={"root": index.root},
    )
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)


def read_index(path: str | Path) -> Index:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as error:
        raise DataError(f"{path}: cannot read index: {error}") from None
    metadata = table.schema.metadata or {}
    return Index(
        group=table.column("group").to_pylist(),
        identity=table.column("identity").to_pylist(),
        path=table.column("path").to_pylist(),
        root=metadata.get(b"root", b"").decode(),
    )
