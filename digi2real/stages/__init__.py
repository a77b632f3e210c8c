"""One module per rule of the workflow, named exactly as its rule.

Each stage module exposes `CONFIG_KEYS`, the dotted config keys it reads (the rule's `params`
are the slice of the resolved config at these keys, so a change to any of them reruns the rule
and nothing else), and `run`, its one entry function from its inputs to its outputs. `HELP` and
`ARGUMENTS` make its command of the CLI, `digi2real <rule>` (digi2real/cli.py): each argument
fills the parameter of `run` it names. Stage modules import numpy, torch and the science modules
inside `run`: Snakemake imports them at parse time, in whatever Python runs it, to read
`CONFIG_KEYS`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

# The rules, one for each module of this package: a new module is a new rule's stage.
NAMES: tuple[str, ...] = tuple(sorted(module.name for module in pkgutil.iter_modules(__path__)))


def stage(name: str) -> ModuleType:
    """The stage module of the rule `name`."""
    return importlib.import_module(f"{__name__}.{name}")


REQUIRED = object()  # an Argument's default where it has none


@dataclass(frozen=True)
class Argument:
    """One argument of a stage's command: `flag` is `--name` or a positional's name. It fills
    `run`'s parameter `dest`, by default the flag's name; it is a path unless `type` says
    otherwise, and an option is required unless it has a `default`."""

    flag: str
    help: str
    dest: str | None = None
    type: Callable[[str], Any] = Path
    nargs: str | None = None
    default: Any = REQUIRED
    choices: tuple[str, ...] | None = None

    @property
    def parameter(self) -> str:
        """The parameter of `run` this argument fills."""
        return self.dest or self.flag.removeprefix("--").replace("-", "_")
