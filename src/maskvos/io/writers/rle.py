"""COCO run-length encoding (pycocotools) of masks, and the per-frame RLE JSON writer ("rle")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np

from maskvos.io.files import write_bytes_atomic
from maskvos.io.writers.base import FolderWriter, MaskFrame, OutputFrame, OutputTarget


def encode_rle(mask: np.ndarray) -> dict[str, object]:
    """COCO RLE of an (H, W) boolean mask: {"size": [H, W], "counts": str}."""
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict[str, object]) -> np.ndarray:
    """Inverse of `encode_rle`: the (H, W) boolean mask."""
    from pycocotools import mask as coco_mask

    return coco_mask.decode({"size": rle["size"], "counts": str(rle["counts"]).encode("ascii")}).astype(bool)


class RleJsonWriter(FolderWriter):
    """Per frame `out_dir/rle/<stem>.json`: {"frame": stem, "objects": {obj_id: RLE}}, written atomically."""

    name: ClassVar[str] = "rle"
    label: ClassVar[str] = "COCO RLE"

    def folder_of(self, target: OutputTarget) -> Path:
        return target.out_dir / "rle"

    def write(self, frame: OutputFrame, result: MaskFrame) -> None:
        record = {"frame": frame.stem, "objects": {str(k): encode_rle(v) for k, v in result.masks_by_id().items()}}
        write_bytes_atomic(self.folder / f"{frame.stem}.json", json.dumps(record).encode())
