"""The last result of every frame of a serve session, kept compact: each object's mask as COCO RLE
with its score, and the frame's label map as the PNG `maskvos segment` would write for it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from maskvos.inference.api import FrameResult
from maskvos.io.masks import decode_label_map, encode_label_map, masks_to_label_map
from maskvos.io.writers import decode_rle, encode_rle


@dataclass
class ObjectMask:
    """One object on one frame: its own mask (COCO RLE), its presence score (logit, > 0 present)
    and whether the frame holds a prompt of it."""

    rle: dict[str, object]
    score: float
    is_prompt: bool = False

    def as_json(self, obj_id: int) -> dict[str, object]:
        return {"obj_id": obj_id, "mask": self.rle, "score": self.score, "is_prompt": self.is_prompt}


@dataclass
class FrameMasks:
    """The last result of one frame. `label_png` is the label map of a propagated frame as the
    overlap rule decided it (None after a prompt changed one object: the label map is then
    derived from the objects' masks, later objects on top, until the next propagation)."""

    frame_idx: int
    objects: dict[int, ObjectMask] = field(default_factory=dict)
    label_png: bytes | None = None

    def as_json(self) -> dict[str, object]:
        return {"frame_idx": self.frame_idx, "objects": [m.as_json(k) for k, m in sorted(self.objects.items())]}

    def label_map(self, height: int, width: int) -> np.ndarray:
        """(H, W) label map of the frame (object ids, 0 background)."""
        if self.label_png is not None:
            return decode_label_map(self.label_png)
        masks = {k: decode_rle(m.rle) for k, m in sorted(self.objects.items())}
        if not masks:
            return np.zeros((height, width), np.uint8)
        return masks_to_label_map(masks, None)

    def label_map_png(self, height: int, width: int) -> bytes:
        if self.label_png is not None:
            return self.label_png
        return encode_label_map(self.label_map(height, width), f"frame {self.frame_idx}")


class ResultStore:
    """Frame index -> `FrameMasks`; safe to read while a propagation writes."""

    def __init__(self) -> None:
        self._frames: dict[int, FrameMasks] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._frames)

    def get(self, frame_idx: int) -> FrameMasks | None:
        with self._lock:
            return self._frames.get(frame_idx)

    def frame_indices(self) -> list[int]:
        with self._lock:
            return sorted(self._frames)

    def put_result(self, result: FrameResult) -> FrameMasks:
        """Store a propagated frame (all objects; its label map as the chain decided it)."""
        masks = result.masks.numpy()
        scores = result.object_scores.float().numpy()
        objects = {
            obj_id: ObjectMask(encode_rle(masks[i]), float(scores[i]), bool(result.is_prompt[i]))
            for i, obj_id in enumerate(result.obj_ids)
        }
        labels = result.label_map() if result.obj_ids else None
        frame = FrameMasks(result.frame_idx, objects, None if labels is None else encode_label_map(labels))
        with self._lock:
            self._frames[result.frame_idx] = frame
        return frame

    def put_prompt(self, result: FrameResult) -> FrameMasks:
        """Store the answer to a prompt: the prompted objects' masks replace theirs on that frame,
        the other objects' stay."""
        masks = result.masks.numpy()
        scores = result.object_scores.float().numpy()
        with self._lock:
            old = self._frames.get(result.frame_idx)
            objects = dict(old.objects) if old else {}
            for i, obj_id in enumerate(result.obj_ids):
                objects[obj_id] = ObjectMask(encode_rle(masks[i]), float(scores[i]), True)
            frame = FrameMasks(result.frame_idx, objects, None)
            self._frames[result.frame_idx] = frame
        return frame

    def drop_object(self, obj_id: int) -> None:
        """Forget an object on every frame (its pixels of the label maps become background)."""
        with self._lock:
            for idx, frame in list(self._frames.items()):
                if obj_id not in frame.objects:
                    continue
                objects = {k: v for k, v in frame.objects.items() if k != obj_id}
                png = frame.label_png
                if png is not None:
                    labels = decode_label_map(png)
                    labels[labels == obj_id] = 0
                    png = encode_label_map(labels)
                self._frames[idx] = FrameMasks(idx, objects, png)
