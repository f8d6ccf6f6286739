"""COCO-style video instances ("coco-video"): `out_dir/instances.json` in the layout of YouTube-VIS
and OVIS, one annotation per object with its COCO RLE on every frame (see `maskvos.io.coco`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np

from maskvos.io.coco import CocoVideoBuilder
from maskvos.io.masks import label_map_to_masks
from maskvos.io.writers.base import OutputTarget
from maskvos.io.writers.rle import encode_rle
from maskvos.io.writers.tracks import FrameRecord, VideoFileWriter, VideoInfo

COCO_VIDEO_NAME = "instances.json"

#: One frame as kept: {obj_id: COCO RLE} of the objects present.
CocoFrame = dict[int, dict[str, object]]


class CocoVideoWriter(VideoFileWriter[CocoFrame]):
    """`out_dir/instances.json`: {"videos": [name, width, height, length, file_names], "annotations":
    one per object (id = object id, category_id, iscrowd 0, per frame of file_names its COCO RLE
    "segmentations", "bboxes" [x, y, w, h] and "areas", null where absent), "categories"}.

    The frames are those written (in frame order); `pycocotools.mask.decode` reads each segmentation.
    """

    name: ClassVar[str] = "coco-video"
    label: ClassVar[str] = "COCO video"

    def file_of(self, target: OutputTarget) -> Path:
        return target.out_dir / COCO_VIDEO_NAME

    def encode_frame(self, frame_idx: int, stem: str, labels: np.ndarray) -> CocoFrame:
        return {obj_id: encode_rle(mask) for obj_id, mask in label_map_to_masks(labels).items()}

    def render(self, video: VideoInfo, frames: list[FrameRecord[CocoFrame]]) -> bytes:
        builder = CocoVideoBuilder(video.name, video.width, video.height, categories=video.categories)
        for record in frames:
            objects = [(obj_id, rle, None) for obj_id, rle in sorted(record.data.items())]
            builder.add_frame(record.frame_idx, video.image_path(record.frame_idx), objects)
        return json.dumps(builder.to_tracks_dict()).encode()
