"""Progress of long work (tqdm): frames done, frames per second, time left."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Protocol, TextIO

from tqdm import tqdm


class FrameProgress(Protocol):
    """What a run reports progress to."""

    def update(self, n: int = 1) -> None: ...

    def close(self) -> None: ...


#: Makes a progress display for a run of `total` frames (None: unknown length).
ProgressFactory = Callable[[int | None], FrameProgress]

#: Off a terminal (a log, CI), one progress line this often (seconds).
LOG_INTERVAL = 30.0


class _LogLines:
    """A stream for tqdm off a terminal: each redraw becomes one plain line (no carriage returns)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def terminal_progress(label: str = "segmenting", stream: TextIO | None = None) -> ProgressFactory:
    """A factory of tqdm bars ("segmenting  40%|████  | 40/100 [00:10<00:15, 3.90 frames/s]"),
    redrawn in place on a terminal; elsewhere a plain line every `LOG_INTERVAL` seconds and at the end."""
    out = stream or sys.stderr

    def make(total: int | None) -> FrameProgress:
        if bool(getattr(out, "isatty", lambda: False)()):
            return tqdm(total=total, desc=label, unit=" frames", file=out, dynamic_ncols=True, mininterval=0.25)
        return tqdm(total=total, desc=label, unit=" frames", file=_LogLines(out), ncols=80, ascii=True,
                    mininterval=LOG_INTERVAL, maxinterval=LOG_INTERVAL)

    return make
