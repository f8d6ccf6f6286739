"""CVAT for video 1.1 XML ("cvat-xml"): `out_dir/annotations.xml`, one mask track per object, in
CVAT's own mask RLE.

The layout is that of CVAT's "CVAT for video 1.1" export (`cvat/apps/dataset_manager/formats/cvat.py`
and CVAT's XML format page): `<annotations>` holds `<version>1.1</version>`, a `<meta><task>` (name,
size, mode "interpolation", labels of type "mask", original_size) and one `<track id label source>`
per object, whose `<mask frame keyframe outside occluded rle left top width height z_order>` shapes
are keyframes; the frame where an object disappears gets a shape with outside="1" (CVAT carries a
track's last keyframe forward until then), and a later reappearance a new keyframe.

CVAT's mask RLE (`encode_cvat_mask`): the mask is cut to its bounding box (left, top, width,
height: inclusive of the last column and row), read row by row, and written as the lengths of
alternating runs starting with background (so a box whose first pixel is the object starts with
0), comma separated. CVAT's importer turns it into the shape's points [runs..., left, top,
left + width - 1, top + height - 1], the same encoding as `cvat_sdk.masks.encode_mask` /
`decode_mask`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import ClassVar

import numpy as np

from maskvos.io.masks import label_map_to_masks
from maskvos.io.writers.base import OutputTarget
from maskvos.io.writers.tracks import FrameRecord, VideoFileWriter, VideoInfo

CVAT_XML_NAME = "annotations.xml"


def encode_cvat_mask(mask: np.ndarray) -> tuple[list[int], int, int, int, int]:
    """CVAT's RLE of an (H, W) bool mask with at least one pixel set.

    Returns:
        (runs, left, top, width, height): the run lengths within the bounding box, row-major,
        alternating background / object, starting with background; the box in pixels.
    """
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise ValueError("an empty mask has no CVAT RLE")
    top, left = int(ys.min()), int(xs.min())
    height, width = int(ys.max()) - top + 1, int(xs.max()) - left + 1
    flat = mask[top : top + height, left : left + width].ravel()
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], edges, [flat.size])))
    runs_list = [int(r) for r in runs]
    return ([0, *runs_list] if flat[0] else runs_list), left, top, width, height


#: One frame as kept: {obj_id: CVAT RLE (runs, left, top, width, height)} of the objects present.
CvatFrame = dict[int, tuple[list[int], int, int, int, int]]


class CvatXmlWriter(VideoFileWriter[CvatFrame]):
    """`out_dir/annotations.xml`: CVAT for video 1.1 with a mask track per object (see the module);
    CVAT imports it into a video task of the same frames ("Upload annotations", "CVAT 1.1")."""

    name: ClassVar[str] = "cvat-xml"
    label: ClassVar[str] = "CVAT XML"

    def file_of(self, target: OutputTarget) -> Path:
        return target.out_dir / CVAT_XML_NAME

    def encode_frame(self, frame_idx: int, stem: str, labels: np.ndarray) -> CvatFrame:
        return {obj_id: encode_cvat_mask(mask) for obj_id, mask in label_map_to_masks(labels).items()}

    def render(self, video: VideoInfo, frames: list[FrameRecord[CvatFrame]]) -> bytes:
        size = video.num_frames if video.num_frames is not None else max((r.frame_idx for r in frames), default=-1) + 1
        obj_ids = sorted({obj_id for r in frames for obj_id in r.data})
        root = ET.Element("annotations")
        ET.SubElement(root, "version").text = "1.1"
        task = ET.SubElement(ET.SubElement(root, "meta"), "task")
        for key, value in (("name", video.name), ("size", size), ("mode", "interpolation"), ("overlap", 0),
                           ("start_frame", 0), ("stop_frame", max(size - 1, 0)), ("flipped", "False")):
            ET.SubElement(task, key).text = str(value)
        labels = ET.SubElement(task, "labels")
        for category in video.categories.used(obj_ids):
            label = ET.SubElement(labels, "label")
            ET.SubElement(label, "name").text = category.name
            ET.SubElement(label, "type").text = "mask"
            ET.SubElement(label, "attributes")
        original = ET.SubElement(task, "original_size")
        ET.SubElement(original, "width").text = str(video.width)
        ET.SubElement(original, "height").text = str(video.height)
        for obj_id in obj_ids:
            track = ET.SubElement(root, "track", {"id": str(obj_id), "label": video.categories.of(obj_id).name, "source": "auto"})
            _add_shapes(track, obj_id, frames)
        ET.indent(root, space="  ")
        return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _add_shapes(track: ET.Element, obj_id: int, frames: list[FrameRecord[CvatFrame]]) -> None:
    """The track's keyframes: a mask where the object is present, outside="1" where it disappears."""
    last = None
    for record in frames:
        coded = record.data.get(obj_id)
        if coded is None and last is None:
            continue  # absent, and not shown on the previous frame either
        runs, left, top, width, height = coded if coded is not None else last
        ET.SubElement(track, "mask", {
            "frame": str(record.frame_idx), "keyframe": "1", "outside": "0" if coded is not None else "1",
            "occluded": "0", "rle": ", ".join(map(str, runs)), "left": str(left), "top": str(top),
            "width": str(width), "height": str(height), "z_order": "0",
        })
        last = coded
