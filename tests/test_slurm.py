"""The workflow on a real SLURM cluster, through the example lab profile (profiles/slurm).

scripts/local_slurm.sh brings up a one-node SLURM 22.05 cluster with accounting and one pretend
GPU on this machine; snakemake-executor-plugin-slurm then submits every job with sbatch and
follows it with sacct, as on a lab's cluster. The module is skipped, with the reason, where the
cluster cannot run (not root, or neither the packages nor apt-get) and where SLURM is installed
but not by that script (no marker /etc/slurm/digi2real-local-cluster): an installation the
script did not set up is never touched. A cluster the script set up is reused. Where the tests
must run (CI: DIGI2REAL_REQUIRE_SLURM=1), each of those reasons fails the tests instead.

What ran where is read from SLURM itself: `sacct --name <run id>` lists the jobs one snakemake
invocation submitted (the plugin names every job after the invocation's run id), and the
plugin's "submitted with SLURM jobid N (log: .../rule_<rule>/<wildcards>/N.log)" lines tell
which rule and wildcards each job ran.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import default_sigint, empty_model_layout, snakemake_argv

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "local_slurm.sh"
ACCOUNT, PARTITION = "digi2real", "debug"  # what local_slurm.sh creates
REFUSED = 3  # local_slurm.sh's exit status where SLURM is installed but not by it

pytestmark = pytest.mark.slurm

# The demo (demo.yaml, its jobs below, demo_assets included) with quick generation: a shard takes
# about 10 s of job time instead of 30; and without its recognizer's training, whose stop and
# retry tests/test_training_workflow.py runs locally (the same exit 143 and resume as a shard's
# here). Everything else is the demo's.
FAST = {
    "generation.height": 64,
    "generation.width": 64,
    "generation.steps": 4,
    "train.enabled": False,
    "benchmark.bins": {},
}
SHARDS = ("0", "1")
JOBS_OF_THE_DEMO = {
    ("demo_assets", ""),
    ("index_digiface", ""),
    ("index_real", "ffhq"),
    ("embed", "embeddings_digiface_0"),
    ("embed", "embeddings_digiface_1"),
    ("embed", "embeddings_ffhq_0"),
    ("embed", "embeddings_ffhq_1"),
    ("merge_embeddings", "embeddings_digiface"),
    ("merge_embeddings", "embeddings_ffhq"),
    ("estimate_delta", ""),
    ("plan", ""),
    ("hash_models", ""),
    ("generate", "0"),
    ("generate", "1"),
    ("aggregate", ""),
    ("evaluate", ""),
    ("report", ""),
    ("card", ""),
    ("export_recordio", ""),
    ("export_webdataset", ""),
    ("export_imagefolder", ""),
    ("sample_mixin", ""),  # demo.yaml's real mix-in (export.mixin)
}
GPU_RULES = {"generate", "estimate_delta"}
# Seconds for one snakemake invocation: a safety net, not a measure. The demo through SLURM takes
# 4-7 minutes on 2 cores while other tests run beside it (pytest-xdist).
TIMEOUT = 1200


# --- the cluster ----------------------------------------------------------------------------


def no_cluster(reason: str) -> NoReturn:
    """Skips the test, or fails it where the SLURM tests must run (DIGI2REAL_REQUIRE_SLURM=1,
    as in CI, where a skipped SLURM test would hide that they did not run)."""
    if os.environ.get("DIGI2REAL_REQUIRE_SLURM", "") not in ("", "0"):
        pytest.fail(f"DIGI2REAL_REQUIRE_SLURM is set, but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster():
    """The local cluster, up for this module; taken down after it if this module started it.
    Skipped (see no_cluster) where it cannot run, or where SLURM is installed but not by
    local_slurm.sh: the script refuses to touch that installation (exit status 3)."""
    if not os.access(SCRIPT, os.X_OK):
        no_cluster(f"{SCRIPT} missing or not executable")
    can = subprocess.run([SCRIPT, "can-run"], capture_output=True, text=True)
    if can.returncode == REFUSED:
        no_cluster(f"local_slurm.sh refuses (exit 3): {can.stdout.strip()}")
    if can.returncode != 0:
        no_cluster(f"no local SLURM cluster here: {(can.stdout + can.stderr).strip()}")
    was_up = subprocess.run([SCRIPT, "status"], capture_output=True).returncode == 0
    up = subprocess.run([SCRIPT, "up"], capture_output=True, text=True, timeout=600)
    if up.returncode == REFUSED:  # someone else's SLURM appeared since can-run
        no_cluster(f"local_slurm.sh refuses (exit 3): {up.stderr.strip()}")
    assert up.returncode == 0, f"local_slurm.sh up failed:\n{up.stdout}\n{up.stderr}"
    yield
    if not was_up:  # a cluster someone else brought up stays up
        subprocess.run([SCRIPT, "down"], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def lab_profile(tmp_path_factory) -> Path:
    """profiles/slurm as a lab fills it in: the two placeholders replaced, nothing else."""
    text = (REPO / "profiles/slurm/config.yaml").read_text()
    assert text.count('"YOUR_ACCOUNT"') == 1 and text.count('"YOUR_PARTITION"') == 1
    folder = tmp_path_factory.mktemp("profile") / "slurm"
    folder.mkdir()
    (folder / "config.yaml").write_text(
        text.replace('"YOUR_ACCOUNT"', ACCOUNT).replace('"YOUR_PARTITION"', PARTITION)
    )
    return folder


# --- running snakemake ----------------------------------------------------------------------


def write_config(workdir: Path, **overrides) -> None:
    """The repo's demo.yaml in `workdir` (so the demo is built there), with overrides."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((REPO / "demo.yaml").read_text())
    config["results"] = "results"
    for dotted, value in overrides.items():
        node = config
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def job_environment(**extra: str) -> dict[str, str]:
    """This environment without the venv on PATH: the jobs must find their Python themselves
    (common.smk's shell prefix), on the node as on a login node without an activated venv."""
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGI2REAL_")}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin
    )
    if "/usr/sbin" not in env["PATH"].split(os.pathsep):
        env["PATH"] += os.pathsep + "/usr/sbin"
    env.update(extra)
    return env


def slurm_args(profile: Path) -> list[str]:
    return [
        "--profile",
        str(profile),
        # Only what a test cluster needs on top of the lab profile: a first status check after
        # 2 s instead of 40, every job's SLURM log kept for the assertions, and every job's
        # memory request capped below this one node's memory (generation asks for 12 GB).
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--slurm-keep-successful-logs",
        "--resources",
        "mem_mb=2000",
    ]


@dataclass
class Invocation:
    workdir: Path
    returncode: int
    stdout: str
    stderr: str
    started: str  # for sacct -S

    @property
    def run_id(self) -> str:
        found = re.search(r"SLURM run ID: (\S+)", self.stderr)
        assert found, f"no SLURM run id in the log:\n{self.stderr[-3000:]}"
        return found.group(1)

    def submitted(self) -> dict[str, tuple[str, str]]:
        """SLURM job id -> (rule, wildcards) of every job this invocation submitted."""
        jobs = {}
        for jobid, log in re.findall(
            r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", self.stderr
        ):
            parts = Path(log).parts
            # rule_<rule>/[<wildcards>/]<id>.log, or group_<group>/... for a group job
            index = max(i for i, p in enumerate(parts) if p.startswith(("rule_", "group_")))
            rule = parts[index].removeprefix("rule_")
            wildcards = parts[index + 1] if len(parts) - index == 3 else ""
            jobs[jobid] = (rule, wildcards)
            assert Path(log).is_file(), f"the plugin's log of job {jobid} is missing: {log}"
        return jobs

    def sacct(self) -> list[dict[str, str]]:
        """SLURM's accounting records of the jobs this invocation submitted, in job id order."""
        fields = ["JobID", "State", "ExitCode", "AllocTRES", "Timelimit", "Start", "End"]
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "--name", self.run_id, "-S", self.started]
            + ["-o", ",".join(fields)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows = [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines()]
        for row in rows:
            row["State"] = row["State"].split()[0]  # "CANCELLED by 0" -> "CANCELLED"
        return sorted(rows, key=lambda row: int(row["JobID"]))

    def jobs(self) -> list[tuple[str, str, str, dict[str, str]]]:
        """(rule, wildcards, state, sacct row) of every submitted job, in submission order."""
        submitted = self.submitted()
        rows = self.sacct()
        assert {row["JobID"] for row in rows} == set(submitted), (
            f"sacct and the plugin disagree on the submitted jobs:\n{rows}\n{submitted}"
        )
        return [(*submitted[row["JobID"]], row["State"], row) for row in rows]

    def check(self) -> Invocation:
        assert self.returncode == 0, (
            f"snakemake failed ({self.returncode}):\n{self.stdout[-2000:]}\n{self.stderr[-8000:]}"
        )
        return self


def sacct_now() -> str:
    # One second back: sacct -S has a resolution of seconds.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 1))


class Background:
    """A snakemake invocation running in its own session, so it can be stopped as a whole."""

    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None):
        self.workdir = workdir
        self.started = sacct_now()
        self.out = open(workdir.parent / f"{workdir.name}.stdout", "w+")  # noqa: SIM115
        self.err = open(workdir.parent / f"{workdir.name}.stderr", "w+")  # noqa: SIM115
        self.process = subprocess.Popen(
            snakemake_argv(workdir, *args),
            stdout=self.out,
            stderr=self.err,
            env=env or job_environment(),
            cwd=workdir,
            start_new_session=True,
            preexec_fn=default_sigint,  # stop() ends it with SIGINT
        )

    def stderr(self) -> str:
        self.err.flush()
        return Path(self.err.name).read_text()

    def wait(self, timeout: float = TIMEOUT) -> Invocation:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        finally:
            self.out.close()
            self.err.close()
        return Invocation(
            self.workdir,
            self.process.returncode,
            Path(self.out.name).read_text(),
            Path(self.err.name).read_text(),
            self.started,
        )

    def stop(self) -> None:
        """SIGINT, on which the plugin cancels its jobs (it ignores SIGTERM); then SIGKILL."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def run(workdir: Path, *args: str, env: dict[str, str] | None = None) -> Invocation:
    return Background(workdir, *args, env=env).wait()


def copy_run(source: Path, target: Path) -> Path:
    """A copy of a finished run, Snakemake's metadata and file times included, without its
    generation shards and what is made from them. (Snakemake does not remake a missing
    intermediate file while the files made from it are there and up to date.)"""
    shutil.copytree(source, target, symlinks=True)
    results = target / "results"
    for made in ("shards", "export", "manifest.parquet", "manifest.csv", "dataset_card.json"):
        path = results / made
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    (results / "samples.png").unlink()
    return target


# --- comparing outputs ----------------------------------------------------------------------


def manifest(path: Path):
    return pq.read_table(path).to_pandas()


def assert_same_manifest(ours: Path, theirs: Path) -> None:
    import pandas.testing

    pandas.testing.assert_frame_equal(manifest(ours), manifest(theirs), check_exact=True)


def images(results: Path, *patterns: str) -> dict[str, str]:
    found = {}
    for pattern in patterns:
        matched = [path for path in results.glob(pattern) if path.is_file()]
        assert matched, f"no file under {results} matches {pattern}"
        for path in matched:
            found[str(path.relative_to(results))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def assert_same_images(ours: Path, theirs: Path, *patterns: str) -> None:
    mine, reference = images(ours, *patterns), images(theirs, *patterns)
    assert mine, f"no images under {ours} matching {patterns}"
    assert mine.keys() == reference.keys()
    differing = sorted(k for k in mine if mine[k] != reference[k])
    assert not differing, f"{len(differing)} images differ, e.g. {differing[:5]}"


# A committed shard's images are its archive, whose bytes are a function of its images alone.
IMAGE_PATTERNS = (
    "shards/*/images.zip",
    "export/imagefolder/**/*.png",
)


# --- the scenarios, run at the same time ------------------------------------------------------
#
# Each scenario is one or two snakemake invocations; what one submitted is told apart from the
# others' jobs by its run id. They run side by side, as a lab's runs share a cluster: the module
# takes 5-6 min instead of 7-8 one after the other, mostly waiting for the plugin's status
# checks and for the one pretend GPU. The two local runs are the references.


@dataclass
class Rerun:
    """A run where generation shard 1 fails for good, then the next invocation."""

    failed: Invocation
    manifests_after_failure: dict[str, bool]
    leftovers_after_failure: list[Path]
    again: Invocation


@dataclass
class Preemption:
    """A generation job sent SIGTERM part-way, and what the profile's retry made of it."""

    run: Invocation
    reference: Path
    state: str  # the signalled job's, in sacct
    stopped_after: float  # seconds from the signal to the job's end
    images_before_signal: int
    images_kept: int
    leftovers: list[Path]  # files other than images in the shard folder once the job ended
    first_log: str  # the signalled job's log


@dataclass
class Scenarios:
    local: Invocation  # the demo, locally on 2 cores: the reference
    slurm: Invocation  # the demo through SLURM, shard 1 failing once
    fail_once: Path
    rerun: Future  # of Rerun
    preemption: Future  # of Preemption


@pytest.fixture(scope="module")
def scenarios(cluster, lab_profile, tmp_path_factory):
    base = tmp_path_factory.mktemp("scenarios")
    local_dir, slurm_dir = base / "local", base / "slurm"
    write_config(local_dir, **FAST)
    write_config(slurm_dir, **FAST)
    # Generation shard 1 fails once (its marker is missing); shard 0's marker is there already.
    fail_once = base / "fail-once"
    fail_once.mkdir()
    (fail_once / "shard-0").touch()
    slurm = Background(
        slurm_dir,
        *slurm_args(lab_profile),
        env=job_environment(DIGI2REAL_FAIL_ONCE_DIR=str(fail_once)),
    )
    with ThreadPoolExecutor(max_workers=2) as pool:
        try:
            # 4 cores: room for both generation jobs (2 threads each) at once, so that only
            # the GPU they ask for could make one wait.
            local = Background(local_dir, "--cores", "4").wait().check()
            # The two other scenarios start from the local run's plan and delta.
            rerun = pool.submit(rerun_scenario, local, lab_profile, base / "rerun")
            preemption = pool.submit(preemption_scenario, local, lab_profile, base / "preempt")
        finally:
            demo = slurm.wait()
        yield Scenarios(local, demo, fail_once, rerun, preemption)


def rerun_scenario(local: Invocation, profile: Path, workdir: Path) -> Rerun:
    copy_run(local.workdir, workdir)
    failed = run(
        workdir,
        *slurm_args(profile),
        "--retries",
        "0",
        env=job_environment(DIGI2REAL_FAIL_SHARDS="1"),
    )
    shards = workdir / "results" / "shards"
    manifests = {shard: (shards / shard / "manifest.parquet").is_file() for shard in SHARDS}
    leftovers = list(shards.rglob("*.tmp"))
    again = run(workdir, *slurm_args(profile))
    return Rerun(failed, manifests, leftovers, again)


def preemption_scenario(local: Invocation, profile: Path, base: Path) -> Preemption:
    """Generation shard 0 alone: through SLURM, where it gets SIGTERM once it has written an
    image, and locally, uninterrupted, on one core (the SLURM job has 2)."""
    target = "results/shards/0/manifest.parquet"
    workdir = copy_run(local.workdir, base / "slurm")
    reference = copy_run(local.workdir, base / "local")
    # The job's first attempt waits after its first batch until it is signalled: the signal
    # lands mid-shard however fast the machine.
    wait = job_environment(
        DIGI2REAL_WAIT_AFTER_BATCHES="1", DIGI2REAL_WAIT_ONCE_DIR=str(base / "waited")
    )
    # After `--`: options such as --resources would take the target as one of their values.
    slurm = Background(workdir, *slurm_args(profile), "--", target, env=wait)
    uninterrupted = Background(reference, "--cores", "1", "--", target)
    try:
        raw = workdir / "results/shards/0/raw"
        jobid, images_before = wait_for_first_images(slurm, raw)
        subprocess.run(["scancel", "--signal=TERM", jobid], check=True)
        signalled = time.monotonic()
        state = wait_for_end(jobid, timeout=60)
        stopped_after = time.monotonic() - signalled
        # Right after the job ended, before its retry can have started.
        kept = len(list(raw.glob("*/*.jpg")))
        shard = workdir / "results/shards/0"
        # The loose images (the demo's raw JPEGs, the checked crops' PNGs) and their journal
        # (records.jsonl) stay; nothing else may be left.
        leftovers = [
            p
            for p in shard.rglob("*")
            if p.is_file()
            and p.suffix not in (".jpg", ".jsonl")
            and not (p.suffix == ".png" and p.relative_to(shard).parts[0] == "aligned")
        ]
        leftovers += list(shard.rglob("*.tmp"))
        first_log = (workdir / "results/logs/generate/0.log").read_text()
        uninterrupted.wait().check()
        finished = slurm.wait()
    finally:
        slurm.stop()
        uninterrupted.stop()
    return Preemption(
        finished, reference, state, stopped_after, images_before, kept, leftovers, first_log
    )


def wait_for_first_images(slurm: Background, raw: Path, timeout: float = 400) -> tuple[str, int]:
    """The SLURM job id of the generation job once it runs and has written an image."""
    deadline = time.monotonic() + timeout
    jobid = None
    while time.monotonic() < deadline:
        assert slurm.process.poll() is None, f"snakemake ended early:\n{slurm.stderr()[-3000:]}"
        if jobid is None:
            found = re.search(
                r"submitted with SLURM jobid (\d+) \(log: \S+/rule_generate/0/", slurm.stderr()
            )
            jobid = found and found.group(1)
        written = len(list(raw.glob("*/*.jpg")))
        if jobid and written:
            state = subprocess.run(
                ["squeue", "-h", "-j", jobid, "-o", "%T"], capture_output=True, text=True
            ).stdout.strip()
            assert state == "RUNNING", f"job {jobid} is {state!r} with {written} images written"
            return jobid, written
        time.sleep(0.1)
    raise AssertionError(f"no image from shard 0 within {timeout} s:\n{slurm.stderr()[-3000:]}")


def wait_for_end(jobid: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-j", jobid, "-o", "State"], capture_output=True, text=True
        ).stdout.split()
        if out and out[0] not in ("PENDING", "RUNNING", "REQUEUED", "SUSPENDED", "COMPLETING"):
            return out[0]
        time.sleep(0.2)
    raise AssertionError(f"job {jobid} still running {timeout} s after SIGTERM")


# --- the tests ------------------------------------------------------------------------------


def test_local_run_does_not_wait_for_the_gpu_generation_asks_for(scenarios):
    log = scenarios.local.stderr
    # Both generation jobs asked for the GPU, and neither waited for it: the local scheduler
    # only limits resources named in --resources.
    generate = re.findall(r"^localrule generate:\n(?:    .*\n)*?    resources: (.*)$", log, re.M)
    assert len(generate) == 2 and all("gpu=1" in resources for resources in generate), generate
    started_both = log.index("localrule generate:", log.index("localrule generate:") + 1)
    assert started_both < log.index("(Rule: generate)"), "the two shards ran one after the other"
    assert "SLURM run ID" not in log and "sbatch" not in log


def test_demo_end_to_end_through_slurm(scenarios):
    slurm = scenarios.slurm.check()
    log = slurm.stderr
    jobs = slurm.jobs()
    # Every job of the demo went through sbatch; only the target rule `all` ran in snakemake.
    assert {(rule, wildcards) for rule, wildcards, _, _ in jobs} == JOBS_OF_THE_DEMO
    assert len(jobs) == len(JOBS_OF_THE_DEMO) + 1  # shard 1's retry, tested below
    assert re.findall(r"^localrule (\w+):", log, re.M) == ["all"]
    for rule, wildcards, state, row in jobs:
        assert state in ("COMPLETED", "FAILED"), (rule, wildcards, row)
        # The generation and delta jobs asked for the GPU (sbatch --gpus=1), the others not.
        assert ("gres/gpu=1" in row["AllocTRES"]) == (rule in GPU_RULES), (rule, row)
    # The same manifest and the same images, byte for byte, as the local run.
    ours, theirs = slurm.workdir / "results", scenarios.local.workdir / "results"
    assert_same_manifest(ours / "manifest.parquet", theirs / "manifest.parquet")
    assert_same_images(ours, theirs, *IMAGE_PATTERNS)
    for path in ("manifest.csv", "samples.png"):
        assert (ours / path).read_bytes() == (theirs / path).read_bytes(), path


def test_a_failed_job_is_resubmitted_by_the_profiles_retries(scenarios):
    jobs = scenarios.slurm.check().jobs()
    generate = {
        shard: [row for rule, wc, _, row in jobs if (rule, wc) == ("generate", shard)]
        for shard in SHARDS
    }
    assert [row["State"] for row in generate["0"]] == ["COMPLETED"]
    assert [row["State"] for row in generate["1"]] == ["FAILED", "COMPLETED"]
    assert (scenarios.fail_once / "shard-1").is_file()  # the failure was the injected one
    # The retry asked for more time (profiles/default: runtime grows with `attempt`).
    first, retry = (row["Timelimit"] for row in generate["1"])
    assert first == generate["0"][0]["Timelimit"]
    assert minutes(retry) > minutes(first), (first, retry)
    # Every other job ran once and succeeded.
    others = [(rule, wc, state) for rule, wc, state, _ in jobs if rule != "generate"]
    assert all(state == "COMPLETED" for _, _, state in others), others


def minutes(timelimit: str) -> int:
    days, _, clock = timelimit.rpartition("-")
    hours, mins, _ = (int(x) for x in clock.split(":"))
    return (int(days or 0) * 24 + hours) * 60 + mins


def test_a_failed_shard_is_rerun_alone_by_the_next_invocation(scenarios):
    rerun: Rerun = scenarios.rerun.result()
    # retries 0 and --keep-going (the profile's): shard 0 is done, shard 1 failed, no aggregate.
    assert rerun.failed.returncode != 0
    assert sorted((rule, wc, state) for rule, wc, state, _ in rerun.failed.jobs()) == [
        ("generate", "0", "COMPLETED"),
        ("generate", "1", "FAILED"),
    ]
    assert rerun.manifests_after_failure == {"0": True, "1": False}
    assert rerun.leftovers_after_failure == [], "a partial file was left behind"
    # The next invocation submits shard 1 and what depends on it, nothing else.
    again = rerun.again.check()
    assert sorted((rule, wc, state) for rule, wc, state, _ in again.jobs()) == [
        ("aggregate", "", "COMPLETED"),
        ("card", "", "COMPLETED"),
        ("evaluate", "", "COMPLETED"),
        ("export_imagefolder", "", "COMPLETED"),
        ("export_recordio", "", "COMPLETED"),
        ("export_webdataset", "", "COMPLETED"),
        ("generate", "1", "COMPLETED"),
        ("report", "", "COMPLETED"),
    ]
    ours, theirs = again.workdir / "results", scenarios.local.workdir / "results"
    assert_same_manifest(ours / "manifest.parquet", theirs / "manifest.parquet")
    assert_same_images(ours, theirs, *IMAGE_PATTERNS)


def test_a_preempted_shard_stops_cleanly_and_its_retry_resumes(scenarios):
    """SIGTERM to a running generation job (what SLURM sends before a preemption or at the
    time limit): it stops between denoising steps, keeps its images and writes no manifest;
    the profile's retry resumes from them and ends with the uninterrupted shard."""
    p: Preemption = scenarios.preemption.result()
    assert p.state == "FAILED" and p.stopped_after < 10, (p.state, p.stopped_after)
    assert "stopped; images on disk are kept" in p.first_log, p.first_log[-2000:]
    assert p.images_before_signal <= p.images_kept < 16, "stopped part-way, its images kept"
    assert p.leftovers == [], f"a manifest or a partial file was left: {p.leftovers}"
    finished = p.run.check()
    assert [(rule, wc, state) for rule, wc, state, _ in finished.jobs()] == [
        ("generate", "0", "FAILED"),
        ("generate", "0", "COMPLETED"),
    ]
    retry_log = (finished.workdir / "results/logs/generate/0.log").read_text()
    kept = p.images_kept
    resumed = (
        f"shard 0: {kept} of 16 images reused (their keys match; {kept} loose, 0 in images.zip), "
        f"{16 - kept} to generate"
    )
    assert resumed in retry_log, retry_log[-2000:]
    ours, theirs = finished.workdir / "results", p.reference / "results"
    assert_same_manifest(ours / "shards/0/manifest.parquet", theirs / "shards/0/manifest.parquet")
    assert_same_images(ours, theirs, "shards/0/images.zip")


# --- a cluster killed, not taken down ---------------------------------------------------------

STATE_DIR = Path("/tmp/digi2real-slurm")  # local_slurm.sh's default, which the tests use
DAEMON_PID_FILES = ("run/slurmctld.pid", "run/slurmd.pid", "run/slurmdbd.pid")
DAEMON_PID_FILES += ("munge/munged.pid", "mysql/mysqld.pid")


def kill_the_cluster() -> None:
    """SIGKILL to every daemon and job process, as when a machine or a session ends without
    `local_slurm.sh down`: slurmctld's saved state still holds the running job."""
    for name in DAEMON_PID_FILES:
        pid_file = STATE_DIR / name
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            except ProcessLookupError:
                pass
    subprocess.run(["pkill", "-KILL", "-x", "slurmstepd"], check=False)
    subprocess.run(["pkill", "-KILL", "-f", f"{STATE_DIR}/slurmd/job"], check=False)


def squeue(*args: str) -> str:
    """The queue's jobs as "<id> <state>" lines."""
    result = subprocess.run(["squeue", "-h", "-o", "%i %t", *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_up_after_a_killed_cluster_finds_the_node_free(cluster):
    """The next `up` drops the jobs of a cluster that was killed (no snakemake waits for them):
    recovered, one held the node until its time limit and `up` timed out (seen in CI)."""
    sbatch = ["sbatch", "--parsable", "-A", ACCOUNT, "-p", PARTITION, "-o", "/dev/null"]
    job = subprocess.run(
        [*sbatch, "--time=30", "--wrap", "sleep 1800"], capture_output=True, text=True, check=True
    ).stdout.strip()
    deadline = time.monotonic() + 60
    while squeue("-j", job) != f"{job} R":
        assert time.monotonic() < deadline, f"job {job} did not start in 60 s"
        time.sleep(1)
    kill_the_cluster()
    up = subprocess.run([SCRIPT, "up"], capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, f"local_slurm.sh up failed:\n{up.stderr[-3000:]}"
    assert squeue() == "", "the killed cluster's job is back"
    nodes = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    assert nodes.stdout.strip() == "idle", nodes


# --- how many submissions a big run makes (dry runs, no cluster needed) ------------------------


def big_run(folder: Path) -> Path:
    """A config for 20,000 DigiFace identities in generation shards of 100, at the schema's
    default embedding shard sizes, over empty folders and files where the data and models would
    be: a dry run checks that they are there, and opens none of them."""
    for identity in range(20000):
        (folder / "digiface" / str(identity)).mkdir(parents=True)
    (folder / "ffhq").mkdir()
    for image in range(70000):
        (folder / "ffhq" / f"{image:05d}.png").touch()
    write_config(
        folder,
        **{
            "demo": None,
            "models": empty_model_layout(folder / "models"),
            "digiface.root": str(folder / "digiface"),
            "digiface.selection": {"mode": "range", "start": 0, "count": 20000},
            "digiface.identities_per_embed_shard": 500,
            "ffhq.root": str(folder / "ffhq"),
            "ffhq.count": 70000,
            "ffhq.images_per_embed_shard": 5000,
            "plan.identities_per_shard": 100,
            "plan.images_per_identity": 20,
            "export.formats": ["recordio", "webdataset"],  # a real run's (config.yaml)
            "export.mixin": None,
            "train.enabled": False,
            "benchmark.bins": {},
        },
    )
    return folder


def submissions(output: str) -> dict[str, int]:
    """sbatch submissions of a dry run: each group job, and each job outside a group (printed
    unindented), by group or rule name."""
    counts: dict[str, int] = {}
    for name in re.findall(r"Group job (\w+) \(jobs", output) + re.findall(
        r"^rule (\w+):$", output, re.M
    ):
        if name != "all":  # the target rule runs in snakemake itself
            counts[name] = counts.get(name, 0) + 1
    return counts


def dry_run(workdir: Path, profile: Path) -> dict[str, int]:
    result = subprocess.run(
        snakemake_argv(workdir, "--profile", str(profile), "--dry-run"),
        capture_output=True,
        text=True,
        env=job_environment(),
        cwd=workdir,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return submissions(result.stdout + result.stderr)


def test_a_200_shard_run_submits_267_jobs_or_212_with_the_profiles_groups(lab_profile, tmp_path):
    workdir = big_run(tmp_path / "run")
    one_by_one = dry_run(workdir, lab_profile)
    assert one_by_one == {
        "index_digiface": 1,
        "index_real": 1,
        "embed": 40 + 14,  # 20,000 identities / 500, 70,000 FFHQ images / 5,000
        "merge_embeddings": 2,
        "estimate_delta": 1,
        "plan": 1,
        "hash_models": 1,
        "generate": 200,
        "aggregate": 1,
        "evaluate": 1,
        "report": 1,
        "card": 1,
        "export_recordio": 1,
        "export_webdataset": 1,
    }
    assert sum(one_by_one.values()) == 267

    # The profile's commented-out grouping block, switched on.
    lines = (lab_profile / "config.yaml").read_text().splitlines()
    start = lines.index("# groups:")
    block = lines[start : lines.index("", start)]
    assert all(line.startswith("# ") for line in block)
    grouped = tmp_path / "grouped"
    grouped.mkdir()
    (grouped / "config.yaml").write_text("\n".join(lines + [line[2:] for line in block]) + "\n")
    grouped_counts = dry_run(workdir, grouped)
    assert grouped_counts == {
        "index": 1,
        "embed": 6,  # 54 in groups of 10
        "merge": 1,
        "estimate_delta": 1,
        "plan": 1,
        "hash_models": 1,
        "generate": 200,
        "finish": 1,  # aggregate, evaluate, report, card and the exports
    }
    assert sum(grouped_counts.values()) == 212
