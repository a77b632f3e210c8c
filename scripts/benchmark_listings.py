"""How often one cluster run lists and stats its input folders, counted in system calls.

    python scripts/benchmark_listings.py --old CHECKOUT --new CHECKOUT [--workdir DIR]

e.g. `git worktree add ../old f023aae`, then `--old ../old --new .`: each checkout runs with its
own Snakefile, its own package first on PYTHONPATH, its own demo.yaml and profiles, and the
output says which package each step imported. Needs strace (Linux); takes two to three minutes.

The run measured is tests/test_slurm.py's big run (20,000 DigiFace identities, generation
shards of 100, the lab's SLURM profile) with ffhq.count null, as a real run has it, over two
folders of empty files in the real layouts, built once in the work folder:

    ffhq/      70 folders 00000 ... 69000 of 1,000 PNG files each, as FFHQ is laid out
    digiface/  20,000 subject folders <k>/, each holding 0.png and 1.png

Counted on each: directory listings (directory opens, getdents64 calls) and stat calls (stat,
lstat, newfstatat, statx; the fstat of each opened directory included), made by

    main process   `snakemake --profile <lab profile> -n` with the config
    jobs           hash_models, index_ffhq (FFHQ's index_real job, index_ffhq's before the
                   rules were merged) and index_digiface, the jobs the plugin submits
                   first, each run from the command the SLURM executor plugin gave sbatch,
                   with the environment sbatch --export=ALL hands it (DIGI2REAL_INPUT_COUNTS
                   included, where the main process set it): Snakemake parses the workflow in
                   the batch script (--executor slurm-jobstep), then again in the srun step
                   that runs the job; what the job's command itself does is counted apart

and per run: the main process, plus both parses of a job (hash_models') for each job the dry
run plans, plus the commands of the two index jobs. The SLURM commands are stand-ins in a
folder put first on PATH: sbatch records what it was asked to run, srun runs its command, and
nothing reaches a cluster. The real (not dry) run that submits the jobs is killed once they
are recorded. The numbers are those strace counted; nothing is estimated.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# The calls counted, and those that tell which process made them (a "?" one may not exist).
TRACED = ",".join(
    ["?open", "openat", "?getdents", "getdents64", "?stat", "?lstat", "newfstatat", "statx"]
    + ["execve", "clone", "clone3", "?fork", "vfork"]
)
STATS = {"stat", "lstat", "newfstatat", "statx"}
ROOTS = ("ffhq", "digiface")
IDENTITIES = 20000
FFHQ_FOLDERS = 70
FFHQ_PER_FOLDER = 1000
ACCOUNT = "benchmark"
PARTITION = "benchmark"
TIMEOUT = 600

# The SLURM commands the executor plugin calls, as stand-ins: sbatch records what it was asked
# to run (its arguments, its script on stdin, its environment and folder) and answers a job
# id; srun runs its command, its own options left out; the others answer what the plugin needs.
SBATCH = """
import json, os, sys
capture = os.environ["BENCHMARK_CAPTURE"]
count = len(os.listdir(capture))
script = sys.stdin.read() if not sys.stdin.isatty() else ""
record = {"argv": sys.argv[1:], "stdin": script, "cwd": os.getcwd(), "env": dict(os.environ)}
with open(os.path.join(capture, f"{count}.json.part"), "w") as file:
    json.dump(record, file)
os.rename(os.path.join(capture, f"{count}.json.part"), os.path.join(capture, f"{count}.json"))
print(1000 + count)
"""
SRUN = """
import os, sys
args = sys.argv[1:]
while args and args[0].startswith("-"):
    args.pop(0)
os.execvp(args[0], args)
"""
ANSWERS = {
    "scontrol": "print('MinJobAge = 300 sec')",
    "sacctmgr": f"print('{ACCOUNT}')",
    "sshare": f"print('{ACCOUNT}')",
    "sinfo": f"print('{PARTITION}*')",
    "sacct": "pass",
    "squeue": "pass",
    "scancel": "pass",
}


@dataclass
class Counts:
    """Directory opens, getdents64 calls and stat calls on each root."""

    opens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROOTS, 0))
    getdents: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROOTS, 0))
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROOTS, 0))

    def add(self, other: Counts, times: int = 1) -> None:
        for mine, theirs in (
            (self.opens, other.opens),
            (self.getdents, other.getdents),
            (self.stats, other.stats),
        ):
            for root in ROOTS:
                mine[root] += theirs[root] * times

    def cells(self) -> list[int]:
        return [
            n for root in ROOTS for n in (self.opens[root], self.getdents[root], self.stats[root])
        ]


@dataclass
class Trace:
    """The counts of a traced command, by the command each process ran last, and the packages
    (folders holding digi2real/layout.py) its processes imported."""

    by_command: dict[str, Counts]
    packages: set[str]

    def total(self, where: Callable[[str], bool] = lambda command: True) -> Counts:
        total = Counts()
        for command, counts in self.by_command.items():
            if where(command):
                total.add(counts)
        return total


# --- the folders and the configs ---------------------------------------------------------------


def build_roots(workdir: Path) -> dict[str, Path]:
    roots = {"ffhq": workdir / "ffhq", "digiface": workdir / "digiface"}
    if (workdir / "roots-built").exists():
        return roots
    for folder in range(FFHQ_FOLDERS):
        first = folder * FFHQ_PER_FOLDER
        path = roots["ffhq"] / f"{first:05d}"
        path.mkdir(parents=True, exist_ok=True)
        for image in range(first, first + FFHQ_PER_FOLDER):
            os.close(os.open(path / f"{image:05d}.png", os.O_CREAT | os.O_WRONLY, 0o644))
    for identity in range(IDENTITIES):
        path = roots["digiface"] / str(identity)
        path.mkdir(parents=True, exist_ok=True)
        for image in ("0.png", "1.png"):
            os.close(os.open(path / image, os.O_CREAT | os.O_WRONLY, 0o644))
    (workdir / "roots-built").touch()
    return roots


MODELS = """
import json, sys
from pathlib import Path
from digi2real import models
folder, paths = Path(sys.argv[1]), {}
for spec in (*models.GENERATION_MODELS, *models.FACE_MODELS):
    path = folder / spec.key.removeprefix("models.")
    for name in spec.files or ("",):
        target = path / name if name else path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    paths[spec.key.removeprefix("models.")] = str(path)
print(json.dumps({"models": paths, "package": models.__file__}))
"""


def empty_models(python: str, checkout: Path, folder: Path) -> dict[str, str]:
    """tests/conftest.py's empty_model_layout, by the checkout's own model specs."""
    env = {**base_environment(), "PYTHONPATH": str(checkout)}
    out = subprocess.run(
        [python, "-c", MODELS, str(folder)],
        env=env,
        cwd=folder.parent,  # not a checkout: `python -c` imports from its folder first
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    made = json.loads(out)
    assert Path(made["package"]).resolve().is_relative_to(checkout.resolve()), made["package"]
    return made["models"]


def write_config(checkout: Path, run: Path, roots: dict[str, Path], models: dict) -> Path:
    """tests/test_slurm.py's big_run over the checkout's demo.yaml, with ffhq.count null."""
    config = yaml.safe_load((checkout / "demo.yaml").read_text())
    config["results"] = "results"
    overrides = {
        "demo": None,
        "models": models,
        "digiface.root": str(roots["digiface"]),
        "digiface.selection": {"mode": "range", "start": 0, "count": IDENTITIES},
        "digiface.identities_per_embed_shard": 500,
        "ffhq.root": str(roots["ffhq"]),
        "ffhq.count": None,
        "ffhq.images_per_embed_shard": 5000,
        "plan.identities_per_shard": 100,
        "plan.images_per_identity": 20,
        "export.formats": ["recordio", "webdataset"],
    }
    for dotted, value in overrides.items():
        node = config
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = run / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_profile(checkout: Path, folder: Path) -> Path:
    """The checkout's profiles/slurm as a lab fills it in (tests/test_slurm.py's lab_profile)."""
    text = (checkout / "profiles/slurm/config.yaml").read_text()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(
        text.replace('"YOUR_ACCOUNT"', ACCOUNT).replace('"YOUR_PARTITION"', PARTITION)
    )
    return folder


def write_stand_ins(python: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, code in {"sbatch": SBATCH, "srun": SRUN, **ANSWERS}.items():
        path = folder / name
        path.write_text(f"#!{python}\n{code.strip()}\n")
        path.chmod(0o755)
    return folder


def base_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGI2REAL_", "SLURM_"))}
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    return env


# --- tracing -----------------------------------------------------------------------------------

LINE = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+|\?)(.*)$")
FD = r"(?:AT_FDCWD|-?\d+)(?:<([^>]*)>)?"
STRING = r'"((?:[^"\\]|\\.)*)"(\.\.\.)?'
AT_PATH = re.compile(rf"^{FD}, {STRING}")
PLAIN_PATH = re.compile(rf"^{STRING}")
FD_ONLY = re.compile(r"^-?\d+<([^>]*)>")
RESULT_PATH = re.compile(r"^<([^>]*)>")
CHILD = re.compile(r"^(clone3?|v?fork)$")
# A Snakemake process's command line (not that of a shell running one).
SNAKEMAKE = re.compile(r"^\S*python[\d.]* -m snakemake ")
# The command of a job: the package's CLI.
STAGE = re.compile(r"^\S*python[\d.]* -m digi2real ")
# The package a process imported: its digi2real/layout.py, or the bytecode cached of it.
PACKAGE = re.compile(r"^(.*/digi2real)/(?:layout\.py|__pycache__/layout\.[^/]*\.pyc)$")


def traced(command: list[str], log: Path, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """`command` run under strace, one file of calls per thread under `log`."""
    if log.exists():
        shutil.rmtree(log)
    log.mkdir(parents=True)
    strace = ["strace", "-ff", "-qq", "-y", "-v", "-s", "4096", "--seccomp-bpf", "-e"]
    return subprocess.run(
        [*strace, f"trace={TRACED}", "-o", str(log / "t"), *command],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def root_of(path: str, roots: dict[str, str]) -> str | None:
    for name, root in roots.items():
        if path == root or path.startswith(root + "/"):
            return name
    return None


def call_path(name: str, args: str, cwd: str) -> str | None:
    """The path a stat or open call names, resolved against its directory descriptor (strace -y
    shows its path, AT_FDCWD's too); a plain stat's relative path against `cwd`."""
    if name in ("stat", "lstat", "open"):
        match = PLAIN_PATH.match(args)
        if not match:
            return None
        return os.path.normpath(os.path.join(cwd, match.group(1)))
    match = AT_PATH.match(args)
    if not match:
        return None
    folder, path = match.group(1), match.group(2)
    if path == "" and "AT_EMPTY_PATH" in args:
        return folder
    if os.path.isabs(path) or folder is None:
        return os.path.normpath(os.path.join(cwd, path))
    return os.path.normpath(os.path.join(folder, path))


def read_trace(log: Path, roots: dict[str, Path], cwd: Path) -> Trace:
    """Each root's calls in the strace -ff files under `log`, by the command line of the process
    that made them (its last execve; a thread's process is found through clone's flags)."""
    watched = {name: str(path) for name, path in roots.items()}
    parent: dict[int, tuple[int, bool]] = {}  # child -> (parent, is a thread)
    execs: dict[int, str] = {}
    per_tid: dict[int, Counts] = {}
    packages: set[str] = set()
    for file in log.iterdir():
        tid = int(file.name.rsplit(".", 1)[1])
        counts = per_tid.setdefault(tid, Counts())
        with file.open(errors="replace") as lines:
            for line in lines:
                match = LINE.match(line)
                if not match:
                    continue
                name, args, result, rest = match.groups()
                if CHILD.match(name):
                    if result.isdigit() and int(result) > 0:
                        parent[int(result)] = (tid, "CLONE_THREAD" in args)
                    continue
                if name == "execve":
                    if result == "0":
                        argv = args.split("], [", 1)[0]
                        execs[tid] = " ".join(re.findall(r'"((?:[^"\\]|\\.)*)"', argv)[1:])
                    continue
                if name in ("open", "openat"):
                    opened = RESULT_PATH.match(rest.strip())
                    imported = opened and PACKAGE.match(opened.group(1))
                    if imported:
                        packages.add(imported.group(1))
                    if not opened or "O_DIRECTORY" not in args:
                        continue
                    where = root_of(opened.group(1), watched)
                    if where:
                        counts.opens[where] += 1
                elif name in ("getdents", "getdents64"):
                    folder = FD_ONLY.match(args)
                    where = folder and root_of(folder.group(1), watched)
                    if where:
                        counts.getdents[where] += 1
                elif name in STATS:
                    path = call_path(name, args, str(cwd))
                    where = path and root_of(path, watched)
                    if where:
                        counts.stats[where] += 1

    def process(tid: int) -> int:
        while tid in parent and parent[tid][1]:
            tid = parent[tid][0]
        return tid

    def command(tid: int) -> str:
        while True:
            pid = process(tid)
            if pid in execs:
                return execs[pid]
            if pid not in parent:
                return "(first process)"
            tid = parent[pid][0]

    by_command: dict[str, Counts] = {}
    for tid, counts in per_tid.items():
        by_command.setdefault(command(tid), Counts()).add(counts)
    return Trace(by_command, packages)


def only_package(trace: Trace, checkout: Path, step: str) -> str:
    """The one digi2real package the step imported, which must be the checkout's."""
    expected = str(checkout.resolve() / "digi2real")
    if trace.packages and trace.packages != {expected}:
        raise SystemExit(f"{step} imported {sorted(trace.packages)}, not {expected}")
    return expected if trace.packages else "(none)"


# --- one checkout ------------------------------------------------------------------------------

# The jobs run: those the plugin submits first, having no input made by another job.
JOBS = ("hash_models", "index_ffhq", "index_digiface")
# A rule by the name JOBS gives its job: FFHQ's index job is index_real's, where a checkout
# has one rule for FFHQ's and the gallery's index (a checkout before that has index_ffhq).
JOB_OF_RULE = {"index_real": "index_ffhq"}


@dataclass
class Job:
    """What one job did: its batch script's Snakemake (--executor slurm-jobstep), the Snakemake
    of its srun step, and its command (the processes that are neither)."""

    batch_parse: Counts
    step_parse: Counts
    command: Counts
    batch_line: str
    step_line: str
    stage_lines: list[str]

    def parses(self) -> Counts:
        both = Counts()
        both.add(self.batch_parse)
        both.add(self.step_parse)
        return both


@dataclass
class Measured:
    main: Counts
    jobs: dict[str, Job]
    planned: dict[str, int]
    handed: str | None
    packages: dict[str, str]

    def per_run(self) -> Counts:
        """The main process, each planned job's two parses (as hash_models' are: the parse
        does not depend on the job), and the index jobs' commands."""
        total = Counts()
        total.add(self.main)
        total.add(self.jobs["hash_models"].parses(), sum(self.planned.values()))
        total.add(self.jobs["index_ffhq"].command)
        total.add(self.jobs["index_digiface"].command)
        return total


def planned_jobs(output: str) -> dict[str, int]:
    """The dry run's job stats table, without the target rule `all` (run by Snakemake itself)."""
    table = output.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit() or fields[0] == "total":
            break
        counts[fields[0]] = int(fields[1])
    counts.pop("all", None)
    return counts


def capture_submissions(
    python: str, snakemake: list[str], env: dict, run: Path, capture: Path
) -> dict[str, dict]:
    """The sbatch calls of JOBS, made by the plugin in a real (not dry) run, which is then
    killed."""
    if capture.exists():
        shutil.rmtree(capture)
    capture.mkdir()
    env = {**env, "BENCHMARK_CAPTURE": str(capture)}
    process = subprocess.Popen(
        [python, *snakemake],
        env=env,
        cwd=run,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + TIMEOUT
    records: dict[str, dict] = {}
    try:
        while time.monotonic() < deadline and process.poll() is None:
            for file in capture.glob("*.json"):
                record = json.loads(file.read_text())
                called = " ".join(record["argv"]) + record["stdin"]
                rule = re.search(r"--target-jobs '?(\w+):", called)
                if rule:
                    records[JOB_OF_RULE.get(rule.group(1), rule.group(1))] = record
            if set(JOBS) <= records.keys():
                return records
            time.sleep(0.5)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        output = process.communicate()[0].decode(errors="replace")
        shutil.rmtree(run / ".snakemake" / "locks", ignore_errors=True)
    raise SystemExit(f"submitted {sorted(records)}, not all of {JOBS}:\n{output[-3000:]}")


def job_command(record: dict) -> str:
    """The command the batch script runs: sbatch's --wrap, or its script on stdin."""
    for arg in record["argv"]:
        if arg.startswith("--wrap="):
            return arg.removeprefix("--wrap=")
    lines = [line for line in record["stdin"].splitlines() if not line.startswith("#")]
    return "\n".join(lines).strip()


def run_job(
    label: str, rule: str, record: dict, workdir: Path, roots: dict[str, Path], checkout: Path
) -> tuple[Job, str]:
    """The job of an sbatch call, run as its batch script would be, under strace."""
    command = job_command(record)
    env = {**record["env"], "SLURM_JOB_ID": "1000", "SLURM_JOBID": "1000"}
    env.pop("BENCHMARK_CAPTURE", None)
    print(f"{label}: job {rule} ...", file=sys.stderr, flush=True)
    cwd = Path(record["cwd"])
    done = traced(["/bin/sh", "-c", command], workdir / "trace", env, cwd)
    if done.returncode != 0:
        raise SystemExit(f"{label}: job {rule} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    trace = read_trace(workdir / "trace", roots, cwd)
    package = only_package(trace, checkout, f"{label} job {rule}")
    snakemakes = [c for c in trace.by_command if SNAKEMAKE.match(c)]
    if len(snakemakes) != 2:
        raise SystemExit(f"{label}: expected two Snakemake processes in a job: {snakemakes}")
    job = Job(
        batch_parse=trace.total(lambda c: bool(SNAKEMAKE.match(c)) and "slurm-jobstep" in c),
        step_parse=trace.total(lambda c: bool(SNAKEMAKE.match(c)) and "slurm-jobstep" not in c),
        command=trace.total(lambda c: not SNAKEMAKE.match(c)),
        batch_line=command,
        step_line=next(c for c in snakemakes if "slurm-jobstep" not in c),
        stage_lines=[c for c in trace.by_command if STAGE.match(c)],
    )
    return job, package


def expected_counts(python: str, checkout: Path, config: Path) -> str:
    """DIGI2REAL_INPUT_COUNTS as the checkout's layout computes it for this config (a
    cross-check of what the sbatch stand-in received)."""
    code = (
        "import os, sys\n"
        "from digi2real import layout\n"
        "from digi2real.config import read_config_file, resolve_config\n"
        "config = resolve_config(read_config_file(sys.argv[1]), sys.argv[1])\n"
        "layout.hand_counts_to_jobs(config, layout.input_counts(config))\n"
        "print(os.environ[layout.COUNTS_VARIABLE])\n"
    )
    env = {**base_environment(), "PYTHONPATH": str(checkout)}
    result = subprocess.run(
        [python, "-c", code, str(config)],
        env=env,
        cwd=config.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def measure(
    label: str, checkout: Path, workdir: Path, roots: dict[str, Path], python: str
) -> Measured:
    checkout = checkout.resolve()
    run = workdir / label
    shutil.rmtree(run, ignore_errors=True)  # a dry run plans what is not there yet
    run.mkdir(parents=True)
    models = empty_models(python, checkout, workdir / f"models-{label}")
    config = write_config(checkout, run, roots, models)
    profile = write_profile(checkout, workdir / f"profile-{label}" / "slurm")
    stand_ins = write_stand_ins(python, workdir / "bin")
    env = base_environment()
    env["PATH"] = f"{stand_ins}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(checkout)
    snakemake = [
        "-m",
        "snakemake",
        "--snakefile",
        str(checkout / "Snakefile"),
        "--directory",
        str(run),
        "--configfile",
        str(config),
        "--profile",
        str(profile),
    ]

    print(f"{label}: snakemake -n ...", file=sys.stderr, flush=True)
    dry = traced([python, *snakemake, "-n"], workdir / "trace", env, run)
    output = dry.stdout + dry.stderr
    if dry.returncode != 0:
        raise SystemExit(f"{label}: the dry run failed:\n{output[-3000:]}")
    trace = read_trace(workdir / "trace", roots, run)
    packages = {"main process": only_package(trace, checkout, f"{label} main process")}
    main = trace.total()

    print(f"{label}: capturing the first sbatch calls ...", file=sys.stderr, flush=True)
    records = capture_submissions(python, snakemake, env, run, workdir / "capture")
    handed = records["hash_models"]["env"].get("DIGI2REAL_INPUT_COUNTS")
    if handed is not None and handed != expected_counts(python, checkout, config):
        raise SystemExit(f"{label}: the main process handed {handed}, not what layout computes")
    jobs = {}
    for rule in JOBS:
        jobs[rule], packages[f"job {rule}"] = run_job(
            label, rule, records[rule], workdir, roots, checkout
        )
        index = run / "results" / "index" / f"{rule.removeprefix('index_')}.parquet"
        if rule.startswith("index_") and not index.exists():
            raise SystemExit(f"{label}: job {rule} wrote no {index}")
    shutil.rmtree(workdir / "trace", ignore_errors=True)
    return Measured(main, jobs, planned_jobs(output), handed, packages)


# --- the table ---------------------------------------------------------------------------------


def table(results: dict[str, Measured], checkouts: dict[str, Path]) -> str:
    widths = (10, 10, 8, 12, 10, 8)
    name_width = 46

    def row(name: str, cells: list[int] | list[str]) -> str:
        texts = [f"{c:,}" if isinstance(c, int) else c for c in cells]
        aligned = "".join(f"{text:>{w}}" for text, w in zip(texts, widths, strict=True))
        return f"{name:<{name_width}}{aligned}"

    lines = [
        f"{'':<{name_width}}{'ffhq/ (70,000 files)':>28}{'digiface/ (20,000 subjects)':>30}",
        row("", ["dir opens", "getdents", "stats"] * 2),
    ]
    for label, measured in results.items():
        n = sum(measured.planned.values())
        lines.append(f"{label} ({checkouts[label]}): {n} jobs planned")
        lines.append(row("  main process (snakemake -n)", measured.main.cells()))
        for rule, job in measured.jobs.items():
            lines.append(row(f"  job {rule}: batch-script parse", job.batch_parse.cells()))
            lines.append(row(f"  job {rule}: srun step parse", job.step_parse.cells()))
        parses = measured.jobs["hash_models"].parses().cells()
        lines.append(row(f"  {n} jobs x both parses", [c * n for c in parses]))
        for rule in ("index_ffhq", "index_digiface"):
            lines.append(row(f"  job {rule}: its command", measured.jobs[rule].command.cells()))
        lines.append(row("  per run", measured.per_run().cells()))
    if {"old", "new"} <= results.keys():
        old, new = results["old"].per_run().cells(), results["new"].per_run().cells()
        ratios = [
            f"{o / n:.1f}x" if n else ("-" if not o else "inf")
            for o, n in zip(old, new, strict=True)
        ]
        lines.append(row("per run, old/new", ratios))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="checkout before the change")
    parser.add_argument("--new", type=Path, required=True, help="checkout after the change")
    parser.add_argument("--workdir", type=Path, help="kept; default: a temporary folder")
    args = parser.parse_args()
    if shutil.which("strace") is None:
        raise SystemExit("strace is not installed")
    python = sys.executable
    temporary = None if args.workdir else tempfile.TemporaryDirectory(prefix="listings-")
    workdir = (args.workdir or Path(temporary.name)).resolve()  # type: ignore[union-attr]
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        print("building the folders ...", file=sys.stderr, flush=True)
        roots = build_roots(workdir)
        checkouts = {"old": args.old.resolve(), "new": args.new.resolve()}
        results = {
            label: measure(label, checkout, workdir, roots, python)
            for label, checkout in checkouts.items()
        }
    finally:
        if temporary is not None:
            temporary.cleanup()
    for label, measured in results.items():
        job = measured.jobs["hash_models"]
        print(f"{label}: the batch script of job hash_models ran: {job.batch_line}")
        print(f"{label}: its srun step ran: {job.step_line}")
        for rule in ("index_ffhq", "index_digiface"):
            for line in measured.jobs[rule].stage_lines:
                print(f"{label}: job {rule}'s command: {line}")
        print(f"{label}: DIGI2REAL_INPUT_COUNTS in the jobs' environment: {measured.handed}")
        for step, package in measured.packages.items():
            print(f"{label}: {step} imported {package}")
        planned = ", ".join(f"{rule} {n}" for rule, n in measured.planned.items())
        print(f"{label}: jobs planned: {planned}")
    print()
    print(table(results, checkouts))
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
