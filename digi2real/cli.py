"""`digi2real <rule>`: one subcommand per workflow rule, named as the rule, plus `config`.

Argument parsing only: each subcommand is made from its stage module, `digi2real/stages/<rule>.py`
(HELP, ARGUMENTS), reads the slice of the config the stage reads (CONFIG_KEYS) and calls the
stage's `run`. The same flags name the same things everywhere: `--config`, `--out` for the main
output, `--results` for the results folder.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import logging
import sys
from types import ModuleType

from digi2real import stages
from digi2real.errors import Digi2RealError

CONFIG_HELP = "config YAML file (validated, defaults filled), or the config slice as inline JSON"


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


def takes_config(stage: ModuleType) -> bool:
    """Whether the stage reads the config: its command then takes --config."""
    return "config" in inspect.signature(stage.run).parameters


def run_stage(name: str, args: argparse.Namespace) -> int:
    """The stage's `run`, each parameter from its argument; the config sliced at its keys,
    whose placeholders (`{dataset}`, `{recognizer}`) the arguments of those names fill."""
    from digi2real.config import stage_config, stage_keys

    stage = stages.stage(name)
    arguments = {
        argument.parameter: getattr(args, argument.parameter) for argument in stage.ARGUMENTS
    }
    if takes_config(stage):
        keys = stage_keys(stage.CONFIG_KEYS, **arguments)
        arguments["config"] = stage_config(args.config, keys)
    returned = stage.run(**arguments)
    # generate's `run` returns its exit code; the others nothing, or what they wrote.
    return returned if isinstance(returned, int) else 0


def add_argument(command: argparse.ArgumentParser, argument: stages.Argument) -> None:
    settings: dict = {"help": argument.help, "type": argument.type}
    if argument.nargs is not None:
        settings["nargs"] = argument.nargs
    if argument.choices is not None:
        settings["choices"] = argument.choices
    if argument.default is not stages.REQUIRED:
        settings["default"] = argument.default
    if argument.flag.startswith("--"):
        settings["dest"] = argument.parameter
        if argument.choices is None:  # the help names the value as the flag does, not the dest
            settings["metavar"] = argument.flag.removeprefix("--").replace("-", "_").upper()
        settings["required"] = argument.default is stages.REQUIRED
    command.add_argument(argument.flag, **settings)


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="digi2real", description=__doc__)
    main.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = main.add_subparsers(dest="command", required=True)
    command = sub.add_parser("config", help="print the resolved config: what will run")
    command.add_argument("--config", required=True, help=CONFIG_HELP)
    command.set_defaults(run=cmd_config)
    for name in stages.NAMES:
        stage = stages.stage(name)
        command = sub.add_parser(name.replace("_", "-"), help=stage.HELP)
        if takes_config(stage):
            command.add_argument("--config", required=True, help=CONFIG_HELP)
        for argument in stage.ARGUMENTS:
            add_argument(command, argument)
        command.set_defaults(run=functools.partial(run_stage, name))
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
