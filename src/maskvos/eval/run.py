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
from typing import Any

from maskvos.eval.davis import EvalReport, evaluate_folders, natural_key, resolve_annotations_dir
from maskvos.eval.metrics import EvalError
from maskvos.inference.runner import PromptSpec, segment_video
from maskvos.io.frames import ImageFolderSource
from maskvos.io.masks import label_map_to_masks, read_label_map


@dataclass
class DatasetRun:
    """The evaluation of a dataset run, with its speed."""

    report: EvalReport
    frames: int
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def first_appearance_prompts(annotations: Path, source: ImageFolderSource) -> list[PromptSpec]:
    """Each object's mask on the first annotated frame where it appears."""
    stems = {source.stem(i): i for i in range(source.num_frames)}
    seen: set[int] = set()
    prompts = []
    for path in sorted(annotations.glob("*.png"), key=lambda p: natural_key(p.name)):
        frame_idx = stems.get(path.stem)
        if frame_idx is None:
            raise EvalError(f"Annotation '{path}' matches no frame of the sequence; name it like its frame.")
        for obj_id, mask in label_map_to_masks(read_label_map(path)).items():
            if obj_id not in seen:
                seen.add(obj_id)
                prompts.append(PromptSpec(frame_idx, obj_id, mask=mask))
    return prompts


def run_dataset(
    dataset: str | Path,
    model: Any,
    out_dir: str | Path,
    sequences: Sequence[str] | None = None,
    config: Any = None,
    model_name: str = "",
    on_sequence: Callable[[str, int, float], None] | None = None,
) -> DatasetRun:
    """Segment the sequences of `dataset` (`JPEGImages/<seq>/`, `Annotations/<seq>/`) and evaluate them."""
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
            formats=("png",),
            config=config,
            direction="forward",
            resume=True,
            model_name=model_name,
            masks_subdir="",
        )
        elapsed = time.perf_counter() - start
        frames_done += summary.frames_written
        seconds += elapsed
        if on_sequence:
            on_sequence(name, summary.frames_written, elapsed)
    report = evaluate_folders(annotations, out_dir, sequences=names)
    return DatasetRun(report, frames_done, seconds)
