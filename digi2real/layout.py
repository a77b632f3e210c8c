"""The input folders and how many shards a run has, from the resolved config alone.

Standard library only: the workflow imports this at parse time, in whatever Python runs
Snakemake, so the DAG is static and `snakemake -n` shows the whole run before anything has been
computed. The indexing stages use the same functions, so the dry run and the run count alike.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection
from pathlib import Path

from digi2real.errors import ConfigError, DataError

# The one list of image suffixes, compared case-insensitively (FFHQ as .JPG counts too).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})


def is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def natural_key(name: str) -> tuple[int, int | str]:
    return (0, int(name)) if name.isdigit() else (1, name)


def identity_folders(root: Path) -> dict[str, str]:
    """DigiFace subject id -> its folder relative to `root`, in numeric order of the ids.

    `root` holds the subject folders, or the unpacked part folders of DigiFace-1M's zips side by
    side (`subjects_0-1999_72_imgs/`, ...): a part is a folder holding folders and no image.
    The identity is the subject folder's name, whichever part it is in; a name found in two
    parts is an error naming both.
    """
    if not root.is_dir():
        raise DataError(f"config key digiface.root: {root} is not a folder")
    found: dict[str, str] = {}
    for name in _subfolders(root):
        # Subject folders are named by number; only other names can be parts, so a root of
        # 100,000 subjects is listed without opening each of them.
        members = [] if name.isdigit() else _part_members(root / name)
        for identity, relative in members or [(name, name)]:
            if identity in found:
                raise DataError(
                    f"config key digiface.root: identity {identity} is in both "
                    f"{root / found[identity]} and {root / relative}"
                )
            found[identity] = relative
    if not found:
        raise DataError(f"config key digiface.root: {root} holds no identity folders")
    return {identity: found[identity] for identity in sorted(found, key=natural_key)}


def _subfolders(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return [entry.name for entry in entries if entry.is_dir()]


def _part_members(folder: Path) -> list[tuple[str, str]]:
    """The subject folders of a part folder; empty when `folder` is a subject itself."""
    with os.scandir(folder) as entries:
        listed = list(entries)
    if any(entry.is_file() and is_image(entry.name) for entry in listed):
        return []
    return [(e.name, f"{folder.name}/{e.name}") for e in listed if e.is_dir()]


def listed_identities(list_file: Path, available: Collection[str] | None = None) -> list[str]:
    """The subject ids of a `digiface.selection.file`, one a line, in order, each once; with
    `available`, an error naming those that are not there."""
    if not list_file.is_file():
        raise ConfigError(f"config key digiface.selection.file: {list_file} does not exist")
    lines = list_file.read_text().splitlines()
    wanted = list(dict.fromkeys(line.strip() for line in lines if line.strip()))
    unknown = [name for name in wanted if available is not None and name not in available]
    if unknown:
        raise DataError(
            f"{list_file}: {len(unknown)} identities not under digiface.root, e.g. {unknown[:3]}"
        )
    return wanted


def count_selected_identities(config: dict) -> int:
    """How many identities the resolved config selects; lists the root only when it must."""
    selection = config["digiface"]["selection"]
    if selection["mode"] == "random":
        return int(selection["count"])
    if selection["mode"] == "list":
        return len(listed_identities(Path(selection["file"]).expanduser()))
    if selection["count"] is not None:
        # Known without listing a folder of 100,000 subjects; shards past the end are empty.
        return int(selection["count"])
    available = len(identity_folders(Path(config["digiface"]["root"])))
    return max(0, available - int(selection["start"]))


def ffhq_image_files(root: Path, key: str = "ffhq.root") -> list[Path]:
    """Every image under the FFHQ root (or the gallery's, config `key`), in sorted order of the
    relative path."""
    if not root.is_dir():
        raise DataError(f"config key {key}: {root} is not a folder")
    files = [
        Path(folder, name) for folder, _, names in os.walk(root) for name in names if is_image(name)
    ]
    return sorted(files, key=lambda path: str(path.relative_to(root)))


def count_ffhq_images(config: dict) -> int:
    count = config["ffhq"]["count"]
    if count is not None:
        # As for the DigiFace selection: known without listing 70,000 files.
        return int(count)
    return len(ffhq_image_files(Path(config["ffhq"]["root"])))


def count_gallery_images(config: dict) -> int:
    """Images of the real-face gallery; 0 when `gallery.root` is null."""
    root = config["gallery"]["root"]
    return 0 if root is None else len(ffhq_image_files(Path(root).expanduser(), "gallery.root"))


def n_shards(items: int, per_shard: int) -> int:
    return max(1, math.ceil(items / per_shard))
