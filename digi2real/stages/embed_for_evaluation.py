"""Rule `embed_for_evaluation`: one shard of DigiFace, FFHQ or the gallery embedded with
`evaluation.recognizer`, a model the generator was not steered by (see stages/embed.py)."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config

# `{dataset}` is the rule's wildcard: digiface, ffhq or gallery.
CONFIG_KEYS = ["evaluation.recognizer", "models.detector", "{dataset}.face"]


def run(
    config: Config, dataset: str, index_path: Path, shard: int, shard_size: int, out: Path
) -> None:
    from digi2real.models import RECOGNIZER
    from digi2real.stages import embed

    embed.run(config, dataset, index_path, shard, shard_size, out, RECOGNIZER)
