"""`digi2real <rule>`: one subcommand per workflow rule, named as the rule, plus `config`.

Argument parsing only: each subcommand reads the slice of the config its stage reads
(`digi2real/stages/<rule>.py`, CONFIG_KEYS) and calls the stage's `run`. The same flags name the
same things everywhere: `--config`, `--out` for the main output, `--results` for the results
folder.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from digi2real.errors import Digi2RealError

CONFIG_HELP = "config YAML file (validated, defaults filled), or the config slice as inline JSON"


def stage_config(args, rule: str, **wildcards: str):
    from digi2real.config import stage_config, stage_keys

    keys = importlib.import_module(f"digi2real.stages.{rule}").CONFIG_KEYS
    return stage_config(args.config, stage_keys(keys, **wildcards))


def cmd_config(args) -> int:
    """The resolved config, after the checks the workflow's dry run makes (model files,
    dataset roots and their layouts, the selection): the same errors, the same lines."""
    import yaml

    from digi2real.config import load_config
    from digi2real.preflight import preflight

    config = load_config(args.config)
    said = preflight(config)
    print(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), end="")
    for line in said:
        print(f"# {line}")
    return 0


def cmd_demo_assets(args) -> int:
    from digi2real.stages import demo_assets

    demo_assets.run(Path(args.out))
    return 0


def cmd_index_digiface(args) -> int:
    from digi2real.stages import index_digiface

    listing = Path(args.listing) if args.listing else None
    index_digiface.run(stage_config(args, "index_digiface"), Path(args.out), listing)
    return 0


def cmd_index_real(args) -> int:
    from digi2real.stages import index_real

    listing = Path(args.listing) if args.listing else None
    config = stage_config(args, "index_real", dataset=args.dataset)
    index_real.run(config, args.dataset, Path(args.out), listing)
    return 0


def cmd_embed(args) -> int:
    from digi2real.stages import embed

    config = stage_config(args, "embed", dataset=args.dataset, recognizer=args.recognizer)
    embed.run(
        config,
        args.dataset,
        Path(args.index),
        args.shard,
        args.shard_size,
        Path(args.out),
        args.recognizer,
    )
    return 0


def cmd_embed_generated(args) -> int:
    from digi2real.stages import embed_generated

    embed_generated.run(stage_config(args, "embed_generated"), Path(args.manifest), Path(args.out))
    return 0


def cmd_merge_embeddings(args) -> int:
    from digi2real.stages import merge_embeddings

    merge_embeddings.run(Path(args.index), [Path(p) for p in args.inputs], Path(args.out))
    return 0


def cmd_estimate_delta(args) -> int:
    from digi2real.stages import estimate_delta

    config = stage_config(args, "estimate_delta")
    estimate_delta.run(config, Path(args.real), Path(args.synthetic), Path(args.out))
    return 0


def cmd_plan(args) -> int:
    from digi2real.stages import plan

    real = [Path(p) for p in args.real or []]
    plan.run(stage_config(args, "plan"), Path(args.embeddings), [Path(p) for p in args.out], real)
    return 0


def cmd_hash_models(args) -> int:
    from digi2real.stages import hash_models

    hash_models.run(stage_config(args, "hash_models"), Path(args.out))
    return 0


def cmd_generate(args) -> int:
    from digi2real.stages import generate

    config = stage_config(args, "generate")
    return generate.run(
        config, Path(args.plan), Path(args.delta), Path(args.models), Path(args.out)
    )


def cmd_aggregate(args) -> int:
    from digi2real.stages import aggregate

    aggregate.run(
        stage_config(args, "aggregate"),
        Path(args.results),
        [Path(p) for p in args.manifests],
        Path(args.out),
        Path(args.embeddings),
        [Path(p) for p in args.real or []],
    )
    return 0


def cmd_export(args) -> int:
    rule = args.command.replace("-", "_")
    stage = importlib.import_module(f"digi2real.stages.{rule}")
    stage.run(stage_config(args, rule), Path(args.results), Path(args.manifest), Path(args.out))
    return 0


def cmd_evaluate(args) -> int:
    from digi2real.stages import evaluate

    evaluate.run(
        stage_config(args, "evaluate"),
        Path(args.manifest),
        [Path(p) for p in args.generated],
        Path(args.digiface),
        Path(args.ffhq),
        [Path(p) for p in args.plans],
        Path(args.out),
        Path(args.tables),
        Path(args.gallery) if args.gallery else None,
    )
    return 0


def cmd_report(args) -> int:
    from digi2real.stages import report

    config = stage_config(args, "report")
    report.run(
        config,
        Path(args.results),
        Path(args.manifest),
        Path(args.evaluation),
        Path(args.samples),
        Path(args.figures),
    )
    return 0


def cmd_card(args) -> int:
    from digi2real.stages import card

    card.run(
        stage_config(args, "card"),
        Path(args.results),
        Path(args.manifest),
        Path(args.models),
        Path(args.evaluation),
        [Path(path) for path in args.benchmarks],
        Path(args.out),
        Path(args.page),
    )
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="digi2real", description=__doc__)
    main.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = main.add_subparsers(dest="command", required=True)

    def command(name: str, run, help: str, config: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        if config:
            p.add_argument("--config", required=True, help=CONFIG_HELP)
        p.set_defaults(run=run)
        return p

    p = command("config", cmd_config, "print the resolved config: what will run")

    p = command("demo-assets", cmd_demo_assets, "the embedded demo's data and models", False)
    p.add_argument("--out", required=True, help="folder to write into")

    for name, function, what in (
        ("index-digiface", cmd_index_digiface, "select the DigiFace identities"),
        ("index-real", cmd_index_real, "select the FFHQ images, or list the gallery's"),
    ):
        p = command(name, function, what)
        if name == "index-real":
            p.add_argument("dataset", choices=["ffhq", "gallery"])
        p.add_argument("--out", required=True, help="index .parquet to write")
        p.add_argument(
            "--listing",
            help="the root's listing (<results>/inputs/<dataset>.txt), instead of listing it",
        )

    p = command("embed", cmd_embed, "embeddings of one shard of an index, with one recognizer")
    p.add_argument("dataset", choices=["digiface", "ffhq", "gallery"])
    p.add_argument("--index", required=True, help="index .parquet of the dataset")
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--shard-size", type=int, default=1 << 62, help="groups per shard")
    p.add_argument("--out", required=True, help="embeddings .h5 to write")
    p.add_argument(
        "--recognizer",
        choices=["models.arcface", "evaluation.recognizer"],
        default="models.arcface",
        help="config key of the model to embed with (default: the generator's ArcFace)",
    )

    p = command(
        "embed-generated",
        cmd_embed_generated,
        "a generation shard's aligned crops embedded with evaluation.recognizer",
    )
    p.add_argument("--manifest", required=True, help="shards/<shard>/manifest.parquet")
    p.add_argument("--out", required=True, help="generated-embeddings .h5 to write")

    p = command("merge-embeddings", cmd_merge_embeddings, "concatenate embedding shards", False)
    p.add_argument("--index", required=True, help="the index the shards were cut from")
    p.add_argument("--out", required=True, help="embeddings .h5 to write")
    p.add_argument("inputs", nargs="+", help="embedding shards, in shard order")

    p = command("estimate-delta", cmd_estimate_delta, "the realism shift of FFHQ over DigiFace")
    p.add_argument("--real", required=True, help="FFHQ embeddings .h5")
    p.add_argument("--synthetic", required=True, help="DigiFace embeddings .h5")
    p.add_argument("--out", required=True, help="delta .h5 to write")

    p = command("plan", cmd_plan, "prototypes, conditions and seeds, one file per shard")
    p.add_argument("--embeddings", required=True, help="DigiFace embeddings .h5")
    p.add_argument("--real", nargs="+", help="real faces' embeddings .h5 (FFHQ, the gallery)")
    p.add_argument("--out", nargs="+", required=True, help="plan files, shard 0, 1, ... in order")

    p = command("hash-models", cmd_hash_models, "the sha256 of every model file")
    p.add_argument("--out", required=True, help="models.json to write")

    p = command("generate", cmd_generate, "generate and check one shard (GPU job)")
    p.add_argument("--plan", required=True, help="plan/<shard>.h5")
    p.add_argument("--delta", required=True, help="delta.h5")
    p.add_argument("--models", required=True, help="models.json, the model hashes")
    p.add_argument("--out", required=True, help="shards/<shard>/manifest.parquet to commit")

    p = command("aggregate", cmd_aggregate, "merge shard manifests, filter, keep the embeddings")
    p.add_argument("--results", required=True, help="results folder the manifests lie in")
    p.add_argument("--out", required=True, help="manifest.parquet to write")
    p.add_argument("--embeddings", required=True, help="embeddings/generated.h5 to write")
    p.add_argument("--real", nargs="+", help="real faces' embeddings .h5 (FFHQ, the gallery)")
    p.add_argument("manifests", nargs="+", help="shard manifests")

    for name in ("recordio", "webdataset", "imagefolder"):
        p = command(f"export-{name}", cmd_export, f"the passed images as {name}")
        p.add_argument("--results", required=True, help="results folder")
        p.add_argument("--manifest", required=True, help="the aggregated manifest.parquet")
        p.add_argument("--out", required=True, help=f"export/{name} folder to write")

    p = command("evaluate", cmd_evaluate, "the dataset's certificate, from its embeddings")
    p.add_argument("--manifest", required=True, help="the aggregated manifest.parquet")
    p.add_argument(
        "--generated", nargs="+", required=True, help="embeddings/generated.h5, or one per shard"
    )
    p.add_argument("--digiface", required=True, help="embeddings/digiface.h5")
    p.add_argument("--ffhq", required=True, help="embeddings/ffhq.h5, the real faces")
    p.add_argument("--gallery", help="embeddings/gallery.h5, more real faces")
    p.add_argument("--plans", nargs="+", required=True, help="plan files, in shard order")
    p.add_argument("--out", required=True, help="evaluation.json to write")
    p.add_argument("--tables", required=True, help="folder of the evaluation's tables")

    p = command("report", cmd_report, "a sample grid, the certificate and its figures")
    p.add_argument("--results", required=True, help="results folder")
    p.add_argument("--manifest", required=True, help="the aggregated manifest.parquet")
    p.add_argument("--evaluation", required=True, help="evaluation.json, beside its tables")
    p.add_argument("--samples", required=True, help="sample grid .png to write")
    p.add_argument("--figures", required=True, help="folder of the certificate's figures")

    p = command("card", cmd_card, "the dataset card, once the exports are written")
    p.add_argument("--results", required=True, help="results folder")
    p.add_argument("--manifest", required=True, help="the aggregated manifest.parquet")
    p.add_argument("--models", required=True, help="models.json, the model hashes")
    p.add_argument("--evaluation", required=True, help="evaluation.json")
    p.add_argument("--out", required=True, help="dataset_card.json to write")
    p.add_argument("--page", required=True, help="the card's page (.html) to write")
    p.add_argument("benchmarks", nargs="*", help="benchmark files of the jobs to account for")
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
    except KeyboardInterrupt:  # Ctrl-C: what was written whole stays, the rerun goes on
        print(f"digi2real: {args.command} interrupted", file=sys.stderr)
        return INTERRUPTED


INTERRUPTED = 130  # as a shell reports a process ended by SIGINT


if __name__ == "__main__":
    sys.exit(main())
