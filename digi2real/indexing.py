"""Which input images a run uses: DigiFace identity selection and the FFHQ subset.

An index is a Parquet table with one row per image (`group`, `identity`, `path`), `path` being
relative to the dataset root. `group` is what embedding shards are cut by: the identity's
position for DigiFace (an identity never straddles two shards), the image's position for FFHQ.
An identity folder with no image gets one row whose path is the folder itself, so that it is
recorded downstream instead of silently vanishing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from digi2real.config import Config
from digi2real.errors import ConfigError, DataError
from digi2real.formats import Index
from digi2real.layout import (
    ffhq_image_files,
    identity_folders,
    is_image,
    listed_identities,
    natural_key,
)
from digi2real.planning import stable_seed


def select_identities(selection: dict, available: list[str]) -> list[str]:
    """The identities `digiface.selection` picks from `available` (in numeric order)."""
    mode = selection["mode"]
    if mode == "range":
        start, count = selection["start"], selection["count"]
        chosen = available[start : None if count is None else start + count]
    elif mode == "list":
        chosen = listed_identities(Path(selection["file"]).expanduser(), set(available))
    else:  # random; the schema admits no other mode
        count = selection["count"]
        if count > len(available):
            raise ConfigError(
                f"config key digiface.selection.count: {count} > {len(available)} identities"
            )
        rng = np.random.default_rng(stable_seed("select", selection["seed"]))
        picked = rng.choice(len(available), size=count, replace=False)
        chosen = [available[i] for i in sorted(picked)]
    if not chosen:
        raise ConfigError("config key digiface.selection selects no identity")
    return chosen


def image_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and is_image(p.name)]
    return sorted(files, key=lambda p: natural_key(p.stem))


def index_digiface(config: Config) -> Index:
    """The images of the selected identities, `digiface.max_images_per_identity` at most each."""
    digiface = config["digiface"]
    root = Path(digiface["root"]).expanduser()
    folders = identity_folders(root)
    per_identity = digiface["max_images_per_identity"]
    index = Index([], [], [], str(root))
    for group, identity in enumerate(select_identities(digiface["selection"], list(folders))):
        files = image_files(root / folders[identity])[:per_identity]
        paths = [str(p.relative_to(root)) for p in files] or [folders[identity] + "/"]
        index.group += [group] * len(paths)
        index.identity += [identity] * len(paths)
        index.path += paths
    return index


def index_ffhq(config: Config) -> Index:
    """All FFHQ images under `ffhq.root`, or a seeded subset of `ffhq.count`."""
    ffhq = config["ffhq"]
    root = Path(ffhq["root"]).expanduser()
    files = ffhq_image_files(root)
    if not files:
        raise DataError(f"config key ffhq.root: {root} holds no images")
    count = ffhq["count"]
    if count is not None and count < len(files):
        rng = np.random.default_rng(stable_seed("ffhq", ffhq["seed"]))
        files = [files[i] for i in sorted(rng.choice(len(files), size=count, replace=False))]
    paths = [str(p.relative_to(root)) for p in files]
    return Index(list(range(len(paths))), [""] * len(paths), paths, str(root))


def index_gallery(config: Config) -> Index:
    """Every image under `gallery.root`; its identity is the first folder of its path."""
    root = Path(config["gallery"]["root"]).expanduser()
    files = ffhq_image_files(root, "gallery.root")
    if not files:
        raise DataError(f"config key gallery.root: {root} holds no images")
    paths = [str(p.relative_to(root)) for p in files]
    identities = [Path(path).parts[0] if len(Path(path).parts) > 1 else "" for path in paths]
    return Index(list(range(len(paths))), identities, paths, str(root))
