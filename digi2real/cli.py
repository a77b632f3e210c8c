"""`digi2real <stage>`: one subcommand per stage, called by the workflow or by hand on a node."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from digi2real.errors import Digi2RealError

CONFIG_HELP = "config YAML file, or the config as inline JSON"


def _config(path: str):
    from digi2real.config import load_config

    return load_config(path)


def cmd_demo_assets(args) -> int:
    from digi2real.demo import build_demo_assets

    out = Path(args.out)
    build_demo_assets(out)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    # Written last: the workflow's sign that the demo folder is complete.
    (out / "built.txt").write_text("\n".join(f for f in files if f != "built.txt") + "\n")
    return 0


def cmd_index(args) -> int:
    from digi2real.indexing import index_digiface, index_ffhq, write_index

    config = _config(args.config)
    index = index_digiface(config) if args.dataset == "digiface" else index_ffhq(config)
    write_index(args.out, index)
    logging.getLogger("digi2real").info("index %s: %d rows", args.dataset, len(index))
    return 0


def cmd_embed(args) -> int:
    from digi2real.indexing import read_index
    from digi2real.stages import embed_shard

    config = _config(args.config)
    index = read_index(args.index)
    embed_shard(config, args.dataset, index, args.shard, args.shard_size, Path(args.out))
    return 0


def cmd_merge_embeddings(args) -> int:
    from digi2real.formats import merge_embeddings

    merge_embeddings([Path(p) for p in args.inputs], Path(args.out))
    return 0


def cmd_estimate_delta(args) -> int:
    from digi2real.stages import estimate_delta

    estimate_delta(_config(args.config), Path(args.real), Path(args.synthetic), Path(args.out))
    return 0


def cmd_plan(args) -> int:
    from digi2real.stages import plan

    plan(_config(args.config), Path(args.embeddings), [Path(p) for p in args.out])
    return 0


def cmd_generate(args) -> int:
    from digi2real.shards import generate_shard

    return generate_shard(
        _config(args.config), Path(args.plan), Path(args.delta), Path(args.manifest)
    )


def cmd_aggregate(args) -> int:
    from digi2real.dataset import aggregate

    manifest = Path(args.manifest)
    shards = [Path(p) for p in args.manifests]
    aggregate(_config(args.config), shards, manifest.parent, manifest, Path(args.dataset))
    return 0


def cmd_report(args) -> int:
    from digi2real.dataset import report

    card = Path(args.card)
    report(_config(args.config), Path(args.manifest), card.parent, card, Path(args.samples))
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="digi2real", description=__doc__)
    main.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = main.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo-assets", help="write the embedded demo data and tiny models")
    p.add_argument("out", help="folder to write into")
    p.set_defaults(run=cmd_demo_assets)

    p = sub.add_parser("index", help="select the input images of a dataset")
    p.add_argument("dataset", choices=["digiface", "ffhq"])
    p.add_argument("--config", required=True, help=CONFIG_HELP)
    p.add_argument("--out", required=True, help="index .parquet to write")
    p.set_defaults(run=cmd_index)

    p = sub.add_parser("embed", help="ArcFace embeddings of one shard of an index")
    p.add_argument("dataset", choices=["digiface", "ffhq"])
    p.add_argument("--config", required=True, help=CONFIG_HELP)
    p.add_argument("--index", required=True)
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--shard-size", type=int, default=1 << 62, help="groups per shard")
    p.add_argument("--out", required=True, help="embeddings .h5 to write")
    p.set_defaults(run=cmd_embed)

    p = sub.add_parser("merge-embeddings", help="concatenate embedding shards")
    p.add_argument("--out", required=True)
    p.add_argument("inputs", nargs="+")
    p.set_defaults(run=cmd_merge_embeddings)

    p = sub.add_parser("estimate-delta", help="the realism shift between FFHQ and DigiFace")
    p.add_argument("--config", required=True, help=CONFIG_HELP)
    p.add_argument("--real", required=True, help="FFHQ embeddings .h5")
    p.add_argument("--synthetic", required=True, help="DigiFace embeddings .h5")
    p.add_argument("--out", required=True, help="delta .h5 to write")
    p.set_defaults(run=cmd_estimate_delta)

    p = sub.add_parser("plan", help="prototypes, conditions and seeds, one file per shard")
    p.add_argument("--config", required=True, help=CONFIG_HELP)
    p.add_argument("--embeddings", required=True, help="DigiFace embeddings .h5")
    p.add_argument(
        "--out", nargs="+", required=True, help="plan files to write, shard 0, 1, ... in order"
    )
    p.set_defaults(run=cmd_plan)

    p = sub.add_parser("generate", help="generate and check one shard (GPU job)")
    p.add_argument("--config", required=True, help=CONFIG_HELP)
    p.add_argument("--plan", required=True, help="plan/<shard>.h5")
    p.add_argument("--delta", required=True)
    p.add_argument("--manifest", required=True, help="shards/<shard>/manifest.parquet to commit")
    p.set_defaults(run=cmd_generate)

    p = sub.add_parser("aggregate", help="merge shard manifests, filter, build the dataset")
    p.add_argument("--config", required=True, help=CONFIG_HELP)
    p.add_argument(
        "--manifest", required=True, help="manifest.parquet to write, in the results folder"
    )
    p.add_argument("--dataset", required=True, help="dataset folder to write")
    p.add_argument("manifests", nargs="+", help="shard manifests")
    p.set_defaults(run=cmd_aggregate)

    p = sub.add_parser("report", help="the dataset card and a sample grid")
    p.add_argument("--config", required=True, help=CONFIG_HELP)
    p.add_argument("--manifest", required=True, help="the aggregated manifest.parquet")
    p.add_argument(
        "--card", required=True, help="dataset_card.json to write, in the results folder"
    )
    p.add_argument("--samples", required=True, help="sample grid .png to write")
    p.set_defaults(run=cmd_report)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.run(args)
    except Digi2RealError as error:
        print(f"digi2real: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
