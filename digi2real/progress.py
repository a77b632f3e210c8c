"""Long jobs: progress lines with rate and ETA, readable in a SLURM log file, and the stop
request (SIGTERM, SIGINT) they check between steps."""

from __future__ import annotations

import logging
import signal
import time

log = logging.getLogger("digi2real")


class Progress:
    def __init__(self, what: str, total: int, every_seconds: float = 10.0) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self.every_seconds = every_seconds
        self.started = time.monotonic()
        self.last_report = self.started

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last_report >= self.every_seconds or self.done >= self.total:
            self.last_report = now
            self.report(now)

    def report(self, now: float | None = None) -> None:
        elapsed = (now or time.monotonic()) - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        remaining = (self.total - self.done) / rate if rate > 0 else float("nan")
        log.info(
            "%s: %d/%d (%.0f%%), %.2f/s, %.0f s elapsed, ~%.0f s left",
            self.what,
            self.done,
            self.total,
            100.0 * self.done / max(self.total, 1),
            rate,
            elapsed,
            remaining,
        )


STOPPED = 143  # a long job's exit code after SIGTERM, as a shell reports a process ended by it


class StopFlag:
    """Set by SIGTERM (SLURM's warning before a kill or a preemption) and SIGINT while the
    block it guards runs; the handlers before it are back once the block ends."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.stopped = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopFlag:
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *_exception) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum, _frame) -> None:
        log.warning("received %s: stopping after the current step", signal.Signals(signum).name)
        self.stopped = True

    def __call__(self) -> bool:
        return self.stopped
