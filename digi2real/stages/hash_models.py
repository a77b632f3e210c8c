"""Rule `hash_models`: the sha256 of every model file, once per run, for the image keys.

Its inputs are the model files the loaders read (models.files_read), so a model replaced in
place reruns it, and through its output every generation shard, which then remakes the images
that model made; another file beside the weights (a README) reruns nothing. The jobs
read the hashes instead of hashing gigabytes each.
"""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config
from digi2real.stages import Argument

CONFIG_KEYS = ["models"]

HELP = "the sha256 of every model file"
ARGUMENTS = (Argument("--out", "models.json to write"),)


def run(config: Config, out: Path) -> None:
    from digi2real import models
    from digi2real.formats import write_model_hashes
    from digi2real.progress import log

    specs = [*models.GENERATION_MODELS, models.ARCFACE]
    if config["models"]["lcm_lora"] is not None:
        specs.append(models.LCM_LORA)
    # The detector only checks images; a run whose images are all prealigned needs none.
    if Path(config["models"]["detector"]).expanduser().is_file():
        specs.append(models.DETECTOR)
    hashes = {}
    for spec in specs:
        hashes[spec.key] = models.model_sha256(models.model_path(config, spec), spec)
        log.info("%s: sha256 %s", spec.key, hashes[spec.key])
    write_model_hashes(out, hashes)
