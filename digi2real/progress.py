"""Progress lines for long jobs: plain lines with rate and ETA, readable in a SLURM log file."""

from __future__ import annotations

import logging
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
