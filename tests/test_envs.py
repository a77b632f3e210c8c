"""envs/*.yaml (for `snakemake --sdm conda`) agree with pyproject.toml, statically: no conda.

pyproject.toml's [project] dependencies are the one package list. Each conda environment lists
the same packages in conda-forge's names, with the same version floors, plus its extras (the GPU
env runs generation, so it has the `lcm` and `gpu` extras) and a few env-only packages. The GPU
env asks for CUDA builds and pins `cuda-version`; the CPU env asks for CPU builds; conda-forge is
the only channel. `problems()` does every check over parsed data, so the tests can feed it
broken copies.
"""

from __future__ import annotations

import copy
import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
ENVS = ("cpu", "gpu")

# PyPI name -> conda-forge name, where they differ (the rest are the same on both).
PYPI_TO_CONDA = {
    "torch": "pytorch",
    "opencv-python": "opencv",
    "opencv-python-headless": "opencv",
    # matplotlib-base: matplotlib without the Qt GUI toolkit, which jobs never use
    "matplotlib": "matplotlib-base",
    # conda-forge has one onnxruntime package, its CUDA builds are what PyPI calls -gpu
    "onnxruntime-gpu": "onnxruntime",
}
# Extras of pyproject.toml whose packages an environment also needs. `workflow` (Snakemake) is
# in none: jobs only run `python -m digi2real` inside the environment.
ENV_EXTRAS = {"cpu": (), "gpu": ("lcm", "gpu")}
# Packages an environment may list that are not Python dependencies of digi2real.
ENV_ONLY = {"cpu": {"python", "pip"}, "gpu": {"python", "pip", "cuda-version"}}
# Packages with CPU and CUDA builds on conda-forge, and build strings of each kind from there
# (pytorch: cuda129_mkl_py311_h..._300 / cpu_generic_py311_h..._0; onnxruntime: ..._cuda129).
VARIANT_BUILDS = {
    "pytorch": {
        "cuda": ("cuda129_mkl_py311_h5e1a0b2_300", "cuda126_generic_py311_h0a1b2c3_200"),
        "cpu": ("cpu_mkl_py311_h5e1a0b2_100", "cpu_generic_py311_h0a1b2c3_0"),
    },
    "onnxruntime": {
        "cuda": ("py311h3d5f9e1_200_cuda129", "py311hd0df001_1_cuda"),
        "cpu": ("py311h9b445dc_0_cpu",),
    },
}
ENV_BUILD = {"cpu": "cpu", "gpu": "cuda"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Spec:
    """One conda dependency: `name`, `name version`, `name version build`, `name=v=build`."""

    name: str
    version: str = ""
    build: str = ""
    channel: str = ""


def parse_conda_spec(text: str) -> Spec:
    text = text.strip()
    channel = ""
    if "::" in text:
        channel, text = text.split("::", 1)
    match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", text)
    if match is None:
        raise ValueError(f"not a conda package spec: {text!r}")
    name, rest = match.groups()
    parts = rest.split()
    if len(parts) > 2:
        raise ValueError(f"not a conda package spec: {text!r}")
    if len(parts) == 2:
        return Spec(normalize(name), parts[0], parts[1], channel)
    version = build = ""
    if parts:
        version = parts[0]
        if version.startswith("=") and not version.startswith("=="):
            version = version[1:]  # name=1.2 (fuzzy) or name=1.2=build
        split = re.fullmatch(r"(.*[^=<>!~])=([^=<>!~,|]+)", version)
        if split:
            version, build = split.groups()
    return Spec(normalize(name), version, build, channel)


def env_specs(env: dict) -> tuple[dict[str, Spec], list[str]]:
    """The environment's packages by (conda) name; `pip:` entries under their conda names."""
    specs: dict[str, Spec] = {}
    problems = []
    for entry in env.get("dependencies") or []:
        if isinstance(entry, dict) and set(entry) == {"pip"}:
            for line in entry["pip"]:
                requirement = Requirement(line)
                name = PYPI_TO_CONDA.get(normalize(requirement.name), normalize(requirement.name))
                specs[name] = Spec(name, str(requirement.specifier), "", "pypi")
            continue
        if not isinstance(entry, str):
            problems.append(f"dependency {entry!r} is neither a package spec nor a pip: list")
            continue
        spec = parse_conda_spec(entry)
        if spec.name in specs:
            problems.append(f"{spec.name} is listed twice")
        specs[spec.name] = spec
    return specs, problems


def required(pyproject: dict, extras: tuple[str, ...]) -> dict[str, Requirement]:
    """The runtime requirements of pyproject.toml (+ extras), by conda-forge name."""
    project = pyproject["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    requirements = {}
    for line in lines:
        requirement = Requirement(line)
        name = normalize(requirement.name)
        requirements[PYPI_TO_CONDA.get(name, name)] = requirement
    return requirements


def conda_specifier(version: str) -> SpecifierSet | None:
    try:
        return SpecifierSet(version)
    except InvalidSpecifier:
        return None


def builds_matched(build: str, kind: str, package: str) -> list[str]:
    return [b for b in VARIANT_BUILDS[package][kind] if build and fnmatch.fnmatchcase(b, build)]


def problems(env: dict, pyproject: dict, kind: str) -> list[str]:
    """Everything wrong with environment `kind` ("cpu" or "gpu") against pyproject.toml."""
    found = []
    channels = env.get("channels") or []
    if "conda-forge" not in channels:
        found.append(f"channels {channels}: conda-forge is missing")
    others = [c for c in channels if c not in ("conda-forge", "nodefaults")]
    if others:
        found.append(f"channels {channels}: only conda-forge (and nodefaults), not {others}")
    if "nodefaults" not in channels:
        found.append(f"channels {channels}: add nodefaults, or conda may mix in `defaults`")

    specs, listing = env_specs(env)
    found += listing
    for spec in specs.values():
        if spec.channel and spec.channel != "pypi":
            found.append(f"{spec.name}: from channel {spec.channel!r}, not conda-forge")
    if any(s.channel == "pypi" for s in specs.values()) and "pip" not in specs:
        found.append("a pip: section needs pip in the dependencies")

    wanted = required(pyproject, ENV_EXTRAS[kind])
    for name, requirement in wanted.items():
        if name not in specs:
            found.append(f"{name} ({requirement}) is in pyproject.toml but not in the env")
            continue
        spec_set = conda_specifier(specs[name].version)
        if spec_set != requirement.specifier:
            found.append(
                f"{name}: version {specs[name].version!r} in the env, "
                f"{str(requirement.specifier)!r} in pyproject.toml"
            )
    extra = sorted(set(specs) - set(wanted) - ENV_ONLY[kind])
    if extra:
        found.append(f"{extra} are in the env but not in pyproject.toml (nor env-only)")

    python = specs.get("python")
    requires = SpecifierSet(pyproject["project"]["requires-python"])
    version = python.version.removesuffix(".*") if python else ""
    if not re.fullmatch(r"\d+\.\d+", version):
        found.append(f"python must be pinned to a minor version (python=3.X), not {version!r}")
    elif version not in requires:
        found.append(f"python {version} is outside requires-python {requires}")

    build_kind = ENV_BUILD[kind]
    other_kind = "cpu" if build_kind == "cuda" else "cuda"
    for package in VARIANT_BUILDS:
        spec = specs.get(package)
        if spec is None:
            continue  # reported above
        if not builds_matched(spec.build, build_kind, package) or builds_matched(
            spec.build, other_kind, package
        ):
            found.append(
                f"{package}: build {spec.build!r} must select conda-forge's {build_kind} builds "
                f"(e.g. {VARIANT_BUILDS[package][build_kind][0]}) and not its {other_kind} ones"
            )

    cuda = specs.get("cuda-version")
    if kind == "gpu":
        if cuda is None or not re.fullmatch(r"=?\d+(\.\d+)?(\.\*)?", cuda.version):
            got = cuda.version if cuda else None
            found.append(
                f"cuda-version must be pinned to a release (cuda-version=12.X), not {got!r}"
            )
    return found


def load(kind: str) -> dict:
    return yaml.safe_load((ROOT / "envs" / f"{kind}.yaml").read_text())


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.mark.parametrize("kind", ENVS)
def test_env_agrees_with_pyproject(kind, pyproject):
    assert problems(load(kind), pyproject, kind) == []


def test_gpu_env_explains_its_cuda_version_pin():
    text = (ROOT / "envs" / "gpu.yaml").read_text()
    for needle in ("cuda-version", "nvidia-smi", "CONDA_OVERRIDE_CUDA"):
        assert needle in text


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("python=3.11", Spec("python", "3.11")),
        ("pytorch=*=cuda*", Spec("pytorch", "*", "cuda*")),
        ("pytorch>=2.1=cuda*", Spec("pytorch", ">=2.1", "cuda*")),
        ("pytorch >=2.1 cuda*", Spec("pytorch", ">=2.1", "cuda*")),
        ("onnxruntime >=1.17 *cuda*", Spec("onnxruntime", ">=1.17", "*cuda*")),
        ("jsonschema>=4.18", Spec("jsonschema", ">=4.18")),
        ("PyYAML", Spec("pyyaml")),
        ("pytorch::pytorch", Spec("pytorch", channel="pytorch")),
    ],
)
def test_parse_conda_spec(text, spec):
    assert parse_conda_spec(text) == spec


def _replace(env: dict, name: str, new: str | None) -> None:
    deps = env["dependencies"]
    index = next(i for i, d in enumerate(deps) if isinstance(d, str) and d.startswith(name))
    if new is None:
        del deps[index]
    else:
        deps[index] = new


def _break(kind, change):
    """A copy of envs/{kind}.yaml and of pyproject.toml with `change` applied to them."""

    def apply(pyproject):
        env = copy.deepcopy(load(kind))
        project = copy.deepcopy(pyproject)
        change(env, project)
        return env, project

    return apply


BROKEN = {
    "a dependency missing": (
        "cpu",
        lambda env, pp: _replace(env, "h5py", None),
        "h5py",
    ),
    "a new pyproject dependency": (
        "gpu",
        lambda env, pp: pp["project"]["dependencies"].append("scipy>=1.10"),
        "scipy",
    ),
    "an lcm package missing from the GPU env": (
        "gpu",
        lambda env, pp: _replace(env, "peft", None),
        "peft",
    ),
    "the gpu extra's onnxruntime-gpu floor bumped alone": (
        "gpu",
        lambda env, pp: pp["project"]["optional-dependencies"].__setitem__(
            "gpu", ["onnxruntime-gpu>=1.20"]
        ),
        "onnxruntime: version",
    ),
    "an extra package": (
        "cpu",
        lambda env, pp: env["dependencies"].append("peft >=0.10"),
        "not in pyproject.toml",
    ),
    "the old pytorch channel's metapackage": (
        "gpu",
        lambda env, pp: env["dependencies"].append("pytorch-cuda=12.4"),
        "pytorch-cuda",
    ),
    "a version floor that differs": (
        "cpu",
        lambda env, pp: _replace(env, "numpy", "numpy >=1.20"),
        "numpy: version",
    ),
    "a pyproject floor bumped alone": (
        "gpu",
        lambda env, pp: pp["project"]["dependencies"].__setitem__(
            pp["project"]["dependencies"].index("diffusers>=0.30"), "diffusers>=0.31"
        ),
        "diffusers: version",
    ),
    "the pytorch channel": (
        "gpu",
        lambda env, pp: env["channels"].append("pytorch"),
        "only conda-forge",
    ),
    "the defaults channel": (
        "cpu",
        lambda env, pp: env["channels"].__setitem__(1, "defaults"),
        "nodefaults",
    ),
    "a channel-prefixed package": (
        "gpu",
        lambda env, pp: _replace(env, "pytorch ", "pytorch::pytorch >=2.1 cuda*"),
        "from channel",
    ),
    "GPU pytorch without a CUDA build": (
        "gpu",
        lambda env, pp: _replace(env, "pytorch ", "pytorch >=2.1"),
        "pytorch: build",
    ),
    "GPU pytorch with a CPU build": (
        "gpu",
        lambda env, pp: _replace(env, "pytorch ", "pytorch=*=cpu*"),
        "pytorch: build",
    ),
    "GPU pytorch with a build glob that matches both": (
        "gpu",
        lambda env, pp: _replace(env, "pytorch ", "pytorch >=2.1 *"),
        "pytorch: build",
    ),
    "GPU onnxruntime without a CUDA build": (
        "gpu",
        lambda env, pp: _replace(env, "onnxruntime", "onnxruntime >=1.17"),
        "onnxruntime: build",
    ),
    "CPU pytorch with a CUDA build": (
        "cpu",
        lambda env, pp: _replace(env, "pytorch ", "pytorch >=2.1 cuda*"),
        "pytorch: build",
    ),
    "CPU onnxruntime unconstrained": (
        "cpu",
        lambda env, pp: _replace(env, "onnxruntime", "onnxruntime >=1.17"),
        "onnxruntime: build",
    ),
    "no cuda-version pin": (
        "gpu",
        lambda env, pp: _replace(env, "cuda-version", None),
        "cuda-version must be pinned",
    ),
    "an unpinned cuda-version": (
        "gpu",
        lambda env, pp: _replace(env, "cuda-version", "cuda-version"),
        "cuda-version must be pinned",
    ),
    "cuda-version in the CPU env": (
        "cpu",
        lambda env, pp: env["dependencies"].append("cuda-version=12.9"),
        "cuda-version",
    ),
    "a python outside requires-python": (
        "cpu",
        lambda env, pp: _replace(env, "python", "python=3.9"),
        "requires-python",
    ),
    "an unpinned python": (
        "gpu",
        lambda env, pp: _replace(env, "python", "python"),
        "python must be pinned",
    ),
    "a pip section without pip": (
        "cpu",
        lambda env, pp: (
            _replace(env, "insightface", None),
            env["dependencies"].append({"pip": ["insightface>=0.7.3"]}),
        ),
        "needs pip",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_env_is_caught(case, pyproject):
    kind, change, expected = BROKEN[case]
    env, project = _break(kind, change)(pyproject)
    found = problems(env, project, kind)
    assert any(expected in problem for problem in found), found


def test_a_pip_section_counts_under_conda_names(pyproject):
    env = copy.deepcopy(load("cpu"))
    _replace(env, "insightface", None)
    _replace(env, "opencv", None)
    env["dependencies"] += ["pip", {"pip": ["insightface>=0.7.3", "opencv-python>=4.10"]}]
    assert problems(env, pyproject, "cpu") == []
