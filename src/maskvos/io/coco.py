"""COCO-style video annotations: one JSON holding a video's frames as images and every object's
mask on every frame as an RLE annotation carrying the object's track id. `pycocotools.coco.COCO`
reads it as it is (images, annotations, categories), and the extra video keys follow the layout
of YouTube-VIS / TAO ("videos", "video_id", "frame_index", "track_id")."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def rle_area_bbox(rle: dict[str, object]) -> tuple[int, list[float]]:
    """Pixel count and [x, y, w, h] box of a COCO RLE {"size", "counts": str}."""
    from pycocotools import mask as coco_mask

    coded = {"size": rle["size"], "counts": str(rle["counts"]).encode("ascii")}
    return int(coco_mask.area(coded)), [float(v) for v in coco_mask.toBbox(coded)]


class CocoVideoBuilder:
    """Collects one video's frames and masks, then `to_dict()` gives the COCO-style JSON object.

    Arguments:
        video_name: the video's name (its file or folder name).
        width, height: frame size in pixels.
        category: the name of the one category every object belongs to.
    """

    def __init__(self, video_name: str, width: int, height: int, category: str = "object") -> None:
        self.video_name, self.width, self.height = video_name, int(width), int(height)
        self.category = category
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    def add_frame(
        self, frame_idx: int, file_name: str, objects: Iterable[tuple[int, dict[str, object], float | None]]
    ) -> None:
        """One frame: `objects` are (obj_id, COCO RLE, score or None); an empty mask adds no annotation
        (the object is absent there)."""
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "video_id": 1, "frame_index": int(frame_idx), "file_name": file_name,
                            "width": self.width, "height": self.height})
        for obj_id, rle, score in objects:
            area, bbox = rle_area_bbox(rle)
            if area == 0:
                continue
            ann = {"id": len(self.annotations) + 1, "image_id": image_id, "category_id": 1, "track_id": int(obj_id),
                   "segmentation": {"size": list(rle["size"]), "counts": str(rle["counts"])}, "area": area,
                   "bbox": bbox, "iscrowd": 0}
            if score is not None and np.isfinite(score):
                ann["score"] = float(score)
            self.annotations.append(ann)

    def to_dict(self) -> dict:
        return {
            "info": {"description": f"maskvos masks of {self.video_name}"},
            "videos": [{"id": 1, "name": self.video_name, "width": self.width, "height": self.height,
                        "length": len(self.images), "file_names": [im["file_name"] for im in self.images]}],
            "images": self.images,
            "annotations": self.annotations,
            "categories": [{"id": 1, "name": self.category}],
        }
