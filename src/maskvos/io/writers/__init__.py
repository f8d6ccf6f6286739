"""Result writers, one class per output format behind the `Writer` protocol, and their registry.

| format    | files                                                             | class               |
|-----------|-------------------------------------------------------------------|---------------------|
| `png`     | `masks_dir/<stem>.png`: DAVIS palette label maps (16-bit id maps above id 254) | `PalettePngWriter` |
| `objects` | `out_dir/objects/<obj_id>/<stem>.png`: 0/255 masks                 | `ObjectPngWriter`   |
| `rle`     | `out_dir/rle/<stem>.json`: COCO RLE per object (pycocotools)       | `RleJsonWriter`     |
| `overlay` | `out_dir/overlay.mp4`: objects tinted in their palette colour      | `OverlayVideoWriter`|

Every file is written atomically (temporary name, then rename), so a file that exists is complete.
`open_writers(formats, target)` opens the writers a run asks for (plus those they require).
"""

from maskvos.io.writers.base import (
    FolderWriter,
    MaskFrame,
    OutputError,
    OutputFrame,
    OutputTarget,
    Writer,
    prepare_output_dir,
)
from maskvos.io.writers.images import ObjectPngWriter, PalettePngWriter
from maskvos.io.writers.overlay import OverlayVideoWriter, tint
from maskvos.io.writers.registry import FORMATS, WRITERS, open_writers, resolve_formats
from maskvos.io.writers.rle import RleJsonWriter, decode_rle, encode_rle

__all__ = [
    "FORMATS",
    "WRITERS",
    "FolderWriter",
    "MaskFrame",
    "ObjectPngWriter",
    "OutputError",
    "OutputFrame",
    "OutputTarget",
    "OverlayVideoWriter",
    "PalettePngWriter",
    "RleJsonWriter",
    "Writer",
    "decode_rle",
    "encode_rle",
    "open_writers",
    "prepare_output_dir",
    "resolve_formats",
    "tint",
]
