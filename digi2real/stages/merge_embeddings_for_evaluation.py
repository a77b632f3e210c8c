"""Rule `merge_embeddings_for_evaluation`: a dataset's shards embedded with
`evaluation.recognizer`, concatenated and checked complete as merge_embeddings does."""

from __future__ import annotations

from pathlib import Path

CONFIG_KEYS: list[str] = []


def run(index_path: Path, inputs: list[Path], out: Path) -> None:
    from digi2real.stages import merge_embeddings

    merge_embeddings.run(index_path, inputs, out)
