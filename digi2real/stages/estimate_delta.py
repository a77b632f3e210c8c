"""Rule `estimate_delta`: Δ = mean FFHQ − mean DigiFace, projected into Arc2Face's CLIP space."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config
from digi2real.stages import Argument

CONFIG_KEYS = [
    "models.arc2face_encoder",
    "models.tokenizer",
    "delta.mode",
    "delta.chunk_size",
    "generation.device",
]

HELP = "the realism shift of FFHQ over DigiFace"
ARGUMENTS = (
    Argument("--real", "FFHQ embeddings .h5"),
    Argument("--synthetic", "DigiFace embeddings .h5"),
    Argument("--out", "delta .h5 to write"),
)


def run(config: Config, real: Path, synthetic: Path, out: Path) -> None:
    from digi2real import models
    from digi2real.delta import compute_delta, projected_mean
    from digi2real.formats import iter_ok_embeddings, write_delta
    from digi2real.progress import log
    from digi2real.projection import Arc2FaceProjector

    # 1. Settings and models, checked before any loads.
    device = models.resolve_device(config["generation"]["device"])
    paths = models.ModelPaths.from_config(config, models.ENCODER, models.TOKENIZER)
    chunk_size, mode = config["delta"]["chunk_size"], config["delta"]["mode"]
    # 2. The mean projected embedding of each side, streamed in chunks.
    encoder = models.load_text_encoder(paths[models.ENCODER]).to(device)
    projector = Arc2FaceProjector(encoder, models.load_tokenizer(paths[models.TOKENIZER]))
    means = {}
    for name, path in (("real", real), ("synthetic", synthetic)):
        chunks = iter_ok_embeddings(path, chunk_size)
        means[name] = projected_mean(projector.project, chunks)
        log.info("delta: %d %s embeddings projected", means[name].count, name)
    # 3. Δ, with the hashes of the models it was projected with.
    result = compute_delta(means["real"], means["synthetic"], mode)
    result.attrs = {
        "encoder_sha256": models.model_sha256(paths[models.ENCODER], models.ENCODER),
        "tokenizer_sha256": models.model_sha256(paths[models.TOKENIZER], models.TOKENIZER),
        "real_embeddings": str(real),
        "synthetic_embeddings": str(synthetic),
    }
    write_delta(out, result)
