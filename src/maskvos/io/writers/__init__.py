"""Result writers, one class per output format behind the `Writer` protocol, and their registry.

| format         | files                                                                    | class               |
|----------------|--------------------------------------------------------------------------|---------------------|
| `png`          | `masks_dir/<stem>.png`: DAVIS palette label maps (16-bit id maps above id 254) | `PalettePngWriter` |
| `objects`      | `out_dir/objects/<obj_id>/<stem>.png`: 0/255 masks                        | `ObjectPngWriter`   |
| `rle`          | `out_dir/rle/<stem>.json`: COCO RLE per object (pycocotools)              | `RleJsonWriter`     |
| `overlay`      | `out_dir/overlay.mp4`: objects tinted in their palette colour             | `OverlayVideoWriter`|
| `coco-video`   | `out_dir/instances.json`: YouTube-VIS / OVIS video instances, a COCO RLE track per object | `CocoVideoWriter` |
| `mots`         | `out_dir/mots/instances/<video>/<stem>.png` (16-bit, class * 1000 + id) and `out_dir/mots/instances_txt/<video>.txt` | `MotsWriter` |
| `youtube-vos`  | `out_dir/youtube-vos/Annotations/<video>/<stem>.png` (palette) and `out_dir/youtube-vos/meta.json` | `YouTubeVosWriter` |
| `cvat-xml`     | `out_dir/annotations.xml`: CVAT for video 1.1, a mask track per object in CVAT's RLE | `CvatXmlWriter` |
| `label-studio` | `out_dir/label_studio.json`: Label Studio tasks (one per frame) with brush predictions | `LabelStudioWriter` |

Every file is written atomically (temporary name, then rename), so a file that exists is complete.
The whole-video files (coco-video, the MOTS txt, meta.json, cvat-xml, label-studio) are written at
`close`, never at `discard`; on a resumed run they are rebuilt with the frames written before the
interruption (from `masks_dir`, or the format's own per-frame PNGs). `OutputTarget.annotation`
(`AnnotationInfo`) gives them the video's name and each object's category (`ObjectCategories`).
`open_writers(formats, target)` opens the writers a run asks for (plus those they require).
"""

from maskvos.io.coco import Category, ObjectCategories
from maskvos.io.writers.base import (
    AnnotationInfo,
    FolderWriter,
    MaskFrame,
    OutputError,
    OutputFrame,
    OutputTarget,
    Writer,
    prepare_output_dir,
)
from maskvos.io.writers.coco_video import CocoVideoWriter
from maskvos.io.writers.cvat import CvatXmlWriter, encode_cvat_mask
from maskvos.io.writers.images import ObjectPngWriter, PalettePngWriter
from maskvos.io.writers.label_studio import LabelStudioWriter, encode_brush_rle
from maskvos.io.writers.mots import MotsWriter
from maskvos.io.writers.overlay import OverlayVideoWriter, tint
from maskvos.io.writers.registry import FORMATS, WRITERS, finishing, open_writers, resolve_formats
from maskvos.io.writers.rle import RleJsonWriter, decode_rle, encode_rle
from maskvos.io.writers.tracks import VideoFileWriter, video_name_of
from maskvos.io.writers.youtube_vos import YouTubeVosWriter

__all__ = [
    "FORMATS",
    "WRITERS",
    "AnnotationInfo",
    "Category",
    "CocoVideoWriter",
    "CvatXmlWriter",
    "FolderWriter",
    "LabelStudioWriter",
    "MaskFrame",
    "MotsWriter",
    "ObjectCategories",
    "ObjectPngWriter",
    "OutputError",
    "OutputFrame",
    "OutputTarget",
    "OverlayVideoWriter",
    "PalettePngWriter",
    "RleJsonWriter",
    "VideoFileWriter",
    "Writer",
    "YouTubeVosWriter",
    "decode_rle",
    "encode_brush_rle",
    "encode_cvat_mask",
    "encode_rle",
    "finishing",
    "open_writers",
    "prepare_output_dir",
    "resolve_formats",
    "tint",
    "video_name_of",
]
