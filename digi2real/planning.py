"""Identity planning: prototypes, SLERP conditioning vectors, source images and per-image seeds.

Everything an image needs is fixed here, from (global seed, identity, image index) alone, so an
image never depends on the shard or batch it is later generated in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from digi2real.errors import ConfigError, DataError
from digi2real.formats import STRING, EmbeddingTable, atomic_path, open_h5, read_strings

PARALLEL_EPS = 1e-7


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from a hash of `parts`: the same on every machine and Python version."""
    digest = hashlib.sha256("/".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def image_seed(global_seed: int, identity: str, image_index: int) -> int:
    return stable_seed("image", global_seed, identity, image_index)


def normalize(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def prototype(embeddings: np.ndarray) -> np.ndarray:
    """The class prototype: the mean of unit embeddings, renormalised to unit length."""
    return normalize(normalize(embeddings).mean(axis=0))


def slerp(p: np.ndarray, e: np.ndarray, t: float) -> np.ndarray:
    """The point at fraction `t` of the great circle from unit `p` towards unit `e`.

    At θ ≈ 0 the arc degenerates to `p`; at θ ≈ π every great circle joins them, so one is
    chosen deterministically from `p` alone (towards the axis where `p` is smallest).
    """
    p, e = normalize(p), normalize(e)
    cos_theta = float(np.clip(p @ e, -1.0, 1.0))
    theta = float(np.arccos(cos_theta))
    sin_theta = np.sin(theta)
    if sin_theta < PARALLEL_EPS:
        if cos_theta > 0:
            return normalize((1 - t) * p + t * e)
        axis = np.zeros_like(p)
        axis[np.argmin(np.abs(p))] = 1.0
        direction = normalize(axis - (axis @ p) * p)
        return normalize(np.cos(t * np.pi) * p + np.sin(t * np.pi) * direction)
    return normalize((np.sin((1 - t) * theta) * p + np.sin(t * theta) * e) / sin_theta)


@dataclass(frozen=True)
class PlanSettings:
    images_per_identity: int = 20
    min_source_images: int = 1
    t_mode: str = "fixed"  # fixed | list | uniform
    t_value: float = 0.5
    t_values: tuple[float, ...] = ()
    t_low: float = 0.0
    t_high: float = 1.0
    source: str = "cycle"  # cycle | random
    seed: int = 0

    @classmethod
    def from_config(cls, config) -> PlanSettings:
        from digi2real.config import get

        t = get(config, "plan.t", {"mode": "fixed", "value": 0.5}, kind=dict)
        settings = cls(
            images_per_identity=get(config, "plan.images_per_identity", 20, kind=int),
            min_source_images=get(config, "plan.min_source_images", 1, kind=int),
            t_mode=str(t.get("mode", "fixed")),
            t_value=float(t.get("value", 0.5)),
            t_values=tuple(float(v) for v in t.get("values", ())),
            t_low=float(t.get("low", 0.0)),
            t_high=float(t.get("high", 1.0)),
            source=get(config, "plan.source", "cycle", kind=str),
            seed=get(config, "seed", 0, kind=int),
        )
        settings.check()
        return settings

    def check(self) -> None:
        if self.t_mode not in ("fixed", "list", "uniform"):
            raise ConfigError(
                f"config key plan.t.mode: {self.t_mode!r} is not fixed, list or uniform"
            )
        if self.t_mode == "list" and not self.t_values:
            raise ConfigError("config key plan.t.values: needs at least one value for mode list")
        if self.source not in ("cycle", "random"):
            raise ConfigError(f"config key plan.source: {self.source!r} is not cycle or random")
        if self.min_source_images < 1:
            raise ConfigError("config key plan.min_source_images must be at least 1")

    def t_for(self, identity: str, image_index: int) -> float:
        if self.t_mode == "fixed":
            return self.t_value
        if self.t_mode == "list":
            return self.t_values[image_index % len(self.t_values)]
        rng = np.random.default_rng(stable_seed("t", self.seed, identity, image_index))
        return float(rng.uniform(self.t_low, self.t_high))

    def source_for(self, identity: str, image_index: int, n_sources: int) -> int:
        if self.source == "cycle":
            return image_index % n_sources
        return stable_seed("source", self.seed, identity, image_index) % n_sources


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


def group_by_identity(table: EmbeddingTable) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = {}
    for row, identity in enumerate(table.identity):
        rows.setdefault(identity, []).append(row)
    return rows


def plan_identities(
    table: EmbeddingTable, identities: list[str], settings: PlanSettings, shard: int
) -> ShardPlan:
    """The plan of `identities` (in this order) from their DigiFace embeddings."""
    rows = group_by_identity(table)
    plan = ShardPlan(shard=shard)
    for identity in identities:
        ok_rows = [row for row in rows.get(identity, []) if table.status[row] == 0]
        plan.identities.append(identity)
        plan.n_sources_ok.append(len(ok_rows))
        if len(ok_rows) < settings.min_source_images:
            plan.prototypes.append(np.zeros(512, dtype=np.float32))
            plan.identity_status.append("skipped")
            total = len(rows.get(identity, []))
            plan.identity_reason.append(
                f"{len(ok_rows)} of {total} source images ok, "
                f"fewer than plan.min_source_images={settings.min_source_images}"
            )
            continue
        sources = table.embedding[ok_rows].astype(np.float64)
        center = prototype(sources)
        plan.prototypes.append(center.astype(np.float32))
        plan.identity_status.append("planned")
        plan.identity_reason.append("")
        for image_index in range(settings.images_per_identity):
            source = settings.source_for(identity, image_index, len(ok_rows))
            t = settings.t_for(identity, image_index)
            plan.image_identity.append(identity)
            plan.image_index.append(image_index)
            plan.source_path.append(table.path[ok_rows[source]])
            plan.t.append(t)
            plan.seed.append(image_seed(settings.seed, identity, image_index))
            plan.condition.append(slerp(center, sources[source], t).astype(np.float32))
    return plan


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
