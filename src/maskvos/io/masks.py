"""Masks in and out: palette / id-map PNG <-> label map <-> per-object boolean masks.

A *label map* is an (H, W) integer array where 0 is background and k > 0 is object id k. Two kinds:

- 8-bit (uint8), from and to DAVIS-style palette PNGs: ids 1..254; index 255 is DAVIS' "void" label
  (unlabelled pixels in ground truth), never an object (`void_pixels`, `void_label_message`);
- 16-bit (uint16), from and to grey 16-bit *id-map* PNGs (pixel value = object id): ids 1..65535,
  255 an ordinary id. `write_label_map` writes one when a map holds ids above 254.

Per-object masks are a dict {obj_id: (H, W) bool}.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from maskvos.errors import MaskvosError
from maskvos.io.files import atomic_path

VOID_LABEL = 255
#: The largest object id a palette PNG holds (255 is void); larger ids go to 16-bit id-map PNGs.
MAX_PALETTE_ID = 254
MAX_ID_MAP_ID = 65535
#: PIL modes of 16-bit (or wider) grey images, read as id maps.
ID_MAP_MODES = ("I;16", "I;16B", "I;16L", "I")
#: A PNG text chunk `write_label_map` puts in id maps, so that they read back as ids even when the
#: only id is 255 or 65535 (which, without it, marks a binary mask saved at 16 bits).
_ID_MAP_KEY, _ID_MAP_VALUE = "maskvos", "id-map"


class MaskFileError(MaskvosError):
    """A mask file that cannot be read or does not fit the video."""


def davis_palette() -> list[int]:
    """The 256-colour DAVIS palette (PASCAL VOC colour map) as a flat [r, g, b, ...] list."""
    palette = []
    for label in range(256):
        r = g = b = 0
        c = label
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def read_label_map(path: str | Path) -> np.ndarray:
    """Read a mask image as a label map (H, W).

    - palette PNGs: their indices, uint8 (255 is void);
    - 16-bit grey PNGs: id maps, pixel value = object id, uint16 (int32 if wider); except a binary
      mask saved at 16 bits (its only non-zero value 255 or 65535), which is one object (1), uint8;
    - 8-bit grey or 0/255 binary images: 1 for every non-zero pixel (one object), uint8;
    - RGB(A) images: an error unless they are grey in disguise.
    """
    path = Path(path)
    return _decode_mask_image(path, path)


def decode_label_map(data: bytes, what: str = "frame") -> np.ndarray:
    """`read_label_map` of PNG bytes (`what` names them in an error)."""
    return _decode_mask_image(io.BytesIO(data), Path(what))


def _decode_mask_image(fp: Path | io.BytesIO, path: Path) -> np.ndarray:
    try:
        with Image.open(fp) as img:
            mode = img.mode
            arr = np.asarray(img)
            is_written_id_map = img.info.get(_ID_MAP_KEY) == _ID_MAP_VALUE
    except (OSError, ValueError) as exc:
        raise MaskFileError(f"Mask file '{path}' cannot be read ({exc}); pass a PNG mask.") from None
    if mode == "P":
        return arr.astype(np.uint8)
    if mode in ID_MAP_MODES:
        return _id_map(arr, path, is_written_id_map)
    if mode in ("L", "1"):
        return (arr > 0).astype(np.uint8)
    if mode in ("LA", "RGB", "RGBA"):
        colour = arr[..., :3] if arr.ndim == 3 and mode != "LA" else arr[..., :1]
        if mode == "LA" or np.all(colour == colour[..., :1]):
            return (colour[..., 0] > 0).astype(np.uint8)
        raise MaskFileError(
            f"Mask file '{path}' is a colour image; save masks as palette PNGs (object id = index) or 0/255 grey PNGs."
        )
    raise MaskFileError(f"Mask file '{path}' has unsupported image mode {mode}; save it as a palette or grey PNG.")


def _id_map(arr: np.ndarray, path: Path, is_written_id_map: bool) -> np.ndarray:
    """The label map of a 16-bit (or wider) grey image; see `read_label_map`."""
    if arr.size and arr.min() < 0:
        raise MaskFileError(f"Mask file '{path}' has negative pixel values; save object ids 0..{MAX_ID_MAP_ID}.")
    if not is_written_id_map:
        values = np.unique(arr[arr != 0])
        if len(values) == 1:
            return (arr > 0).astype(np.uint8)  # one value: a binary mask saved at 16 bits (e.g. 0/65535, 0/1000)
    return arr.astype(np.uint16 if arr.max(initial=0) <= MAX_ID_MAP_ID else np.int32)


def write_label_map(path: str | Path, labels: np.ndarray) -> None:
    """Write a label map as a PNG, atomically (temporary file, then rename).

    Ids up to 254 (and the void label 255 of a uint8 map) give a DAVIS-style palette PNG; larger ids
    a 16-bit grey id-map PNG (pixel value = object id) under the same name, read back by
    `read_label_map` as the same ids.
    """
    path = Path(path)
    data = encode_label_map(labels, f"'{path}'")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def encode_label_map(labels: np.ndarray, what: str = "a frame") -> bytes:
    """The PNG bytes `write_label_map` writes for `labels` (`what` names it in an error)."""
    top = int(labels.max(initial=0))
    if int(labels.min(initial=0)) < 0 or top > MAX_ID_MAP_ID:
        raise MaskFileError(
            f"Label map for {what} has object ids outside 0..{MAX_ID_MAP_ID}; renumber the objects within that range."
        )
    if labels.dtype == np.uint8 or top <= MAX_PALETTE_ID:
        img = Image.fromarray(labels.astype(np.uint8), mode="P")
        img.putpalette(davis_palette())
        info = None
    else:
        img = Image.fromarray(labels.astype(np.uint16))
        info = PngInfo()
        info.add_text(_ID_MAP_KEY, _ID_MAP_VALUE)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def label_map_to_masks(labels: np.ndarray) -> dict[int, np.ndarray]:
    """Per-object boolean masks of every object id present.

    0 is excluded, and so is the void label 255 of an 8-bit (uint8) map; in a 16-bit id map 255 is an
    ordinary id.
    """
    excluded = (0, VOID_LABEL) if labels.dtype == np.uint8 else (0,)
    ids = [int(i) for i in np.unique(labels) if i not in excluded]
    return {obj_id: labels == obj_id for obj_id in ids}


def void_pixels(labels: np.ndarray) -> int:
    """How many pixels of an 8-bit label map hold the void label 255 (0 for a 16-bit id map)."""
    if labels.dtype != np.uint8:
        return 0
    return int(np.count_nonzero(labels == VOID_LABEL))


def void_label_message(path: str | Path) -> str:
    """The one-sentence error for a mask file (a prompt) whose pixels hold the void label."""
    return (
        f"Mask file '{path}' marks pixels with index 255, DAVIS' void label, which is never an object; "
        "renumber that object 1..254, or save a 16-bit id-map PNG for more objects."
    )


def masks_to_label_map(masks: dict[int, np.ndarray], scores: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """Combine per-object masks into a label map where each pixel belongs to at most one object.

    Where masks overlap, the object with the highest score wins (scores: per-object (H, W) logits or
    probabilities); without scores, the object listed last wins.
    """
    if not masks:
        raise ValueError("no masks to combine")
    shape = next(iter(masks.values())).shape
    # uint8 only while every id fits a palette PNG: in a uint8 map 255 would read as void.
    labels = np.zeros(shape, dtype=np.uint8 if max(masks) <= MAX_PALETTE_ID else np.uint16)
    if scores is None:
        for obj_id, mask in masks.items():
            labels[mask] = obj_id
        return labels
    # A running maximum over each object's own pixels: cost follows the masks' area, not objects x frame
    # size (44 objects at 1080p: 1.5 s -> about 0.1 s per frame). Ties go to the object listed first.
    best = np.full(shape, -np.inf, dtype=np.float64)
    for obj_id, mask in masks.items():
        ys, xs = np.nonzero(mask)
        score = np.asarray(scores[obj_id])[ys, xs]
        wins = score > best[ys, xs]
        best[ys[wins], xs[wins]] = score[wins]
        labels[ys[wins], xs[wins]] = obj_id
    return labels
