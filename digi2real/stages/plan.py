"""Rule `plan`: prototypes, SLERP conditions and per-image seeds, one file per generation shard."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config
from digi2real.stages import Argument

CONFIG_KEYS = ["seed", "plan"]

HELP = "prototypes, conditions and seeds, one file per shard"
ARGUMENTS = (
    Argument("--embeddings", "DigiFace embeddings .h5"),
    Argument("--real", "real faces' embeddings .h5 (FFHQ, the gallery)", nargs="+", default=[]),
    Argument("--out", "plan files, shard 0, 1, ... in order", dest="outputs", nargs="+"),
    Argument(
        "--identities",
        "plan only the first this many identities (a sweep's variants: sweep.identities)",
        type=int,
        default=None,
    ),
)


def run(
    config: Config,
    embeddings: Path,
    outputs: list[Path],
    real: Path | None = None,
    identities: int | None = None,
) -> None:
    """The plan of each generation shard into `outputs` (shard 0, 1, ...), identities cut in
    selection order (the first `identities` of them when given: each identity's plan is the
    same as in a plan of them all, its seeds derive from the seed, its name and its index).
    Shards past the last identity (a selection larger than the folder) get empty plans, so
    the workflow's shard list can follow from the config alone. The gates
    (plan.max_real_similarity against the `real` faces' files, plan.max_prototype_similarity)
    drop identities before any shard is cut, so a dropped identity keeps its slot."""
    from digi2real import layout
    from digi2real.config import config_hash
    from digi2real.errors import DataError
    from digi2real.formats import read_embeddings, write_plan
    from digi2real.planning import PlanSettings, plan_identities
    from digi2real.progress import log

    # 1. The identities, in selection order, and the shards they need, checked.
    table = read_embeddings(embeddings)
    selected = list(dict.fromkeys(table.identity))
    if not selected or selected == [""]:
        raise DataError(f"{embeddings}: holds no identities (is it an FFHQ file?)")
    if identities is not None:
        selected = selected[:identities]
    identities = selected
    settings = PlanSettings.from_config(config)
    per_shard = config["plan"]["identities_per_shard"]
    needed = layout.n_shards(len(identities), per_shard)
    if len(outputs) < needed:
        raise DataError(
            f"{embeddings}: {len(identities)} identities need {needed} shards of "
            f"plan.identities_per_shard={per_shard}, but {len(outputs)} outputs were given"
        )
    # 2. The gates, over every identity at once; then each shard's plan, cut in order.
    dropped = gates(config, table, identities, settings, real)
    for shard, path in enumerate(outputs):
        shard_plan = plan_identities(
            table, identities[shard * per_shard : (shard + 1) * per_shard], settings, shard, dropped
        )
        shard_plan.attrs = {
            "n_shards": len(outputs),
            "seed": settings.seed,
            "images_per_identity": settings.images_per_identity,
            "config_sha256": config_hash(config),
        }
        write_plan(path, shard_plan)
    log.info(
        "plan: %d identities in %d shards, %d dropped by the gates",
        len(identities),
        len(outputs),
        len(dropped),
    )


def gates(config: Config, table, identities: list[str], settings, real: list[Path] | None) -> dict:
    """The identities the plan's gates drop, with their reasons (empty when both are off)."""
    import numpy as np

    from digi2real.errors import DataError
    from digi2real.formats import read_real_faces
    from digi2real.planning import gate_identities, group_by_identity, prototypes_of
    from digi2real.status import Status

    max_real = config["plan"]["max_real_similarity"]
    max_prototype = config["plan"]["max_prototype_similarity"]
    if max_real is None and max_prototype is None:
        return {}
    real_embeddings, real_labels = np.zeros((0, 512), np.float32), []
    if max_real is not None:
        if not real:
            raise DataError("plan.max_real_similarity is set but no real embeddings were given")
        real_embeddings, real_labels = read_real_faces(real)
    rows = group_by_identity(table)
    eligible = np.array(
        [
            sum(table.status[row] == Status.OK for row in rows.get(name, []))
            >= settings.min_source_images
            for name in identities
        ],
        bool,
    )
    return gate_identities(
        identities,
        prototypes_of(table, identities),
        eligible,
        real_embeddings,
        real_labels,
        max_real,
        max_prototype,
    )
