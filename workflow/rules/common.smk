# Path helpers, shard lists and per-rule settings. All logic lives in the digi2real package.
import json
import os
import sys

from snakemake.utils import validate

sys.path.insert(
    0, workflow.basedir
)  # the package, when Snakemake runs outside its venv

from digi2real import layout
from digi2real.config import subset

validate(config, workflow.source_path("../schemas/config.schema.yaml"))

RESULTS = config["results"]
CONTAINER = config["container"]
ENVMODULES = {"cpu": [], "gpu": [], **config["envmodules"]}


# Jobs run `python -m digi2real` from this checkout: with the Python that runs Snakemake (its
# venv), or under --sdm conda/apptainer with the Python of the job's environment.
# Braces doubled twice: once for this f-string, once for Snakemake's formatting of the prefix.
PACKAGE_PATH = (
    f"export PYTHONPATH={workflow.basedir}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
)
if workflow.deployment_settings.deployment_method:
    shell.prefix(f"set -euo pipefail; {PACKAGE_PATH}")
else:
    shell.prefix(
        f"set -euo pipefail; export PATH={os.path.dirname(sys.executable)}:$PATH; {PACKAGE_PATH}"
    )

DIGIFACE_IDENTITIES = layout.count_selected_identities(config)
DIGIFACE_EMBED_SHARDS = range(
    layout.n_shards(
        DIGIFACE_IDENTITIES, config["digiface"]["identities_per_embed_shard"]
    )
)
FFHQ_EMBED_SHARDS = range(
    layout.n_shards(
        layout.count_ffhq_images(config), config["ffhq"]["images_per_embed_shard"]
    )
)
GENERATION_SHARDS = range(
    layout.n_shards(DIGIFACE_IDENTITIES, config["plan"]["identities_per_shard"])
)


def results(path):
    return f"{RESULTS}/{path}"


def settings(*keys):
    """The config sections a job depends on, as JSON. It is passed to the CLI, and as a params
    entry it makes a change to them re-run that job and what depends on it, nothing else.
    """
    return json.dumps(subset(config, list(keys)), sort_keys=True)


def embed_shards(dataset):
    shards = DIGIFACE_EMBED_SHARDS if dataset == "digiface" else FFHQ_EMBED_SHARDS
    return expand(
        results("embeddings/{dataset}/{shard}.h5"), dataset=dataset, shard=shards
    )


def embed_shard_size(wildcards):
    if wildcards.dataset == "digiface":
        return config["digiface"]["identities_per_embed_shard"]
    return config["ffhq"]["images_per_embed_shard"]


def embed_settings(wildcards):
    return settings(
        "models.arcface", "models.detector", "face", f"{wildcards.dataset}.face"
    )


def demo_assets(wildcards):
    """The embedded demo's data and models, when the config asks for them."""
    return [f"{config['demo']}/built.txt"] if config["demo"] else []


def generation_runtime(wildcards, attempt):
    """Minutes for one generation shard: its images at cluster.seconds_per_image, twice
    over for a slow node, plus model loading; half as much again on each retry."""
    images = (
        config["plan"]["identities_per_shard"] * config["plan"]["images_per_identity"]
    )
    minutes = 10 + 2 * images * config["cluster"]["seconds_per_image"] / 60
    return round(minutes * (1 + 0.5 * (attempt - 1)))
