"""Segment a whole video to files: prompts in, per-frame outputs out, resumable.

`segment_video` is what `maskvos segment`, `maskvos eval-run` and later front ends run. Its steps:
open the source and the session, give the prompts, plan the passes, restore a saved state when
resuming, then for every frame: session -> post-processing chain -> writers, saving the run's
state every few frames; at the end close the writers and save the final state. Outputs are
described in `maskvos.io.writers`; every file is written atomically.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maskvos.app.progress import FrameProgress, ProgressFactory
from maskvos.app.prompts import PromptSpec
from maskvos.app.state import RunError, RunPosition, RunStateFile, SaveSchedule
from maskvos.backends import SessionModel, SourceLike, backend_of, open_session
from maskvos.inference.api import FrameResult, Pass, Session
from maskvos.inference.config import InferenceConfig
from maskvos.inference.postprocess import OverlapResolver, PostChain, PostProcessor
from maskvos.io.frames import FrameSource, open_source
from maskvos.io.writers import (
    OutputFrame,
    OutputTarget,
    Writer,
    finishing,
    open_writers,
    prepare_output_dir,
    resolve_formats,
)


@dataclass
class SegmentSummary:
    """What a run did."""

    frames_written: int
    num_frames: int | None
    obj_ids: list[int]
    seconds: float
    out_dir: Path
    outputs: list[str]
    present_frames: dict[int, int] = field(default_factory=dict)
    resumed_at: int | None = None

    def lines(self) -> list[str]:
        rate = self.frames_written / self.seconds if self.seconds > 0 else 0.0
        out = [
            f"segmented {self.frames_written} frames"
            + (f" (resumed at frame {self.resumed_at})" if self.resumed_at is not None else "")
            + f" of {len(self.obj_ids)} object(s) in {self.seconds:.1f} s ({rate:.2f} frames/s)",
        ]
        for obj_id in self.obj_ids:
            out.append(f"  object {obj_id}: present on {self.present_frames.get(obj_id, 0)} of the frames written")
        out += [f"  {line}" for line in self.outputs]
        return out


def segment_video(
    model: SessionModel,
    source: SourceLike,
    prompts: Sequence[PromptSpec],
    out_dir: str | Path,
    formats: Sequence[str] = ("png",),
    config: InferenceConfig | None = None,
    direction: str = "forward",
    resume: bool = False,
    model_name: str = "",
    progress: ProgressFactory | None = None,
    fps: float = 24.0,
    masks_subdir: str = "masks",
    save: SaveSchedule | None = None,
    postprocessors: Sequence[PostProcessor] = (),
    resume_hint: str = "run again without --resume to start afresh",
) -> SegmentSummary:
    """Prompt, propagate and write every frame's masks.

    Arguments:
        formats: output formats (see `maskvos.io.writers.FORMATS`).
        direction: "forward" from the first prompt, "backward" from the last, or "both".
        resume: continue a run interrupted in `out_dir` (same settings required).
        masks_subdir: folder of the label maps under `out_dir` ("" for `out_dir` itself).
        save: how often the run's state is saved for `resume` (default: every 50 frames or 30 s).
        postprocessors: steps between the session and the writers, before the overlap rule.
        resume_hint: what the user should do when a saved state cannot be used (ends the sentence).
    """
    config = config or InferenceConfig()
    _check_request(formats, prompts)
    frames = open_source(source)
    session = open_session(model, frames, config)
    for spec in prompts:
        spec.apply(session)
    chain = PostChain([*postprocessors, OverlapResolver(config.overlap)])
    plan = session.plan_passes(direction=direction)
    if "overlay" in formats and frames.num_frames is None and resume:
        raise RunError("An overlay preview of a stream cannot be resumed (the stream cannot be read again); drop 'overlay' or --resume.")
    out = prepare_output_dir(out_dir)
    signature = _signature(source, frames, model, model_name, config, direction, prompts, formats, chain)
    state = RunStateFile(out, save or SaveSchedule(), resume_hint)
    position, resumed_at = RunPosition(0, plan[0].start), None
    if resume and state.exists():
        position = state.restore(signature, session, chain)
        resumed_at = position.next_frame
    remaining = _remaining(plan, position)
    target = OutputTarget(out, frames, out / masks_subdir if masks_subdir else out, fps, resume=resumed_at is not None)
    writers = open_writers(formats, target)
    run = _Run(session, chain, writers, frames, state, signature)
    total = _frames_to_go(remaining, frames.num_frames)
    bar = progress(total) if progress else None
    began = time.perf_counter()
    try:
        with finishing(writers):
            run.execute(remaining, bar)
    finally:
        if bar:
            bar.close()
    state.save(signature, RunPosition(len(plan), 0), session, chain, run.written)
    return SegmentSummary(
        frames_written=run.written,
        num_frames=frames.num_frames,
        obj_ids=session.obj_ids,
        seconds=time.perf_counter() - began,
        out_dir=out,
        outputs=[w.describe() for w in writers],
        present_frames=run.present,
        resumed_at=resumed_at,
    )


class _Run:
    """The frame loop of one run: session -> chain -> writers, with periodic state saves."""

    def __init__(
        self,
        session: Session,
        chain: PostChain,
        writers: list[Writer],
        frames: FrameSource,
        state: RunStateFile,
        signature: dict,
    ) -> None:
        self.session, self.chain, self.writers, self.frames = session, chain, writers, frames
        self.state, self.signature = state, signature
        self.needs_image = any(w.needs_image for w in writers)
        self.written = 0
        self.present: dict[int, int] = {}
        #: images of the frames the chain holds, for the writers that need them (at most its delay).
        self.images: dict[int, np.ndarray] = {}

    def execute(self, remaining: list[tuple[int, Pass | None]], bar: FrameProgress | None) -> None:
        for pass_idx, p in remaining:
            for result in self.session.run_passes([p]) if p is not None else ():
                if self.needs_image:  # the frame is cached now; the chain may hold the result a while
                    self.images[result.frame_idx] = self.session.frame(result.frame_idx)
                self._write_all(self.chain.process(result), bar)
                nxt = result.frame_idx + p.step
                if self.state.due(self.written):
                    self.state.save(self.signature, RunPosition(pass_idx, nxt), self.session, self.chain, self.written)
            self._write_all(self.chain.flush(), bar)

    def _write_all(self, results: list[FrameResult], bar: FrameProgress | None) -> None:
        for result in results:
            image = None
            if self.needs_image:
                image = self.images.pop(result.frame_idx, None)
                if image is None:  # held by the chain across a resume
                    image = self.session.frame(result.frame_idx)
            frame = OutputFrame(result.frame_idx, self.frames.stem(result.frame_idx), image)
            for writer in self.writers:
                writer.write(frame, result)
            self.written += 1
            for obj_id, mask in zip(result.obj_ids, result.masks):
                self.present[obj_id] = self.present.get(obj_id, 0) + int(bool(mask.any()))
            if bar:
                bar.update()


def _check_request(formats: Sequence[str], prompts: Sequence[PromptSpec]) -> None:
    resolve_formats(formats)  # an unknown format is refused before anything is opened or written
    if not prompts:
        raise RunError("No prompt was given; pass --prompt MASK.png, --points or --box.")


def _signature(
    source: SourceLike,
    frames: FrameSource,
    model: SessionModel,
    model_name: str,
    config: InferenceConfig,
    direction: str,
    prompts: Sequence[PromptSpec],
    formats: Sequence[str],
    chain: PostChain,
) -> dict:
    """What must be equal for a saved run to be continued."""
    return {
        "source": _source_identity(source, frames),
        "num_frames": frames.num_frames,
        "model": model_name or getattr(model.config, "name", type(model).__name__),
        "backend": backend_of(model).name,
        "model_settings": repr(model.config),
        "settings": repr(config),
        "postprocess": repr(chain),
        "direction": direction,
        "prompts": [p.digest() for p in prompts],
        "formats": sorted(formats),
    }


def _source_identity(source: SourceLike, frames: FrameSource) -> str:
    """The source as a signature sees it: its path, else what the source says it is (a folder or
    video file), else its kind and size (arrays and streams)."""
    if isinstance(source, (str, Path)):
        return str(source)
    if type(frames).__repr__ is not object.__repr__:
        return repr(frames)
    return f"{type(frames).__name__}({frames.num_frames} frames, {frames.width}x{frames.height})"


def _remaining(plan: list[Pass], position: RunPosition) -> list[tuple[int, Pass | None]]:
    """The passes still to run, numbered as in the plan, the current one from its next frame. A
    current pass with no frame left is kept as None: the frames the chain still held when the state
    was saved are flushed at its end, as in an uninterrupted run."""
    out: list[tuple[int, Pass | None]] = []
    for idx in range(position.pass_idx, len(plan)):
        out.append((idx, plan[idx] if idx > position.pass_idx else plan[idx].resumed_at(position.next_frame)))
    return out


def _frames_to_go(remaining: list[tuple[int, Pass | None]], num_frames: int | None) -> int | None:
    lengths = [0 if p is None else p.length(num_frames) for _, p in remaining]
    return None if any(n is None for n in lengths) else sum(lengths)

