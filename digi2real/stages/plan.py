"""Rule `plan`: prototypes, SLERP conditions and per-image seeds, one file per generation shard."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config

CONFIG_KEYS = ["seed", "plan"]


def run(config: Config, embeddings: Path, outputs: list[Path]) -> None:
    """The plan of each generation shard into `outputs` (shard 0, 1, ...), identities cut in
    selection order. Shards past the last identity (a selection larger than the folder) get
    empty plans, so the workflow's shard list can follow from the config alone."""
    from digi2real import layout
    from digi2real.config import config_hash
    from digi2real.errors import DataError
    from digi2real.formats import read_embeddings, write_plan
    from digi2real.planning import PlanSettings, plan_identities
    from digi2real.progress import log

    table = read_embeddings(embeddings)
    identities = list(dict.fromkeys(table.identity))
    if not identities or identities == [""]:
        raise DataError(f"{embeddings}: holds no identities (is it an FFHQ file?)")
    settings = PlanSettings.from_config(config)
    per_shard = config["plan"]["identities_per_shard"]
    needed = layout.n_shards(len(identities), per_shard)
    if len(outputs) < needed:
        raise DataError(
            f"{embeddings}: {len(identities)} identities need {needed} shards of "
            f"plan.identities_per_shard={per_shard}, but {len(outputs)} outputs were given"
        )
    for shard, path in enumerate(outputs):
        shard_plan = plan_identities(
            table, identities[shard * per_shard : (shard + 1) * per_shard], settings, shard
        )
        shard_plan.attrs = {
            "n_shards": len(outputs),
            "seed": settings.seed,
            "images_per_identity": settings.images_per_identity,
            "config_sha256": config_hash(config),
        }
        write_plan(path, shard_plan)
    log.info("plan: %d identities in %d shards", len(identities), len(outputs))
