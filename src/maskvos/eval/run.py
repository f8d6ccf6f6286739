"""Segment every sequence of a DAVIS-layout dataset from its annotations, then evaluate.

Semi-supervised protocol: each object is prompted with its mask on the first annotated frame where it
appears (the first frame for DAVIS; later frames for objects that enter later, as in YouTube-VOS).
Predictions go to `<out>/<sequence>/<frame>.png`; each sequence's run is resumable, and sequences
already complete are skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from maskvos.app import first_appearance_prompts, segment_video
from maskvos.backends import SessionModel
from maskvos.eval.davis import EvalReport, evaluate_folders, resolve_annotations_dir
from maskvos.eval.metrics import EvalError
from maskvos.inference.config import InferenceConfig
from maskvos.inference.postprocess import PostProcessor
from maskvos.io.frames import ImageFolderSource


@dataclass
class DatasetRun:
    """The evaluation of a dataset run, with its speed."""

    report: EvalReport
    frames: int
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def run_dataset(
    dataset: str | Path,
    model: SessionModel,
    out_dir: str | Path,
    sequences: Sequence[str] | None = None,
    config: InferenceConfig | None = None,
    model_name: str = "",
    on_sequence: Callable[[str, int, float], None] | None = None,
    postprocessors: Callable[[], Sequence[PostProcessor]] | Sequence[PostProcessor] = (),
) -> DatasetRun:
    """Segment the sequences of `dataset` (`JPEGImages/<seq>/`, `Annotations/<seq>/`) and evaluate them.

    `postprocessors` run between the session and the writers of every sequence (each sequence gets
    them afresh: frozen steps keep what they hold outside their settings, and it is reset per pass)."""
    dataset = Path(dataset)
    images = dataset / "JPEGImages"
    if (images / "480p").is_dir():
        images = images / "480p"
    if not images.is_dir():
        raise EvalError(f"Dataset '{dataset}' has no JPEGImages folder; pass a DAVIS-layout dataset root.")
    annotations = resolve_annotations_dir(dataset)
    names = sorted(p.name for p in images.iterdir() if p.is_dir())
    if sequences:
        unknown = [s for s in sequences if s not in names]
        if unknown:
            raise EvalError(f"Sequence '{unknown[0]}' is not in '{images}'; pick from {', '.join(names[:5])} ...")
        names = list(sequences)
    out_dir = Path(out_dir)
    frames_done, seconds = 0, 0.0
    for name in names:
        source = ImageFolderSource(images / name)
        prompts = first_appearance_prompts(annotations / name, source)
        start = time.perf_counter()
        summary = segment_video(
            model,
            source,
            prompts,
            out_dir / name,
            config=config,
            resume=True,
            model_name=model_name,
            masks_subdir="",
            resume_hint=f"delete it (or pass another --out) to segment '{name}' afresh",
            postprocessors=postprocessors() if callable(postprocessors) else postprocessors,
        )
        elapsed = time.perf_counter() - start
        frames_done += summary.frames_written
        seconds += elapsed
        if on_sequence:
            on_sequence(name, summary.frames_written, elapsed)
    report = evaluate_folders(annotations, out_dir, sequences=names)
    return DatasetRun(report, frames_done, seconds)
