"""Rule `index_ffhq`: the FFHQ images whose mean embedding Δ needs (all, or a seeded subset)."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config

CONFIG_KEYS = ["ffhq.root", "ffhq.count", "ffhq.seed"]


def run(config: Config, out: Path) -> None:
    from digi2real.formats import write_index
    from digi2real.indexing import index_ffhq
    from digi2real.progress import log

    index = index_ffhq(config)
    write_index(out, index)
    log.info("index ffhq: %d images", len(index))
