"""Rule `index_gallery`: the real faces, besides FFHQ, that leaks are searched in."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config

CONFIG_KEYS = ["gallery.root"]


def run(config: Config, out: Path, listing: Path | None = None) -> None:
    """The index into `out`; from `listing`, the root's listing the workflow's main process
    wrote (digi2real.layout), instead of listing the root again, when given."""
    from digi2real.formats import write_index
    from digi2real.indexing import index_gallery
    from digi2real.layout import listing_of
    from digi2real.progress import log

    listed = None if listing is None else listing_of(listing, config, "gallery")
    index = index_gallery(config, listed)
    write_index(out, index)
    log.info("index gallery: %d images of %d identities", len(index), len(set(index.identity)))
