"""The YouTube-VOS layout ("youtube-vos"): palette PNGs per frame and the dataset's meta.json.

Files:

- `out_dir/youtube-vos/Annotations/<video>/<stem>.png`: palette PNG (DAVIS palette), index = object
  id, 0 background; written as frames come (ids 1..254);
- `out_dir/youtube-vos/meta.json`: {"videos": {<video>: {"objects": {"<obj_id>": {"category": name,
  "frames": [stems where the object is present, in frame order]}}}}}, as YouTube-VOS' meta.json;
  written at `close`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np

from maskvos.io.masks import MAX_PALETTE_ID, VOID_LABEL, label_map_to_masks, read_label_map, write_label_map
from maskvos.io.writers.base import MaskFrame, OutputError, OutputFrame, OutputTarget
from maskvos.io.writers.tracks import FrameRecord, VideoFileWriter, VideoInfo, video_name_of

#: One frame as kept: the ids of the objects present.
VosFrame = list[int]


class YouTubeVosWriter(VideoFileWriter[VosFrame]):
    """YouTube-VOS annotations as frames come, its meta.json at `close` (see the module)."""

    name: ClassVar[str] = "youtube-vos"
    label: ClassVar[str] = "YouTube-VOS"
    requires: ClassVar[tuple[str, ...]] = ()  # a resumed run reads its own PNGs back

    def root_of(self, target: OutputTarget) -> Path:
        return target.out_dir / "youtube-vos"

    def png_folder_of(self, target: OutputTarget) -> Path:
        return self.root_of(target) / "Annotations" / video_name_of(target)

    def file_of(self, target: OutputTarget) -> Path:
        return self.root_of(target) / "meta.json"

    def open(self, target: OutputTarget) -> None:
        super().open(target)
        self.png_folder_of(target).mkdir(parents=True, exist_ok=True)

    def write(self, frame: OutputFrame, result: MaskFrame) -> None:
        labels = result.label_map()
        if labels.dtype == np.uint8:  # DAVIS' void label is no object: background here
            labels = np.where(labels == VOID_LABEL, 0, labels).astype(np.uint8)
        if int(labels.max(initial=0)) > MAX_PALETTE_ID:
            raise OutputError(
                f"Frame '{frame.stem}' has object ids above {MAX_PALETTE_ID}, which a YouTube-VOS palette PNG "
                f"cannot hold; renumber the objects 1..{MAX_PALETTE_ID}."
            )
        write_label_map(self.png_folder_of(self.target) / f"{frame.stem}.png", labels.astype(np.uint8))
        self.add(frame.frame_idx, frame.stem, labels)

    def stored_labels(self, target: OutputTarget, frame_idx: int, stem: str) -> np.ndarray | None:
        path = self.png_folder_of(target) / f"{stem}.png"
        return read_label_map(path) if path.is_file() else None

    def encode_frame(self, frame_idx: int, stem: str, labels: np.ndarray) -> VosFrame:
        return sorted(label_map_to_masks(labels))

    def render(self, video: VideoInfo, frames: list[FrameRecord[VosFrame]]) -> bytes:
        present: dict[int, list[str]] = {}
        for record in frames:
            for obj_id in record.data:
                present.setdefault(obj_id, []).append(record.stem)
        objects = {
            str(obj_id): {"category": video.categories.of(obj_id).name, "frames": stems}
            for obj_id, stems in sorted(present.items())
        }
        return json.dumps({"videos": {video.name: {"objects": objects}}}, indent=1).encode()

    def describe(self) -> str:
        return f"{'YouTube-VOS:':<16} {self.png_folder_of(self.target)}/, {self.path}"
