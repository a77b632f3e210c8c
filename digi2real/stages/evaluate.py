"""Rule `evaluate`: the dataset's certificate, from embeddings alone (no FR model is trained).

Over the passed images: identity consistency, uniqueness, verification on the set itself,
leakage against every real face the run embedded (FFHQ), head-pose diversity, and the yield
from the inputs to the dataset. The same leakage and uniqueness for the DigiFace prototypes the
plan started from, so a leak can be traced to the generator or to the rendered identity.
"""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config

CONFIG_KEYS = ["seed", "evaluation"]
# evaluation/<table>.parquet, documented in docs/file-contracts.md
TABLES = ("images", "identities", "pairs", "sources", "source_pairs")
# What the figures rest on; the report repeats it beside them.
RECOGNIZER_NOTE = (
    "Measured with the generator's own ArcFace (models.arcface): the generator was conditioned "
    "on its embeddings, so consistency, uniqueness and EER are optimistic, and leakage is "
    "searched in the same model's space."
)


def run(
    config: Config,
    manifest_path: Path,
    generated_path: Path,
    digiface_path: Path,
    ffhq_path: Path,
    plan_paths: list[Path],
    out: Path,
    tables: Path,
) -> dict:
    """The certificate into `out` (JSON) and its tables into the folder `tables`."""
    import numpy as np
    import pyarrow.parquet as pq

    from digi2real.errors import DataError
    from digi2real.evaluation import (
        EvaluationSettings,
        Gallery,
        evaluate_generated,
        evaluate_sources,
    )
    from digi2real.formats import (
        read_embeddings,
        read_generated_embeddings,
        read_plan,
        write_evaluation,
        write_evaluation_table,
    )
    from digi2real.pose import head_pose
    from digi2real.progress import log
    from digi2real.status import Status

    settings = EvaluationSettings.from_config(config)
    manifest = pq.read_table(manifest_path)
    generated = read_generated_embeddings(generated_path)
    if generated.passed is None:
        raise DataError(f"{generated_path}: lacks `passed`; is it a shard's file?")
    digiface, ffhq = read_embeddings(digiface_path), read_embeddings(ffhq_path)
    ok = ffhq.status == Status.OK
    gallery = Gallery(
        embedding=ffhq.embedding[ok].astype(np.float32),
        label=[f"ffhq:{path}" for path, keep in zip(ffhq.path, ok, strict=True) if keep],
    )

    # 1. The sources: every identity with a prototype, planned or dropped by the plan's gates
    # (an identity with too few usable source images has none).
    plans = [read_plan(path) for path in plan_paths]
    names = [name for plan in plans for name in plan.identities]
    status = [s for plan in plans for s in plan.identity_status]
    reasons = [r for plan in plans for r in plan.identity_reason]
    prototypes = np.asarray([p for plan in plans for p in plan.prototypes], np.float32)
    prototypes = prototypes.reshape(-1, 512)
    has_prototype = np.any(prototypes != 0, axis=1)
    sources, source_table, source_pairs = evaluate_sources(
        names, prototypes, has_prototype, gallery, settings
    )
    source_table = _with_skipped(source_table, names, status, reasons)
    first_ok: dict[str, str] = {}
    for name, path, code in zip(digiface.identity, digiface.path, digiface.status, strict=True):
        if code == Status.OK:
            first_ok.setdefault(name, path)
    source_table["source_image"] = [first_ok.get(name, "") for name in names]
    log.info(
        "evaluate: %d DigiFace identities, %d with a prototype", len(names), has_prototype.sum()
    )

    # 2. The passed images: what users train on.
    passed = np.asarray(generated.passed, bool)
    labels = [name for name, keep in zip(generated.identity, passed, strict=True) if keep]
    summary: dict = {
        "recognizer": {
            "model": "models.arcface",
            "arcface_sha256": digiface.attrs.get("arcface_sha256"),
            "independent_of_generator": False,
            "note": RECOGNIZER_NOTE,
        },
        "gallery": {"ffhq": len(gallery)},
        "settings": dict(settings.__dict__),
        "status": "ok",
    }
    if not labels:
        summary["status"] = "no passed images: nothing to certify (see yield)"
        images = identities = pairs = None
        log.warning("evaluate: %s", summary["status"])
    else:
        angles = head_pose(generated.landmarks[passed])
        log.info("evaluate: %d passed images against %d real faces", len(labels), len(gallery))
        generated_summary, images, identities, pairs = evaluate_generated(
            labels, generated.embedding[passed], angles, gallery, settings
        )
        images["image_index"] = generated.image_index[passed].tolist()
        summary["generated"] = generated_summary
    summary["sources"] = sources
    summary["yield"] = yield_summary(manifest, names, status, reasons, digiface, ffhq)

    # 3. Written: the tables first, the JSON (what the report reads) last.
    tables.mkdir(parents=True, exist_ok=True)
    empty = {"identity": []}
    columns_of = {
        "images": images,
        "identities": identities,
        "pairs": pairs or {"identity_a": [], "identity_b": [], "cosine": []},
        "sources": source_table,
        "source_pairs": source_pairs,
    }
    for name in TABLES:
        write_evaluation_table(tables / f"{name}.parquet", columns_of[name] or empty)
    write_evaluation(out, summary)
    return summary


def _with_skipped(table: dict, names: list[str], status: list[str], reasons: list[str]) -> dict:
    """The sources table over every identity: skipped ones with their reason and no figures."""
    row = {name: k for k, name in enumerate(table["identity"])}
    full: dict[str, list] = {"identity": names, "status": status, "reason": reasons}
    for column, values in table.items():
        if column == "identity":
            continue
        blank = "" if values and isinstance(values[0], str) else None
        full[column] = [values[row[name]] if name in row else blank for name in names]
    return full


def yield_summary(manifest, names, status, reasons, digiface, ffhq) -> dict:
    """From the inputs to the dataset: every input image by status, with examples of why, and
    every planned image by what became of it."""
    import numpy as np

    from digi2real.status import STATUS_TABLE

    def inputs(table) -> dict:
        codes, counts = np.unique(table.status, return_counts=True)
        out = {}
        for code, count in zip(codes.tolist(), counts.tolist(), strict=True):
            rows = np.flatnonzero(table.status == code)[:3]
            out[STATUS_TABLE[code]] = {
                "images": count,
                "examples": []
                if code == 0
                else [f"{table.path[r]}: {table.message[r]}" for r in rows],
            }
        return {"images": len(table), "by_status": out}

    image_status = np.asarray(manifest.column("status").to_pylist(), dtype=object)
    passed = np.asarray(manifest.column("passed").to_pylist(), bool)
    reason = np.asarray(manifest.column("reject_reason").to_pylist(), dtype=object)
    values, counts = np.unique(reason[~passed], return_counts=True)
    skipped = [r for s, r in zip(status, reasons, strict=True) if s != "planned"]
    kept = set(np.asarray(manifest.column("identity").to_pylist(), dtype=object)[passed])
    return {
        "inputs": {"digiface": inputs(digiface), "ffhq": inputs(ffhq)},
        "identities": {
            "selected": len(names),
            "planned": len(names) - len(skipped),
            "skipped_by_plan": len(skipped),
            "skipped_examples": skipped[:5],
            "kept": len(kept),
        },
        "images": {
            "planned": int(len(image_status)),
            "generated": int(np.sum((image_status != "skipped") & (image_status != "failed"))),
            "detected": int(np.sum(image_status == "ok")),
            "passed": int(passed.sum()),
            "rejected_by_reason": {
                str(v): int(c) for v, c in zip(values.tolist(), counts.tolist(), strict=True)
            },
        },
    }
