"""Fault injection for the tests, read from the environment; inert when unset.

The workflow tests run real Snakemake jobs in other processes, so they reach a generation job
through its environment: DIGI2REAL_FAIL_SHARDS (comma-separated shards that fail before their
commit), DIGI2REAL_FAIL_ONCE_DIR (each shard fails once, leaving a marker file there) and
DIGI2REAL_KILL_AFTER_IMAGES (SIGKILL after that many images written) and
DIGI2REAL_KILL_AFTER_PACKED (SIGKILL after that many images packed into the shard's archive, the
archive half written) and DIGI2REAL_WAIT_AFTER_BATCHES (after that many batches generated, wait
for a stop request before the next: a test then signals the job at a known point; with
DIGI2REAL_WAIT_ONCE_DIR, only a shard's first job waits, leaving a marker there); and, for the
benchmarks, DIGI2REAL_FORCE_DETECTIONS=1 (a face pipeline takes the template's five points where
its detector finds no face); and the training's, TrainingFaults. Nothing else reads them.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path


def forced_detections() -> bool:
    return os.environ.get("DIGI2REAL_FORCE_DETECTIONS") == "1"


def first_time(marker: Path) -> bool:
    """Whether a once-only fault has not yet hit: `marker` is absent (and is left now)."""
    if marker.exists():
        return False
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return True


class Faults:
    """Fault injection for the tests, read from the environment; inert when unset."""

    def __init__(self, shard: int) -> None:
        self.shard = shard
        self.fail = str(shard) in os.environ.get("DIGI2REAL_FAIL_SHARDS", "").split(",")
        self.fail_once_dir = os.environ.get("DIGI2REAL_FAIL_ONCE_DIR")
        self.kill_after = int(os.environ.get("DIGI2REAL_KILL_AFTER_IMAGES", "0") or 0)
        self.kill_after_packed = int(os.environ.get("DIGI2REAL_KILL_AFTER_PACKED", "0") or 0)
        self.wait_after_batches = int(os.environ.get("DIGI2REAL_WAIT_AFTER_BATCHES", "0") or 0)
        self.wait_once_dir = os.environ.get("DIGI2REAL_WAIT_ONCE_DIR")
        self.written = 0
        self.packed = 0
        self.batches = 0

    def image_written(self) -> None:
        self.written += 1
        if self.kill_after and self.written >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def image_packed(self) -> None:
        self.packed += 1
        if self.kill_after_packed and self.packed >= self.kill_after_packed:
            os.kill(os.getpid(), signal.SIGKILL)

    def batch_generated(self, should_stop: Callable[[], bool], timeout: float = 600) -> None:
        self.batches += 1
        if self.wait_after_batches and self.batches == self.wait_after_batches:
            if self.wait_once_dir and not first_time(
                Path(self.wait_once_dir) / f"wait-shard-{self.shard}"
            ):
                return
            deadline = time.monotonic() + timeout
            while not should_stop() and time.monotonic() < deadline:
                time.sleep(0.05)

    def before_commit(self) -> None:
        if self.fail:
            raise RuntimeError(f"shard {self.shard}: failure injected by DIGI2REAL_FAIL_SHARDS")
        if self.fail_once_dir and first_time(Path(self.fail_once_dir) / f"shard-{self.shard}"):
            raise RuntimeError(f"shard {self.shard}: one failure injected")


class TrainingFaults:
    """The training's faults: DIGI2REAL_TRAIN_KILL_AFTER_STEPS (SIGKILL once that many steps
    are done) and DIGI2REAL_TRAIN_TERM_AFTER_STEPS (SIGTERM to itself then, as SLURM sends
    before a time limit); with DIGI2REAL_TRAIN_FAULT_ONCE_DIR, only a run that finds no marker
    there is hit, leaving one for its work folder (the retry then runs through)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.kill_after = int(os.environ.get("DIGI2REAL_TRAIN_KILL_AFTER_STEPS", "0") or 0)
        self.term_after = int(os.environ.get("DIGI2REAL_TRAIN_TERM_AFTER_STEPS", "0") or 0)
        self.once_dir = os.environ.get("DIGI2REAL_TRAIN_FAULT_ONCE_DIR")

    def _first_time(self) -> bool:
        if not self.once_dir:
            return True
        job = hashlib.sha256(str(self.work.absolute()).encode()).hexdigest()[:16]
        return first_time(Path(self.once_dir) / f"train-{job}-{os.environ.get('RANK', '0')}")

    def step_done(self, step: int) -> None:
        if self.kill_after and step == self.kill_after and self._first_time():
            os.kill(os.getpid(), signal.SIGKILL)
        if self.term_after and step == self.term_after and self._first_time():
            os.kill(os.getpid(), signal.SIGTERM)
