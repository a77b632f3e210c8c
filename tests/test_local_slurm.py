"""scripts/local_slurm.sh waits for apt's and dpkg's locks instead of failing at once.

While another apt or dpkg runs (unattended-upgrades, a second install), apt-get fails at once
with exit 100 ("Could not get lock ..."). The script's apt-get calls (`install_packages`, which
`up` uses, and `apt_get` under it) wait for the lock, up to D2R_SLURM_APT_LOCK_TIMEOUT seconds,
and then fail with one line naming the lock.

Side-effect free: apt runs on a sandbox configuration (APT_CONFIG) of its own, so the locks it
takes, and the ones these tests hold, are files in a temporary folder, not the machine's. The
sandbox reads none of /etc/apt, knows only a local empty repository, installs nothing (the
package asked for is installed already) and its dpkg is /bin/false. Another process holds a
lock the way apt and dpkg take it (fcntl F_SETLK, a write lock); each test first checks that a
plain apt-get fails on it with exit 100 at once, then that the script's call waits and succeeds.

D2R_LOCAL_SLURM_SCRIPT=PATH runs the tests against another copy of the script (an older one,
to compare).

The last test checks the node's CPU count in the slurm.conf the script writes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(os.environ.get("D2R_LOCAL_SLURM_SCRIPT") or REPO / "scripts" / "local_slurm.sh")
PACKAGE = "coreutils"  # Essential: installed wherever apt-get is
APT_LOCKED = 100  # apt-get's exit status when it cannot get a lock
HOLD_S = 3.0  # how long a test holds a lock the script has to wait for
TIMEOUT_S = 60  # for every subprocess: nothing here may hang

# Takes the lock as apt and dpkg do (fcntl F_SETLK write lock on the whole file), says so, and
# holds it until it exits.
HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o640)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


@dataclass(frozen=True)
class Sandbox:
    root: Path
    env: dict[str, str]

    @property
    def frontend_lock(self) -> Path:  # dpkg's frontend lock: apt-get can wait for it itself
        return self.root / "state" / "lock-frontend"

    @property
    def archives_lock(self) -> Path:  # taken by install; apt-get has no option to wait for it
        return self.root / "cache" / "archives" / "lock"

    @property
    def lists_lock(self) -> Path:  # taken by update; apt-get has no option to wait for it
        return self.root / "lists" / "lock"


def apt_get(sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", *args], env=sandbox.env, capture_output=True, text=True, timeout=TIMEOUT_S
    )


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Sandbox:
    if os.geteuid() != 0:
        pytest.skip(f"apt-get install needs root; running as uid {os.geteuid()}")
    if shutil.which("apt-get") is None:
        pytest.skip("no apt-get here")
    if not Path("/var/lib/dpkg/status").is_file():
        pytest.skip("no dpkg database (/var/lib/dpkg/status) here")
    root = tmp_path_factory.mktemp("apt")
    for folder in ("state", "lists", "cache", "log", "etc/parts", "etc/prefs", "etc/sources"):
        (root / folder).mkdir(parents=True)
    # Its own copy of the dpkg database: apt locks the folder of Dir::State::status.
    shutil.copy("/var/lib/dpkg/status", root / "state" / "status")
    (root / "repo").mkdir()
    (root / "repo" / "Packages").touch()
    (root / "etc" / "sources.list").write_text(f"deb [trusted=yes] file:{root}/repo ./\n")
    config = root / "apt.conf"
    config.write_text(
        f"""\
Dir::Etc::Main "{root}/etc/none.conf";
Dir::Etc::Parts "{root}/etc/parts/";
Dir::Etc::PreferencesParts "{root}/etc/prefs/";
Dir::Etc::SourceList "{root}/etc/sources.list";
Dir::Etc::SourceParts "{root}/etc/sources/";
Dir::State::status "{root}/state/status";
Dir::State::Lists "{root}/lists/";
Dir::Cache "{root}/cache/";
Dir::Log "{root}/log/";
Dir::Bin::dpkg "/bin/false";
APT::Sandbox::User "root";
"""
    )
    env = {
        **os.environ,
        "APT_CONFIG": str(config),
        "D2R_SLURM_APT_LOCK_TIMEOUT": "20",
        "DEBIAN_FRONTEND": "noninteractive",
    }
    sandbox = Sandbox(root, env)
    shown = subprocess.run(
        ["apt-config", "shell", "STATUS", "Dir::State::status/f"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert f"{root}/state/status" in shown.stdout, f"apt ignores APT_CONFIG: {shown}"
    # Without any lock held, both calls succeed here (else it is no test of waiting).
    for args in (["update", "-qq"], ["install", "-y", "-qq", "--no-install-recommends", PACKAGE]):
        done = apt_get(sandbox, *args)
        if done.returncode != 0:
            pytest.skip(f"apt-get {' '.join(args)} fails here even unlocked: {done.stderr.strip()}")
    return sandbox


@contextmanager
def lock_held(path: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """`path` locked by another process, which lets go after `seconds` (or on leaving)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        # The holder exits after `seconds` at the latest: this cannot hang.
        assert holder.stdout.readline() == "locked\n", f"could not lock {path}"
        yield holder
    finally:
        holder.kill()
        holder.wait(timeout=TIMEOUT_S)
        if holder.stdout is not None:
            holder.stdout.close()


def script(
    sandbox: Sandbox, *command: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Runs one of the script's functions: sourced with the argument `help` (its main then only
    prints the usage), the script defines its functions and starts nothing. Returns the
    process and how long it took."""
    start = time.monotonic()
    done = subprocess.run(
        ["bash", "-c", 'source "$0" help >/dev/null\n"$@"', str(SCRIPT), *command],
        env={**sandbox.env, **env},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    return done, time.monotonic() - start


def assert_plain_apt_get_fails_at_once(sandbox: Sandbox, *args: str) -> None:
    """The held lock is one apt-get takes: without waiting, it fails on it at once."""
    start = time.monotonic()
    plain = apt_get(sandbox, *args)
    assert plain.returncode == APT_LOCKED, plain
    assert time.monotonic() - start < HOLD_S / 2, "plain apt-get waited for the lock"
    assert "Could not get lock" in plain.stderr, plain.stderr


@pytest.mark.parametrize("lock", ["frontend_lock", "archives_lock"])
def test_install_waits_for_a_held_lock(sandbox: Sandbox, lock: str) -> None:
    path = getattr(sandbox, lock)
    with lock_held(path, HOLD_S) as holder:
        assert_plain_apt_get_fails_at_once(sandbox, "install", "-y", "-qq", PACKAGE)
        done, took = script(sandbox, "install_packages", PACKAGE)
    assert done.returncode == 0, f"exit {done.returncode} after {took:.1f} s:\n{done.stderr}"
    assert took >= HOLD_S - 1, f"done after {took:.1f} s: did not wait for {path}"
    assert f"{path} is locked by process {holder.pid}" in done.stderr, done.stderr


def test_update_waits_for_the_lists_lock(sandbox: Sandbox) -> None:
    with lock_held(sandbox.lists_lock, HOLD_S) as holder:
        assert_plain_apt_get_fails_at_once(sandbox, "update", "-qq")
        done, took = script(sandbox, "apt_get", "update", "-qq")
    assert done.returncode == 0, f"exit {done.returncode} after {took:.1f} s:\n{done.stderr}"
    assert took >= HOLD_S - 1, f"done after {took:.1f} s: did not wait for {sandbox.lists_lock}"
    assert f"{sandbox.lists_lock} is locked by process {holder.pid}" in done.stderr, done.stderr


def test_gives_up_after_the_timeout_with_one_line(sandbox: Sandbox) -> None:
    path = sandbox.frontend_lock
    with lock_held(path, 10 * HOLD_S) as holder:
        done, took = script(sandbox, "install_packages", PACKAGE, D2R_SLURM_APT_LOCK_TIMEOUT="1")
    assert done.returncode == 1, f"exit {done.returncode} after {took:.1f} s:\n{done.stderr}"
    assert took < 5 * HOLD_S, f"gave up only after {took:.1f} s"
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line or "E: " in line]
    assert len(errors) == 1, done.stderr
    expected = rf"{re.escape(str(path))} still locked after waiting [1-9]\d*s"
    assert re.search(expected, errors[0]), errors[0]
    assert f"held by process {holder.pid}" in errors[0], errors[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="write_configs installs its files owned by root")
def test_the_node_gets_every_cpu_whatever_openmp_is_told(tmp_path: Path) -> None:
    """The node line's CPUs are the CPUs this process may run on (its affinity), not the
    OpenMP limits: coreutils' nproc answers OMP_NUM_THREADS, and a 1-CPU node leaves the 2-thread
    generation jobs of tests/test_slurm.py pending for good under OMP_NUM_THREADS=1."""
    # D2R_SLURM_ROOT puts the config folder under tmp_path; set_paths the state folder.
    done = subprocess.run(
        [
            "bash",
            "-c",
            'source "$0" help >/dev/null\nset_paths "$1/state"\nwrite_configs',
            str(SCRIPT),
            str(tmp_path),
        ],
        env={
            **os.environ,
            "D2R_SLURM_ROOT": str(tmp_path),
            "OMP_NUM_THREADS": "1",
            "OMP_THREAD_LIMIT": "1",
        },
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    slurm_conf = (tmp_path / "etc" / "slurm" / "slurm.conf").read_text()
    node_cpus = re.findall(r"^NodeName=.* CPUs=(\d+) ", slurm_conf, re.MULTILINE)
    assert node_cpus == [str(len(os.sched_getaffinity(0)))], slurm_conf
