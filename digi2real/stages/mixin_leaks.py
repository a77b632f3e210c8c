"""Rule `mixin_leaks`: the mix-in's real identities searched among the benchmark faces a trained
recognizer is tested on. Each identity's faces are embedded with the model `evaluate` compares
with; an identity whose centre is at least evaluation.leak_threshold close to a benchmark face
(the generated identities' test, digi2real/evaluation.py) is in all likelihood that person, in
LFW or its kin: listed in mixin/benchmark_leaks.csv, which training leaves out with
train.exclude_benchmark_leaks."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config
from digi2real.stages import Argument
from digi2real.stages.embed import RECOGNIZER_ARGUMENT

# `{recognizer}`: the config key of the model of the compared space, as for embed_benchmarks.
CONFIG_KEYS = ["{recognizer}", "face.providers", "face.batch_size", "evaluation", "seed"]

HELP = "the mix-in's real identities searched among the benchmark faces"
ARGUMENTS = (
    Argument("--mixin", "the real identities' sample (sample_mixin's folder)"),
    Argument("--benchmarks", "the benchmark faces' embeddings (embed_benchmarks)"),
    Argument("--out", "benchmark_leaks.csv to write"),
    RECOGNIZER_ARGUMENT,
)


def run(
    config: Config, mixin: Path, benchmarks: Path, out: Path, recognizer: str = "models.arcface"
) -> list[tuple[str, str, int, float]]:
    """The flagged identities of the sample `mixin` against the faces of `benchmarks` into
    `out`, and returned: (identity, benchmark, image, cosine) each."""
    import numpy as np

    from digi2real import models
    from digi2real.evaluation import EvaluationSettings, Gallery
    from digi2real.faces import FaceSettings, UnreadableImage, decode_image, face_pipeline
    from digi2real.formats import read_real_faces
    from digi2real.mixin import FACES, MixinFace, read_faces
    from digi2real.progress import log
    from digi2real.shard_store import ImageArchives
    from digi2real.stages.evaluate import write_benchmark_leaks

    # 1. The recognizer of the compared space, on aligned faces (no detection).
    spec = {spec.key: spec for spec in (models.ARCFACE, models.RECOGNIZER)}[recognizer]
    face = config["face"]
    settings = FaceSettings.aligned(str(face["providers"]), int(face["batch_size"]))
    paths = models.ModelPaths.from_config(config, *settings.models(spec))
    pipeline = face_pipeline(settings, paths, spec)

    # 2. Every face of the sample embedded, a batch at a time; one that does not read back
    # is counted, not a traceback (embed_generated's reading).
    faces = read_faces(mixin)
    archive, archives = mixin / FACES, ImageArchives()

    def decoded(face: MixinFace) -> np.ndarray | Exception:
        try:
            return decode_image(archives.read(archive, face.member), f"{archive}:{face.member}")
        except UnreadableImage as error:
            return error

    embeddings, labels, failed = [], [], []
    for start in range(0, len(faces), pipeline.batch_size):
        batch = faces[start : start + pipeline.batch_size]
        for f, result in zip(batch, pipeline.process_images(map(decoded, batch)), strict=True):
            if result.embedding is None:
                failed.append(f"{f.member}: {result.message}")
                continue
            embeddings.append(result.embedding)
            labels.append(f.identity)
    if failed:
        log.warning("mixin_leaks: %d faces not embedded, e.g. %s", len(failed), failed[0])

    # 3. Each identity's centre searched among the benchmark faces.
    vectors = np.asarray(embeddings, np.float32).reshape(-1, 512)
    gallery = Gallery(*read_real_faces([benchmarks]))
    settings = EvaluationSettings.from_config(config)
    rows = leaking_identities(vectors, labels, gallery, settings)
    write_benchmark_leaks(out, rows)
    log.info(
        "mixin_leaks: %d of %d real identities within %g of a benchmark face",
        len(rows), len(set(labels)), settings.leak_threshold,
    )  # fmt: skip
    return rows


def leaking_identities(embeddings, labels: list[str], benchmarks, settings):
    """(identity, benchmark, image, cosine) of each identity whose centre (of its rows of
    `embeddings`, named by `labels`) is at least settings.leak_threshold close to a face of
    the Gallery `benchmarks`: the generated identities' test (evaluation.benchmark_leaks)."""
    from digi2real.evaluation import benchmark_leaks, identity_centres
    from digi2real.stages.evaluate import benchmark_leak_rows

    names, centres, _ = identity_centres(embeddings, labels)
    _, columns = benchmark_leaks(names, centres, benchmarks, settings)
    return benchmark_leak_rows({"identity": names, **columns})
