"""Rule `sample_mixin`: the real identities of export.mixin, drawn from its source with its seed
and copied into results/mixin/ (digi2real/mixin.py), which every export appends after the
synthetic identities."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config
from digi2real.stages import Argument

CONFIG_KEYS: list[str] = ["seed", "export.mixin"]

HELP = "draw the real identities of export.mixin from its source"
ARGUMENTS = (Argument("--out", "mixin folder to write (faces.zip, faces.csv, sample.json)"),)
# The exports', the card's and the certificate's argument: the folder this stage wrote.
MIXIN_ARGUMENT = Argument(
    "--mixin", "the real identities' sample (sample_mixin's folder)", default=None
)
# The card's and the certificate's: the sample's benchmark leaks (rule mixin_leaks).
MIXIN_LEAKS_ARGUMENT = Argument(
    "--mixin-leaks", "the mix-in's benchmark_leaks.csv (mixin_leaks)", default=None
)


def run(config: Config, out: Path) -> dict:
    """The draw into the folder `out`, built aside and renamed into place; its summary."""
    from digi2real import mixin
    from digi2real.atomic import atomic_folder
    from digi2real.errors import ConfigError
    from digi2real.progress import log

    # 1. The source and what it holds: every identity listed, an empty one refused.
    settings = config["export"]["mixin"]
    if settings is None:
        raise ConfigError("config key export.mixin: null, there is no mix-in to draw")
    root = Path(settings["source"]).expanduser()
    source = mixin.open_source(root)
    identities = source.identities()
    # 2. The draw, then each drawn image read, checked (112x112) and copied.
    seed = config["seed"] if settings.get("seed") is None else settings["seed"]
    per_identity = settings["images_per_identity"]
    drawn = mixin.draw(identities, settings["identities"], per_identity, seed)
    summary = {
        "source": str(root),
        "kind": source.kind,
        "seed": seed,
        "identities": len(drawn),
        "images_per_identity": per_identity,
        "images": sum(len(identity.images) for identity in drawn),
        "source_identities": len(identities),
        "eligible_identities": len(mixin.eligible(identities, per_identity)),
    }
    with atomic_folder(out) as staging:
        mixin.write_sample(staging, source, drawn, summary)
    log.info(
        "sample_mixin: %d real identities, %d images, from %s (%s)",
        summary["identities"], summary["images"], root, source.kind,
    )  # fmt: skip
    return summary
