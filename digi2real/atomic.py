"""Atomic writes: a file or a folder is built under a temporary name beside its final path and
renamed into place once whole, so that no reader sees half of it and a killed job leaves only
temporary names (`.<name>.*.tmp`, `.<name>.partial`) that the next run removes.

Standard library only: the workflow writes its input listings with it at parse time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _file_mode() -> int:
    """The mode a new file gets under the process's umask (0644 under 022, 0664 under 002).
    Reading the umask means setting it, process-wide, so it is read once, at import."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


# mkstemp makes its files 0600 whatever the umask: a dataset in a shared project folder must
# be readable by the colleagues and training jobs the umask lets read it.
FILE_MODE = _file_mode()


def flush_to_disk(path: Path) -> None:
    """fsync a file written and closed by someone else (h5py, pyarrow, PIL)."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path`, renamed onto it only if the block succeeds; it gets the
    mode any new file would (FILE_MODE). Its bytes are flushed to the disk before the rename:
    after a node crash the name never points at bytes that did not reach it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(handle, FILE_MODE)
    os.close(handle)
    try:
        yield Path(temporary)
        flush_to_disk(Path(temporary))
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def write_text_if_changed(path: Path, text: str) -> bool:
    """Write `text` atomically unless the file holds it already (its time then stays, and
    Snakemake reruns nothing for it); whether it was written."""
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return False
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return True


@contextlib.contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """A new empty folder beside `path` to build in, put in its place only if the block
    succeeds. A reader sees the old folder, or the whole new one, never a mix; between the two
    renames (the old folder out of the way, the new one in) the path is briefly absent."""
    staging = path.with_name(f".{path.name}.partial")
    replaced = path.with_name(f".{path.name}.replaced")
    for leftover in (staging, replaced):  # a killed build's
        shutil.rmtree(leftover, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        if path.exists():
            os.replace(path, replaced)
        os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(replaced, ignore_errors=True)
