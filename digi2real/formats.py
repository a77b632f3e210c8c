"""The files stages hand to each other, and writing them so no reader ever sees half a file.

Contracts (datasets and attributes) are documented in docs/file-contracts.md.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from digi2real.errors import DataError

STRING = h5py.string_dtype()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path`, renamed onto it only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def open_h5(path: str | Path, what: str) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except (OSError, FileNotFoundError) as error:
        raise DataError(f"{path}: cannot open {what}: {error}") from None


def read_strings(dataset) -> list[str]:
    return [value.decode() if isinstance(value, bytes) else str(value) for value in dataset[()]]


# --- embeddings ----------------------------------------------------------------------------


@dataclass
class EmbeddingTable:
    embedding: np.ndarray  # (N, 512) float32; unit norm where status == 0, zeros elsewhere
    status: np.ndarray  # (N,) int8, see digi2real.status
    identity: list[str]  # subject id; empty for FFHQ
    path: list[str]  # relative to the dataset root
    det_score: np.ndarray  # (N,) float32, NaN when not detected
    message: list[str]
    attrs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.status)


def write_embeddings(path: str | Path, table: EmbeddingTable) -> None:
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as file:
        file.create_dataset("embedding", data=table.embedding.astype(np.float32).reshape(-1, 512))
        file.create_dataset("status", data=table.status.astype(np.int8))
        file.create_dataset("identity", data=table.identity, dtype=STRING)
        file.create_dataset("path", data=table.path, dtype=STRING)
        file.create_dataset("det_score", data=table.det_score.astype(np.float32))
        file.create_dataset("message", data=table.message, dtype=STRING)
        file.attrs.update(table.attrs)


def read_embeddings(path: str | Path) -> EmbeddingTable:
    with open_h5(path, "an embeddings file") as file:
        missing = {"embedding", "status", "identity", "path", "det_score"} - set(file)
        if missing:
            raise DataError(f"{path}: not an embeddings file, lacks {sorted(missing)}")
        return EmbeddingTable(
            embedding=file["embedding"][()],
            status=file["status"][()],
            identity=read_strings(file["identity"]),
            path=read_strings(file["path"]),
            det_score=file["det_score"][()],
            message=read_strings(file["message"])
            if "message" in file
            else [""] * len(file["status"]),
            attrs=dict(file.attrs),
        )


def iter_ok_embeddings(path: str | Path, chunk_size: int) -> Iterator[np.ndarray]:
    """The OK rows of an embeddings file, `chunk_size` at a time, never all in memory."""
    with open_h5(path, "an embeddings file") as file:
        total = len(file["status"])
        for start in range(0, total, chunk_size):
            ok = file["status"][start : start + chunk_size] == 0
            if ok.any():
                yield file["embedding"][start : start + chunk_size][ok]


def merge_embeddings(inputs: list[Path], output: Path) -> None:
    """Concatenate per-shard embedding files; attributes must agree (same models, same mode)."""
    tables = [read_embeddings(path) for path in inputs]
    if not tables:
        raise DataError("no embedding shards to merge")
    first = tables[0].attrs
    for path, table in zip(inputs, tables, strict=True):
        differing = {
            k
            for k in set(first) | set(table.attrs)
            if k != "shard" and not np.array_equal(first.get(k), table.attrs.get(k))
        }
        if differing:
            raise DataError(f"{path}: attributes {sorted(differing)} differ from {inputs[0]}")
    attrs = {k: v for k, v in first.items() if k != "shard"}
    attrs["n_shards"] = len(tables)
    write_embeddings(
        output,
        EmbeddingTable(
            embedding=np.concatenate([t.embedding for t in tables]),
            status=np.concatenate([t.status for t in tables]),
            identity=[x for t in tables for x in t.identity],
            path=[x for t in tables for x in t.path],
            det_score=np.concatenate([t.det_score for t in tables]),
            message=[x for t in tables for x in t.message],
            attrs=attrs,
        ),
    )
