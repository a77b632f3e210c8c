"""Rule `index_digiface`: the selected DigiFace identities and their images, as an index."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config

CONFIG_KEYS = ["digiface.root", "digiface.selection", "digiface.max_images_per_identity"]


def run(config: Config, out: Path) -> None:
    from digi2real.formats import write_index
    from digi2real.indexing import index_digiface
    from digi2real.progress import log

    index = index_digiface(config)
    write_index(out, index)
    log.info("index digiface: %d identities, %d rows", len(set(index.identity)), len(index))
