"""Checks before a single job is submitted: the model files, the dataset roots, the selection.

The workflow runs them at parse time in its main process, so `snakemake -n` says what is wrong
before anything is queued; the messages are those the jobs would give. Only cheap file-system
checks (no file is opened or hashed), and only the standard library: Snakemake runs this.
"""

from __future__ import annotations

from pathlib import Path

from digi2real import layout, models
from digi2real.config import FACE_SECTIONS, Config, resolve_path
from digi2real.errors import ConfigError


def built_by_the_demo(config: Config, path: Path) -> bool:
    """Whether `path` is in the folder the embedded demo builds (not there before its job)."""
    if not config["demo"]:
        return False
    demo = Path(config["demo"]).absolute()
    return demo in (path.absolute(), *path.absolute().parents)


def preflight(config: Config, folders: layout.InputFolders | None = None) -> list[str]:
    """Raise the first problem of a resolved config; return what a person should see (the
    counts found where the config says "all"). Each input folder is listed once, in
    `folders`, which the workflow then reuses."""
    folders = folders or layout.InputFolders(config)
    needed = [*models.GENERATION_MODELS, models.ARCFACE]
    if any(not config[section]["face"]["prealigned"] for section in FACE_SECTIONS):
        needed.append(models.DETECTOR)
    if config["models"]["lcm_lora"] is not None:
        needed.append(models.LCM_LORA)
    if config["evaluation"]["recognizer"] is not None:
        needed.append(models.RECOGNIZER)
    for spec in needed:
        path = resolve_path(config, spec.key)
        if path is not None and not built_by_the_demo(config, path):
            models.model_path(config, spec)
    said = []
    digiface_root = folders.root("digiface")
    if not built_by_the_demo(config, digiface_root):
        available = folders.digiface()
        said.append(_check_selection(config["digiface"]["selection"], digiface_root, available))
    ffhq_root = folders.root("ffhq")
    if not built_by_the_demo(config, ffhq_root):
        said.append(_check_ffhq(config["ffhq"]["count"], ffhq_root, len(folders.ffhq())))
    if config["gallery"]["root"] is not None and not built_by_the_demo(
        config, folders.root("gallery")
    ):
        found = len(folders.gallery())
        said.append(f"gallery: all {found} images under {folders.root('gallery')}")
    _check_training(config)
    return said


def _check_training(config: Config) -> None:
    """The training's and the benchmark's inputs, before any job runs: the export it reads is
    made, the mix-in's source and every verification file, checkpoint and IJB meta file are
    there."""
    train, benchmark = config["train"], config["benchmark"]
    if train["enabled"] and train["data"] not in config["export"]["formats"]:
        raise ConfigError(
            f"config key train.data: {train['data']}, but export.formats "
            f"{config['export']['formats']} does not make it"
        )
    mixin = config["export"]["mixin"]
    if mixin is not None:
        source = Path(mixin["source"]).expanduser()
        if not built_by_the_demo(config, source) and not source.is_dir():
            raise ConfigError(f"config key export.mixin.source: {source} is not a folder")
    files = {f"benchmark.bins.{name}": path for name, path in benchmark["bins"].items()}
    for name, checkpoint in benchmark["checkpoints"].items():
        files[f"benchmark.checkpoints.{name}.path"] = checkpoint["path"]
    if benchmark["ijb"] is not None:
        meta = layout.ijb_meta_files(benchmark["ijb"]["root"], benchmark["ijb"]["target"])
        for path in meta.values():
            files[f"benchmark.ijb.root (meta/{path.name})"] = str(path)
    for key, value in files.items():
        path = Path(value).expanduser()
        if not built_by_the_demo(config, path) and not path.is_file():
            raise ConfigError(f"config key {key}: {path} is not a file")


def _check_selection(selection: dict, root: Path, available: dict[str, str]) -> str:
    mode, count = selection["mode"], selection["count"]
    if mode == "list":
        list_file = Path(selection["file"]).expanduser()
        wanted = layout.listed_identities(list_file, available)
        return f"digiface: {len(wanted)} identities listed in {list_file}"
    if mode == "random":
        if count > len(available):
            raise ConfigError(
                f"config key digiface.selection.count: {count} identities asked for, "
                f"digiface.root {root} holds {len(available)}"
            )
        return f"digiface: {count} of the {len(available)} identities under {root}, at random"
    start = selection["start"]
    left = len(available) - start
    if count is None:
        if left < 1:
            raise ConfigError(
                f"config key digiface.selection.start: {start}, but digiface.root {root} "
                f"holds {len(available)} identities"
            )
        return f"digiface: all {left} identities under {root} from number {start} on"
    if count > left:
        raise ConfigError(
            f"config key digiface.selection.count: {count} identities from number {start} "
            f"asked for, digiface.root {root} holds {left} from there"
        )
    return f"digiface: {count} identities under {root} from number {start} on"


def _check_ffhq(count: int | None, root: Path, found: int) -> str:
    if count is None:
        return f"ffhq: all {found} images under {root}"
    if count > found:
        raise ConfigError(f"config key ffhq.count: {count}, but ffhq.root {root} holds {found}")
    return f"ffhq: {count} of the {found} images under {root}, at random"
