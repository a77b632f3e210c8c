"""For tests/test_workflow.py only: with this folder on PYTHONPATH, every Python process of a
run (snakemake and each job) appends each directory listing it makes under the watched folders
(DIGI2REAL_WATCHED, separated by os.pathsep) to DIGI2REAL_LISTINGS, one `<pid>\t<folder>` line,
through Python's audit hooks (os.scandir, os.listdir; os.walk lists with os.scandir)."""

import os
import sys

_LOG = os.environ.get("DIGI2REAL_LISTINGS")
_WATCHED = [path for path in os.environ.get("DIGI2REAL_WATCHED", "").split(os.pathsep) if path]


def _audit(event: str, args: tuple) -> None:
    if event not in ("os.scandir", "os.listdir"):
        return
    target = args[0] if args and args[0] is not None else "."
    if isinstance(target, int):  # a listing by file descriptor
        return
    folder = os.path.abspath(os.fsdecode(target))
    if any(folder == root or folder.startswith(root + os.sep) for root in _WATCHED):
        with open(_LOG, "a") as log:
            log.write(f"{os.getpid()}\t{folder}\n")


if _LOG and _WATCHED:
    sys.addaudithook(_audit)
