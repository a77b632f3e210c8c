"""Every file the stages hand to each other: its reader and its writer, in the order of
docs/file-contracts.md, which documents each contract. Every file is written under a temporary
name and renamed, so that no reader ever sees half a file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from digi2real.atomic import atomic_path
from digi2real.errors import DataError

STRING = h5py.string_dtype()


def open_h5(path: str | Path, what: str) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except (OSError, FileNotFoundError) as error:
        raise DataError(f"{path}: cannot open {what}: {error}") from None


def read_strings(dataset) -> list[str]:
    return [value.decode() if isinstance(value, bytes) else str(value) for value in dataset[()]]


# --- index --------------------------------------------------------------------------------


@dataclass
class Index:
    group: list[int]
    identity: list[str]
    path: list[str]
    root: str

    def __len__(self) -> int:
        return len(self.path)

    def rows_of_shard(self, shard: int, shard_size: int) -> list[int]:
        low, high = shard * shard_size, (shard + 1) * shard_size
        return [row for row, group in enumerate(self.group) if low <= group < high]


def write_index(path: str | Path, index: Index) -> None:
    table = pa.table(
        {
            "group": pa.array(index.group, pa.int64()),
            "identity": pa.array(index.identity, pa.string()),
            "path": pa.array(index.path, pa.string()),
        },
        metadata={"root": index.root},
    )
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)


def read_index(path: str | Path) -> Index:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as error:
        raise DataError(f"{path}: cannot read index: {error}") from None
    metadata = table.schema.metadata or {}
    return Index(
        group=table.column("group").to_pylist(),
        identity=table.column("identity").to_pylist(),
        path=table.column("path").to_pylist(),
        root=metadata.get(b"root", b"").decode(),
    )


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


def read_embeddings(path: str | Path, embeddings: bool = True) -> EmbeddingTable:
    """An embeddings file; without its `embedding` matrix (an empty (0, 512) array) when
    `embeddings` is false: what a count of its images by status needs, without reading a
    500,000-row matrix."""
    with open_h5(path, "an embeddings file") as file:
        missing = {"embedding", "status", "identity", "path", "det_score"} - set(file)
        if missing:
            raise DataError(f"{path}: not an embeddings file, lacks {sorted(missing)}")
        return EmbeddingTable(
            embedding=file["embedding"][()] if embeddings else np.zeros((0, 512), np.float32),
            status=file["status"][()],
            identity=read_strings(file["identity"]),
            path=read_strings(file["path"]),
            det_score=file["det_score"][()],
            message=read_strings(file["message"])
            if "message" in file
            else [""] * len(file["status"]),
            attrs=dict(file.attrs),
        )


def read_real_faces(paths: list[Path]) -> tuple[np.ndarray, list[str]]:
    """The `ok` embeddings of real-face files (FFHQ, the gallery) and a label for each,
    `<dataset>:<path>`, e.g. `ffhq:00000/00023.png`."""
    embeddings, labels = [np.zeros((0, 512), np.float32)], []
    for path in paths:
        table = read_embeddings(path)
        ok = table.status == 0
        dataset = str(table.attrs.get("dataset", Path(path).stem))
        embeddings.append(table.embedding[ok].astype(np.float32))
        labels += [f"{dataset}:{p}" for p, keep in zip(table.path, ok, strict=True) if keep]
    return np.concatenate(embeddings), labels


def iter_ok_embeddings(path: str | Path, chunk_size: int) -> Iterator[np.ndarray]:
    """The OK rows of an embeddings file, `chunk_size` at a time, never all in memory."""
    with open_h5(path, "an embeddings file") as file:
        total = len(file["status"])
        for start in range(0, total, chunk_size):
            ok = file["status"][start : start + chunk_size] == 0
            if ok.any():
                yield file["embedding"][start : start + chunk_size][ok]


def iter_embedding_chunks(path: str | Path, chunk_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """Every row's embedding, `chunk_size` rows at a time with the first row's position: a
    DigiFace selection of 20,000 identities is 1.4 million rows, 2.9 GB."""
    with open_h5(path, "an embeddings file") as file:
        for start in range(0, len(file["status"]), chunk_size):
            yield start, file["embedding"][start : start + chunk_size]


# --- delta --------------------------------------------------------------------------------


@dataclass
class Delta:
    delta: np.ndarray  # (77, hidden) float32; pooled mode repeats one vector on every token
    mean_real: np.ndarray
    mean_synthetic: np.ndarray
    n_real: int
    n_synthetic: int
    mode: str
    attrs: dict = field(default_factory=dict)


def write_delta(path: str | Path, delta: Delta) -> None:
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as file:
        file.create_dataset("delta", data=delta.delta)
        file.create_dataset("mean_real", data=delta.mean_real)
        file.create_dataset("mean_synthetic", data=delta.mean_synthetic)
        file.attrs.update(
            {"n_real": delta.n_real, "n_synthetic": delta.n_synthetic, "mode": delta.mode}
        )
        file.attrs.update(delta.attrs)


def read_delta(path: str | Path) -> Delta:
    with open_h5(path, "a delta file") as file:
        if "delta" not in file:
            raise DataError(f"{path}: not a delta file, lacks the dataset 'delta'")
        attrs = dict(file.attrs)
        return Delta(
            delta=file["delta"][()],
            mean_real=file["mean_real"][()],
            mean_synthetic=file["mean_synthetic"][()],
            n_real=int(attrs.pop("n_real")),
            n_synthetic=int(attrs.pop("n_synthetic")),
            mode=str(attrs.pop("mode")),
            attrs=attrs,
        )


# --- plan ---------------------------------------------------------------------------------


@dataclass
class ShardPlan:
    shard: int
    # per identity
    identities: list[str] = field(default_factory=list)
    prototypes: list[np.ndarray] = field(default_factory=list)
    n_sources_ok: list[int] = field(default_factory=list)
    identity_status: list[str] = field(default_factory=list)  # planned | skipped
    identity_reason: list[str] = field(default_factory=list)
    # per image
    image_identity: list[str] = field(default_factory=list)
    image_index: list[int] = field(default_factory=list)
    source_path: list[str] = field(default_factory=list)
    t: list[float] = field(default_factory=list)
    seed: list[int] = field(default_factory=list)
    condition: list[np.ndarray] = field(default_factory=list)
    attrs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.image_index)


def write_plan(path: str | Path, plan: ShardPlan) -> None:
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as file:
        identities = file.create_group("identities")
        identities.create_dataset("identity", data=plan.identities, dtype=STRING)
        identities.create_dataset(
            "prototype", data=np.asarray(plan.prototypes, dtype=np.float32).reshape(-1, 512)
        )
        identities.create_dataset("n_sources_ok", data=np.asarray(plan.n_sources_ok, np.int32))
        identities.create_dataset("status", data=plan.identity_status, dtype=STRING)
        identities.create_dataset("reason", data=plan.identity_reason, dtype=STRING)
        images = file.create_group("images")
        images.create_dataset("identity", data=plan.image_identity, dtype=STRING)
        images.create_dataset("image_index", data=np.asarray(plan.image_index, np.int32))
        images.create_dataset("source_path", data=plan.source_path, dtype=STRING)
        images.create_dataset("t", data=np.asarray(plan.t, np.float64))
        images.create_dataset("seed", data=np.asarray(plan.seed, np.int64))
        images.create_dataset(
            "condition", data=np.asarray(plan.condition, dtype=np.float32).reshape(-1, 512)
        )
        file.attrs.update({"shard": plan.shard, **plan.attrs})


def read_plan(path: str | Path) -> ShardPlan:
    with open_h5(path, "a plan shard") as file:
        if "images" not in file or "identities" not in file:
            raise DataError(f"{path}: not a plan shard, lacks the groups images/ and identities/")
        ids, images = file["identities"], file["images"]
        attrs = dict(file.attrs)
        return ShardPlan(
            shard=int(attrs.pop("shard")),
            identities=read_strings(ids["identity"]),
            prototypes=list(ids["prototype"][()]),
            n_sources_ok=ids["n_sources_ok"][()].tolist(),
            identity_status=read_strings(ids["status"]),
            identity_reason=read_strings(ids["reason"]),
            image_identity=read_strings(images["identity"]),
            image_index=images["image_index"][()].tolist(),
            source_path=read_strings(images["source_path"]),
            t=images["t"][()].tolist(),
            seed=images["seed"][()].tolist(),
            condition=list(images["condition"][()]),
            attrs=attrs,
        )


def read_plan_identities(path: str | Path) -> ShardPlan:
    """A plan shard's identities (names, prototypes, statuses, reasons) without its images:
    what the evaluation needs, without 2,000 conditions per shard."""
    with open_h5(path, "a plan shard") as file:
        if "identities" not in file:
            raise DataError(f"{path}: not a plan shard, lacks the group identities/")
        ids = file["identities"]
        return ShardPlan(
            shard=int(file.attrs["shard"]),
            identities=read_strings(ids["identity"]),
            prototypes=list(ids["prototype"][()]),
            n_sources_ok=ids["n_sources_ok"][()].tolist(),
            identity_status=read_strings(ids["status"]),
            identity_reason=read_strings(ids["reason"]),
        )


# --- model hashes ----------------------------------------------------------------------------


def write_model_hashes(path: Path, hashes: dict[str, str]) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(hashes, indent=2, sort_keys=True) + "\n")


def read_model_hashes(path: Path) -> dict[str, str]:
    try:
        hashes = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: cannot read the model hashes: {error}") from None
    if not isinstance(hashes, dict):
        raise DataError(f"{path}: not a model hashes file")
    return hashes


# --- the dataset and its card --------------------------------------------------------------


def write_card(path: Path, card: dict) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(card, indent=2) + "\n")


# --- the evaluation ------------------------------------------------------------------------


def write_evaluation_table(path: Path, columns: dict[str, list]) -> None:
    with atomic_path(path) as temporary:
        pq.write_table(pa.table(columns), temporary)


def write_evaluation(path: Path, summary: dict) -> None:
    """evaluation.json: NaN and infinities are written as null, so any JSON reader reads it."""

    def clean(value):
        if isinstance(value, float) and not np.isfinite(value):
            return None
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [clean(item) for item in value]
        if isinstance(value, np.generic):
            return clean(value.item())
        return value

    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(clean(summary), indent=2, allow_nan=False) + "\n")


def read_evaluation(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: cannot read the evaluation: {error}") from None
