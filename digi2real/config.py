"""The config: loaded, validated and completed in one place, for the workflow and the CLI alike.

`digi2real/config.schema.yaml` is the one source of defaults and of validation. A full config
(a YAML file) goes through `resolve_config` once: validated, its defaults filled, then the few
defaults that depend on other keys resolved. A stage receives only the keys it reads (its
`CONFIG_KEYS`), as a slice of the resolved config; a slice handed over inline is checked
against the sub-schema of its keys.

Only the standard library, PyYAML and jsonschema: Snakemake imports this at parse time.
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from digi2real.errors import ConfigError

Config = dict[str, Any]

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
# Sections whose `face:` overrides the top-level `face:` key by key.
FACE_SECTIONS = ("digiface", "ffhq", "gallery", "quality")
# Method defaults (METHOD.md) and those of Arc2Face's LCM-LoRA fast mode (its README).
STEPS = {"standard": 25, "fast": 4}
GUIDANCE = {"standard": 3.0, "fast": 1.0}
SCHEDULER = {"standard": "dpmsolver++", "fast": "lcm"}
# libyaml's safe loader where PyYAML was built with it (its wheels are): the same documents in a
# tenth of the time. Every job and every Snakemake parse reads the schema, 25 kB: 30 ms in
# Python, 4 ms in C (measured on 2 cores).
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def schema() -> dict:
    return yaml.load(SCHEMA_PATH.read_text(), Loader=YAML_LOADER)


def read_config_file(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        config = yaml.load(path.read_text(), Loader=YAML_LOADER)
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(f"config file {path} must hold a mapping at top level")
    return config


def resolve_config(raw: Config, source: str = "config") -> Config:
    """The config that will run: `raw` validated, every default filled. `source` (a file name)
    starts every error message.

    Defaults that depend on other keys are resolved here and nowhere else:
    - `digiface.face`, `ffhq.face`, `gallery.face` and `quality.face` inherit each key they
      leave out from `face:` (each image source may need its own detection);
    - `generation.steps`, `generation.guidance` and `generation.scheduler`, left null, are
      the method's 25, 3.0 and dpmsolver++, or with `models.lcm_lora` set the fast mode's 4,
      1.0 and lcm.
    """
    _validate(raw, schema(), source)
    config = copy.deepcopy(raw)
    for section in FACE_SECTIONS:
        node = config.setdefault(section, {})
        node["face"] = {**config.get("face", {}), **(node.get("face") or {})}
    _fill_defaults(config, schema())
    generation = config["generation"]
    mode = "standard" if config["models"]["lcm_lora"] is None else "fast"
    for key, defaults in (("steps", STEPS), ("guidance", GUIDANCE), ("scheduler", SCHEDULER)):
        if generation[key] is None:
            generation[key] = defaults[mode]
    if (generation["scheduler"] == "lcm") != (mode == "fast"):
        raise ConfigError(
            f"{source}: config key generation.scheduler: {generation['scheduler']!r} does not "
            "go with models.lcm_lora (LCM-LoRA runs with lcm, and lcm only with LCM-LoRA)"
        )
    t = config["plan"]["t"]
    if t["mode"] == "uniform" and t["low"] > t["high"]:
        raise ConfigError(f"{source}: config key plan.t: low {t['low']} > high {t['high']}")
    _validate(config, schema(), source)
    return _in_schema_order(config, schema())


def load_config(path: str | Path) -> Config:
    """A YAML config file, resolved."""
    return resolve_config(read_config_file(path), str(path))


def stage_config(source: str | Path, keys: list[str]) -> Config:
    """The slice of the config at `keys` that a stage reads: from a YAML file (resolved whole,
    then sliced) or from inline JSON (how the workflow hands each job its slice, which is
    checked against the sub-schema of its keys)."""
    text = str(source)
    if not text.lstrip().startswith("{"):
        return config_slice(load_config(text), keys)
    try:
        given = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"inline config is not valid JSON: {error}") from None
    if not isinstance(given, dict):
        raise ConfigError("inline config must be a JSON object")
    for key in keys:
        _validate(lookup(given, key, "inline config"), subschema(key), "inline config", key)
    if config_slice(given, keys) != given:
        raise ConfigError(f"inline config holds keys its stage does not read (it reads {keys})")
    return given


def lookup(config: Config, key: str, source: str = "config") -> Any:
    """The value at the dotted `key`; an error naming it when absent (never a default)."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{source}: config key {key} is missing")
        node = node[part]
    return node


def config_slice(config: Config, keys: list[str]) -> Config:
    """The parts of `config` at the dotted `keys`, nested as in the config."""
    result: Config = {}
    for key in keys:
        node = result
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = copy.deepcopy(lookup(config, key))
    return result


def stage_keys(keys: list[str] | dict[str, list[str]], **wildcards: str) -> list[str]:
    """A stage's CONFIG_KEYS with its wildcards filled in, e.g. `{dataset}.face`; where a stage
    reads other keys for each dataset (`{dataset: keys}`), those of `wildcards["dataset"]`."""
    if isinstance(keys, dict):
        keys = keys[wildcards["dataset"]]
    return [key.format(**wildcards) for key in keys]


def resolve_path(config: Config, key: str) -> Path | None:
    """A path from the config; relative paths are taken from the working directory."""
    value = lookup(config, key)
    return None if value is None else Path(str(value)).expanduser()


def config_hash(config: Config) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def subschema(key: str) -> dict:
    """The schema of the value at the dotted `key`, with the definitions it refers to."""
    node = schema()
    for part in key.split("."):
        properties = _deref(node).get("properties", {})
        if part not in properties:
            raise ConfigError(f"config key {key} is not a setting")
        node = properties[part]
    return {**node, "$defs": schema()["$defs"]}


def check_value(value: Any, key: str, source: str, named: str | None = None) -> None:
    """`value` checked against the schema of the dotted `key`; an error names `named` (the
    key where the value was written) or else `key`."""
    _validate(value, subschema(key), source, named or key)


def _deref(node: dict) -> dict:
    """`node` with a local `$ref` replaced by what it points to (its own keys win)."""
    while "$ref" in node:
        target: Any = schema()
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _fill_defaults(value: Any, node: dict) -> None:
    node = _deref(node)
    if not isinstance(value, dict):
        return
    for name, child in node.get("properties", {}).items():
        if name not in value:
            # The property's own default first: a `$ref`'s target may carry another.
            default = child.get("default", _deref(child).get("default", ...))
            if default is ...:
                continue
            value[name] = copy.deepcopy(default)
        _fill_defaults(value[name], child)


def _in_schema_order(value: Any, node: dict) -> Any:
    """`value` with its keys in the schema's order: `digi2real config` reads like config.yaml."""
    properties = _deref(node).get("properties")
    if not isinstance(value, dict) or properties is None:
        return value
    return {
        name: _in_schema_order(value[name], properties[name])
        for name in properties
        if name in value
    }


def _validate(value: Any, node: dict, source: str, key: str = "") -> None:
    validator = jsonschema.Draft202012Validator({**node, "$defs": schema()["$defs"]})
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return
    path = ".".join([key] * bool(key) + [str(part) for part in error.absolute_path])
    if error.validator == "additionalProperties":
        known = list(_deref(error.schema).get("properties", {}))
        unknown = sorted(set(error.instance) - set(known))
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f"; did you mean {_join(path, close[0])}?" if close else ""
        where = f" (the settings there: {', '.join(known)})" if not close else ""
        raise ConfigError(
            f"{source}: config key {_join(path, unknown[0])} is not a setting{hint}{where}"
        )
    raise ConfigError(f"{source}: config key {path or '(top level)'}: {error.message}")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
