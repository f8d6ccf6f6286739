"""COCO-style video annotations, and the categories the annotation formats give objects.

`CocoVideoBuilder` collects one video's frames and every object's COCO RLE mask on each, then gives
either of two JSON layouts:

- `to_dict()`: one COCO image per frame and one annotation per object and frame carrying the object's
  track id ("videos", "images" with "video_id" / "frame_index", annotations with "track_id", as TAO
  does); `pycocotools.coco.COCO` reads it as it is (the `maskvos serve` export);
- `to_tracks_dict()`: the YouTube-VIS / OVIS layout, one annotation per object holding the whole track:
  "segmentations" (a COCO RLE per frame, null where the object is absent), "bboxes", "areas",
  "category_id", "iscrowd", aligned with the video's "file_names" (the `coco-video` writer).

`Category` / `ObjectCategories` say which category each object id belongs to (default: one category,
id 1, "object"); `ObjectCategories.parse` reads them from "OBJ=NAME[:ID]" texts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from maskvos.errors import MaskvosError


class CategoryError(MaskvosError):
    """A category given to objects that is malformed or contradicts another."""


@dataclass(frozen=True)
class Category:
    """An object category: COCO's `category_id` (>= 1) and its name."""

    id: int
    name: str


DEFAULT_CATEGORY = Category(1, "object")


@dataclass(frozen=True)
class ObjectCategories:
    """Each object id's category; objects not listed get `default`.

    One id has one name and one name one id, across the listed categories and the default.

    Raises:
        CategoryError: a category id below 1, an empty name, or one id with two names (or the reverse).
    """

    by_object: Mapping[int, Category] = field(default_factory=dict)
    default: Category = DEFAULT_CATEGORY

    def __post_init__(self) -> None:
        names: dict[int, str] = {}
        ids: dict[str, int] = {}
        for category in [self.default, *self.by_object.values()]:
            if category.id < 1 or not category.name.strip():
                raise CategoryError(
                    f"Category {category.id} '{category.name}' is not valid; give categories a name and an id of 1 or more."
                )
            if names.setdefault(category.id, category.name) != category.name:
                raise CategoryError(
                    f"Category id {category.id} is given two names ('{names[category.id]}', '{category.name}'); give each category one id."
                )
            if ids.setdefault(category.name, category.id) != category.id:
                raise CategoryError(
                    f"Category '{category.name}' is given two ids ({ids[category.name]}, {category.id}); give each category one id."
                )

    def of(self, obj_id: int) -> Category:
        """The category of object `obj_id`."""
        return self.by_object.get(int(obj_id), self.default)

    def used(self, obj_ids: Iterable[int]) -> list[Category]:
        """The categories of these objects, each once, by id."""
        return sorted({self.of(obj_id) for obj_id in obj_ids}, key=lambda c: c.id)

    @classmethod
    def parse(cls, specs: Iterable[str], default_name: str = DEFAULT_CATEGORY.name) -> ObjectCategories:
        """Categories from texts "OBJ=NAME" or "OBJ=NAME:ID" (e.g. ["1=person", "2=car:3"]).

        A name without an id gets the smallest id not taken (the same name the same id); the default
        category (`default_name`) is that name's category when an object has it, else the next free id.

        Raises:
            CategoryError: a text not of that form.
        """
        given: dict[int, tuple[str, int | None]] = {}
        for spec in specs:
            obj_text, sep, rest = spec.partition("=")
            name, _, id_text = rest.partition(":")
            if not sep or not obj_text.strip().isdigit() or not name.strip() or (id_text and not id_text.strip().isdigit()):
                raise CategoryError(f"Category '{spec}' is not of the form OBJ=NAME or OBJ=NAME:ID; write for example 1=person or 2=car:3.")
            given[int(obj_text)] = (name.strip(), int(id_text) if id_text else None)
        ids: dict[str, int] = {name: cid for name, cid in given.values() if cid is not None}

        def id_of(name: str) -> int:
            if name not in ids:
                ids[name] = min(set(range(1, len(ids) + 2)) - set(ids.values()))
            return ids[name]

        by_object = {obj_id: Category(id_of(name), name) for obj_id, (name, _) in given.items()}
        return cls(by_object, Category(id_of(default_name), default_name))


def rle_area_bbox(rle: dict[str, object]) -> tuple[int, list[float]]:
    """Pixel count and [x, y, w, h] box of a COCO RLE {"size", "counts": str}."""
    from pycocotools import mask as coco_mask

    coded = {"size": rle["size"], "counts": str(rle["counts"]).encode("ascii")}
    return int(coco_mask.area(coded)), [float(v) for v in coco_mask.toBbox(coded)]


@dataclass(frozen=True)
class _ObjectOnFrame:
    rle: dict[str, object]
    area: int
    bbox: list[float]


class CocoVideoBuilder:
    """Collects one video's frames and masks, then `to_dict()` or `to_tracks_dict()` gives its JSON object.

    Arguments:
        video_name: the video's name (its file or folder name).
        width, height: frame size in pixels.
        category: the name of the category of every object when `categories` is not given.
        categories: each object's category (default: `category`, id 1, for all).
    """

    def __init__(
        self,
        video_name: str,
        width: int,
        height: int,
        category: str = "object",
        categories: ObjectCategories | None = None,
    ) -> None:
        self.video_name, self.width, self.height = video_name, int(width), int(height)
        self.categories = categories or ObjectCategories(default=Category(1, category))
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        #: per frame, in the order added: {obj_id: its mask there} for the objects present.
        self._frames: list[dict[int, _ObjectOnFrame]] = []

    def add_frame(
        self, frame_idx: int, file_name: str, objects: Iterable[tuple[int, dict[str, object], float | None]]
    ) -> None:
        """One frame: `objects` are (obj_id, COCO RLE, score or None); an empty mask adds no annotation
        (the object is absent there)."""
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "video_id": 1, "frame_index": int(frame_idx), "file_name": file_name,
                            "width": self.width, "height": self.height})
        present: dict[int, _ObjectOnFrame] = {}
        for obj_id, rle, score in objects:
            area, bbox = rle_area_bbox(rle)
            if area == 0:
                continue
            segmentation = {"size": list(rle["size"]), "counts": str(rle["counts"])}
            present[int(obj_id)] = _ObjectOnFrame(segmentation, area, bbox)
            ann = {"id": len(self.annotations) + 1, "image_id": image_id, "category_id": self.categories.of(obj_id).id,
                   "track_id": int(obj_id), "segmentation": segmentation, "area": area, "bbox": bbox, "iscrowd": 0}
            if score is not None and np.isfinite(score):
                ann["score"] = float(score)
            self.annotations.append(ann)
        self._frames.append(present)

    def _video(self) -> dict:
        return {"id": 1, "name": self.video_name, "width": self.width, "height": self.height,
                "length": len(self.images), "file_names": [im["file_name"] for im in self.images]}

    def _categories(self, obj_ids: Iterable[int]) -> list[dict]:
        """The categories of these objects (the default one when there is none)."""
        used = self.categories.used(obj_ids) or [self.categories.default]
        return [{"id": c.id, "name": c.name, "supercategory": c.name} for c in used]

    def to_dict(self) -> dict:
        """Per-frame layout: COCO images and one annotation per object and frame (with "track_id")."""
        return {
            "info": {"description": f"maskvos masks of {self.video_name}"},
            "videos": [self._video()],
            "images": self.images,
            "annotations": self.annotations,
            "categories": self._categories(a["track_id"] for a in self.annotations),
        }

    def to_tracks_dict(self) -> dict:
        """YouTube-VIS / OVIS layout: one annotation per object (its "id" is the object id) whose
        "segmentations", "bboxes" and "areas" have one entry per frame of "file_names", null where
        the object is absent; objects absent from every frame have no annotation."""
        obj_ids = sorted({obj_id for frame in self._frames for obj_id in frame})
        annotations = []
        for obj_id in obj_ids:
            on_frames = [frame.get(obj_id) for frame in self._frames]
            annotations.append({
                "id": obj_id,
                "video_id": 1,
                "category_id": self.categories.of(obj_id).id,
                "iscrowd": 0,
                "width": self.width,
                "height": self.height,
                "length": len(on_frames),
                "segmentations": [o.rle if o else None for o in on_frames],
                "bboxes": [o.bbox if o else None for o in on_frames],
                "areas": [o.area if o else None for o in on_frames],
            })
        return {
            "info": {"description": f"maskvos masks of {self.video_name}"},
            "licenses": [],
            "videos": [self._video()],
            "annotations": annotations,
            "categories": self._categories(obj_ids),
        }
