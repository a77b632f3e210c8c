"""Rule `embed_benchmarks`: every face of every verification file of `benchmark.bins` embedded
with the model `evaluate` compares with, in the real faces' embeddings contract, so that the
certificate's leakage search covers the faces a trained recognizer is tested on. The faces are
aligned 112x112 crops already: no detection."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config
from digi2real.stages import Argument
from digi2real.stages.embed import RECOGNIZER_ARGUMENT

# `{recognizer}`: the config key of the model of the embedding space, as for `embed`.
CONFIG_KEYS = ["{recognizer}", "benchmark.bins", "face.providers", "face.batch_size"]
# The file's `dataset` attribute: evaluate labels each face `benchmarks:<bin name>/<image>`
# (formats.read_real_faces), `<image>` its position in the bin.
DATASET = "benchmarks"

HELP = "the faces of benchmark.bins' verification files embedded, for the leakage search"
ARGUMENTS = (Argument("--out", "embeddings .h5 to write"), RECOGNIZER_ARGUMENT)


def face_path(name: str, image: int) -> str:
    """A benchmark face's `path` in the embeddings file: its bin's name and its position."""
    return f"{name}/{image}"


def benchmark_face(label: str) -> tuple[str, int]:
    """The bin name and image position of a benchmark face's label (`benchmarks:lfw/17`)."""
    _, _, path = label.partition(":")
    name, _, image = path.rpartition("/")  # a bin's name may hold a slash, its position not
    return name, int(image)


def run(config: Config, out: Path, recognizer: str = "models.arcface") -> None:
    """Every image of every file of `benchmark.bins` into `out`, one row each in bin-name order
    then image order, embedded with the model at the config key `recognizer`."""
    import json

    import numpy as np

    from digi2real import models
    from digi2real.errors import ConfigError, DataError
    from digi2real.faces import FaceSettings, face_pipeline
    from digi2real.formats import EmbeddingTable, write_embeddings
    from digi2real.progress import log
    from digi2real.status import Status
    from digi2real.verification import load_bin

    # 1. The files and the model, checked before any loads: a bin is 450 MB decoded.
    bins = config["benchmark"]["bins"]
    if not bins:
        raise ConfigError("config key benchmark.bins: no verification files to embed")
    # Relative to the folder the job runs in, as Snakemake took them for the rule's inputs.
    files = {name: Path(bins[name]).expanduser() for name in sorted(bins)}
    for name, path in files.items():
        if not path.is_file():
            raise DataError(f"{path}: no such file (config key benchmark.bins.{name})")
    spec = {spec.key: spec for spec in (models.ARCFACE, models.RECOGNIZER)}[recognizer]
    face = config["face"]
    settings = FaceSettings.aligned(str(face["providers"]), int(face["batch_size"]))
    paths = models.ModelPaths.from_config(config, *settings.models(spec))
    pipeline = face_pipeline(settings, paths, spec)

    # 2. One bin at a time, its faces through the recognizer alone.
    embedding, status, path, message = [], [], [], []
    for name, file in files.items():
        faces = load_bin(file).images
        size = pipeline.batch_size
        for start in range(0, len(faces), size):
            # The bins decode to RGB; the face pipeline, like insightface, takes BGR.
            batch = [np.ascontiguousarray(f[..., ::-1]) for f in faces[start : start + size]]
            for offset, result in enumerate(pipeline.process_images(batch)):
                ok = result.embedding is not None
                embedding.append(result.embedding if ok else np.zeros(512, np.float32))
                status.append(int(result.status))
                path.append(face_path(name, start + offset))
                message.append(result.message)
        log.info("embed_benchmarks: %s, %d faces", name, len(faces))
        del faces

    # 3. The real faces' contract, with what made it: the model's hash and the files.
    codes = np.array(status, dtype=np.int8)
    write_embeddings(
        out,
        EmbeddingTable(
            embedding=np.asarray(embedding, np.float32).reshape(-1, 512),
            status=codes,
            identity=[""] * len(path),  # a verification file names no identity
            path=path,
            det_score=np.full(len(path), np.nan, np.float32),
            message=message,
            attrs={
                "dataset": DATASET,
                "dataset_root": "",
                "bins": json.dumps({name: str(file) for name, file in files.items()}),
                "mode": "prealigned",
                "arcface_sha256": models.model_sha256(paths[spec], spec),
                "recognizer": spec.key,
            },
        ),
    )
    failed = int(np.sum(codes != Status.OK))
    log.info("embed_benchmarks: %d faces of %d files, %d not ok", len(path), len(files), failed)
