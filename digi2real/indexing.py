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
    gallery_files,
    identity_folders,
    image_files,
    listed_identities,
    subject_images,
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


def index_digiface(config: Config, folders: dict[str, str] | None = None) -> Index:
    """The images of the selected identities, `digiface.max_images_per_identity` at most each;
    `folders` (identity -> folder) is the root's listing when the workflow made one. Every
    selected subject folder is checked to be a DigiFace one."""
    digiface = config["digiface"]
    root = Path(digiface["root"]).expanduser()
    folders = folders if folders is not None else identity_folders(root)
    per_identity = digiface["max_images_per_identity"]
    index = Index([], [], [], str(root))
    for group, identity in enumerate(select_identities(digiface["selection"], list(folders))):
        names = subject_images(root, folders[identity])[:per_identity]
        paths = [f"{folders[identity]}/{name}" for name in names] or [folders[identity] + "/"]
        index.group += [group] * len(paths)
        index.identity += [identity] * len(paths)
        index.path += paths
    return index


def index_ffhq(config: Config, files: list[str] | None = None) -> Index:
    """All FFHQ images under `ffhq.root`, or a seeded subset of `ffhq.count`; `files` is the
    root's listing when the workflow made one."""
    ffhq = config["ffhq"]
    root = Path(ffhq["root"]).expanduser()
    paths = files if files is not None else image_files(root)
    if not paths:
        raise DataError(f"config key ffhq.root: {root} holds no images")
    count = ffhq["count"]
    if count is not None and count < len(paths):
        rng = np.random.default_rng(stable_seed("ffhq", ffhq["seed"]))
        paths = [paths[i] for i in sorted(rng.choice(len(paths), size=count, replace=False))]
    return Index(list(range(len(paths))), [""] * len(paths), list(paths), str(root))


def index_gallery(config: Config, files: list[str] | None = None) -> Index:
    """Every image under `gallery.root`, `<identity>/<image>`; `files` is the root's listing
    when the workflow made one."""
    root = Path(config["gallery"]["root"]).expanduser()
    paths = files if files is not None else gallery_files(root)
    if not paths:
        raise DataError(f"config key gallery.root: {root} holds no images")
    identities = [path.split("/")[0] for path in paths]
    return Index(list(range(len(paths))), identities, list(paths), str(root))
