"""Label Studio brush predictions ("label-studio"): `out_dir/label_studio.json`, a list of tasks,
one per frame, each with the frame's image and a prediction holding one brush region per object.

A task: {"data": {"image": "<image_prefix><video>/<image file>", "video", "frame" (stem),
"frame_index"}, "predictions": [{"model_version": "maskvos", "result": [region...]}]}; a region:
{"id": "obj<obj_id>", "from_name": "tag", "to_name": "image", "type": "brushlabels",
"original_width", "original_height", "image_rotation": 0, "value": {"format": "rle", "rle": [...],
"brushlabels": [category name]}}. "tag" and "image" are the names in Label Studio's brush labelling
templates (`<BrushLabels name="tag" toName="image">`, `<Image name="image" value="$image">`).

The brush RLE (`encode_brush_rle`) is Label Studio's (`label_studio_sdk.converter.brush`, the
rle-pack bit stream its editor decodes): the mask as RGBA bytes (every channel 255 on the object, 0
elsewhere), run-length coded with 8-bit words and run-length fields of 3, 4, 8 and 16 bits, as
`brush.mask2rle` codes it (the same bytes), so `brush.decode_rle` reads it back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np

from maskvos.io.masks import label_map_to_masks
from maskvos.io.writers.base import OutputTarget
from maskvos.io.writers.tracks import FrameRecord, VideoFileWriter, VideoInfo

LABEL_STUDIO_NAME = "label_studio.json"
#: The control and object tag names of Label Studio's brush templates.
FROM_NAME, TO_NAME = "tag", "image"

#: Bits of the run-length field for each size index, and the longest run each holds.
_RUN_BITS = (3, 4, 8, 16)
_WORD_BITS = 8
_HEADER = "{:032b}" + f"{_WORD_BITS - 1:05b}" + "".join(f"{b - 1:04b}" for b in _RUN_BITS)


def _run_records(length: int, value: str) -> list[str]:
    """The bit records of one run of `length` equal words (`value`: the word's bits)."""
    if length == 1:
        return ["0" + "00" + "000" + value]  # one literal word
    for index, bits in enumerate(_RUN_BITS[:3]):
        if length <= 1 << bits:
            return [f"1{index:02b}{length - 1:0{bits}b}{value}"]
    out = []
    while length > 1 << 16:
        out.append(f"111{(1 << 16) - 1:016b}{value}")
        length -= 1 << 16
    return [*out, f"111{length - 1:016b}{value}"]


def encode_brush_rle(mask: np.ndarray) -> list[int]:
    """Label Studio's brush RLE of an (H, W) bool mask: a list of byte values (0..255)."""
    flat = np.asarray(mask, dtype=bool).ravel()
    if flat.size == 0:
        raise ValueError("an empty image has no brush RLE")
    starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    lengths = np.diff(np.concatenate((starts, [flat.size]))) * 4  # four channels (RGBA) per pixel
    words = {True: f"{255:08b}", False: f"{0:08b}"}
    parts = [_HEADER.format(flat.size * 4)]
    for start, length in zip(starts.tolist(), lengths.tolist()):
        parts += _run_records(length, words[bool(flat[start])])
    bits = "".join(parts)
    bits += "0" * (8 - len(bits) % 8)  # as Label Studio pads: always, a whole zero byte when aligned
    return list(int(bits, 2).to_bytes(len(bits) // 8, "big"))


#: One frame as kept: {obj_id: brush RLE bytes} of the objects present.
BrushFrame = dict[int, bytes]


class LabelStudioWriter(VideoFileWriter[BrushFrame]):
    """`out_dir/label_studio.json`: Label Studio tasks with brush predictions (see the module); import
    it into a project with a brush labelling config whose images are served under `image_prefix`."""

    name: ClassVar[str] = "label-studio"
    label: ClassVar[str] = "Label Studio"

    def file_of(self, target: OutputTarget) -> Path:
        return target.out_dir / LABEL_STUDIO_NAME

    def encode_frame(self, frame_idx: int, stem: str, labels: np.ndarray) -> BrushFrame:
        return {obj_id: bytes(encode_brush_rle(mask)) for obj_id, mask in label_map_to_masks(labels).items()}

    def render(self, video: VideoInfo, frames: list[FrameRecord[BrushFrame]]) -> bytes:
        tasks = []
        for record in frames:
            regions = [
                {
                    "id": f"obj{obj_id}",
                    "from_name": FROM_NAME,
                    "to_name": TO_NAME,
                    "type": "brushlabels",
                    "original_width": video.width,
                    "original_height": video.height,
                    "image_rotation": 0,
                    "value": {"format": "rle", "rle": list(rle), "brushlabels": [video.categories.of(obj_id).name]},
                }
                for obj_id, rle in sorted(record.data.items())
            ]
            data = {"image": video.image_prefix + video.image_path(record.frame_idx), "video": video.name,
                    "frame": record.stem, "frame_index": record.frame_idx}
            tasks.append({"data": data, "predictions": [{"model_version": "maskvos", "result": regions}]})
        return json.dumps(tasks).encode()
