"""Rule `index_real`: a dataset of real faces as an index: FFHQ, the images whose mean
embedding Δ needs (all, or a seeded subset), or the gallery, the real faces besides FFHQ that
leaks are searched in."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config
from digi2real.stages import Argument

# The keys that pick each dataset's images (the rule's wildcard `dataset`): its root, and FFHQ's
# seeded subset.
CONFIG_KEYS = {"ffhq": ["ffhq.root", "ffhq.count", "ffhq.seed"], "gallery": ["gallery.root"]}

HELP = "select the FFHQ images, or list the gallery's"
ARGUMENTS = (
    Argument("dataset", "the dataset of real faces", type=str, choices=tuple(CONFIG_KEYS)),
    Argument("--out", "index .parquet to write"),
    Argument(
        "--listing",
        "the root's listing (<results>/inputs/<dataset>.txt), instead of listing it",
        default=None,
    ),
)


def run(config: Config, dataset: str, out: Path, listing: Path | None = None) -> None:
    """The index of `dataset` into `out`; from `listing`, the root's listing the workflow's main
    process wrote (digi2real.layout), instead of listing the root again, when given."""
    from digi2real.formats import write_index
    from digi2real.indexing import index_ffhq, index_gallery
    from digi2real.layout import listing_of
    from digi2real.progress import log

    listed = None if listing is None else listing_of(listing, config, dataset)
    index = {"ffhq": index_ffhq, "gallery": index_gallery}[dataset](config, listed)
    write_index(out, index)
    named = set(index.identity) - {""}  # FFHQ's images name no identity
    log.info("index %s: %d images of %d named identities", dataset, len(index), len(named))
