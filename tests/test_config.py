"""The config: one source of defaults (the schema), config.yaml in agreement, one resolution for
the workflow and the CLI, stage slices checked, one stage module per rule."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config

from digi2real import config as cfg
from digi2real.config import config_slice, resolve_config, stage_config, stage_keys
from digi2real.errors import ConfigError
from tests.conftest import LOCAL_SNAKEMAKE_PATH

REPO = Path(__file__).resolve().parents[1]
STAGES = sorted(p.stem for p in (REPO / "digi2real/stages").glob("*.py") if p.stem != "__init__")

pytestmark = pytest.mark.unit


def settings_of(node: dict, prefix: str = "") -> dict[str, dict]:
    """Every setting the schema defines, dotted key -> its schema; a dataset's `face:` override
    is one setting (its keys inherit `face:`)."""
    found = {}
    for name, child in cfg._deref(node).get("properties", {}).items():
        key = prefix + name
        found[key] = child
        if "properties" in cfg._deref(child) and "face_override" not in child.get("$ref", ""):
            found.update(settings_of(child, key + "."))
    return found


def leaves(config: dict, prefix: str = "") -> dict:
    found = {}
    for name, value in config.items():
        if isinstance(value, dict) and value:
            found.update(leaves(value, f"{prefix}{name}."))
        else:
            found[prefix + name] = value
    return found


# --- config.yaml and the schema ------------------------------------------------------------


@pytest.mark.parametrize("path", ["config.yaml", "demo.yaml", "digi2real/config.schema.yaml"])
def test_libyaml_reads_the_configs_and_schema_as_pyyaml_does(path):
    """The config and the schema are read with libyaml's loader (config.YAML_LOADER) where
    PyYAML has it, as in its wheels: the same values, types included, as PyYAML's own loader."""
    assert cfg.YAML_LOADER is yaml.CSafeLoader
    text = (REPO / path).read_text()
    ours, theirs = yaml.load(text, Loader=cfg.YAML_LOADER), yaml.safe_load(text)
    assert json.dumps(ours, sort_keys=True) == json.dumps(theirs, sort_keys=True)
    assert ours == theirs


def test_config_yaml_holds_every_setting_with_the_schemas_default():
    shipped = leaves(yaml.safe_load((REPO / "config.yaml").read_text()))
    schema_leaves = {
        key: node
        for key, node in settings_of(cfg.schema()).items()
        if "properties" not in cfg._deref(node) or "face_override" in node.get("$ref", "")
    }
    with_default = {k for k, node in schema_leaves.items() if "default" in node}
    # A key without a default (selection.file, t.low, ...) belongs to one mode only; were it in
    # config.yaml, Snakemake's merge of a user's file over config.yaml would carry it along.
    assert set(shipped) == with_default
    for key in with_default:
        assert shipped[key] == schema_leaves[key]["default"], key


def test_config_yaml_resolves_to_the_schemas_defaults():
    shipped = resolve_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    assert shipped == resolve_config({})


def test_production_defaults_are_the_methods():
    config = resolve_config({})
    generation = config["generation"]
    assert (generation["height"], generation["width"]) == (512, 512)
    assert (generation["steps"], generation["guidance"]) == (25, 3.0)
    assert generation["scheduler"] == "dpmsolver++" and generation["dtype"] == "auto"
    assert config["plan"]["images_per_identity"] == 20
    assert config["plan"]["identities_per_shard"] == 100
    assert config["demo"] is None and config["ffhq"]["count"] is None
    assert config["face"]["det_size"] < 640  # tight crops: METHOD.md


@pytest.mark.parametrize(
    "user",
    [
        {"plan": {"t": {"mode": "uniform", "low": 0.2, "high": 0.6}}},
        {"plan": {"t": {"value": 0.3}}, "digiface": {"selection": {"start": 5}}},
        {"digiface": {"selection": {"mode": "random", "count": 30, "seed": 4}}},
        {"digiface": {"selection": {"mode": "list", "file": "ids.txt"}}},
        {"face": {"det_size": 320}, "ffhq": {"face": {"pad": 0.2}}},
        {"models": {"lcm_lora": "lcm.safetensors"}},
        {"generation": {"steps": 30, "height": 256, "width": 256}},
    ],
)
def test_snakemakes_merge_over_config_yaml_resolves_as_the_file_alone(user):
    """Snakemake reads config.yaml, then a user's --configfile over it; the CLI reads the user's
    file alone. Both must run the same settings."""
    merged = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(merged, json.loads(json.dumps(user)))
    assert resolve_config(merged) == resolve_config(user)


def test_dependent_defaults():
    fast = resolve_config({"models": {"lcm_lora": "lcm.safetensors"}})["generation"]
    assert (fast["steps"], fast["guidance"], fast["scheduler"]) == (4, 1.0, "lcm")
    chosen = resolve_config({"models": {"lcm_lora": "x"}, "generation": {"steps": 2}})
    assert chosen["generation"]["steps"] == 2
    faces = resolve_config({"face": {"det_size": 320, "pad": 0.1}, "ffhq": {"face": {"pad": 0.3}}})
    assert faces["digiface"]["face"] == faces["face"] == faces["quality"]["face"]
    assert faces["ffhq"]["face"] == {**faces["face"], "pad": 0.3}
    assert resolve_config(faces) == faces  # resolving is idempotent


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            {"generaton": {}},
            "my.yaml: config key generaton is not a setting; did you mean generation?",
        ),
        (
            {"face": {"det_sise": 3}},
            "config key face.det_sise is not a setting; did you mean face.det_size?",
        ),
        (
            {"ffhq": {"face": {"padding": 1}}},
            "config key ffhq.face.padding is not a setting; did you mean ffhq.face.pad?",
        ),
        (
            {"plan": {"t": {"mode": "uniform", "low": 0.7, "high": 0.3}}},
            "config key plan.t: low 0.7 > high 0.3",
        ),
        ({"plan": {"t": {"mode": "list"}}}, "config key plan.t: 'values' is a required property"),
        (
            {"digiface": {"selection": {"mode": "random"}}},
            "config key digiface.selection.count: None is not of type 'integer'",
        ),
        ({"generation": {"device": "gpu"}}, "config key generation.device: 'gpu' does not match"),
        ({"generation": {"steps": True}}, "config key generation.steps: True is not of type"),
        (
            {"models": {"lcm_lora": "x"}, "generation": {"scheduler": "ddim"}},
            "config key generation.scheduler: 'ddim' does not go with models.lcm_lora",
        ),
        (
            {"generation": {"scheduler": "lcm"}},
            "config key generation.scheduler: 'lcm' does not go with",
        ),
    ],
)
def test_a_bad_config_is_one_line_naming_the_key(raw, message):
    with pytest.raises(ConfigError) as error:
        resolve_config(raw, "my.yaml")
    assert str(error.value).startswith("my.yaml: ") and message in str(error.value)
    assert "\n" not in str(error.value)


# --- stage slices ----------------------------------------------------------------------------


def stage(name: str):
    return importlib.import_module(f"digi2real.stages.{name}")


@pytest.mark.parametrize("name", STAGES)
def test_every_stage_key_is_a_setting(name):
    # `{recognizer}`: the model of each embedding space the workflow embeds in; a stage with
    # keys for each dataset, each dataset's.
    keys = stage(name).CONFIG_KEYS
    for dataset in keys if isinstance(keys, dict) else ["digiface"]:
        for recognizer in stage("embed").SPACES.values():
            for key in stage_keys(keys, dataset=dataset, recognizer=recognizer):
                cfg.subschema(key)


def test_stage_modules_import_without_numpy_or_torch():
    """Snakemake imports them at parse time, maybe in a Python without the science stack."""
    blocked = "import sys; sys.modules.update(numpy=None, torch=None, h5py=None, pyarrow=None)"
    imports = "; ".join(f"import digi2real.stages.{name}" for name in STAGES)
    subprocess.run([sys.executable, "-c", f"{blocked}; {imports}"], check=True, cwd=REPO)


def test_an_inline_slice_is_checked_against_its_keys():
    keys = stage("generate").CONFIG_KEYS
    good = config_slice(resolve_config({}), keys)
    assert stage_config(json.dumps(good), keys) == good
    bad = json.loads(json.dumps(good))
    bad["generation"]["height"] = 100
    with pytest.raises(ConfigError, match="config key generation.height: 100 is not a multiple"):
        stage_config(json.dumps(bad), keys)
    missing = json.loads(json.dumps(good))
    del missing["delta"]
    with pytest.raises(ConfigError, match="config key delta.scale is missing"):
        stage_config(json.dumps(missing), keys)
    extra = {**good, "seed": 3}
    with pytest.raises(ConfigError, match="keys its stage does not read"):
        stage_config(json.dumps(extra), keys)


def test_a_file_gives_the_stage_the_same_slice_as_the_workflow(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("generation: {height: 256}\nmodels: {lcm_lora: lcm.safetensors}\n")
    keys = stage("generate").CONFIG_KEYS
    from_file = stage_config(path, keys)
    assert from_file == config_slice(resolve_config(yaml.safe_load(path.read_text())), keys)
    assert from_file["generation"]["steps"] == 4 and from_file["generation"]["height"] == 256


def test_the_config_command_prints_the_resolved_config(tmp_path):
    """After the dry run's checks, which a config whose models and data the demo builds
    passes (the defaults' paths, models/ and data/, are not in the repository)."""
    demo = yaml.safe_load((REPO / "demo.yaml").read_text())
    given = {**demo, "plan": {**demo["plan"], "images_per_identity": 5}}
    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump(given))
    result = subprocess.run(
        [sys.executable, "-m", "digi2real", "config", "--config", str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    printed = yaml.safe_load(result.stdout)
    assert printed == resolve_config(given)
    assert list(printed) == list(cfg.schema()["properties"])  # config.yaml's order
    bare = tmp_path / "bare.yaml"
    bare.write_text("plan: {images_per_identity: 5}\n")
    failed = subprocess.run(
        [sys.executable, "-m", "digi2real", "config", "--config", str(bare)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr.startswith("digi2real: error: config key models.")


# --- one module per rule ---------------------------------------------------------------------


def test_one_stage_module_per_rule_named_as_the_rule(tmp_path):
    # With a sweep, whose rules are the run's used again (sweep_<rule>) and report_sweep.
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("sweep: {settings: {delta.scale: [0.5]}}\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--list-rules",
            "--configfile",
            "demo.yaml",
            str(sweep),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "PATH": LOCAL_SNAKEMAKE_PATH},
    )
    listed = set(result.stdout.split()) - {"all"}
    used_again = {rule for rule in listed if rule.startswith("sweep_")}
    assert {rule.removeprefix("sweep_") for rule in used_again} <= set(STAGES)
    rules = listed - used_again
    assert rules == set(STAGES)
    cli = subprocess.run(
        [sys.executable, "-m", "digi2real", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for rule in rules:
        assert rule.replace("_", "-") in cli, rule


def test_an_interrupted_command_ends_in_one_line_with_the_shells_code(monkeypatch, capsys):
    """Ctrl-C in a job: no traceback of KeyboardInterrupt in its log, exit code 130."""
    from digi2real import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_config", interrupted)
    assert cli.main(["config", "--config", "x.yaml"]) == 130
    assert capsys.readouterr().err == "digi2real: config interrupted\n"
