"""How good and how private a synthetic face-recognition dataset is, from its embeddings alone.

The field's measures (METHOD.md, "Judging a synthetic FR dataset"): identity consistency and
uniqueness (DCFace, Vec2Face), verification on the set itself (EER, FNMR at a fixed FMR, the
Fisher discriminant ratio; IDiff-Face, Beyond-Real-Faces) and the nearest real face (leakage).
Every input is a float32 matrix of unit ArcFace embeddings, one row per image or identity;
nothing here reads a file. Similarity matrices are computed a block of rows at a time, so no
N x N matrix is ever held.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from digi2real.pose import pose_spread

# Cosine thresholds: 0.3 is DCFace's (an IR101 model at FMR 1e-4), 0.4 Vec2Face's.
THRESHOLDS = (0.3, 0.4, 0.5)
FMR_TARGETS = (1e-2, 1e-3, 1e-4)
BLOCK_ROWS = 4096  # query rows of a similarity block
GALLERY_BLOCK = 32_768  # gallery rows of a block: 4096 x 32,768 float32 is 512 MB at most


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (zero rows stay zero); rows already unit are returned as they
    are, without a copy: 400,000 embeddings are 800 MB."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if len(vectors) and np.all(np.abs(norms - 1) < 1e-4):
        return vectors
    return vectors / np.where(norms > 0, norms, 1)


def identity_positions(labels: list[str]) -> tuple[list[str], np.ndarray]:
    """Identities in order of first appearance, and each row's position among them."""
    names = list(dict.fromkeys(labels))
    position = {name: k for k, name in enumerate(names)}
    return names, np.fromiter((position[label] for label in labels), np.int64, len(labels))


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows (or a vector) scaled to unit length, in float64."""
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


@dataclass
class CentreSums:
    """Identity centres (METHOD.md's class prototypes), built a chunk of embeddings at a time:
    per identity the sum of its embeddings, each scaled to unit length in float64, and their
    count. The one computation of a centre: the plan's prototypes, the quality filter's and
    the certificate's centres all come from here.

    Each row is added on its own, in the order given, so any chunking gives the same sums to
    the bit, and so does numpy's mean of an identity's rows at once (a sum row after row)."""

    sums: np.ndarray  # (identities, dimension) float64
    counts: np.ndarray  # (identities,) int64

    @classmethod
    def zeros(cls, identities: int, dimension: int) -> CentreSums:
        return cls(np.zeros((identities, dimension)), np.zeros(identities, np.int64))

    def add(self, embeddings: np.ndarray, identity: np.ndarray) -> None:
        """Add each row of `embeddings` to the identity at its position in `identity`."""
        np.add.at(self.sums, identity, normalize(embeddings))
        np.add.at(self.counts, identity, 1)

    def centres(self) -> np.ndarray:
        """(identities, dimension) float64: each identity's mean unit embedding, renormalised
        to unit length; zeros for an identity with no embedding."""
        out = np.zeros_like(self.sums)
        some = self.counts > 0
        out[some] = normalize(self.sums[some] / self.counts[some, None])
        return out


def centre(embeddings: np.ndarray) -> np.ndarray:
    """One identity's centre from all its embeddings: the mean of the unit embeddings,
    renormalised (float64)."""
    sums = CentreSums.zeros(1, embeddings.shape[-1])
    sums.add(embeddings, np.zeros(len(embeddings), np.int64))
    return sums.centres()[0]


def identity_centres(
    embeddings: np.ndarray, labels: list[str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Identities in order of first appearance, their centres (CentreSums, as float32) and each
    row's identity position. A chunk of rows at a time: 400,000 rows in float64 are 1.6 GB."""
    names, index = identity_positions(labels)
    sums = CentreSums.zeros(len(names), embeddings.shape[1])
    for start in range(0, len(index), BLOCK_ROWS * 16):
        rows = slice(start, start + BLOCK_ROWS * 16)
        sums.add(embeddings[rows], index[rows])
    return names, sums.centres().astype(np.float32), index


def cosine_to_centre(embeddings: np.ndarray, centres: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Each row's cosine to its identity's centre, a chunk of rows at a time."""
    out = np.empty(len(index), np.float32)
    for start in range(0, len(index), BLOCK_ROWS * 16):
        rows = slice(start, start + BLOCK_ROWS * 16)
        out[rows] = np.einsum("ij,ij->i", embeddings[rows], centres[index[rows]])
    return out


# --- consistency and uniqueness ----------------------------------------------------------------


def consistency(embeddings: np.ndarray, labels: list[str]) -> dict:
    """The share of images (of identities with two or more) whose cosine to their own
    identity's centre is at least each threshold, and per identity the mean of those cosines."""
    names, centres, index = identity_centres(embeddings, labels)
    to_centre = cosine_to_centre(embeddings, centres, index)
    sizes = np.bincount(index, minlength=len(names))
    per_identity = np.bincount(index, weights=to_centre, minlength=len(names)) / sizes
    per_identity[sizes < 2] = np.nan  # a single image is its own centre: it says nothing
    several = sizes[index] > 1
    return {
        "share_at": {
            str(s): float(np.mean(to_centre[several] >= s)) if several.any() else None
            for s in THRESHOLDS
        },
        "mean_cos_to_centre": dict(zip(names, per_identity.tolist(), strict=True)),
    }


def similarity_blocks(vectors: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """The cosines of `vectors`' rows (unit, float32) a block of rows at a time: (start, the
    rows from `start` against every row up to the block's last), one float32 product each.
    A pair's cosine is computed once, in the row of its later member: whatever is read from
    these blocks (the greedy pass, the colliding pairs, each row's nearest other) reads the
    same value for it."""
    n = len(vectors)
    # Rows per block: a block against every row up to it stays under 2^27 cosines.
    rows_per_block = max(1, min(BLOCK_ROWS, 2**27 // max(n, 1)))
    for start in range(0, n, rows_per_block):
        block = vectors[start : start + rows_per_block]
        yield start, block @ vectors[: start + len(block)].T


@dataclass
class Uniqueness:
    threshold: float
    kept: int
    identities: int
    colliding_pairs: int  # identity pairs with centre cosine >= threshold
    top_pairs: list[tuple[str, str, float]]  # the most similar colliding pairs, highest first
    is_kept: np.ndarray  # (identities,) bool: kept by the greedy pass
    in_colliding_pair: np.ndarray  # (identities,) bool: in at least one colliding pair
    # A dropped identity's most similar earlier kept one (the first on a tie) and their
    # cosine, the reason it was dropped; -1 and NaN for a kept identity.
    nearest_kept: np.ndarray  # (identities,) int64
    nearest_kept_cos: np.ndarray  # (identities,) float32

    @property
    def u_class(self) -> float:
        return self.kept / self.identities if self.identities else float("nan")


def uniqueness(names: list[str], centres: np.ndarray, threshold: float, top: int = 1000):
    """DCFace's U_class: in the given order, an identity is kept if its centre's cosine to every
    earlier kept centre is below `threshold`. Also every colliding pair, the `top` most similar
    of them listed. The one greedy pass: the plan's prototype gate and the quality filter's
    collision gate are this pass too."""
    n = len(names)
    is_kept = np.zeros(n, bool)
    in_pair = np.zeros(n, bool)
    nearest_kept = np.full(n, -1, np.int64)
    nearest_kept_cos = np.full(n, np.nan, np.float32)
    best = (np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64))
    colliding = 0
    for start, similar in similarity_blocks(centres):
        rows = start + np.arange(len(similar))
        hits = (similar >= threshold) & (np.arange(similar.shape[1])[None, :] < rows[:, None])
        colliding += int(hits.sum())
        row, column = np.nonzero(hits)
        in_pair[rows[row]] = in_pair[column] = True
        scores = np.concatenate([best[0], similar[row, column]])
        firsts = np.concatenate([best[1], column])
        seconds = np.concatenate([best[2], rows[row]])
        # The `top` most similar so far, highest first, then by the identities' positions.
        order = np.lexsort((-seconds, -firsts, -scores))[:top]
        best = (scores[order], firsts[order], seconds[order])
        for k, at in enumerate(rows):
            to_kept = np.where(is_kept[:at], similar[k, :at], -np.inf)
            closest = int(np.argmax(to_kept)) if at else -1
            if closest >= 0 and to_kept[closest] >= threshold:
                nearest_kept[at], nearest_kept_cos[at] = closest, to_kept[closest]
            else:
                is_kept[at] = True
    return Uniqueness(
        threshold=threshold,
        kept=int(is_kept.sum()),
        identities=len(names),
        colliding_pairs=colliding,
        top_pairs=[
            (names[a], names[b], round(float(score), 6)) for score, a, b in zip(*best, strict=True)
        ],
        is_kept=is_kept,
        in_colliding_pair=in_pair,
        nearest_kept=nearest_kept,
        nearest_kept_cos=nearest_kept_cos,
    )


# --- verification on the set itself ------------------------------------------------------------


def genuine_scores(embeddings: np.ndarray, labels: list[str]) -> np.ndarray:
    """The cosine of every pair of images of the same identity."""
    _, index = identity_positions(labels)  # the pairs need no centres
    order = np.argsort(index, kind="stable")  # each identity's rows together, in one pass
    bounds = np.flatnonzero(np.diff(index[order])) + 1
    scores = []
    for rows in np.split(order, bounds) if len(order) else []:
        similar = embeddings[rows] @ embeddings[rows].T
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
    _, index = identity_positions(labels)  # the pairs need no centres
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
    # In chunks: 2,000,000 pairs of gathered rows at once would be 8 GB.
    scores = np.empty(len(first), np.float32)
    for start in range(0, len(first), BLOCK_ROWS * 16):
        chunk = slice(start, start + BLOCK_ROWS * 16)
        scores[chunk] = np.einsum("ij,ij->i", embeddings[first[chunk]], embeddings[second[chunk]])
    return scores


class ErrorRates:
    """FMR(τ), the share of impostor scores >= τ, and FNMR(τ), the share of genuine scores
    < τ, at every observed score as threshold τ (in `thresholds`, ascending), computed where
    asked: at 20,000 images the exhaustive impostor pairs are 2·10^8, and the full curves 3 GB."""

    def __init__(self, genuine: np.ndarray, impostor: np.ndarray) -> None:
        self.genuine, self.impostor = np.sort(genuine), np.sort(impostor)
        self.thresholds = np.union1d(self.genuine, self.impostor)

    def fmr(self, j: int) -> float:
        # As a count over the total, like fnmr: 1 - 990/1000 is not 0.01 in floating point.
        above = len(self.impostor) - np.searchsorted(self.impostor, self.thresholds[j], "left")
        return float(above / len(self.impostor))

    def fnmr(self, j: int) -> float:
        return float(
            np.searchsorted(self.genuine, self.thresholds[j], side="left") / len(self.genuine)
        )

    def first(self, condition) -> int:
        """The lowest threshold index where `condition(j)` holds, for a condition that holds
        from some index on (len(thresholds) when nowhere)."""
        low, high = 0, len(self.thresholds)
        while low < high:
            middle = (low + high) // 2
            if condition(middle):
                high = middle
            else:
                low = middle + 1
        return low


def error_rates(
    genuine: np.ndarray, impostor: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The thresholds and the whole FMR and FNMR curves (see ErrorRates; for small sets)."""
    rates = ErrorRates(genuine, impostor)
    indices = range(len(rates.thresholds))
    return (
        rates.thresholds,
        np.array([rates.fmr(j) for j in indices]),
        np.array([rates.fnmr(j) for j in indices]),
    )


def equal_error_rate(
    genuine: np.ndarray, impostor: np.ndarray, rates: ErrorRates | None = None
) -> tuple[float, float]:
    """EER and its threshold: at the observed τ where |FMR − FNMR| is smallest (the lowest such
    τ on a tie), their mean. FMR − FNMR never grows with τ, so the crossing is found by
    bisection, without the whole curves. `rates`: the scores' ErrorRates, if made already."""
    rates = rates or ErrorRates(genuine, impostor)

    def gap(j: int) -> float:
        return rates.fmr(j) - rates.fnmr(j)

    crossing = rates.first(lambda j: gap(j) <= 0)
    last = len(rates.thresholds) - 1
    before = min(crossing, last + 1) - 1  # the last index with a positive gap, -1 if none
    if crossing > last or (before >= 0 and abs(gap(before)) <= abs(gap(crossing))):
        value = gap(before)
        best = rates.first(lambda j: gap(j) <= value)  # the first of a run of equal gaps
    else:
        best = crossing
    return (rates.fmr(best) + rates.fnmr(best)) / 2, float(rates.thresholds[best])


def fnmr_at_fmr(
    genuine: np.ndarray, impostor: np.ndarray, target: float, rates: ErrorRates | None = None
) -> float | None:
    """FNMR at the lowest observed threshold whose FMR is at most `target`, or 1 when none is
    (the highest impostor scores tie: only a threshold above every score gets there); None when
    fewer than 10/target impostor pairs make that FMR meaningless."""
    if len(impostor) < 10 / target:
        return None
    rates = rates or ErrorRates(genuine, impostor)
    at = rates.first(lambda j: rates.fmr(j) <= target)
    return rates.fnmr(at) if at < len(rates.thresholds) else 1.0


def fisher_discriminant_ratio(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """(μg − μi)² / (σg² + σi²), with population variances."""
    g, i = genuine.astype(np.float64), impostor.astype(np.float64)
    return float((g.mean() - i.mean()) ** 2 / (g.var() + i.var()))


def verification(
    embeddings: np.ndarray,
    labels: list[str],
    seed: int = 0,
    exhaustive_up_to: int = 20_000,
    sample: int = 2_000_000,
) -> dict:
    """Verification on the set itself: EER, FNMR at FMR_TARGETS, FDR, the score means and their
    histograms (genuine: every same-identity pair; impostor: see impostor_scores)."""
    genuine = genuine_scores(embeddings, labels)
    impostor = impostor_scores(embeddings, labels, exhaustive_up_to, sample, seed)
    counts = {
        "genuine_pairs": len(genuine),
        "impostor_pairs": len(impostor),
        "impostor_pairs_sampled": len(labels) > exhaustive_up_to,
    }
    if not len(genuine) or not len(impostor):
        return {**counts, "eer": None}
    rates = ErrorRates(genuine, impostor)  # sorted once for the EER and every FNMR@FMR
    eer, threshold = equal_error_rate(genuine, impostor, rates)
    return {
        **counts,
        "genuine_mean": float(genuine.mean()),
        "impostor_mean": float(impostor.mean()),
        "eer": eer,
        "eer_threshold": threshold,
        "fnmr_at_fmr": {str(t): fnmr_at_fmr(genuine, impostor, t, rates) for t in FMR_TARGETS},
        "fdr": fisher_discriminant_ratio(genuine, impostor),
        "genuine_percentiles": percentiles(genuine),
        "impostor_percentiles": percentiles(impostor),
        "genuine_histogram": histogram(genuine),
        "impostor_histogram": histogram(impostor),
    }


# --- leakage -----------------------------------------------------------------------------------


def nearest(queries: np.ndarray, gallery: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the cosine to its nearest gallery row and that row's position (the
    first, on a tie). Blocks of both, so memory does not grow with the gallery."""
    best = np.full(len(queries), -np.inf, np.float32)
    where = np.zeros(len(queries), np.int64)
    for start in range(0, len(queries), BLOCK_ROWS):
        rows = slice(start, start + BLOCK_ROWS)
        for low in range(0, len(gallery), GALLERY_BLOCK):
            similar = queries[rows] @ gallery[low : low + GALLERY_BLOCK].T
            column = similar.argmax(axis=1)
            value = similar[np.arange(len(similar)), column]
            better = value > best[rows]
            best[rows] = np.where(better, value, best[rows])
            where[rows] = np.where(better, low + column, where[rows])
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


def nearest_other(centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the cosine to the most similar *other* row and that row's position (the
    first, on a tie; -inf and -1 when there is no other row). From similarity_blocks, each
    pair's one cosine read for both its rows: what uniqueness flags, this sees."""
    best = np.full(len(centres), -np.inf, np.float32)
    where = np.full(len(centres), -1, np.int64)
    for start, similar in similarity_blocks(centres):
        for k in range(len(similar)):
            similar[k, start + k :] = -np.inf  # a row's later rows are read from their rows
        # Earlier rows first, then later ones: a later row replaces only a higher cosine, so
        # on a tie the first row stays.
        rows = slice(start, start + len(similar))
        column = similar.argmax(axis=1)
        best[rows] = similar[np.arange(len(similar)), column]
        where[rows] = np.where(np.isfinite(best[rows]), column, -1)
        row = similar.argmax(axis=0)
        value = similar[row, np.arange(similar.shape[1])]
        later = value > best[: rows.stop]
        best[: rows.stop][later] = value[later]
        where[: rows.stop][later] = start + row[later]
    return best, where


# --- distributions, for the report's plots -----------------------------------------------------

# The bins evaluation.json's histograms have, over cosines [-1, 1]: 0.0005 wide. The bins are
# fixed before the scores are seen, and a recognizer's scores may all lie within 0.01 of each
# other; bins this fine let the report re-bin them to the range they occupy
# (plots.rebin) into tens of bins.
HISTOGRAM_BINS = 4000


def histogram(values: np.ndarray) -> dict:
    """Counts of cosines in HISTOGRAM_BINS equal bins over [-1, 1]; values outside are
    clipped."""
    counts, _ = np.histogram(np.clip(values, -1, 1), bins=HISTOGRAM_BINS, range=(-1.0, 1.0))
    return {"low": -1.0, "high": 1.0, "counts": counts.tolist()}


def percentiles(
    values: np.ndarray,
    points: tuple[int, ...] = (1, 5, 25, 50, 75, 95, 99),
    digits: int | None = None,
) -> dict[str, float | None]:
    """The `points` percentiles of the finite `values` (in float64), rounded to `digits` when
    given; each None when no value is finite. The certificate's and the dataset card's."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return {f"p{q}": None for q in points}
    if digits is None:
        return {f"p{q}": float(np.percentile(values, q)) for q in points}
    return {f"p{q}": round(float(np.percentile(values, q)), digits) for q in points}


# --- a whole dataset, and its sources -----------------------------------------------------------


@dataclass(frozen=True)
class EvaluationSettings:
    """`evaluation:` and `seed` of a resolved config (no defaults here: the schema's)."""

    leak_threshold: float
    collision_threshold: float
    top_pairs: int
    exhaustive_impostors_up_to: int
    impostor_sample: int
    seed: int

    @classmethod
    def from_config(cls, config) -> EvaluationSettings:
        evaluation = config["evaluation"]
        return cls(
            leak_threshold=float(evaluation["leak_threshold"]),
            collision_threshold=float(evaluation["collision_threshold"]),
            top_pairs=evaluation["top_pairs"],
            exhaustive_impostors_up_to=evaluation["exhaustive_impostors_up_to"],
            impostor_sample=evaluation["impostor_sample"],
            seed=config["seed"],
        )


@dataclass
class Gallery:
    """Real faces to search for leaks: unit embeddings and where each came from."""

    embedding: np.ndarray  # (M, 512) float32, unit norm
    label: list[str]  # e.g. "ffhq:00000/00012.png"

    def __len__(self) -> int:
        return len(self.label)


Columns = dict[str, list]  # a table, column by column; the stage writes it as Parquet


def _nearest_real(queries: np.ndarray, gallery: Gallery) -> tuple[np.ndarray, list[str]]:
    if not len(gallery) or not len(queries):
        return np.full(len(queries), np.nan, np.float32), [""] * len(queries)
    cosines, where = nearest(queries, gallery.embedding)
    return cosines, [gallery.label[k] for k in where]


def _pair_table(top_pairs: list[tuple[str, str, float]]) -> Columns:
    return {
        "identity_a": [a for a, _, _ in top_pairs],
        "identity_b": [b for _, b, _ in top_pairs],
        "cosine": [score for _, _, score in top_pairs],
    }


def _identity_pairs(names: list[str], centres: np.ndarray, settings: EvaluationSettings):
    """Uniqueness at each threshold, each identity's nearest other identity, and the table of
    the most similar pairs (every pair at or above the lowest threshold, the top ones listed)."""
    at = {s: uniqueness(names, centres, s, settings.top_pairs) for s in THRESHOLDS}
    lowest = min((*THRESHOLDS, settings.collision_threshold))
    pairs = at[lowest] if lowest in at else uniqueness(names, centres, lowest, settings.top_pairs)
    closest, where = nearest_other(centres)
    summary = {
        str(s): {
            "kept": u.kept,
            "identities": u.identities,
            "u_class": u.u_class if u.identities else None,
            "colliding_pairs": u.colliding_pairs,
        }
        for s, u in at.items()
    }
    # The flagged pairs and the identities in them from one pass: they agree by construction.
    flag = settings.collision_threshold
    flagged = at.get(flag) or uniqueness(names, centres, flag, 1)
    collisions = flagged.in_colliding_pair
    summary["flag_threshold"] = flag
    summary["flagged_pairs"] = flagged.colliding_pairs
    summary["flagged_identities"] = int(collisions.sum())
    columns = {
        "nearest_identity": [names[k] if k >= 0 else "" for k in where],
        "nearest_identity_cos": np.where(np.isfinite(closest), closest, np.nan).tolist(),
        "collision": collisions.tolist(),
        **{f"kept_at_{s}": u.is_kept.tolist() for s, u in at.items()},
    }
    return summary, columns, _pair_table(pairs.top_pairs)


def _leakage(
    cosines: np.ndarray, flagged_names: list[str], settings: EvaluationSettings
) -> dict | None:
    finite = cosines[np.isfinite(cosines)]
    if not finite.size:
        return None
    return {
        **leakage_summary(finite),
        "flag_threshold": settings.leak_threshold,
        "flagged": len(flagged_names),
        "flagged_identities": flagged_names[:100],
    }


def benchmark_leaks(
    names: list[str], queries: np.ndarray, benchmarks: Gallery, settings: EvaluationSettings
) -> tuple[dict | None, Columns]:
    """The leakage search of `queries` (identity centres or prototypes, one per name) in the
    faces a trained recognizer is tested on, apart from the real faces': a training identity
    that close to a benchmark face inflates the benchmark, whatever its privacy. The summary
    as `_leakage` has it (None without benchmark faces), and per identity its nearest
    benchmark face, that face's cosine and whether it is flagged."""
    cosines, labels = _nearest_real(queries, benchmarks)
    leak = cosines >= settings.leak_threshold  # NaN (no benchmark face) is never flagged
    flagged = [name for name, hit in zip(names, leak, strict=True) if hit]
    columns = {
        "nearest_benchmark_cos": cosines.tolist(),
        "nearest_benchmark": labels,
        "benchmark_leak": leak.tolist(),
    }
    return _leakage(cosines, flagged, settings), columns


def evaluate_sources(
    names: list[str],
    prototypes: np.ndarray,
    considered: np.ndarray,
    gallery: Gallery,
    settings: EvaluationSettings,
    benchmarks: Gallery | None = None,
) -> tuple[dict, Columns, Columns]:
    """The DigiFace identities the run planned from: their prototypes against the real gallery
    and against each other, so that a leak or a collision in the generated set can be traced to
    the rendered identity itself. Only the `considered` identities count (those with a
    prototype: the plan's gates may have dropped them, too few usable images cannot). With
    `benchmarks`, the same leakage search in the benchmark faces, reported apart."""
    names = [name for name, keep in zip(names, considered, strict=True) if keep]
    prototypes = unit(prototypes[considered])
    summary, columns, pairs = _identity_pairs(names, prototypes, settings)
    real, real_label = _nearest_real(prototypes, gallery)
    leak = real >= settings.leak_threshold
    table = {
        "identity": names,
        "nearest_real_cos": real.tolist(),
        "nearest_real": real_label,
        "leak": leak.tolist(),
        **columns,
    }
    flagged = [name for name, hit in zip(names, leak, strict=True) if hit]
    sources = {
        "identities": len(names),
        "uniqueness": summary,
        "leakage": _leakage(real, flagged, settings),
    }
    if benchmarks is not None:
        sources["benchmark_leakage"], columns = benchmark_leaks(
            names, prototypes, benchmarks, settings
        )
        table.update(columns)
    return sources, table, pairs


def evaluate_generated(
    labels: list[str],
    embeddings: np.ndarray,
    angles: np.ndarray,
    gallery: Gallery,
    settings: EvaluationSettings,
    benchmarks: Gallery | None = None,
) -> tuple[dict, Columns, Columns, Columns]:
    """Every measure of the passed images (`labels`: each image's identity, in manifest order;
    `angles`: (N, 3) yaw, pitch, roll): the summary, the per-image and per-identity tables and
    the most similar identity pairs. With `benchmarks`, the identity centres' leakage search
    in the benchmark faces too, apart from the real faces' (images are not searched: the
    flag, what training leaves out, is an identity's)."""
    embeddings = unit(embeddings)
    names, centres, index = identity_centres(embeddings, labels)
    sizes = np.bincount(index, minlength=len(names))
    to_centre = cosine_to_centre(embeddings, centres, index)
    # A single image is its own centre: its cosine of 1 says nothing about consistency.
    several = sizes[index] > 1
    per_identity = np.bincount(index, weights=to_centre, minlength=len(names)) / np.maximum(
        sizes, 1
    )
    per_identity[sizes < 2] = np.nan
    uniqueness_summary, pair_columns, pairs = _identity_pairs(names, centres, settings)
    image_real, image_real_label = _nearest_real(embeddings, gallery)
    centre_real, centre_real_label = _nearest_real(centres, gallery)
    leak = centre_real >= settings.leak_threshold
    image_worst = np.full(len(names), np.nan)
    if len(gallery):
        np.fmax.at(image_worst, index, image_real)
    verify = verification(
        embeddings,
        labels,
        settings.seed,
        settings.exhaustive_impostors_up_to,
        settings.impostor_sample,
    )
    spread = std_per_group(angles, index, len(names))
    flagged = [name for name, hit in zip(names, leak, strict=True) if hit]
    leakage = _leakage(centre_real, flagged, settings)
    if leakage is not None:
        leakage = {
            "gallery": len(gallery),
            "identities": leakage,
            "images": {**leakage_summary(image_real), "histogram": histogram(image_real)},
        }
    summary = {
        "images": len(labels),
        "identities": len(names),
        "single_image_identities": int(np.sum(sizes == 1)),
        "consistency": {
            "share_at": {
                str(s): float(np.mean(to_centre[several] >= s)) if several.any() else None
                for s in THRESHOLDS
            },
            "mean_cos_to_centre": percentiles(per_identity),
        },
        "uniqueness": uniqueness_summary,
        "verification": verify,
        "leakage": leakage,
        "diversity": {
            "pose": pose_spread(angles),
            "pose_std_per_identity": {
                axis: percentiles(spread[:, k]) for k, axis in enumerate(("yaw", "pitch", "roll"))
            },
            "within_identity_cos": verify.get("genuine_percentiles"),
        },
    }
    images = {
        "identity": labels,
        "cos_to_centre": to_centre.tolist(),
        "nearest_real_cos": image_real.tolist(),
        "nearest_real": image_real_label,
        "yaw": angles[:, 0].tolist(),
        "pitch": angles[:, 1].tolist(),
        "roll": angles[:, 2].tolist(),
    }
    identities = {
        "identity": names,
        "images": sizes.tolist(),
        "mean_cos_to_centre": per_identity.tolist(),
        "nearest_real_cos": centre_real.tolist(),
        "nearest_real": centre_real_label,
        "max_image_nearest_real_cos": image_worst.tolist(),
        "leak": leak.tolist(),
        **pair_columns,
        "yaw_std": spread[:, 0].tolist(),
        "pitch_std": spread[:, 1].tolist(),
        "roll_std": spread[:, 2].tolist(),
    }
    if benchmarks is not None:
        found, columns = benchmark_leaks(names, centres, benchmarks, settings)
        summary["benchmark_leakage"] = (
            None if found is None else {"faces": len(benchmarks), "identities": found}
        )
        identities.update(columns)
    return summary, images, identities, pairs


def std_per_group(values: np.ndarray, group: np.ndarray, groups: int) -> np.ndarray:
    """(groups, columns) population std of each column's finite values per group; NaN for a
    group with fewer than two. One pass of bincounts: no loop over groups."""
    out = np.full((groups, values.shape[1]), np.nan)
    for column in range(values.shape[1]):
        finite = np.isfinite(values[:, column])
        v, g = values[finite, column].astype(np.float64), group[finite]
        n = np.bincount(g, minlength=groups)
        mean = np.bincount(g, weights=v, minlength=groups) / np.maximum(n, 1)
        square = np.bincount(g, weights=(v - mean[g]) ** 2, minlength=groups) / np.maximum(n, 1)
        out[n > 1, column] = np.sqrt(square[n > 1])
    return out
