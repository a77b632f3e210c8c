"""The input folders, checked against the layouts they must have, and how many shards a run
has, from the resolved config and one listing of each folder.

Standard library only: the workflow imports this at parse time, in whatever Python runs
Snakemake, so the DAG is static and `snakemake -n` shows the whole run before anything has been
computed. The indexing stages use the same functions, so the dry run and the run count alike.

A cluster's metadata server is spared: the workflow's main process lists each input folder
once (`InputFolders`), writes what it found to `<results>/inputs/<dataset>.txt`, which the
index jobs read instead of listing the folder again, and hands the counts to every job in the
environment (`DIGI2REAL_INPUT_COUNTS`), where Snakemake's parse of the workflow in each job
would otherwise list the folders again; a job that lacks them counts from the listing files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Collection
from pathlib import Path

from digi2real.errors import ConfigError, DataError

# The one list of image suffixes, compared case-insensitively (FFHQ as .JPG counts too).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
# A DigiFace-1M subject folder holds its renders as <k>.png, k from 0.
SUBJECT_IMAGE = re.compile(r"^\d+\.png$", re.IGNORECASE)
# Subject folders checked, per part, before a single job runs (all of the selected ones are
# checked by index_digiface, which lists them anyway).
SUBJECTS_CHECKED_PER_PART = 3
LISTINGS = ("digiface", "ffhq", "gallery")
COUNTS_VARIABLE = "DIGI2REAL_INPUT_COUNTS"


def is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def natural_key(name: str) -> tuple[int, int | str]:
    return (0, int(name)) if name.isdigit() else (1, name)


def _entries(folder: Path) -> tuple[list[str], list[str]]:
    """The names of the folders and of the files in `folder`, one listing."""
    folders, files = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            (folders if entry.is_dir() else files).append(entry.name)
    return folders, files


def _check_root(root: Path, key: str) -> None:
    """A root that is a folder; a zip gets told to unzip it first."""
    if root.is_dir():
        return
    if root.suffix.lower() == ".zip" and root.is_file():
        raise DataError(
            f"config key {key}: {root} is a zip archive: unzip it (unzip {root.name} -d "
            f"{root.parent}) and point {key} at the folder it unpacks into"
        )
    raise DataError(f"config key {key}: {root} is not a folder")


def _zips_hint(files: list[str]) -> str:
    zips = sorted(name for name in files if name.lower().endswith(".zip"))
    if not zips:
        return ""
    return f"; it holds {len(zips)} zip files ({zips[0]}, ...): unzip them there first"


def _describe(files: list[str]) -> str:
    """`24 .jpg files`, `3 .png files and 1 .txt file`: what a folder holds, by suffix."""
    suffixes: dict[str, int] = {}
    for name in files:
        suffix = os.path.splitext(name)[1].lower() or "(no suffix)"
        suffixes[suffix] = suffixes.get(suffix, 0) + 1
    parts = [f"{n} {s} file{'s' * (n != 1)}" for s, n in sorted(suffixes.items())]
    return " and ".join(parts) or "nothing"


# --- DigiFace-1M ----------------------------------------------------------------------------


def identity_folders(root: Path) -> dict[str, str]:
    """DigiFace subject id -> its folder relative to `root`, in numeric order of the ids.

    `root` holds the subject folders (named by number), or the unpacked part folders of
    DigiFace-1M's zips side by side (`subjects_0-1999_72_imgs/`, ...), which hold only subject
    folders. Anything else is an error naming `digiface.root` and what was found there: a
    privacy pipeline must not take a folder of real faces for synthetic identities. The first
    few subject folders of each part are checked to hold DigiFace's `<k>.png` renders
    (`subject_images`); index_digiface checks every selected one.
    """
    _check_root(root, "digiface.root")
    folders, files = _entries(root)
    images = [name for name in files if is_image(name)]
    if images:
        raise DataError(
            f"config key digiface.root: {root} holds {_describe(images)} itself: point it at "
            "the folder holding the subject folders (or the unpacked part folders)"
        )
    found: dict[str, str] = {}
    subjects = sorted((name for name in folders if name.isdigit()), key=natural_key)
    for name in subjects[:SUBJECTS_CHECKED_PER_PART]:
        subject_images(root, name)
    for name in sorted(folders, key=natural_key):
        members = [(name, name)] if name.isdigit() else _part_members(root, name)
        for identity, relative in members:
            if identity in found:
                raise DataError(
                    f"config key digiface.root: identity {identity} is in both "
                    f"{root / found[identity]} and {root / relative}"
                )
            found[identity] = relative
    if not found:
        raise DataError(
            f"config key digiface.root: {root} holds no DigiFace subject or part folder"
            f"{_zips_hint(files)}"
        )
    return {identity: found[identity] for identity in sorted(found, key=natural_key)}


def _part_members(root: Path, part: str) -> list[tuple[str, str]]:
    """The subject folders of a part folder, the first few of them checked."""
    folders, files = _entries(root / part)
    images = [name for name in files if is_image(name)]
    if images:
        raise DataError(
            f"config key digiface.root: {part}/ holds {_describe(images)}: not a DigiFace "
            "subject folder (their names are numbers) nor a part folder (it holds only "
            "subject folders)"
        )
    others = sorted(name for name in folders if not name.isdigit())
    if others:
        below = root / part
        hint = (
            f"; is digiface.root one folder too high? point it at {below}"
            if all(not name.isdigit() for name in folders)
            else ""
        )
        raise DataError(
            f"config key digiface.root: {part}/ holds {others[0]}/, which is not a DigiFace "
            f"subject folder (their names are numbers): not a DigiFace part folder{hint}"
        )
    subjects = sorted(folders, key=natural_key)
    for name in subjects[:SUBJECTS_CHECKED_PER_PART]:
        subject_images(root, f"{part}/{name}")
    return [(name, f"{part}/{name}") for name in subjects]


def subject_images(root: Path, relative: str) -> list[str]:
    """The `<k>.png` renders of a DigiFace subject folder, in numeric order; an error naming
    `digiface.root` when the folder does not look like one."""
    folders, files = _entries(root / relative)
    images = [name for name in files if is_image(name)]
    strangers = [name for name in images if not SUBJECT_IMAGE.match(name)]
    if strangers or folders:
        what = _describe(strangers) if strangers else f"the folder {sorted(folders)[0]}/"
        raise DataError(
            f"config key digiface.root: {relative}/ holds {what}: not a DigiFace subject "
            "folder (only renders named <k>.png)"
        )
    return sorted(images, key=lambda name: int(name.split(".")[0]))


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


# --- FFHQ and the gallery ---------------------------------------------------------------------


def image_files(root: Path, key: str = "ffhq.root") -> list[str]:
    """Every image under `root` (FFHQ's, in any folder layout), as paths relative to it, in
    sorted order; an error naming `key` when there is none."""
    _check_root(root, key)
    files = []
    top_files: list[str] = []
    for folder, _, names in os.walk(root):
        relative = os.path.relpath(folder, root)
        if relative == ".":
            top_files = names
        files += [name if relative == "." else f"{relative}/{name}" for name in names]
    images = sorted(name for name in files if is_image(name))
    if not images:
        raise DataError(f"config key {key}: {root} holds no images{_zips_hint(top_files)}")
    return images


def gallery_files(root: Path) -> list[str]:
    """The gallery's images, each `<identity>/<image>`, in sorted order (identity_files)."""
    return identity_files(root, "gallery.root")


def identity_files(root: Path, key: str, refuse_empty: bool = False) -> list[str]:
    """The images of a folder of identity folders (the gallery, a real-data mix-in), each
    `<identity>/<image>`, in sorted order; anything else (an image at the top, a folder inside
    an identity folder, with `refuse_empty` an identity folder without images) is an error
    naming `key`."""
    images = image_files(root, key)
    loose = [path for path in images if "/" not in path]
    if loose:
        raise DataError(
            f"config key {key}: {root} holds {len(loose)} images at its top level "
            f"(e.g. {loose[0]}): expected one folder per identity, <identity>/<image>"
        )
    nested = [path for path in images if path.count("/") > 1]
    if nested:
        identity = nested[0].split("/")[0]
        raise DataError(
            f"config key {key}: {nested[0]} lies in a folder inside the identity folder "
            f"{identity}/: expected <identity>/<image>; is {key} one folder too high? "
            f"point it at {root / identity}"
        )
    if refuse_empty:
        with_images = {path.split("/")[0] for path in images}
        empty = sorted(set(_entries(root)[0]) - with_images)
        if empty:
            raise DataError(
                f"config key {key}: {root / empty[0]} is an identity folder without images"
            )
    return images


# --- one listing of each folder per run ---------------------------------------------------


class InputFolders:
    """The input folders of a resolved config, each listed at most once, when first needed."""

    def __init__(self, config: dict) -> None:
        self.config = config
        self._listed: dict[str, object] = {}

    def root(self, dataset: str) -> Path:
        return Path(self.config[dataset]["root"]).expanduser()

    def digiface(self) -> dict[str, str]:
        if "digiface" not in self._listed:
            self._listed["digiface"] = identity_folders(self.root("digiface"))
        return self._listed["digiface"]  # type: ignore[return-value]

    def ffhq(self) -> list[str]:
        if "ffhq" not in self._listed:
            self._listed["ffhq"] = image_files(self.root("ffhq"))
        return self._listed["ffhq"]  # type: ignore[return-value]

    def gallery(self) -> list[str]:
        if "gallery" not in self._listed:
            self._listed["gallery"] = gallery_files(self.root("gallery"))
        return self._listed["gallery"]  # type: ignore[return-value]

    def listed(self) -> dict[str, str]:
        """What was listed so far, as the text of each dataset's listing file: a first line
        naming the root, then DigiFace's `<identity>\t<folder>` lines, or the images of FFHQ
        and the gallery, one relative path a line."""
        texts = {}
        for dataset, listing in self._listed.items():
            if dataset == "digiface":
                lines = [f"{identity}\t{folder}" for identity, folder in listing.items()]
            else:
                lines = list(listing)
            header = f"# {dataset}.root: {self.root(dataset)}"
            texts[dataset] = "".join(f"{line}\n" for line in [header, *lines])
        return texts

    @classmethod
    def from_listings(cls, config: dict, results: str | Path) -> InputFolders:
        """The folders of `config` with the listings the workflow's main process wrote under
        `results` taken as listed (those of the same root; any other is listed when needed)."""
        folders = cls(config)
        for dataset in LISTINGS:
            path = listing_path(results, dataset)
            if config[dataset]["root"] is not None and path.is_file():
                root, listing = read_listing(path, dataset)
                if root == str(folders.root(dataset)):
                    folders._listed[dataset] = listing
        return folders


# insightface's IJB-B/C meta files (recognition/_evaluation_/ijb), by what each holds.
IJB_META = {
    "images": "face_tid_mid",  # image, template, media
    "pairs": "template_pair_label",  # template, template, label
    "landmarks": "name_5pts_score",  # image, 5 landmarks, detector score
}


def ijb_meta_files(root: str | Path, target: str) -> dict[str, Path]:
    """The IJB meta files of `target` (IJBB, IJBC) under `root`/meta, by what each holds."""
    meta = Path(root) / "meta"
    return {what: meta / f"{target.lower()}_{name}.txt" for what, name in IJB_META.items()}


def listing_path(results: str | Path, dataset: str) -> Path:
    return Path(results) / "inputs" / f"{dataset}.txt"


def read_listing(path: Path, dataset: str) -> tuple[str, dict[str, str] | list[str]]:
    """A listing file as `InputFolders.listed` writes it: the root it lists, and DigiFace's
    identity folders or the images of FFHQ and the gallery."""
    try:
        header, *lines = path.read_text().splitlines()
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read the listing of {dataset}.root: {error}") from None
    prefix = f"# {dataset}.root: "
    if not header.startswith(prefix):
        raise DataError(f"{path}: not a listing of {dataset}.root (its first line: {header!r})")
    root = header.removeprefix(prefix)
    if dataset == "digiface":
        pairs = [line.split("\t", 1) for line in lines]
        if any(len(pair) != 2 for pair in pairs):
            raise DataError(f"{path}: not a listing of digiface.root (identity<TAB>folder)")
        return root, dict(pairs)  # type: ignore[arg-type]
    return root, lines


def listing_of(path: Path, config: dict, dataset: str) -> dict[str, str] | list[str]:
    """The listing in `path`, checked to be of the config's `<dataset>.root`."""
    root, listing = read_listing(path, dataset)
    expected = str(Path(config[dataset]["root"]).expanduser())
    if root != expected:
        raise DataError(f"{path}: a listing of {root}, not of config key {dataset}.root {expected}")
    return listing


def count_selected_identities(config: dict, folders: InputFolders | None = None) -> int:
    """How many identities the resolved config selects; lists the root only when it must."""
    selection = config["digiface"]["selection"]
    if selection["mode"] == "random":
        return int(selection["count"])
    if selection["mode"] == "list":
        return len(listed_identities(Path(selection["file"]).expanduser()))
    if selection["count"] is not None:
        # Known without listing a folder of 100,000 subjects; shards past the end are empty.
        return int(selection["count"])
    available = len((folders or InputFolders(config)).digiface())
    return max(0, available - int(selection["start"]))


def count_ffhq_images(config: dict, folders: InputFolders | None = None) -> int:
    count = config["ffhq"]["count"]
    if count is not None:
        # As for the DigiFace selection: known without listing 70,000 files.
        return int(count)
    return len((folders or InputFolders(config)).ffhq())


def count_gallery_images(config: dict, folders: InputFolders | None = None) -> int:
    """Images of the real-face gallery; 0 when `gallery.root` is null."""
    if config["gallery"]["root"] is None:
        return 0
    return len((folders or InputFolders(config)).gallery())


def counts_fingerprint(config: dict) -> str:
    """What the counts depend on: the roots and how much of each is selected."""
    keys = {
        "digiface": {k: config["digiface"][k] for k in ("root", "selection")},
        "ffhq": {k: config["ffhq"][k] for k in ("root", "count")},
        "gallery": config["gallery"]["root"],
    }
    return hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()


def input_counts(config: dict, folders: InputFolders | None = None) -> dict[str, int]:
    """The counts the workflow's shard lists follow from, listing each folder at most once."""
    folders = folders or InputFolders(config)
    return {
        "digiface": count_selected_identities(config, folders),
        "ffhq": count_ffhq_images(config, folders),
        "gallery": count_gallery_images(config, folders),
    }


def hand_counts_to_jobs(config: dict, counts: dict[str, int]) -> None:
    """Put the counts in this process's environment, which every job inherits (locally, and
    through sbatch's --export=ALL)."""
    os.environ[COUNTS_VARIABLE] = json.dumps({"fingerprint": counts_fingerprint(config), **counts})


def handed_counts(config: dict) -> dict[str, int] | None:
    """The counts the workflow's main process handed to the jobs for this config, if any."""
    try:
        handed = json.loads(os.environ.get(COUNTS_VARIABLE) or "{}")
        if handed.get("fingerprint") == counts_fingerprint(config):
            return {dataset: int(handed[dataset]) for dataset in LISTINGS}
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def n_shards(items: int, per_shard: int) -> int:
    return max(1, math.ceil(items / per_shard))
