"""How good and how private a synthetic face-recognition dataset is, from its embeddings alone.

The field's measures (METHOD.md, "Judging a synthetic FR dataset"): identity consistency and
uniqueness (DCFace, Vec2Face), verification on the set itself (EER, FNMR at a fixed FMR, the
Fisher discriminant ratio; IDiff-Face, Beyond-Real-Faces) and the nearest real face (leakage).
Every input is a float32 matrix of unit ArcFace embeddings, one row per image or identity;
nothing here reads a file. Similarity matrices are computed a block of rows at a time, so no
N x N matrix is ever held.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Cosine thresholds: 0.3 is DCFace's (an IR101 model at FMR 1e-4), 0.4 Vec2Face's.
THRESHOLDS = (0.3, 0.4, 0.5)
FMR_TARGETS = (1e-2, 1e-3, 1e-4)
BLOCK_ROWS = 4096  # rows of a similarity block: 4096 x 70,000 float32 is 1.1 GB at most


def unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1)


def identity_centres(
    embeddings: np.ndarray, labels: list[str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Identities in order of first appearance, their centres (the renormalised mean of their
    embeddings) and each row's identity position."""
    names = list(dict.fromkeys(labels))
    position = {name: k for k, name in enumerate(names)}
    index = np.fromiter((position[label] for label in labels), np.int64, len(labels))
    sums = np.zeros((len(names), embeddings.shape[1]), np.float64)
    np.add.at(sums, index, embeddings)
    return names, unit(sums), index


# --- consistency and uniqueness ----------------------------------------------------------------


def consistency(embeddings: np.ndarray, labels: list[str]) -> dict:
    """The share of images whose cosine to their own identity's centre is at least each
    threshold, and per identity the mean of those cosines."""
    names, centres, index = identity_centres(embeddings, labels)
    to_centre = np.einsum("ij,ij->i", embeddings, centres[index])
    per_identity = np.bincount(index, weights=to_centre, minlength=len(names))
    per_identity /= np.bincount(index, minlength=len(names))
    return {
        "share_at": {str(s): float(np.mean(to_centre >= s)) for s in THRESHOLDS},
        "mean_cos_to_centre": dict(zip(names, per_identity.tolist(), strict=True)),
    }


@dataclass
class Uniqueness:
    threshold: float
    kept: int
    identities: int
    colliding_pairs: int  # identity pairs with centre cosine >= threshold
    top_pairs: list[tuple[str, str, float]]  # the most similar colliding pairs, highest first

    @property
    def u_class(self) -> float:
        return self.kept / self.identities if self.identities else float("nan")


def uniqueness(names: list[str], centres: np.ndarray, threshold: float, top: int = 1000):
    """DCFace's U_class: in the given order, an identity is kept if its centre's cosine to every
    earlier kept centre is below `threshold`. Also every colliding pair, the `top` most similar
    of them listed."""
    is_kept = np.zeros(len(names), bool)
    pairs: list[tuple[float, int, int]] = []
    colliding = 0
    for start in range(0, len(names), BLOCK_ROWS):
        block = centres[start : start + BLOCK_ROWS]
        earlier = block @ centres[:start].T  # against every earlier identity
        inside = block @ block.T
        for row in range(len(block)):
            similar = np.concatenate([earlier[row], inside[row, :row]])
            hits = np.flatnonzero(similar >= threshold)
            colliding += len(hits)
            pairs += [(float(similar[j]), j, start + row) for j in hits]
            if len(pairs) > 4 * top:
                pairs = sorted(pairs, reverse=True)[:top]
            is_kept[start + row] = not np.any(similar[is_kept[: start + row]] >= threshold)
    pairs = sorted(pairs, reverse=True)[:top]
    return Uniqueness(
        threshold=threshold,
        kept=int(is_kept.sum()),
        identities=len(names),
        colliding_pairs=colliding,
        top_pairs=[(names[a], names[b], round(score, 6)) for score, a, b in pairs],
    )


# --- verification on the set itself ------------------------------------------------------------


def genuine_scores(embeddings: np.ndarray, labels: list[str]) -> np.ndarray:
    """The cosine of every pair of images of the same identity."""
    _, _, index = identity_centres(embeddings, labels)
    scores = []
    for identity in range(index.max() + 1 if len(index) else 0):
        rows = embeddings[index == identity]
        similar = rows @ rows.T
        scores.append(similar[np.triu_indices(len(rows), k=1)])
    return np.concatenate(scores) if scores else np.zeros(0, np.float32)


def impostor_scores(
    embeddings: np.ndarray,
    labels: list[str],
    exhaustive_up_to: int = 20_000,
    sample: int = 2_000_000,
    seed: int = 0,
) -> np.ndarray:
    """The cosine of every pair of images of different identities when there are at most
    `exhaustive_up_to` images, else of `sample` such pairs drawn with `seed`."""
    _, _, index = identity_centres(embeddings, labels)
    n = len(index)
    if n <= exhaustive_up_to:
        scores = []
        for start in range(0, n, BLOCK_ROWS):
            stop = min(start + BLOCK_ROWS, n)
            similar = embeddings[start:stop] @ embeddings[start:].T
            later = np.arange(n - start)[None, :] > np.arange(stop - start)[:, None]
            different = index[start:stop, None] != index[None, start:]
            scores.append(similar[later & different])
        return np.concatenate(scores) if scores else np.zeros(0, np.float32)
    rng = np.random.default_rng(seed)
    first, second = rng.integers(0, n, sample), rng.integers(0, n, sample)
    different = index[first] != index[second]
    first, second = first[different], second[different]
    return np.einsum("ij,ij->i", embeddings[first], embeddings[second])


def error_rates(
    genuine: np.ndarray, impostor: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Over every observed score as threshold τ: FMR(τ), the share of impostor scores >= τ, and
    FNMR(τ), the share of genuine scores < τ."""
    genuine, impostor = np.sort(genuine), np.sort(impostor)
    thresholds = np.unique(np.concatenate([genuine, impostor]))
    fmr = 1 - np.searchsorted(impostor, thresholds, side="left") / len(impostor)
    fnmr = np.searchsorted(genuine, thresholds, side="left") / len(genuine)
    return thresholds, fmr, fnmr


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """EER and its threshold: at the observed τ where |FMR − FNMR| is smallest, their mean."""
    thresholds, fmr, fnmr = error_rates(genuine, impostor)
    best = int(np.argmin(np.abs(fmr - fnmr)))
    return float((fmr[best] + fnmr[best]) / 2), float(thresholds[best])


def fnmr_at_fmr(genuine: np.ndarray, impostor: np.ndarray, target: float) -> float | None:
    """FNMR at the lowest observed threshold whose FMR is at most `target`; None when fewer
    than 10/target impostor pairs make that FMR meaningless."""
    if len(impostor) < 10 / target:
        return None
    thresholds, fmr, fnmr = error_rates(genuine, impostor)
    return float(fnmr[np.flatnonzero(fmr <= target)[0]])


def fisher_discriminant_ratio(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """(μg − μi)² / (σg² + σi²), with population variances."""
    g, i = genuine.astype(np.float64), impostor.astype(np.float64)
    return float((g.mean() - i.mean()) ** 2 / (g.var() + i.var()))


def verification(embeddings: np.ndarray, labels: list[str], seed: int = 0) -> dict:
    genuine = genuine_scores(embeddings, labels)
    impostor = impostor_scores(embeddings, labels, seed=seed)
    if not len(genuine) or not len(impostor):
        return {"genuine_pairs": len(genuine), "impostor_pairs": len(impostor), "eer": None}
    eer, threshold = equal_error_rate(genuine, impostor)
    return {
        "genuine_pairs": len(genuine),
        "impostor_pairs": len(impostor),
        "genuine_mean": float(genuine.mean()),
        "impostor_mean": float(impostor.mean()),
        "eer": eer,
        "eer_threshold": threshold,
        "fnmr_at_fmr": {str(t): fnmr_at_fmr(genuine, impostor, t) for t in FMR_TARGETS},
        "fdr": fisher_discriminant_ratio(genuine, impostor),
    }


# --- leakage -----------------------------------------------------------------------------------


def nearest(queries: np.ndarray, gallery: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the cosine to its nearest gallery row and that row's position."""
    best = np.full(len(queries), -np.inf, np.float32)
    where = np.zeros(len(queries), np.int64)
    for start in range(0, len(queries), BLOCK_ROWS):
        similar = queries[start : start + BLOCK_ROWS] @ gallery.T
        where[start : start + BLOCK_ROWS] = similar.argmax(axis=1)
        best[start : start + BLOCK_ROWS] = similar.max(axis=1)
    return best, where


def leakage_summary(nearest_cosines: np.ndarray) -> dict:
    """p50, p99 and max of the nearest-real-face cosines, and the share at or above 0.4 and 0.5
    (the figures the field reports: Digi2Real against CASIA-WebFace p99 0.461, max 0.565)."""
    values = nearest_cosines.astype(np.float64)
    return {
        "p50": float(np.percentile(values, 50)),
        "p99": float(np.percentile(values, 99)),
        "max": float(values.max()),
        "share_at_0.4": float(np.mean(values >= 0.4)),
        "share_at_0.5": float(np.mean(values >= 0.5)),
    }
