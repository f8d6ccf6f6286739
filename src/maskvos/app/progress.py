"""Progress of long work on a terminal (tqdm): frames done, frames per second, time left."""

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


def terminal_progress(label: str = "segmenting", stream: TextIO | None = None) -> ProgressFactory:
    """A factory of tqdm bars ("segmenting  40%|████  | 40/100 [00:10<00:15, 3.9 frames/s]").

    Off a terminal (a log file, CI) nothing is drawn: the run's summary says what was done.
    """
    out = stream or sys.stderr

    def make(total: int | None) -> FrameProgress:
        is_tty = bool(getattr(out, "isatty", lambda: False)())
        return tqdm(total=total, desc=label, unit=" frames", unit_scale=False, file=out, disable=not is_tty,
                    dynamic_ncols=True, mininterval=0.25, smoothing=0.1)

    return make
