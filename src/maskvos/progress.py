"""A small progress display for long runs: frames done, frames per second, time left."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class Progress:
    """Prints `label done/total frames, x frames/s, ETA h:mm:ss` to a stream.

    On a terminal the line is redrawn in place (at most every `interval` seconds); elsewhere (logs,
    CI) a line is printed every `log_interval` seconds and at the end.
    """

    def __init__(
        self,
        total: int | None,
        label: str = "segmenting",
        stream: TextIO | None = None,
        interval: float = 0.25,
        log_interval: float = 30.0,
    ) -> None:
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if self.is_tty else log_interval
        self.done = 0
        self.start = time.perf_counter()
        self._last_print = -float("inf")

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    def line(self) -> str:
        total = "?" if self.total is None else str(self.total)
        text = f"{self.label} {self.done}/{total} frames, {self.rate:.2f} frames/s"
        if self.total is not None and self.rate > 0:
            text += f", ETA {format_seconds((self.total - self.done) / self.rate)}"
        return text

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self._last_print >= self.interval:
            self._print()
            self._last_print = now

    def _print(self) -> None:
        if self.is_tty:
            self.stream.write("\r\033[K" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        self._print()
        if self.is_tty:
            self.stream.write("\n")
        self.stream.flush()
