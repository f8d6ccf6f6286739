"""Segment a whole video to files: prompts in, per-frame outputs out, resumable.

`segment_video` is what `maskvos segment` runs. Outputs (under the output folder):

- `masks/<frame>.png`   DAVIS-style palette label maps (format "png");
- `objects/<id>/<frame>.png`  per-object 0/255 masks (format "objects");
- `rle/<frame>.json`    COCO RLE per object (format "rle");
- `overlay.mp4`         a preview, each object tinted in its palette colour (format "overlay"; built
  from the label maps at the end, so it implies "png").

Every file is written atomically. The session's state is saved in `.maskvos/state.pt` every few
frames; `resume=True` restores it and continues exactly where it was saved.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from maskvos.errors import MaskvosError
from maskvos.inference.config import InferenceConfig
from maskvos.backends import open_session
from maskvos.inference.session import FrameResult, VideoSession
from maskvos.io.frames import FrameSource, open_source
from maskvos.io.masks import MaskFileError, label_map_to_masks, read_label_map
from maskvos.io.writers import ObjectPngWriter, OverlayVideoWriter, PalettePngWriter, RleJsonWriter, prepare_output_dir
from maskvos.model.sam2 import SAM2Model
from maskvos.progress import Progress

FORMATS = ("png", "objects", "rle", "overlay")
STATE_DIR = ".maskvos"
#: The session state is saved after this many frames or seconds, whichever comes first.
SAVE_EVERY_FRAMES, SAVE_EVERY_SECONDS = 50, 30.0


class RunError(MaskvosError):
    """A segmentation run that cannot start or resume as asked."""


@dataclass
class PromptSpec:
    """One prompt: a mask, and/or clicks and a box, for one object on one frame."""

    frame_idx: int
    obj_id: int
    mask: np.ndarray | None = None
    points: list[tuple[float, float]] | None = None
    labels: list[int] | None = None
    box: tuple[float, float, float, float] | None = None

    def apply(self, session: VideoSession) -> None:
        if self.mask is not None:
            session.add_mask(self.frame_idx, self.obj_id, self.mask)
        if self.points or self.box is not None:
            session.add_points(self.frame_idx, self.obj_id, self.points, self.labels, self.box)

    def digest(self) -> str:
        h = hashlib.sha1(f"{self.frame_idx}:{self.obj_id}:{self.points}:{self.labels}:{self.box}".encode())
        if self.mask is not None:
            h.update(np.packbits(self.mask).tobytes())
        return h.hexdigest()


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
        out += [f"  {name}" for name in self.outputs]
        return out


def prompts_from_mask_file(path: str | Path, source: FrameSource, frame_idx: int, obj_id: int | None) -> list[PromptSpec]:
    """Mask prompts from a PNG (a palette label map gives one object per id; a grey or 0/255 mask one
    object, `obj_id` or 1) or from a folder of such PNGs named like the frames they belong to."""
    path = Path(path)
    if path.is_dir():
        return _prompts_from_folder(path, source)
    if not path.is_file():
        raise MaskFileError(f"Prompt '{path}' does not exist; pass a mask PNG or a folder of mask PNGs.")
    return _prompts_from_label_map(read_label_map(path), path, frame_idx, obj_id)


def _prompts_from_label_map(labels: np.ndarray, path: Path, frame_idx: int, obj_id: int | None) -> list[PromptSpec]:
    masks = label_map_to_masks(labels)
    if not masks:
        raise MaskFileError(f"Mask file '{path}' is empty (no object pixel); draw the object or use --points/--box.")
    if obj_id is not None:
        if len(masks) > 1 and obj_id not in masks:
            raise MaskFileError(f"Mask file '{path}' has no object {obj_id} (ids: {', '.join(map(str, masks))}).")
        if len(masks) == 1:
            return [PromptSpec(frame_idx, obj_id, mask=next(iter(masks.values())))]
        return [PromptSpec(frame_idx, obj_id, mask=masks[obj_id])]
    return [PromptSpec(frame_idx, k, mask=m) for k, m in masks.items()]


def _prompts_from_folder(folder: Path, source: FrameSource) -> list[PromptSpec]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise MaskFileError(f"Prompt folder '{folder}' holds no PNG masks; pass a folder of palette PNGs.")
    by_stem: dict[str, int] = {}
    if source.num_frames is not None:
        by_stem = {source.stem(i): i for i in range(source.num_frames)}
    specs = []
    for file in files:
        frame_idx = by_stem.get(file.stem)
        if frame_idx is None and file.stem.isdigit():
            frame_idx = int(file.stem)
        if frame_idx is None:
            raise MaskFileError(f"Mask '{file}' matches no frame of the video; name it like the frame it belongs to.")
        source.check_index(frame_idx)
        specs += _prompts_from_label_map(read_label_map(file), file, frame_idx, None)
    return specs


class _Outputs:
    """The per-frame writers of a run."""

    def __init__(self, out_dir: Path, formats: Sequence[str], masks_subdir: str = "masks") -> None:
        self.out_dir = out_dir
        self.masks_dir = out_dir / masks_subdir if masks_subdir else out_dir
        self.writers: list = []
        self.has_masks = "png" in formats or "overlay" in formats
        if self.has_masks:
            self.writers.append(PalettePngWriter(self.masks_dir))
        if "objects" in formats:
            self.writers.append(ObjectPngWriter(out_dir / "objects"))
        if "rle" in formats:
            self.writers.append(RleJsonWriter(out_dir / "rle"))

    def write(self, stem: str, result: FrameResult) -> None:
        labels = result.label_map()
        masks = result.masks_by_id()
        for writer in self.writers:
            writer.write(stem, labels, masks)

    def describe(self, formats: Sequence[str]) -> list[str]:
        names = []
        if self.has_masks:
            names.append(f"label maps:      {self.masks_dir}/")
        if "objects" in formats:
            names.append(f"object masks:    {self.out_dir / 'objects'}/<id>/")
        if "rle" in formats:
            names.append(f"COCO RLE:        {self.out_dir / 'rle'}/")
        if "overlay" in formats:
            names.append(f"overlay preview: {self.out_dir / 'overlay.mp4'}")
        return names


def _passes(direction: str, start: int) -> list[tuple[str, int]]:
    if direction == "both":
        return [("forward", start), ("backward", start)]
    return [(direction, start)]


def segment_video(
    model: SAM2Model,
    source: str | Path | FrameSource,
    prompts: Sequence[PromptSpec],
    out_dir: str | Path,
    formats: Sequence[str] = ("png",),
    config: InferenceConfig | None = None,
    direction: str = "forward",
    resume: bool = False,
    model_name: str = "",
    progress: Callable[[int | None], Progress] | None = None,
    fps: float = 24.0,
    masks_subdir: str = "masks",
) -> SegmentSummary:
    """Prompt, propagate and write every frame's masks; see the module docstring for the outputs."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise RunError(f"Output format '{unknown[0]}' is unknown; use any of {', '.join(FORMATS)}.")
    if not prompts:
        raise RunError("No prompt was given; pass --prompt MASK.png, --points or --box.")
    frames = open_source(source)
    if "overlay" in formats and frames.num_frames is None:
        raise RunError("An overlay preview needs a video or folder it can read twice; drop 'overlay' from --format.")
    session = open_session(model, frames, config)
    for spec in prompts:
        spec.apply(session)
    out_dir = prepare_output_dir(out_dir)
    state_path = out_dir / STATE_DIR / "state.pt"
    signature = {
        "source": str(source),
        "num_frames": frames.num_frames,
        "model": model_name or getattr(model.config, "name", type(model).__name__),
        "resolution": getattr(session, "resolution", None),
        "settings": repr(getattr(session, "config", None)),  # InferenceConfig or FeatMatchConfig
        "direction": direction,
        "prompts": [p.digest() for p in prompts],
    }
    prompt_frames = sorted({p.frame_idx for p in prompts})
    start = prompt_frames[-1] if direction == "backward" else prompt_frames[0]
    passes = _passes(direction, start)
    pass_idx, next_frame, resumed_at = 0, start, None
    if resume and state_path.is_file():
        saved = torch.load(state_path, weights_only=True)
        if saved["signature"] != signature:
            raise RunError(
                f"Output folder '{out_dir}' holds a run with other settings; use a new --out or run without --resume."
            )
        session.load_state_dict(saved["session"])
        pass_idx, next_frame = saved["pass_idx"], saved["next_frame"]
        resumed_at = next_frame
    outputs = _Outputs(out_dir, formats, masks_subdir)
    total = None if frames.num_frames is None else _frames_to_go(passes, pass_idx, next_frame, frames.num_frames)
    bar = progress(total) if progress else None
    present: dict[int, int] = {}
    written = 0
    began = time.perf_counter()
    last_save_time, last_save_count = began, 0
    for idx in range(pass_idx, len(passes)):
        way, pass_start = passes[idx]
        first = next_frame if idx == pass_idx else pass_start
        if first < 0 or (frames.num_frames is not None and first >= frames.num_frames):
            continue
        step = -1 if way == "backward" else 1
        for result in session.propagate(start=first, direction=way):
            if not (idx > 0 and result.frame_idx == pass_start):  # "both": the start frame is written once
                outputs.write(frames.stem(result.frame_idx), result)
                written += 1
                for i, obj_id in enumerate(result.obj_ids):
                    present[obj_id] = present.get(obj_id, 0) + int(result.masks[i].any())
                if bar:
                    bar.update()
            now = time.perf_counter()
            if written - last_save_count >= SAVE_EVERY_FRAMES or now - last_save_time >= SAVE_EVERY_SECONDS:
                _save_state(state_path, signature, session, idx, result.frame_idx + step)
                last_save_time, last_save_count = now, written
    if bar:
        bar.close()
    if "overlay" in formats:
        _write_overlay(frames, outputs.masks_dir, out_dir / "overlay.mp4", fps)
    _save_state(state_path, signature, session, len(passes), 0)
    return SegmentSummary(
        frames_written=written,
        num_frames=frames.num_frames,
        obj_ids=session.obj_ids,
        seconds=time.perf_counter() - began,
        out_dir=out_dir,
        outputs=outputs.describe(formats),
        present_frames=present,
        resumed_at=resumed_at,
    )


def _frames_to_go(passes: list[tuple[str, int]], pass_idx: int, next_frame: int, num_frames: int) -> int:
    total = 0
    for idx in range(pass_idx, len(passes)):
        way, start = passes[idx]
        first = next_frame if idx == pass_idx else start
        count = first + 1 if way == "backward" else num_frames - first
        if idx > 0 and first == start:
            count -= 1
        total += max(count, 0)
    return total


def _save_state(path: Path, signature: dict, session: VideoSession, pass_idx: int, next_frame: int) -> None:
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    state = {"signature": signature, "session": session.state_dict(), "pass_idx": pass_idx, "next_frame": next_frame}
    torch.save(state, tmp)
    os.replace(tmp, path)


def _write_overlay(frames: FrameSource, masks_dir: Path, path: Path, fps: float) -> None:
    """The overlay preview, in frame order, from the label maps written."""
    writer = OverlayVideoWriter(path, fps=fps)
    try:
        for idx, frame in frames.frames(0):
            label_path = masks_dir / f"{frames.stem(idx)}.png"
            if label_path.is_file():
                writer.write(frames.stem(idx), read_label_map(label_path), {}, frame)
    except BaseException:
        writer.discard()
        raise
    writer.close()
