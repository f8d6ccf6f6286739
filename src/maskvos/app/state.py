"""The saved state of a run: written every few frames, read back by `--resume`.

A state file holds a format version, the run's signature (source, model, settings, prompts,
outputs), where the run stands (pass and next frame), and the session's and the post-processing
chain's states. Anything that does not fit (a corrupt or truncated file, another format version,
another signature) is refused with one sentence; the run can always start afresh without resuming.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from maskvos.errors import MaskvosError
from maskvos.inference.api import Session
from maskvos.inference.postprocess import PostChain
from maskvos.io.files import atomic_path

#: Bumped whenever what a state file holds changes; older files are refused.
STATE_VERSION = 3
STATE_DIR = ".maskvos"


class RunError(MaskvosError):
    """A segmentation run that cannot start or resume as asked."""


@dataclass(frozen=True)
class SaveSchedule:
    """The run's state is saved after this many frames or seconds, whichever comes first."""

    every_frames: int = 50
    every_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.every_frames < 1 or self.every_seconds <= 0:
            raise RunError("A save schedule needs at least 1 frame and a positive number of seconds.")


@dataclass(frozen=True)
class RunPosition:
    """Where a run stands: the pass it is in and the next frame of that pass."""

    pass_idx: int
    next_frame: int


class RunStateFile:
    """`<out>/.maskvos/state.pt` of one run."""

    def __init__(self, out_dir: Path, schedule: SaveSchedule, resume_hint: str) -> None:
        self.path = out_dir / STATE_DIR / "state.pt"
        self.schedule = schedule
        self.resume_hint = resume_hint
        self._last_time = time.perf_counter()
        self._last_count = 0

    def exists(self) -> bool:
        return self.path.is_file()

    def due(self, frames_done: int) -> bool:
        """Whether a save is due after `frames_done` frames of this run."""
        return (
            frames_done - self._last_count >= self.schedule.every_frames
            or time.perf_counter() - self._last_time >= self.schedule.every_seconds
        )

    def save(self, signature: dict, position: RunPosition, session: Session, chain: PostChain, frames_done: int) -> None:
        self.path.parent.mkdir(exist_ok=True)
        state = {
            "version": STATE_VERSION,
            "signature": signature,
            "pass_idx": position.pass_idx,
            "next_frame": position.next_frame,
            "session": session.state_dict(),
            "postprocess": chain.state_dict(),
        }
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)
        self._last_time, self._last_count = time.perf_counter(), frames_done

    def restore(self, signature: dict, session: Session, chain: PostChain) -> RunPosition:
        """Load the saved state into `session` and `chain`; where the run continues."""
        try:
            state = torch.load(self.path, weights_only=True)
        except Exception as exc:
            raise RunError(
                f"Saved state '{self.path}' is corrupt or truncated ({type(exc).__name__}); {self.resume_hint}."
            ) from None
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            found = state.get("version", "none") if isinstance(state, dict) else "none"
            raise RunError(
                f"Saved state '{self.path}' has format version {found}, not {STATE_VERSION} (another maskvos "
                f"version wrote it); {self.resume_hint}."
            )
        try:
            saved_signature = state["signature"]
            if saved_signature != signature:
                differs = next(k for k in signature if saved_signature.get(k) != signature[k])
                raise RunError(
                    f"Output folder '{self.path.parent.parent}' holds a run with other settings ({differs} differs); "
                    f"use another --out, or {self.resume_hint}."
                )
            session.load_state_dict(state["session"])
            chain.load_state_dict(state["postprocess"])
            return RunPosition(int(state["pass_idx"]), int(state["next_frame"]))
        except MaskvosError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError, StopIteration) as exc:
            raise RunError(
                f"Saved state '{self.path}' does not fit this run ({type(exc).__name__}); {self.resume_hint}."
            ) from None
