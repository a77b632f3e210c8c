"""Rule `index_ffhq`: the FFHQ images whose mean embedding Δ needs (all, or a seeded subset)."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config

CONFIG_KEYS = ["ffhq.root", "ffhq.count", "ffhq.seed"]


def run(config: Config, out: Path, listing: Path | None = None) -> None:
    """The index into `out`; from `listing`, the root's listing the workflow's main process
    wrote (digi2real.layout), instead of listing the root again, when given."""
    from digi2real.formats import write_index
    from digi2real.indexing import index_ffhq
    from digi2real.layout import listing_of
    from digi2real.progress import log

    listed = None if listing is None else listing_of(listing, config, "ffhq")
    index = index_ffhq(config, listed)
    write_index(out, index)
    log.info("index ffhq: %d images", len(index))
