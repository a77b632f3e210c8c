"""Identity planning: prototypes, SLERP conditioning vectors, source images and per-image seeds.

Everything an image needs is fixed here, from (global seed, identity, image index) alone, so an
image never depends on the shard or batch it is later generated in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from digi2real.evaluation import CentreSums, centre, nearest, normalize, uniqueness
from digi2real.formats import EmbeddingTable, ShardPlan

PARALLEL_EPS = 1e-7
CHUNK_ROWS = 65_536  # embeddings summed into prototypes at once: 256 MB in float64


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from a hash of `parts`: the same on every machine and Python version."""
    digest = hashlib.sha256("/".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def image_seed(global_seed: int, identity: str, image_index: int) -> int:
    return stable_seed("image", global_seed, identity, image_index)


def prototype(embeddings: np.ndarray) -> np.ndarray:
    """The class prototype: the mean of unit embeddings, renormalised to unit length (float64;
    evaluation.centre, the centre the quality filter and the certificate take too)."""
    return centre(embeddings)


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
    """`plan:` and `seed` of a resolved config (no defaults here: the schema's)."""

    images_per_identity: int
    min_source_images: int
    t_mode: str  # fixed | list | uniform
    t_value: float
    t_values: tuple[float, ...]
    t_low: float | None  # uniform mode only
    t_high: float | None
    source: str  # cycle | random
    seed: int

    @classmethod
    def from_config(cls, config) -> PlanSettings:
        plan, t = config["plan"], config["plan"]["t"]
        return cls(
            images_per_identity=plan["images_per_identity"],
            min_source_images=plan["min_source_images"],
            t_mode=t["mode"],
            t_value=float(t["value"]),
            t_values=tuple(float(v) for v in t.get("values") or ()),
            t_low=t.get("low"),
            t_high=t.get("high"),
            source=plan["source"],
            seed=config["seed"],
        )

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


def group_by_identity(table: EmbeddingTable) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = {}
    for row, identity in enumerate(table.identity):
        rows.setdefault(identity, []).append(row)
    return rows


def prototypes_of(table: EmbeddingTable, identities: list[str]) -> np.ndarray:
    """(len(identities), 512) float32: each identity's prototype from its `ok` source images;
    zeros for an identity with none."""
    chunks = (
        (start, table.embedding[start : start + CHUNK_ROWS])
        for start in range(0, len(table.identity), CHUNK_ROWS)
    )
    return prototypes_from_chunks(chunks, table.status, table.identity, identities)


def prototypes_from_chunks(
    chunks: Iterable[tuple[int, np.ndarray]],
    status: np.ndarray,
    row_identity: list[str],
    identities: list[str],
) -> np.ndarray:
    """(len(identities), 512) float32: each identity's prototype from its rows whose `status`
    is ok, the embeddings given a chunk of rows at a time (the first row's position, the rows);
    zeros for an identity with none. The same to the bit whatever the chunks (CentreSums)."""
    position = {identity: k for k, identity in enumerate(identities)}
    row_position = np.array([position.get(name, -1) for name in row_identity], np.int64)
    usable = (np.asarray(status) == 0) & (row_position >= 0)
    sums = CentreSums.zeros(len(identities), 512)
    for start, chunk in chunks:
        rows = slice(start, start + len(chunk))
        keep = usable[rows]
        sums.add(chunk[keep], row_position[rows][keep])
    return sums.centres().astype(np.float32)


def gate_identities(
    identities: list[str],
    prototypes: np.ndarray,
    eligible: np.ndarray,
    real: np.ndarray,
    real_labels: list[str],
    max_real_similarity: float | None,
    max_prototype_similarity: float | None,
) -> dict[str, str]:
    """The plan's gates, in this order for each `eligible` identity in selection order: an
    identity whose prototype is at least `max_real_similarity` close to a `real` embedding is
    dropped; else one at least `max_prototype_similarity` close to an earlier identity that was
    kept is dropped (evaluation.uniqueness's greedy pass, as the certificate counts it).
    Returns the reason of each dropped identity; a None threshold is off."""
    dropped: dict[str, str] = {}
    candidates = np.flatnonzero(eligible)
    if max_real_similarity is not None and len(real) and len(candidates):
        closest, where = nearest(prototypes[candidates], real.astype(np.float32))
        for k, score, at in zip(candidates, closest, where, strict=True):
            if score >= max_real_similarity:
                dropped[identities[k]] = (
                    f"prototype {score:.4f} cosine to the real face {real_labels[at]}, "
                    f"at least plan.max_real_similarity={max_real_similarity}"
                )
    if max_prototype_similarity is not None:
        order = [k for k in candidates if identities[k] not in dropped]
        names = [identities[k] for k in order]
        greedy = uniqueness(
            names, prototypes[order].astype(np.float32), max_prototype_similarity, top=0
        )
        for name, at, score in zip(
            names, greedy.nearest_kept, greedy.nearest_kept_cos, strict=True
        ):
            if at >= 0:
                dropped[name] = (
                    f"prototype {score:.4f} cosine to identity {names[at]}'s, at least "
                    f"plan.max_prototype_similarity={max_prototype_similarity}"
                )
    return dropped


def plan_identities(
    table: EmbeddingTable,
    identities: list[str],
    settings: PlanSettings,
    shard: int,
    dropped: dict[str, str] | None = None,
) -> ShardPlan:
    """The plan of `identities` (in this order) from their DigiFace embeddings; an identity in
    `dropped` (by gate_identities) is skipped with its reason, its prototype kept."""
    dropped = dropped or {}
    rows = group_by_identity(table)
    plan = ShardPlan(shard=shard)
    for identity in identities:
        ok_rows = [row for row in rows.get(identity, []) if table.status[row] == 0]
        plan.identities.append(identity)
        plan.n_sources_ok.append(len(ok_rows))
        if identity in dropped:
            plan.prototypes.append(prototype(table.embedding[ok_rows]).astype(np.float32))
            plan.identity_status.append("skipped")
            plan.identity_reason.append(dropped[identity])
            continue
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
