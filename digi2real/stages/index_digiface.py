"""Rule `index_digiface`: the selected DigiFace identities and their images, as an index."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config
from digi2real.stages import Argument

CONFIG_KEYS = ["digiface.root", "digiface.selection", "digiface.max_images_per_identity"]

HELP = "select the DigiFace identities"
ARGUMENTS = (
    Argument("--out", "index .parquet to write"),
    Argument(
        "--listing",
        "the root's listing (<results>/inputs/<dataset>.txt), instead of listing it",
        default=None,
    ),
)


def run(config: Config, out: Path, listing: Path | None = None) -> None:
    """The index into `out`; from `listing`, the root's listing the workflow's main process
    wrote (digi2real.layout), instead of listing the root again, when given."""
    from digi2real.formats import write_index
    from digi2real.indexing import index_digiface
    from digi2real.layout import listing_of
    from digi2real.progress import log

    listed = None if listing is None else listing_of(listing, config, "digiface")
    index = index_digiface(config, listed)
    write_index(out, index)
    log.info("index digiface: %d identities, %d rows", len(set(index.identity)), len(index))
