"""MOTS ("mots"): per frame a 16-bit PNG of instance ids, and the MOTSChallenge / KITTI MOTS txt.

Files (the layout of KITTI MOTS and MOTSChallenge, one sequence per video):

- `out_dir/mots/instances/<video>/<stem>.png`: 16-bit grey PNG, pixel = class_id * 1000 + obj_id,
  0 background (class_id: the object's category id, default 1); written as frames come;
- `out_dir/mots/instances_txt/<video>.txt`: one line per object and frame where it is present,
  "time_frame id class_id img_height img_width rle", id as in the PNG, rle the COCO compressed RLE
  counts (pycocotools), sorted by frame then id; written at `close`. time_frame is the frame's
  number as the MOTS tools read it from PNG names: its stem when the stem is a number, else its
  0-based index.

Object ids must be 1..999 and class ids at most 65 (a 16-bit PNG holds ids up to 65535).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from maskvos.io.files import atomic_path
from maskvos.io.masks import label_map_to_masks
from maskvos.io.writers.base import MaskFrame, OutputError, OutputFrame, OutputTarget
from maskvos.io.writers.rle import encode_rle
from maskvos.io.writers.tracks import FrameRecord, VideoFileWriter, VideoInfo, video_name_of

#: MOTS' id = class_id * ID_DIVISOR + object id.
ID_DIVISOR = 1000
MAX_PIXEL = 65535

#: One frame as kept: (MOTS id, class id, COCO RLE counts) of each object present, by id.
MotsFrame = list[tuple[int, int, str]]


def mots_frame_number(frame_idx: int, stem: str) -> int:
    """A frame's MOTS time_frame: its stem when that is a number, else its 0-based index."""
    return int(stem) if stem.isdigit() else frame_idx


class MotsWriter(VideoFileWriter[MotsFrame]):
    """MOTS PNGs as frames come, the MOTS txt of the whole video at `close` (see the module)."""

    name: ClassVar[str] = "mots"
    label: ClassVar[str] = "MOTS"
    requires: ClassVar[tuple[str, ...]] = ()  # a resumed run reads its own PNGs back

    def png_folder_of(self, target: OutputTarget) -> Path:
        return target.out_dir / "mots" / "instances" / video_name_of(target)

    def file_of(self, target: OutputTarget) -> Path:
        return target.out_dir / "mots" / "instances_txt" / f"{video_name_of(target)}.txt"

    def open(self, target: OutputTarget) -> None:
        super().open(target)
        self.png_folder_of(target).mkdir(parents=True, exist_ok=True)

    def write(self, frame: OutputFrame, result: MaskFrame) -> None:
        labels = result.label_map()
        ids = self.instance_map(labels, frame.stem)
        with atomic_path(self.png_folder_of(self.target) / f"{frame.stem}.png") as tmp:
            Image.fromarray(ids).save(tmp, format="PNG")
        self.add(frame.frame_idx, frame.stem, labels)

    def instance_map(self, labels: np.ndarray, stem: str) -> np.ndarray:
        """(H, W) uint16: class_id * 1000 + obj_id on each object's pixels, 0 elsewhere.

        Raises:
            OutputError: an object id or class id a MOTS id cannot hold.
        """
        ids = np.zeros(labels.shape, np.uint16)
        for obj_id, mask in label_map_to_masks(labels).items():
            class_id = self.target.annotation.categories.of(obj_id).id
            if not 0 < obj_id < ID_DIVISOR or class_id * ID_DIVISOR + obj_id > MAX_PIXEL:
                raise OutputError(
                    f"Object {obj_id} of class {class_id} on frame '{stem}' does not fit a MOTS id (class * 1000 + "
                    f"object, 16 bits); use object ids 1..999 and class ids up to {MAX_PIXEL // ID_DIVISOR}."
                )
            ids[mask] = class_id * ID_DIVISOR + obj_id
        return ids

    def stored_labels(self, target: OutputTarget, frame_idx: int, stem: str) -> np.ndarray | None:
        path = self.png_folder_of(target) / f"{stem}.png"
        if not path.is_file():
            return None
        with Image.open(path) as img:
            ids = np.asarray(img).astype(np.int64)
        return (ids % ID_DIVISOR).astype(np.uint16)

    def encode_frame(self, frame_idx: int, stem: str, labels: np.ndarray) -> MotsFrame:
        out = []
        for obj_id, mask in sorted(label_map_to_masks(labels).items()):
            class_id = self.target.annotation.categories.of(obj_id).id
            out.append((class_id * ID_DIVISOR + obj_id, class_id, str(encode_rle(mask)["counts"])))
        return sorted(out)

    def render(self, video: VideoInfo, frames: list[FrameRecord[MotsFrame]]) -> bytes:
        lines = [
            f"{mots_frame_number(r.frame_idx, r.stem)} {mots_id} {class_id} {video.height} {video.width} {counts}\n"
            for r in frames
            for mots_id, class_id, counts in r.data
        ]
        return "".join(lines).encode()

    def describe(self) -> str:
        return f"{'MOTS:':<16} {self.png_folder_of(self.target)}/, {self.path}"
