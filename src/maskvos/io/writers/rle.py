"""COCO run-length encoding (pycocotools) of masks, and the per-frame RLE JSON writer ("rle")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np

from maskvos.io.files import write_bytes_atomic
from maskvos.io.writers.base import (
    MaskFrame,
    OutputFrame,
    OutputTarget,
    opened,
    prepare_output_dir,
)


def encode_rle(mask: np.ndarray) -> dict[str, object]:
    """COCO RLE of an (H, W) boolean mask: {"size": [H, W], "counts": str}."""
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict[str, object]) -> np.ndarray:
    """Inverse of `encode_rle`: the (H, W) boolean mask."""
    from pycocotools import mask as coco_mask

    return coco_mask.decode({"size": rle["size"], "counts": str(rle["counts"]).encode("ascii")}).astype(bool)


class RleJsonWriter:
    """Per frame `out_dir/rle/<stem>.json`: {"frame": stem, "objects": {obj_id: RLE}}, written atomically."""

    name: ClassVar[str] = "rle"
    needs_image: ClassVar[bool] = False
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.rle_dir: Path | None = None

    def open(self, target: OutputTarget) -> None:
        self.rle_dir = prepare_output_dir(target.out_dir / "rle")

    def write(self, frame: OutputFrame, result: MaskFrame) -> None:
        rle_dir = opened(self.rle_dir, self)
        record = {"frame": frame.stem, "objects": {str(k): encode_rle(v) for k, v in result.masks_by_id().items()}}
        write_bytes_atomic(rle_dir / f"{frame.stem}.json", json.dumps(record).encode())

    def close(self) -> None:
        pass

    def discard(self) -> None:
        pass

    def describe(self) -> str:
        return f"COCO RLE:        {self.rle_dir}/"
