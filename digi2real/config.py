"""Loading the YAML config and reading typed values from it with errors that name the key."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from digi2real.errors import ConfigError

Config = dict[str, Any]


def load_config(source: str | Path) -> Config:
    """A YAML config file, or the config as inline JSON (how the workflow passes each rule the
    sections it depends on). Relative paths in it are taken from the working directory."""
    text = str(source)
    if text.lstrip().startswith("{"):
        try:
            config = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"inline config is not valid JSON: {error}") from None
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            config = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"config {source} must hold a mapping at top level")
    return config


def get(
    config: Config, key: str, default: Any = ..., *, kind: type | tuple[type, ...] | None = None
):
    """Value at the dotted `key`; `default` when absent, an error naming the key when required."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node or node[part] is None:
            if default is ...:
                raise ConfigError(f"config key {key} is required but missing")
            return default
        node = node[part]
    if kind is not None:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python, but `steps: true` is a typo, not a number.
        if not isinstance(node, kinds) or (isinstance(node, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(f"config key {key} must be {names}, got {node!r}")
    return node


def resolve_path(config: Config, key: str, default: Any = ...) -> Path | None:
    """A path from the config; relative paths are taken from the config file's folder."""
    value = get(config, key, default)
    if value is None:
        return None
    path = Path(str(value)).expanduser()
    if not path.is_absolute():
        path = Path(config.get("_base_dir", Path.cwd())) / path
    return path


def subset(config: Config, keys: list[str]) -> Config:
    """The parts of `config` at the dotted `keys`, nested as in the config."""
    result: Config = {}
    for key in keys:
        value = get(config, key, None)
        if value is None:
            continue
        node = result
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return result


def config_hash(config: Config) -> str:
    public = {key: value for key, value in config.items() if not key.startswith("_")}
    return hashlib.sha256(json.dumps(public, sort_keys=True, default=str).encode()).hexdigest()
