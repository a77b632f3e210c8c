"""Rule `index_gallery`: the real faces, besides FFHQ, that leaks are searched in."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config

CONFIG_KEYS = ["gallery.root"]


def run(config: Config, out: Path) -> None:
    from digi2real.formats import write_index
    from digi2real.indexing import index_gallery
    from digi2real.progress import log

    index = index_gallery(config)
    write_index(out, index)
    log.info("index gallery: %d images of %d identities", len(index), len(set(index.identity)))
