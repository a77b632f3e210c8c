"""The quality filter and the dataset card.

The thresholds are read here only, so changing them re-runs this step and nothing upstream.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from digi2real.atomic import atomic_path
from digi2real.config import Config
from digi2real.evaluation import identity_centres, percentiles, uniqueness
from digi2real.shard_store import ArchivedImage

# The reasons, in the order the filter assigns them: an image gets the first that applies.
# Per image: its status when not ok, then its detection score, its cosine to the prototype, its
# nearest real face. Per identity, over the images still passing: too few of them, then a
# centre too close to an earlier identity's that was kept (the later identity of a pair goes).
LOW_DET_SCORE = "low_det_score"
LOW_COS_PROTOTYPE = "low_cos_prototype"
NEAR_REAL_FACE = "near_real_face"
TOO_FEW_IN_IDENTITY = "too_few_images_in_identity"
IDENTITY_COLLISION = "identity_collision"

# The card's percentiles of each similarity, to 4 digits: a summary a person reads.
CARD_PERCENTILES = (5, 25, 50, 75, 95)


@dataclass(frozen=True)
class Thresholds:
    """The quality thresholds of a resolved config (no defaults here: the schema's)."""

    min_det_score: float
    min_cos_prototype: float
    min_images_per_identity: int
    max_real_similarity: float | None = None
    max_identity_similarity: float | None = None

    @classmethod
    def from_config(cls, config: Config) -> Thresholds:
        quality = config["quality"]
        return cls(
            min_det_score=float(quality["min_det_score"]),
            min_cos_prototype=float(quality["min_cos_prototype"]),
            min_images_per_identity=quality["min_images_per_identity"],
            max_real_similarity=quality["max_real_similarity"],
            max_identity_similarity=quality["max_identity_similarity"],
        )


def apply_filter(
    table: pa.Table,
    thresholds: Thresholds,
    real_cos: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
) -> pa.Table:
    """Add `passed` and `reject_reason`: the first reason an image fails, empty if it passed.
    `real_cos` (each row's cosine to its nearest real face) and `embeddings` (each row's unit
    embedding) are needed by the max_real_similarity and max_identity_similarity gates only;
    rows without a face have NaN and zeros."""
    status = np.asarray(table.column("status").to_pylist(), dtype=object)
    det = table.column("det_score").to_numpy(zero_copy_only=False).astype(np.float64)
    cos = table.column("cos_prototype").to_numpy(zero_copy_only=False).astype(np.float64)
    reason = np.where(status != "ok", status, "").astype(object)
    ok = reason == ""
    reason[ok & ~(det >= thresholds.min_det_score)] = LOW_DET_SCORE
    reason[(reason == "") & ~(cos >= thresholds.min_cos_prototype)] = LOW_COS_PROTOTYPE
    if thresholds.max_real_similarity is not None:
        if real_cos is None:
            raise ValueError("quality.max_real_similarity needs each image's real_cos")
        reason[(reason == "") & (real_cos >= thresholds.max_real_similarity)] = NEAR_REAL_FACE
    identities = np.asarray(table.column("identity").to_pylist(), dtype=object)
    passing = reason == ""
    names, inverse = np.unique(identities, return_inverse=True)
    per_identity = np.bincount(inverse, weights=passing, minlength=len(names))
    too_few = passing & (per_identity[inverse] < thresholds.min_images_per_identity)
    reason[too_few] = TOO_FEW_IN_IDENTITY
    if thresholds.max_identity_similarity is not None:
        if embeddings is None:
            raise ValueError("quality.max_identity_similarity needs each image's embedding")
        reason[_colliding(identities, reason == "", embeddings, thresholds)] = IDENTITY_COLLISION
    passed = reason == ""
    return table.append_column("passed", pa.array(passed)).append_column(
        "reject_reason", pa.array(reason.astype(str))
    )


def _colliding(
    identities: np.ndarray, passing: np.ndarray, embeddings: np.ndarray, thresholds: Thresholds
) -> np.ndarray:
    """The passing rows of every identity whose centre is at least max_identity_similarity
    close to an earlier kept identity's, identities in manifest order (evaluation.uniqueness)."""
    rows = np.flatnonzero(passing)
    if not len(rows):
        return np.zeros(len(identities), bool)
    names, centres, _ = identity_centres(embeddings[rows], identities[rows].tolist())
    kept = uniqueness(names, centres, thresholds.max_identity_similarity, top=1).is_kept
    dropped = {name for name, keep in zip(names, kept, strict=True) if not keep}
    return passing & np.isin(identities, list(dropped))


# --- the dataset card ---------------------------------------------------------------------


def counts(table: pa.Table) -> dict:
    """What became of every identity and image of an aggregated manifest, in the one set of
    names the card and the certificate both use. An identity the plan skipped (its rows have
    status `skipped`) was selected but not planned; `planned` counts what generation set out
    to make, `generated` what it made, `passed` what the dataset holds."""
    status = np.asarray(table.column("status").to_pylist(), dtype=object)
    reasons = np.asarray(table.column("reject_reason").to_pylist(), dtype=object)
    passed = np.asarray(table.column("passed").to_pylist(), bool)
    identities = np.asarray(table.column("identity").to_pylist(), dtype=object)
    skipped = status == "skipped"
    selected = set(identities.tolist())
    planned = set(identities[~skipped].tolist())
    kept = set(identities[passed].tolist())
    values, rejected = np.unique(reasons[~passed & ~skipped], return_counts=True)
    return {
        "identities": {
            "selected": len(selected),
            "skipped_by_plan": len(selected - planned),
            "planned": len(planned),
            "kept": len(kept),
        },
        "images": {
            "planned": int((~skipped).sum()),
            "generated": int((~skipped & (status != "failed")).sum()),
            "detected": int((status == "ok").sum()),
            "passed": int(passed.sum()),
            "rejected_by_reason": {
                str(v): int(c) for v, c in zip(values.tolist(), rejected.tolist(), strict=True)
            },
            "per_kept_identity": round(float(passed.sum()) / max(len(kept), 1), 2),
        },
    }


def dataset_card(table: pa.Table, config: Config, model_hashes: dict[str, str]) -> dict:
    from digi2real.config import config_hash

    status = np.asarray(table.column("status").to_pylist(), dtype=object)
    ok = status == "ok"

    def column(name):
        return table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)

    return {
        **counts(table),
        "similarity": {
            name: percentiles(column(name)[ok], CARD_PERCENTILES, digits=4)
            for name in ("cos_prototype", "cos_condition", "det_score")
        },
        "thresholds": Thresholds.from_config(config).__dict__,
        "config_sha256": config_hash(config),
        "model_sha256": model_hashes,
        # One fingerprint of every generated image's key (manifest column image_key): two
        # datasets with equal fingerprints were made from the same settings, models and Δ.
        "image_keys_sha256": hashlib.sha256(
            "\n".join(sorted(k for k in table.column("image_key").to_pylist() if k)).encode()
        ).hexdigest(),
    }


def passed_by_identity(table: pa.Table, results: Path) -> dict[str, list[ArchivedImage]]:
    """The aligned crops of the passed images, by identity, in manifest order."""
    passed = table.filter(table.column("passed"))
    out: dict[str, list[ArchivedImage]] = {}
    for identity, archive, member in zip(
        passed.column("identity").to_pylist(),
        passed.column("archive").to_pylist(),
        passed.column("aligned_path").to_pylist(),
        strict=True,
    ):
        out.setdefault(identity, []).append(ArchivedImage(results / archive, member))
    return out


def grid_columns(images_per_identity: list[int], cap: int) -> int:
    """The sample grid's columns: the most images any shown identity has, at most `cap`, at
    least one."""
    return max(1, min(cap, max(images_per_identity, default=1)))


def sample_grid(
    table: pa.Table, results: Path, path: Path, rows: int = 8, per_row: int = 8
) -> None:
    """Passed aligned crops, one identity a row, labelled on the left with the identity (whole,
    on as many lines as it needs) and how many images passed: the picture a person checks
    first. As many columns as the shown identity with the most images has, up to `per_row`."""
    from PIL import ImageDraw

    from digi2real.plots import LINE, TILE, font, wrap_label

    by_identity = dict(list(passed_by_identity(table, results).items())[:rows])
    columns = grid_columns([len(images) for images in by_identity.values()], per_row)
    label = 96  # pixels of the identity column
    grid = Image.new(
        "RGB", (label + TILE * columns, TILE * max(1, len(by_identity))), (255, 255, 255)
    )
    draw = ImageDraw.Draw(grid)
    if not by_identity:
        draw.text((4, TILE // 2 - LINE // 2), "no passed images", fill=(0, 0, 0), font=font())
    for row, (identity, images) in enumerate(by_identity.items()):
        lines = wrap_label(f"identity {identity}\n{len(images)} passed", label - 8)
        top = TILE * row + max(2, (TILE - LINE * len(lines)) // 2)
        for k, line in enumerate(lines):
            draw.text((4, top + LINE * k), line, fill=(0, 0, 0), font=font())
        for col, image in enumerate(images[:columns]):
            with image.open() as crop:
                grid.paste(
                    crop.convert("RGB").resize((TILE, TILE)), (label + TILE * col, TILE * row)
                )
    with atomic_path(path) as temporary:
        grid.save(temporary, format="PNG")
