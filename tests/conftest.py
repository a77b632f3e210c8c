"""Shared fixtures: the embedded demo assets (tiny models in the real layouts), built once."""

import os
import shutil
import signal
import sys
from pathlib import Path

# Before anything loads torch's OpenMP runtime, here and in every process the tests start: the
# suite runs four workers on two cores (pyproject.toml), and an OpenMP thread that spins while
# it waits for work (libgomp's default) burns a core another worker needs. Waiting passively
# changes no result, only the CPU time.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import yaml  # noqa: E402

from digi2real.config import load_config  # noqa: E402
from digi2real.demo import build_demo_assets  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# The PATH of the tests' local snakemake runs: first a `scontrol` that fails at once. The SLURM
# executor plugin, which snakemake imports whatever the executor, asks `scontrol show config`
# for the cluster's MinJobAge at import, with a 10 s timeout (plugin 2.8): once the SLURM tests
# installed their cluster and took it down, every snakemake command would wait for it.
LOCAL_SNAKEMAKE_PATH = os.pathsep.join([str(REPO / "tests/no_slurm"), os.environ["PATH"]])


def snakemake_argv(workdir: Path, *args: str) -> list[str]:
    """This checkout's workflow run by this Python's snakemake in `workdir`, on the config file
    there, with `args` after."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        *args,
    ]


def default_sigint() -> None:
    """preexec_fn of a process a test will Ctrl-C: SIGINT at its default, as in a terminal. A
    shell that runs the suite in the background without job control (`make test &` in a
    script) ignores SIGINT in it; an ignored signal stays ignored across exec, so Python would
    install no KeyboardInterrupt handler and the Ctrl-C would never reach snakemake (seen:
    the interrupted run went on to the end, five SIGINTs later)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# The modules that take longest, longest first (measured with --durations and a JUnit report on
# 2 cores, under the suite's load, 2026-12-04: the SLURM scenarios ~430 s, the reruns ~500 s,
# the workflow tests ~530 s, the settings' reruns ~560 s, the demo's training in the workflow
# ~390 s, the compile test's module ~100-220 s, the training's stops and resumes ~240 s, the
# certificate's reruns ~135 s, the shard kills ~170 s, the sweep ~115 s, the benchmarks ~85 s),
# then the others in file order. The SLURM module first: it mostly waits for the cluster.
# pytest-xdist hands modules out in the order collected (--no-loadscope-reorder, pyproject.toml;
# its default reorder, by number of tests, started the SLURM module last, a 7-minute tail).
LONGEST_FIRST = (
    "test_slurm.py",
    "test_reruns.py",
    "test_workflow.py",
    "test_image_keys.py",
    "test_training_workflow.py",
    "test_generation.py",
    "test_training.py",
    "test_certificate_workflow.py",
    "test_shards.py",
    "test_sweep.py",
    "test_benchmarks.py",
)


def pytest_collection_modifyitems(config, items):
    """The longest modules first (LONGEST_FIRST), so that each starts at once on a worker of
    its own while the short ones fill in beside them."""

    def order(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=order)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """The demo's assets (read only), built once for the session (made_once): 8 s of CPU a
    build, paid by each of the four workers before."""
    return made_once(tmp_path_factory, "demo", build_demo_assets)


def write_demo_config(folder: Path, demo_root: Path, **overrides) -> Path:
    """The repo's demo.yaml, pointed at `demo_root`, with dotted-key overrides."""
    text = (REPO / "demo.yaml").read_text().replace("demo/", f"{demo_root}/")
    config = yaml.safe_load(text)
    # Relative, so that Snakemake (run with --directory folder) keys its metadata by paths
    # that stay valid when a test copies the folder.
    config["results"] = "results"
    for dotted, value in overrides.items():
        node = config
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def empty_model_layout(folder: Path) -> dict[str, str]:
    """The `models:` section of a config pointing at empty files in the real layouts: enough
    for the checks a dry run makes (file-system only), nothing that loads."""
    from digi2real import models

    paths = {}
    for spec in (*models.GENERATION_MODELS, *models.FACE_MODELS):
        path = folder / spec.key.removeprefix("models.")
        for name in spec.files or ("",):
            target = path / name if name else path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        paths[spec.key.removeprefix("models.")] = str(path)
    return paths


@pytest.fixture
def demo_config(tmp_path, demo_root):
    return load_config(write_demo_config(tmp_path, demo_root))


# MXNet's own RecordIO reader, in a side environment: mxnet 1.9.1 is the last release, and it
# imports on Python 3.11 only with numpy 1.23.5 (older than the pipeline's numpy).
MXNET = ("mxnet==1.9.1", "numpy==1.23.5")


@pytest.fixture(scope="session")
def mxnet_python(tmp_path_factory) -> Path:
    """The Python of a virtual environment holding MXNet, installed once for the session's
    workers (made_once); the tests fail, not skip, where it cannot be installed on x86-64
    (MXNet publishes wheels for it only)."""
    import platform
    import subprocess
    import sys

    def install(folder: Path) -> None:
        python = folder / "env" / "bin" / "python"
        try:
            subprocess.run([sys.executable, "-m", "venv", str(folder / "env")], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", *MXNET],
                check=True,
                capture_output=True,
                text=True,
                timeout=900,
            )
            subprocess.run([str(python), "-c", "import mxnet.recordio"], check=True)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            stderr = getattr(error, "stderr", "") or ""
            if platform.machine() in ("x86_64", "AMD64"):
                pytest.fail(f"cannot install {' '.join(MXNET)}: {error}\n{stderr[-2000:]}")
            pytest.skip(f"no MXNet wheel for {platform.machine()}")

    return made_once(tmp_path_factory, "mxnet", install) / "env" / "bin" / "python"


# --- the workflow tests' inputs and reference run (tests/workflow_runs.py) ---------------------


def made_once(tmp_path_factory, name: str, make) -> Path:
    """The folder `name`, made by `make(folder)` once in this test session: by the first
    pytest-xdist worker that asks, the others waiting for it (a lock) and reading it. Without
    xdist, in this session's own temporary folder."""
    import fcntl

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, done = shared / name, shared / f"{name}.done"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a worker failed making it
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def zoo(demo_root, tmp_path_factory) -> tuple[Path, Path]:
    """The demo's data plus every kind of bad input a real folder holds: the DigiFace and FFHQ
    roots (read only; one for the whole session)."""
    from tests.workflow_runs import make_zoo

    folder = made_once(tmp_path_factory, "zoo", lambda folder: make_zoo(demo_root, folder))
    return folder / "digiface", folder / "ffhq"


@pytest.fixture(scope="session")
def run(demo_root, zoo, tmp_path_factory) -> Path:
    """One complete, uninterrupted run, made once for the whole session: the reference the
    workflow tests compare with (they copy it, never change it). Every listing of an input
    folder it made is in listings.log in its folder."""
    from tests.workflow_runs import configure, snakemake, watching_listings

    def make(workdir: Path) -> None:
        configure(workdir, demo_root, *zoo)
        snakemake(workdir, env=watching_listings(workdir / "listings.log", *zoo))

    return made_once(tmp_path_factory, "run", make)
