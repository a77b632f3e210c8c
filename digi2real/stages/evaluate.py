"""Rule `evaluate`: the dataset's certificate, from embeddings alone (no FR model is trained).

Over the passed images: identity consistency, uniqueness, verification on the set itself,
leakage against every real face the run embedded (FFHQ, and the gallery where one is set),
head-pose diversity, and the yield from the inputs to the dataset. The same leakage and
uniqueness for the DigiFace prototypes the plan started from, so a leak can be traced to the
generator or to the rendered identity. With the faces of the benchmarks a trained recognizer is
tested on, the same leakage search in them, reported apart, and the identities it flags listed
in BENCHMARK_LEAKS for training to leave out (train.exclude_benchmark_leaks).
"""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config
from digi2real.stages import Argument

CONFIG_KEYS = ["seed", "evaluation"]
# evaluation/<table>.parquet, documented in docs/file-contracts.md
TABLES = ("images", "identities", "pairs", "sources", "source_pairs")
# evaluation/benchmark_leaks.csv: the identities flagged against a benchmark face, one row each
# with its nearest one. Written on every run, header only without benchmarks, so the rule can
# always declare it (docs/file-contracts.md).
BENCHMARK_LEAKS = "benchmark_leaks.csv"
BENCHMARK_LEAK_COLUMNS = ("identity", "benchmark", "image", "cosine")
# What the figures rest on; the report repeats it beside them.
RECOGNIZER_NOTE = {
    False: "Measured with the generator's own ArcFace (models.arcface): the generator was "
    "conditioned on its embeddings, so consistency, uniqueness and EER are optimistic, and "
    "leakage is searched in the same model's space. Set evaluation.recognizer for figures "
    "of an independent model.",
    True: "Measured with evaluation.recognizer, a model the generator was not steered by: "
    "the generated crops, the DigiFace sources and the real faces are all embedded with it.",
}

HELP = "the dataset's certificate, from its embeddings"
ARGUMENTS = (
    Argument("--manifest", "the aggregated manifest.parquet", dest="manifest_path"),
    Argument(
        "--generated",
        "embeddings/generated.h5, or one per shard",
        dest="generated_paths",
        nargs="+",
    ),
    Argument("--digiface", "embeddings/digiface.h5", dest="digiface_path"),
    Argument("--ffhq", "embeddings/ffhq.h5, the real faces", dest="ffhq_path"),
    Argument(
        "--gallery", "embeddings/gallery.h5, more real faces", dest="gallery_path", default=None
    ),
    Argument(
        "--benchmarks",
        "embeddings/benchmarks.h5, the benchmark faces (embed_benchmarks)",
        dest="benchmarks_path",
        default=None,
    ),
    Argument("--plans", "plan files, in shard order", dest="plan_paths", nargs="+"),
    Argument("--out", "evaluation.json to write"),
    Argument("--tables", f"folder of the evaluation's tables and {BENCHMARK_LEAKS}"),
)


def run(
    config: Config,
    manifest_path: Path,
    generated_paths: list[Path],
    digiface_path: Path,
    ffhq_path: Path,
    plan_paths: list[Path],
    out: Path,
    tables: Path,
    gallery_path: Path | None = None,
    benchmarks_path: Path | None = None,
) -> dict:
    """The certificate into `out` (JSON) and its tables and BENCHMARK_LEAKS into the folder
    `tables`.

    Every embedding compared is of one model: `generated_paths` (the aggregated
    embeddings/generated.h5, or one file per shard), `digiface_path`, `ffhq_path`,
    `gallery_path` and `benchmarks_path` are the generator's ArcFace's, or all
    evaluation.recognizer's. The plans say which identities were planned; the manifest which
    images passed."""
    import numpy as np
    import pyarrow.parquet as pq

    from digi2real.certificate import COMPUTED, NOT_COMPUTED
    from digi2real.evaluation import (
        EvaluationSettings,
        Gallery,
        evaluate_generated,
        evaluate_sources,
    )
    from digi2real.formats import (
        read_embeddings,
        read_plan_identities,
        read_real_faces,
        write_evaluation,
        write_evaluation_table,
    )
    from digi2real.pose import head_pose
    from digi2real.progress import log
    from digi2real.status import Status

    # 1. Inputs: the passed images' embeddings, and the statuses of every input image, each
    # file checked embedded in one model's space.
    settings = EvaluationSettings.from_config(config)
    manifest = pq.read_table(manifest_path)
    labels, image_index, embedding, landmarks = read_passed_embeddings(
        manifest_path, manifest, generated_paths
    )
    # The DigiFace embeddings are read a chunk at a time (streamed_prototypes), if at all.
    digiface = read_embeddings(digiface_path, embeddings=False)
    real_files = [ffhq_path] + ([gallery_path] if gallery_path else [])
    statuses = {path: read_embeddings(path, embeddings=False) for path in real_files}
    if benchmarks_path:
        statuses[benchmarks_path] = read_embeddings(benchmarks_path, embeddings=False)
    check_one_space(digiface_path, digiface, statuses)
    gallery = Gallery(*read_real_faces(real_files))
    # The benchmark faces, a gallery of their own: their leaks are reported apart from the
    # real faces', whose figures stay comparable with runs that have no benchmarks.
    benchmarks = Gallery(*read_real_faces([benchmarks_path])) if benchmarks_path else None

    # 2. The sources: every identity with a prototype, planned or dropped by the plan's gates
    # (an identity with too few usable source images has none), in the embeddings compared.
    plans = [read_plan_identities(path) for path in plan_paths]
    names = [name for plan in plans for name in plan.identities]
    status = [s for plan in plans for s in plan.identity_status]
    reasons = [r for plan in plans for r in plan.identity_reason]
    prototypes = np.asarray([p for plan in plans for p in plan.prototypes], np.float32)
    prototypes = prototypes.reshape(-1, 512)
    has_prototype = np.any(prototypes != 0, axis=1)
    if config["evaluation"]["recognizer"] is not None:  # the same prototypes, in its space
        prototypes = streamed_prototypes(digiface_path, digiface, names)
    sources, source_table, source_pairs = evaluate_sources(
        names, prototypes, has_prototype, gallery, settings, benchmarks
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

    # 3. The passed images: what users train on.
    independent = config["evaluation"]["recognizer"] is not None
    summary: dict = {
        "recognizer": {
            "model": "evaluation.recognizer" if independent else "models.arcface",
            "sha256": digiface.attrs.get("arcface_sha256"),
            "independent_of_generator": independent,
            "note": RECOGNIZER_NOTE[independent],
        },
        "gallery": {
            dataset: sum(label.startswith(f"{dataset}:") for label in gallery.label)
            for dataset in ("ffhq", "gallery")
        },
        "settings": dict(settings.__dict__),
        "status": COMPUTED,
    }
    if benchmarks is not None:
        summary["benchmarks"] = faces_per_benchmark(benchmarks.label)
    if not labels:
        summary["status"] = NOT_COMPUTED
        images = identities = pairs = None
        log.warning("evaluate: %s", summary["status"])
    else:
        angles = head_pose(np.concatenate(landmarks))
        log.info("evaluate: %d passed images against %d real faces", len(labels), len(gallery))
        passed_embedding = np.concatenate(embedding)
        del embedding
        generated_summary, images, identities, pairs = evaluate_generated(
            labels, passed_embedding, angles, gallery, settings, benchmarks
        )
        images["image_index"] = np.concatenate(image_index).tolist()
        summary["generated"] = generated_summary
    leaks = benchmark_leak_rows(identities) if benchmarks is not None and identities else []
    found = (summary.get("generated") or {}).get("benchmark_leakage")
    if found is not None:
        found["by_benchmark"] = flagged_per_benchmark(leaks, summary["benchmarks"])
    summary["sources"] = sources
    inputs = {"digiface": digiface, "ffhq": statuses[ffhq_path]}
    if gallery_path:
        inputs["gallery"] = statuses[gallery_path]
    summary["yield"] = yield_summary(manifest, names, status, reasons, inputs)

    # 4. Written: the tables first, the JSON (what the report reads) last.
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
    write_benchmark_leaks(tables / BENCHMARK_LEAKS, leaks)
    write_evaluation(out, summary)
    return summary


def faces_per_benchmark(labels: list[str]) -> dict[str, int]:
    """How many benchmark faces each verification file gave (its `ok` ones), by bin name."""
    from collections import Counter

    from digi2real.stages.embed_benchmarks import benchmark_face

    return dict(sorted(Counter(benchmark_face(label)[0] for label in labels).items()))


def benchmark_leak_rows(identities: dict) -> list[tuple[str, str, int, float]]:
    """(identity, benchmark, image, cosine) of each identity the leakage search in the
    benchmark faces flagged, its nearest benchmark face, sorted by identity."""
    from digi2real.stages.embed_benchmarks import benchmark_face

    rows = []
    for name, hit, label, cosine in zip(
        identities["identity"],
        identities["benchmark_leak"],
        identities["nearest_benchmark"],
        identities["nearest_benchmark_cos"],
        strict=True,
    ):
        if hit:
            rows.append((name, *benchmark_face(label), float(cosine)))
    return sorted(rows)


def flagged_per_benchmark(
    rows: list[tuple[str, str, int, float]], faces: dict[str, int]
) -> dict[str, dict[str, int]]:
    """Per verification file: its faces, and the identities whose nearest benchmark face is
    one of them and flagged."""
    flagged = {name: 0 for name in faces}
    for _, benchmark, _, _ in rows:
        flagged[benchmark] = flagged.get(benchmark, 0) + 1
    return {name: {"faces": faces.get(name, 0), "flagged": n} for name, n in flagged.items()}


def write_benchmark_leaks(path: Path, rows: list[tuple[str, str, int, float]]) -> None:
    """BENCHMARK_LEAKS: the header, then `rows` (benchmark_leak_rows); header only without."""
    import csv
    import io

    from digi2real.atomic import atomic_path

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(BENCHMARK_LEAK_COLUMNS)
    writer.writerows((name, bench, image, f"{cosine:.6f}") for name, bench, image, cosine in rows)
    with atomic_path(path) as temporary:
        temporary.write_text(buffer.getvalue())


def read_passed_embeddings(manifest_path: Path, manifest, generated_paths: list[Path]):
    """The identity, image index, embedding and landmarks of each passed image of `manifest`,
    as lists of per-file parts (but the labels); only the passed rows are kept, a file at a
    time: 400,000 embeddings are 800 MB."""
    import numpy as np

    from digi2real.errors import DataError
    from digi2real.shard_store import read_generated_embeddings

    kept = manifest.filter(manifest.column("passed"))
    passed_keys = set(
        zip(
            kept.column("identity").to_pylist(),
            kept.column("image_index").to_pylist(),
            strict=True,
        )
    )
    labels, image_index, embedding, landmarks = [], [], [], []
    for path in generated_paths:
        part = read_generated_embeddings(path)
        keys = zip(part.identity, part.image_index.tolist(), strict=True)
        passed = np.array([key in passed_keys for key in keys], bool)
        labels += [name for name, keep in zip(part.identity, passed, strict=True) if keep]
        image_index.append(part.image_index[passed])
        embedding.append(part.embedding[passed])
        landmarks.append(part.landmarks[passed])
        del part
    if len(labels) != len(passed_keys):
        raise DataError(
            f"{manifest_path}: {len(passed_keys)} passed images, but the generated embeddings "
            f"hold {len(labels)} of them"
        )
    return labels, image_index, embedding, landmarks


def check_one_space(digiface_path: Path, digiface, real: dict) -> None:
    """One model's space or the comparison means nothing: every real faces' file (`real`, its
    table by path) embedded by the model that embedded DigiFace."""
    from digi2real.errors import DataError

    ours = digiface.attrs.get("arcface_sha256")
    for path, table in real.items():
        theirs = table.attrs.get("arcface_sha256")
        if theirs != ours:
            raise DataError(
                f"{path}: embedded by another recognizer (sha256 {theirs}) than "
                f"{digiface_path} ({ours})"
            )


def streamed_prototypes(path: Path, table, names: list[str]):
    """Each identity's prototype, as planning.prototypes_of makes it (to the bit), from the
    embeddings file at `path` read a chunk at a time; `table` is its statuses and identities.
    Zeros for an identity with no `ok` image."""
    from digi2real.formats import iter_embedding_chunks
    from digi2real.planning import CHUNK_ROWS, prototypes_from_chunks

    chunks = iter_embedding_chunks(path, CHUNK_ROWS)
    return prototypes_from_chunks(chunks, table.status, table.identity, names)


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


def yield_summary(manifest, names, status, reasons, inputs: dict) -> dict:
    """From the inputs to the dataset: every input image by status, with examples of why, and
    every identity and image by what became of it (dataset.counts, as the card says it)."""
    import numpy as np

    from digi2real.dataset import counts
    from digi2real.status import STATUS_TABLE

    def by_status(table) -> dict:
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

    of_the_dataset = counts(manifest)
    skipped = [r for s, r in zip(status, reasons, strict=True) if s != "planned"]
    return {
        "inputs": {name: by_status(table) for name, table in inputs.items()},
        "identities": {**of_the_dataset["identities"], "skipped_examples": skipped[:5]},
        "images": of_the_dataset["images"],
    }
