"""Per-frame PNG writers: DAVIS-style label maps ("png") and per-object binary masks ("objects").

Each frame's file is written atomically, so a file that exists is complete; `discard` has nothing
to remove and a resumed run overwrites frames as they come again.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from maskvos.io.files import atomic_path
from maskvos.io.masks import write_label_map
from maskvos.io.writers.base import FolderWriter, MaskFrame, OutputFrame, OutputTarget


class PalettePngWriter(FolderWriter):
    """Label maps `masks_dir/<stem>.png`: DAVIS palette PNGs (pixel value = object id); maps with ids
    above 254 are written as 16-bit id-map PNGs under the same name (see `maskvos.io.masks`)."""

    name: ClassVar[str] = "png"
    label: ClassVar[str] = "label maps"

    def folder_of(self, target: OutputTarget) -> Path:
        return target.masks_dir

    def write(self, frame: OutputFrame, result: MaskFrame) -> None:
        write_label_map(self.folder / f"{frame.stem}.png", result.label_map())


class ObjectPngWriter(FolderWriter):
    """One 0/255 grey PNG per object and frame: `out_dir/objects/<obj_id>/<stem>.png`."""

    name: ClassVar[str] = "objects"
    label: ClassVar[str] = "object masks"
    suffix: ClassVar[str] = "<id>/"

    def folder_of(self, target: OutputTarget) -> Path:
        return target.out_dir / "objects"

    def write(self, frame: OutputFrame, result: MaskFrame) -> None:
        for obj_id, mask in result.masks_by_id().items():
            folder = self.folder / str(obj_id)
            folder.mkdir(exist_ok=True)
            with atomic_path(folder / f"{frame.stem}.png") as tmp:
                Image.fromarray(mask.astype(np.uint8) * 255).save(tmp, format="PNG")
