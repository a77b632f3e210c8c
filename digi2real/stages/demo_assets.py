"""Rule `demo_assets`: the embedded demo's procedural data and tiny models, in a folder."""

from __future__ import annotations

from pathlib import Path

from digi2real.stages import Argument

CONFIG_KEYS: list[str] = []
# Written last: the workflow's sign that the demo folder is complete.
DONE_FILE = "built.txt"

HELP = "the embedded demo's data and models"
ARGUMENTS = (Argument("--out", "folder to write into"),)


def run(out: Path) -> None:
    from digi2real.demo import build_demo_assets

    build_demo_assets(out)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    (out / DONE_FILE).write_text("\n".join(f for f in files if f != DONE_FILE) + "\n")
