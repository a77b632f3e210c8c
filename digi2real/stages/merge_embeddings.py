"""Rule `merge_embeddings`: a dataset's embedding shards, concatenated and checked complete."""

from __future__ import annotations

from pathlib import Path

from digi2real.stages import Argument

CONFIG_KEYS: list[str] = []

HELP = "concatenate embedding shards"
ARGUMENTS = (
    Argument("--index", "the index the shards were cut from", dest="index_path"),
    Argument("--out", "embeddings .h5 to write"),
    Argument("inputs", "embedding shards, in shard order", nargs="+"),
)


def run(index_path: Path, inputs: list[Path], out: Path) -> None:
    """Concatenate the shards `inputs` (in shard order) into `out`. Their attributes must agree
    (same models, same detection), and together they must hold every row of the index, in its
    order: a shard cut from another index, or one missing, is an error, never a silent drop."""
    import numpy as np

    from digi2real.errors import DataError
    from digi2real.formats import EmbeddingTable, read_embeddings, read_index, write_embeddings

    # 1. The shards, made alike: the same attributes but their shard number.
    if not inputs:
        raise DataError("no embedding shards to merge")
    tables = [read_embeddings(path) for path in inputs]
    first = tables[0].attrs
    for path, table in zip(inputs, tables, strict=True):
        differing = {
            k
            for k in set(first) | set(table.attrs)
            if k != "shard" and not np.array_equal(first.get(k), table.attrs.get(k))
        }
        if differing:
            raise DataError(f"{path}: attributes {sorted(differing)} differ from {inputs[0]}")
    # 2. Together, every row of the index in its order.
    index = read_index(index_path)
    merged_paths = [p for t in tables for p in t.path]
    if merged_paths != index.path:
        merged = set(merged_paths)
        missing = [p for p in index.path if p not in merged]
        raise DataError(
            f"{index_path}: the {len(inputs)} embedding shards hold {len(merged_paths)} rows, the "
            f"index {len(index)}; not embedded: {len(missing)}, e.g. {missing[:3]} (are the "
            "shards from another run, or one missing?)"
        )
    # 3. Written as one file, the shards' attributes and how many they were.
    attrs = {k: v for k, v in first.items() if k != "shard"}
    attrs["n_shards"] = len(tables)
    write_embeddings(
        out,
        EmbeddingTable(
            embedding=np.concatenate([t.embedding for t in tables]),
            status=np.concatenate([t.status for t in tables]),
            identity=[x for t in tables for x in t.identity],
            path=merged_paths,
            det_score=np.concatenate([t.det_score for t in tables]),
            message=[x for t in tables for x in t.message],
            attrs=attrs,
        ),
    )
