"""Prompts of a run: from mask files and folders, from clicks and boxes, from DAVIS annotations."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskvos.inference.api import Session
from maskvos.io.frames import FrameSource, natural_key
from maskvos.io.masks import MaskFileError, label_map_to_masks, read_label_map, void_label_message, void_pixels


@dataclass
class PromptSpec:
    """One prompt: a mask, and/or clicks and a box, for one object on one frame.

    Attributes:
        mask: (H, W) bool mask of the object.
        points: (x, y) pixel clicks; labels: 1 object, 0 background, one per point.
        box: x0, y0, x1, y1 in pixels.
    """

    frame_idx: int
    obj_id: int
    mask: np.ndarray | None = None
    points: list[tuple[float, float]] | None = None
    labels: list[int] | None = None
    box: tuple[float, float, float, float] | None = None

    @property
    def prompt_types(self) -> frozenset[str]:
        """The kinds of prompt this spec gives ("mask", "points", "box")."""
        kinds = set()
        if self.mask is not None:
            kinds.add("mask")
        if self.points:
            kinds.add("points")
        if self.box is not None:
            kinds.add("box")
        return frozenset(kinds)

    def apply(self, session: Session) -> None:
        """Give this prompt to a session (a mask first; clicks and a box then refine it)."""
        if self.mask is not None:
            session.add_mask(self.frame_idx, self.obj_id, self.mask)
        if self.points or self.box is not None:
            session.add_points(self.frame_idx, self.obj_id, self.points, self.labels, self.box)

    def digest(self) -> str:
        """A fingerprint of the prompt (a run's resume signature includes it)."""
        h = hashlib.sha1(f"{self.frame_idx}:{self.obj_id}:{self.points}:{self.labels}:{self.box}".encode())
        if self.mask is not None:
            h.update(np.packbits(self.mask).tobytes())
        return h.hexdigest()


def click_prompt(
    frame_idx: int,
    obj_id: int | None,
    points: Sequence[tuple[float, float, int]] = (),
    box: tuple[float, float, float, float] | None = None,
) -> PromptSpec:
    """One object's clicks ((x, y, label) each) and/or box on a frame, as a prompt (object 1 by default)."""
    return PromptSpec(
        frame_idx,
        obj_id or 1,
        points=[(x, y) for x, y, _ in points] or None,
        labels=[label for _, _, label in points] or None,
        box=box,
    )


def prompts_from_mask_file(path: str | Path, source: FrameSource, frame_idx: int, obj_id: int | None) -> list[PromptSpec]:
    """Mask prompts from a PNG (a palette or 16-bit id map gives one object per id; a grey or 0/255
    mask one object, `obj_id` or 1) or from a folder of such PNGs named like the frames they belong to."""
    path = Path(path)
    if path.is_dir():
        return prompts_from_folder(path, source)
    if not path.is_file():
        raise MaskFileError(f"Prompt '{path}' does not exist; pass a mask PNG or a folder of mask PNGs.")
    return prompts_from_label_map(read_label_map(path), path, frame_idx, obj_id)


def prompts_from_label_map(labels: np.ndarray, path: Path, frame_idx: int, obj_id: int | None) -> list[PromptSpec]:
    """One prompt per object of a label map (or the one object of a binary mask, as `obj_id`)."""
    masks = label_map_to_masks(labels)
    if not masks:
        if void_pixels(labels):
            raise MaskFileError(void_label_message(path))
        raise MaskFileError(f"Mask file '{path}' is empty (no object pixel); draw the object or use --points/--box.")
    if obj_id is not None:
        if len(masks) > 1 and obj_id not in masks:
            raise MaskFileError(
                f"Mask file '{path}' has no object {obj_id} (ids: {', '.join(map(str, masks))}); pass one of them as --obj-id."
            )
        if len(masks) == 1:
            return [PromptSpec(frame_idx, obj_id, mask=next(iter(masks.values())))]
        return [PromptSpec(frame_idx, obj_id, mask=masks[obj_id])]
    return [PromptSpec(frame_idx, k, mask=m) for k, m in masks.items()]


def prompts_from_folder(folder: Path, source: FrameSource) -> list[PromptSpec]:
    """Every PNG of `folder`, each a prompt of the frame it is named like (its stem or index)."""
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() == ".png"), key=lambda p: natural_key(p.name))
    if not files:
        raise MaskFileError(f"Prompt folder '{folder}' holds no PNG masks; pass a folder of palette PNGs.")
    by_stem = _frames_by_stem(source)
    specs = []
    for file in files:
        frame_idx = by_stem.get(file.stem)
        if frame_idx is None and file.stem.isdigit():
            frame_idx = int(file.stem)
        if frame_idx is None:
            raise MaskFileError(f"Mask '{file}' matches no frame of the video; name it like the frame it belongs to.")
        source.check_index(frame_idx)
        specs += prompts_from_label_map(read_label_map(file), file, frame_idx, None)
    return specs


def first_appearance_prompts(annotations: Path, source: FrameSource) -> list[PromptSpec]:
    """Each object's mask on the first annotated frame where it appears (the semi-supervised
    protocol of DAVIS and YouTube-VOS)."""
    if source.num_frames is None:
        raise MaskFileError("Annotations need a video of known length; pass a frame folder or a video file.")
    stems = _frames_by_stem(source)
    seen: set[int] = set()
    prompts = []
    for path in sorted(annotations.glob("*.png"), key=lambda p: natural_key(p.name)):
        frame_idx = stems.get(path.stem)
        if frame_idx is None:
            raise MaskFileError(f"Annotation '{path}' matches no frame of the sequence; name it like its frame.")
        for obj_id, mask in label_map_to_masks(read_label_map(path)).items():
            if obj_id not in seen:
                seen.add(obj_id)
                prompts.append(PromptSpec(frame_idx, obj_id, mask=mask))
    return prompts


def _frames_by_stem(source: FrameSource) -> dict[str, int]:
    """Frame index by output stem (empty for a stream of unknown length)."""
    return {} if source.num_frames is None else {source.stem(i): i for i in range(source.num_frames)}
