"""Stress sets: a new DAVIS-layout dataset built from an existing one, with occlusions and distractors.

`build_stress_sets(dataset, out_dir)` writes, for every source sequence `<seq>`:

- `<seq>`: the unaltered copy (file bytes copied), so one run over the stress set also gives the
  reference run without occlusion;
- `<seq>_occ<L>`: a textured occluder (a rectangle cut from a frame of another sequence) slides in
  from the left or right over `SLIDE` frames, covers the target object's enlarged box (the
  ground-truth box, each side widened by 5 % of its width / height) for exactly L consecutive frames,
  then slides out across the frame over `SLIDE` frames. The ground truth under the occluder becomes
  background (0) for every object, void (255) included;
- `<seq>_dis`: a moving copy of the target object (cut with its own mask from a frame at least
  `COPY_GAP` frames after the prompt frame) pasted into every frame after the prompt frame, never on
  any object (objects and void dilated by `DILATE` px); the ground truth is unchanged and the copy's
  masks are written to `Distractors/<seq>_dis/<stem>.png` (0/255).

The prompt frame (the first annotated frame where any object is visible) and every frame before it
are never altered; unaltered frames and masks are byte copies of the source files. Altered frames
are written as JPEG (quality 95) or PNG, as the source frame; altered masks in the source's encoding
(0/255 grey for binary masks, palette PNG with the source palette for palette masks). Everything is
seeded: the same dataset, arguments and seed give byte-identical output.

`stress.json` at the root of the output describes every set (`StressManifest.to_json` gives the
schema); `read_manifest(root)` reads it back. Each set is written in a temporary folder under
`.stress-build/` and renamed into place when complete, so an interrupted build leaves no half set
that looks complete: calling again with the same arguments resumes it, and `stress.json` (written
last) marks the whole build as complete.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from maskvos.errors import MaskvosError
from maskvos.eval.metrics import EvalError
from maskvos.io.files import atomic_path, write_bytes_atomic
from maskvos.io.frames import natural_key
from maskvos.io.masks import ID_MAP_MODES, VOID_LABEL, read_label_map, write_label_map

__all__ = [
    "MANIFEST_NAME",
    "SLIDE",
    "OccluderSource",
    "SkippedSet",
    "StressManifest",
    "StressSequence",
    "build_stress_sets",
    "read_manifest",
]

MANIFEST_NAME = "stress.json"
MANIFEST_VERSION = 1
#: Frames over which the occluder slides in (and, after the covered span, out).
SLIDE = 5
#: Frames that must follow the covered span, so that re-appearance can be measured.
AFTER = 10
#: Each side of the ground-truth box is widened by this fraction of the box's width / height.
BOX_MARGIN = 0.05
#: The distractor is cut from a frame at least this many frames after the prompt frame.
COPY_GAP = 10
#: Objects (and void) are dilated by this many pixels before the distractor is kept off them.
DILATE = 3
#: A distractor whose box is larger than this fraction of the frame is scaled down to it.
MAX_COPY_AREA = 1 / 3
#: Factors tried on that scale, largest first, until the copy's path is free on half the frames.
COPY_SCALES = (1.0, 0.75, 0.5, 0.35, 0.25)
#: The distractor moves this many pixels per frame (a seeded speed in this range).
SPEED = (2.0, 5.0)
#: Seeded (start, velocity) candidates tried for the distractor's path; the freest is kept.
PATH_CANDIDATES = 8
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
JPEG_QUALITY = 95
_BUILD_DIR = ".stress-build"
_ARGS_FILE = "arguments.json"

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)
Progress = Callable[[str, int, int], None]


# --------------------------------------------------------------------------------------------------
# The manifest


@dataclass(frozen=True)
class OccluderSource:
    """Where an occluder's texture was cut: a frame of a sequence and the crop box in that frame
    (resized to the occluder's size when the crop is smaller); same_sequence when the dataset has
    one sequence only and the texture comes from a far frame of the occluded sequence itself."""

    sequence: str
    frame: str
    box: Box
    same_sequence: bool = False


@dataclass(frozen=True)
class StressSequence:
    """One sequence of a stress set, as described in `stress.json`.

    kind: "plain" (unaltered copy), "occlusion" or "distractor". prompt: the stem of the prompt frame
    (first annotated frame with a visible object; it and the frames before it are unaltered).
    Occlusion: length (L), obj_id (the target), covered (the L stems where the occluder covers the
    enlarged box), hidden (stems where the target was visible in the source and is fully covered),
    reappear (first stem after the covered span where the target's edited ground truth is non-empty,
    None if never), occluder_from, occluder_boxes ({stem: the occluder's box clipped to the frame} on
    every frame where it is seen). Distractor: obj_id, copy_from (stem the copy was cut from),
    copy_box (its box there), scale (applied to the copy), pasted / not_pasted (stems after the
    prompt frame with / without the copy), masks (folder of the copy's masks, relative to the root).
    """

    name: str
    kind: str
    source_sequence: str
    prompt: str | None = None
    obj_id: int | None = None
    length: int | None = None
    hidden: tuple[str, ...] = ()
    covered: tuple[str, ...] = ()
    reappear: str | None = None
    occluder_from: OccluderSource | None = None
    occluder_boxes: dict[str, Box] = field(default_factory=dict)
    copy_from: str | None = None
    copy_box: Box | None = None
    scale: float | None = None
    pasted: tuple[str, ...] = ()
    not_pasted: tuple[str, ...] = ()
    masks: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this sequence in `stress.json` (its name is the key, not a field)."""
        data: dict[str, Any] = {"kind": self.kind, "source_sequence": self.source_sequence, "prompt": self.prompt}
        if self.kind == "occlusion":
            src = self.occluder_from
            data.update(
                length=self.length, obj_id=self.obj_id, hidden=list(self.hidden), covered=list(self.covered),
                reappear=self.reappear,
                occluder_from=None if src is None else {
                    "sequence": src.sequence, "frame": src.frame, "box": list(src.box),
                    "same_sequence": src.same_sequence,
                },
                occluder_boxes={stem: list(box) for stem, box in self.occluder_boxes.items()},
            )  # fmt: skip
        elif self.kind == "distractor":
            data.update(
                obj_id=self.obj_id, copy_from=self.copy_from,
                copy_box=None if self.copy_box is None else list(self.copy_box), scale=self.scale,
                pasted=list(self.pasted), not_pasted=list(self.not_pasted), masks=self.masks,
            )  # fmt: skip
        return data

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> StressSequence:
        """Read one sequence's JSON object (see `to_json`)."""
        src = data.get("occluder_from")
        copy_box = data.get("copy_box")
        return cls(
            name=name, kind=data["kind"], source_sequence=data["source_sequence"], prompt=data.get("prompt"),
            obj_id=data.get("obj_id"), length=data.get("length"),
            hidden=tuple(data.get("hidden", ())), covered=tuple(data.get("covered", ())),
            reappear=data.get("reappear"),
            occluder_from=None if src is None else OccluderSource(
                src["sequence"], src["frame"], _box(src["box"]), bool(src.get("same_sequence", False))
            ),
            occluder_boxes={stem: _box(box) for stem, box in data.get("occluder_boxes", {}).items()},
            copy_from=data.get("copy_from"), copy_box=None if copy_box is None else _box(copy_box),
            scale=data.get("scale"), pasted=tuple(data.get("pasted", ())),
            not_pasted=tuple(data.get("not_pasted", ())), masks=data.get("masks"),
        )  # fmt: skip


@dataclass(frozen=True)
class SkippedSet:
    """A stress sequence that was not built: kind "occlusion" (with its length), "distractor", or
    "sequence" (the whole source sequence), and the reason."""

    sequence: str
    kind: str
    reason: str
    length: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this entry in `stress.json`'s `skipped` list."""
        data: dict[str, Any] = {"sequence": self.sequence, "kind": self.kind}
        if self.length is not None:
            data["length"] = self.length
        data["reason"] = self.reason
        return data


@dataclass(frozen=True)
class StressManifest:
    """`stress.json`: the arguments a stress set was built with, its sequences and what was skipped.

    selection: the `sequences=` argument (None: every sequence of the source).
    """

    source: str
    seed: int
    occlusion: tuple[int, ...]
    distractor: bool
    sequences: dict[str, StressSequence]
    skipped: tuple[SkippedSet, ...] = ()
    slide: int = SLIDE
    include_plain: bool = True
    selection: tuple[str, ...] | None = None
    version: int = MANIFEST_VERSION

    def to_json(self) -> dict[str, Any]:
        """The whole `stress.json` object."""
        return {
            **_arguments_json(
                self.source, self.seed, self.occlusion, self.distractor, self.include_plain, self.selection
            ),
            "sequences": {name: seq.to_json() for name, seq in self.sequences.items()},
            "skipped": [s.to_json() for s in self.skipped],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StressManifest:
        """Read a `stress.json` object (see `to_json`)."""
        selection = data.get("selection")
        return cls(
            source=data["source"], seed=int(data["seed"]), occlusion=tuple(int(v) for v in data["occlusion"]),
            distractor=bool(data["distractor"]),
            sequences={name: StressSequence.from_json(name, seq) for name, seq in data["sequences"].items()},
            skipped=tuple(
                SkippedSet(s["sequence"], s["kind"], s["reason"], s.get("length")) for s in data.get("skipped", ())
            ),
            slide=int(data.get("slide", SLIDE)), include_plain=bool(data.get("include_plain", True)),
            selection=None if selection is None else tuple(selection), version=int(data.get("version", 1)),
        )  # fmt: skip


def _box(values: Sequence[int]) -> Box:
    x0, y0, x1, y1 = (int(v) for v in values)
    return x0, y0, x1, y1


def _arguments_json(
    source: str,
    seed: int,
    occlusion: Sequence[int],
    distractor: bool,
    include_plain: bool,
    selection: Sequence[str] | None,
) -> dict[str, Any]:
    """The part of `stress.json` that identifies the build (compared when out_dir is reused)."""
    return {
        "version": MANIFEST_VERSION, "source": source, "seed": seed, "occlusion": list(occlusion),
        "distractor": distractor, "slide": SLIDE, "include_plain": include_plain,
        "selection": None if selection is None else list(selection),
    }  # fmt: skip


def read_manifest(root: str | os.PathLike[str]) -> StressManifest | None:
    """The manifest of the stress set at `root` (its `stress.json`), or None when there is none."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        return None
    return StressManifest.from_json(_read_json(path))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EvalError(
            f"Stress manifest '{path}' cannot be read ({exc}); delete it and build the stress set again."
        ) from None
    if not isinstance(data, dict):
        raise EvalError(f"Stress manifest '{path}' is not a JSON object; delete it and build the stress set again.")
    return data


def _dump_json(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=1) + "\n").encode()


# --------------------------------------------------------------------------------------------------
# The source dataset


@dataclass(frozen=True)
class _Dataset:
    root: Path
    images: Path
    annotations: Path
    sequences: tuple[str, ...]  # every sequence with frames, natural order


def _open_dataset(dataset: str | os.PathLike[str]) -> _Dataset:
    root = Path(dataset).resolve()
    images = root / "JPEGImages"
    if not images.is_dir():
        raise EvalError(
            f"Dataset '{root}' has no JPEGImages folder; pass the root of a DAVIS-layout dataset "
            "(JPEGImages/<sequence>/<frame>.jpg and Annotations/<sequence>/<frame>.png)."
        )
    if (images / "480p").is_dir():
        images = images / "480p"
    annotations = root / "Annotations"
    if not annotations.is_dir():
        raise EvalError(
            f"Dataset '{root}' has no Annotations folder; pass a DAVIS-layout dataset with ground-truth "
            "masks in Annotations/<sequence>/<frame>.png."
        )
    if (annotations / "480p").is_dir():
        annotations = annotations / "480p"
    names = sorted((p.name for p in images.iterdir() if p.is_dir() and _frame_files(p)), key=natural_key)
    if not names:
        raise EvalError(
            f"Frame folder '{images}' has no sequence subfolders with frames; pass a DAVIS-layout dataset root."
        )
    return _Dataset(root, images, annotations, tuple(names))


def _frame_files(folder: Path) -> dict[str, Path]:
    """{stem: path} of a sequence folder's frames (JPEG or PNG), in natural order of the stems."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return {p.stem: p for p in sorted(files, key=lambda p: natural_key(p.stem))}


@dataclass(frozen=True)
class _Encoding:
    """How a source mask file encodes labels: 'palette' (with its palette), 'binary' (0/255 grey) or
    'idmap' (16-bit ids)."""

    kind: str
    palette: tuple[int, ...] | None = None


def _read_mask(path: Path) -> tuple[np.ndarray, _Encoding]:
    """A mask file's label map (uint8 unless an id map) and its encoding."""
    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode == "P":
                return np.asarray(img).astype(np.uint8), _Encoding("palette", tuple(img.getpalette() or ()))
        labels = read_label_map(path)
    except OSError as exc:
        raise EvalError(f"Mask file '{path}' cannot be read ({exc}); replace it with a PNG mask.") from None
    except MaskvosError as exc:
        raise EvalError(str(exc)) from None
    return labels, _Encoding("idmap" if mode in ID_MAP_MODES else "binary")


def _object_ids(labels: np.ndarray) -> list[int]:
    """Object ids present in a label map (0 and, in 8-bit maps, the void label excluded)."""
    excluded = (0, VOID_LABEL) if labels.dtype == np.uint8 else (0,)
    return [int(i) for i in np.unique(labels) if int(i) not in excluded]


@dataclass
class _Sequence:
    """One source sequence: stems, files, label maps (None where a frame has no mask)."""

    name: str
    stems: list[str]
    images: list[Path]
    masks: list[Path | None]
    labels: list[np.ndarray | None]
    encodings: list[_Encoding | None]
    height: int
    width: int

    @property
    def n(self) -> int:
        return len(self.stems)

    def copy_mask(self, t: int, dst: Path) -> None:
        """Copy frame t's mask file (if it has one) byte for byte."""
        path = self.masks[t]
        if path is not None:
            _copy_file(path, dst)

    def object_mask(self, t: int, obj_id: int) -> np.ndarray | None:
        """Frame t's mask of one object, or None where the frame has no mask."""
        labels = self.labels[t]
        return None if labels is None else labels == obj_id


def _load_sequence(data: _Dataset, name: str) -> _Sequence:
    frames = _frame_files(data.images / name)
    mask_dir = data.annotations / name
    mask_files = (
        {p.stem: p for p in mask_dir.iterdir() if p.is_file() and p.suffix.lower() == ".png"}
        if mask_dir.is_dir()
        else {}
    )
    stems = list(frames)
    with Image.open(frames[stems[0]]) as img:
        width, height = img.size
    masks, labels, encodings = [], [], []
    for stem in stems:
        path = mask_files.get(stem)
        masks.append(path)
        if path is None:
            labels.append(None)
            encodings.append(None)
            continue
        lab, enc = _read_mask(path)
        if lab.shape != (height, width):
            raise EvalError(
                f"Mask '{path}' is {lab.shape[1]}x{lab.shape[0]} but the frames of sequence '{name}' are "
                f"{width}x{height}; give masks the size of their frames."
            )
        labels.append(lab)
        encodings.append(enc)
    return _Sequence(name, stems, [frames[s] for s in stems], masks, labels, encodings, height, width)


def _read_rgb(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A frame as (H, W, 3) uint8; size (W, H): refuse a frame of another size."""
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except OSError as exc:
        raise EvalError(f"Frame '{path}' cannot be read ({exc}); replace it with a JPEG or PNG image.") from None
    if size is not None and (rgb.shape[1], rgb.shape[0]) != size:
        raise EvalError(
            f"Frame '{path}' is {rgb.shape[1]}x{rgb.shape[0]} but the other frames of its sequence are "
            f"{size[0]}x{size[1]}; give every frame of a sequence one size."
        )
    return rgb


# --------------------------------------------------------------------------------------------------
# Writing


def _copy_file(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    """Write a frame as JPEG (quality 95) or PNG, by the suffix of `path`."""
    img = Image.fromarray(np.ascontiguousarray(rgb))
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".png":
            img.save(tmp, format="PNG")
        else:
            img.save(tmp, format="JPEG", quality=JPEG_QUALITY)


def _write_mask(path: Path, labels: np.ndarray, encoding: _Encoding) -> None:
    """Write an edited label map in the encoding of its source file."""
    if encoding.kind == "idmap":
        write_label_map(path, labels)
        return
    height, width = labels.shape
    if encoding.kind == "palette":
        img = Image.frombytes("P", (width, height), np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
        if encoding.palette:
            img.putpalette(list(encoding.palette))
    else:
        img = Image.frombytes("L", (width, height), np.where(labels > 0, 255, 0).astype(np.uint8).tobytes())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def _write_binary(path: Path, mask: np.ndarray) -> None:
    height, width = mask.shape
    img = Image.frombytes("L", (width, height), np.where(mask, 255, 0).astype(np.uint8).tobytes())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


class _SetWriter:
    """Writes one stress sequence into a temporary folder; `commit` renames it into place."""

    def __init__(self, out: Path, build: Path, name: str) -> None:
        self.out, self.name = out, name
        self.tmp = build / "tmp" / name
        _remove_set(out, build, name)
        for sub in ("JPEGImages", "Annotations"):
            (self.tmp / sub).mkdir(parents=True)

    def image(self, stem_file: Path) -> Path:
        return self.tmp / "JPEGImages" / stem_file.name

    def mask(self, stem: str) -> Path:
        return self.tmp / "Annotations" / f"{stem}.png"

    def distractor(self, stem: str) -> Path:
        folder = self.tmp / "Distractors"
        folder.mkdir(exist_ok=True)
        return folder / f"{stem}.png"

    def commit(self) -> None:
        for sub in ("JPEGImages", "Annotations", "Distractors"):
            src = self.tmp / sub
            if src.is_dir():
                (self.out / sub).mkdir(exist_ok=True)
                os.replace(src, self.out / sub / self.name)
        shutil.rmtree(self.tmp)


def _remove_set(out: Path, build: Path, name: str) -> None:
    """Remove whatever an interrupted build left of one stress sequence."""
    for folder in (build / "tmp" / name, *(out / sub / name for sub in ("JPEGImages", "Annotations", "Distractors"))):
        if folder.is_dir():
            shutil.rmtree(folder)


# --------------------------------------------------------------------------------------------------
# Geometry


def _rng(seed: int, *parts: object) -> np.random.Generator:
    """A generator seeded from the seed and names, stable across runs and machines (not `hash()`)."""
    digest = hashlib.sha256(json.dumps([seed, *parts]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _bbox(mask: np.ndarray) -> Box | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _filled_boxes(boxes: list[Box | None]) -> list[tuple[float, float, float, float]]:
    """Every frame's box: known ones as they are, the others interpolated linearly between the known
    neighbours (or the nearest known box at either end). At least one box must be known."""
    known = [(i, b) for i, b in enumerate(boxes) if b is not None]
    index = np.array([i for i, _ in known], dtype=np.float64)
    coords = np.array([b for _, b in known], dtype=np.float64)
    frames = np.arange(len(boxes), dtype=np.float64)
    columns = [np.interp(frames, index, coords[:, c]) for c in range(4)]
    return [(float(a), float(b), float(c), float(d)) for a, b, c, d in zip(*columns)]


def _enlarged(box: tuple[float, float, float, float], width: int, height: int) -> Box:
    """The box with each side moved out by `BOX_MARGIN` of its width / height, clipped to the frame."""
    x0, y0, x1, y1 = box
    mx, my = BOX_MARGIN * (x1 - x0), BOX_MARGIN * (y1 - y0)
    return (
        max(0, math.floor(x0 - mx)), max(0, math.floor(y0 - my)),
        min(width, math.ceil(x1 + mx)), min(height, math.ceil(y1 + my)),
    )  # fmt: skip


def _any(mask: np.ndarray | None) -> bool:
    return mask is not None and bool(mask.any())


def _contains(rect: Box, box: Box) -> bool:
    return rect[0] <= box[0] and rect[1] <= box[1] and rect[2] >= box[2] and rect[3] >= box[3]


def _clip(rect: Box, width: int, height: int) -> Box | None:
    x0, y0, x1, y1 = max(0, rect[0]), max(0, rect[1]), min(width, rect[2]), min(height, rect[3])
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def _round(value: float) -> int:
    return math.floor(value + 0.5)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a (2r+1)-square, in numpy."""
    out = mask.copy()
    for d in range(1, radius + 1):
        out[:, d:] |= mask[:, :-d]
        out[:, :-d] |= mask[:, d:]
    rows = out.copy()
    for d in range(1, radius + 1):
        out[d:, :] |= rows[:-d, :]
        out[:-d, :] |= rows[d:, :]
    return out


def _fast_length(n: int) -> int:
    """The smallest length >= n whose only prime factors are 2, 3 and 5 (quick for FFTs)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _overlaps(forbidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """overlaps[y, x]: pixels the mask would put on `forbidden` with its top-left corner at (x, y), for
    every position that keeps it inside the frame (a correlation done with FFTs)."""
    height, width = forbidden.shape
    h, w = mask.shape
    shape = (_fast_length(height + h), _fast_length(width + w))
    spectrum = np.fft.rfft2(forbidden.astype(np.float64), s=shape) * np.fft.rfft2(
        mask[::-1, ::-1].astype(np.float64), s=shape
    )
    full = np.fft.irfft2(spectrum, s=shape)
    return full[h - 1 : height, w - 1 : width]


# --------------------------------------------------------------------------------------------------
# Planning


@dataclass(frozen=True)
class _Plan:
    """What a source sequence gives: prompt index, target object, the sets to write and the skips."""

    name: str
    n: int
    prompt: int
    obj_id: int
    sets: tuple[tuple[str, str, int | None], ...]  # (set name, kind, length)
    skipped: tuple[SkippedSet, ...]


def _plan(seq: _Sequence, seed: int, occlusion: Sequence[int], distractor: bool, include_plain: bool) -> _Plan:
    first = next(((i, ids) for i, lab in enumerate(seq.labels) if lab is not None and (ids := _object_ids(lab))), None)
    if first is None:
        skip = SkippedSet(seq.name, "sequence", "no annotated frame shows an object; annotate the objects to stress it")
        return _Plan(seq.name, seq.n, -1, 0, (), (skip,))
    prompt, objects = first
    obj_id = objects[int(_rng(seed, seq.name, "target").integers(len(objects)))]
    sets: list[tuple[str, str, int | None]] = []
    skipped: list[SkippedSet] = []
    if include_plain:
        sets.append((seq.name, "plain", None))
    for length in occlusion:
        need = prompt + 1 + SLIDE + length + AFTER
        if seq.n < need:
            reason = (
                f"{seq.n} frames; needs at least {need} (prompt frame at {prompt}, {SLIDE} slide-in, "
                f"{length} covered, {AFTER} after)"
            )
            skipped.append(SkippedSet(seq.name, "occlusion", reason, length))
        else:
            sets.append((f"{seq.name}_occ{length}", "occlusion", length))
    if distractor:
        visible = [i for i in range(prompt + COPY_GAP, seq.n) if _any(seq.object_mask(i, obj_id))]
        if visible:
            sets.append((f"{seq.name}_dis", "distractor", None))
        else:
            reason = f"{seq.n} frames; object {obj_id} is visible on no frame {COPY_GAP} or more frames after the prompt frame ({prompt})"
            skipped.append(SkippedSet(seq.name, "distractor", reason))
    return _Plan(seq.name, seq.n, prompt, obj_id, tuple(sets), tuple(skipped))


# --------------------------------------------------------------------------------------------------
# The occlusion set


def _occluder_patch(
    data: _Dataset, seq: _Sequence, rng: np.random.Generator, covered: range, size: tuple[int, int]
) -> tuple[np.ndarray, OccluderSource]:
    """The occluder's texture (h, w, 3): a seeded crop of a frame of another sequence (or, in a
    one-sequence dataset, of a far frame of this one), resized when the frame is too small."""
    w, h = size
    others = [s for s in data.sequences if s != seq.name]
    if others:
        name = others[int(rng.integers(len(others)))]
        files = _frame_files(data.images / name)
        stem = list(files)[int(rng.integers(len(files)))]
        path, same = files[stem], False
    else:
        far = max(AFTER, seq.n // 4)
        distance = [max(covered.start - i, i - (covered.stop - 1), 0) for i in range(seq.n)]
        candidates = [i for i, d in enumerate(distance) if d >= far] or [int(np.argmax(distance))]
        index = candidates[int(rng.integers(len(candidates)))]
        name, stem, path, same = seq.name, seq.stems[index], seq.images[index], True
    rgb = _read_rgb(path)
    src_h, src_w = rgb.shape[:2]
    scale = min(1.0, src_w / w, src_h / h)
    crop_w, crop_h = max(1, min(src_w, math.floor(w * scale))), max(1, min(src_h, math.floor(h * scale)))
    x0 = int(rng.integers(src_w - crop_w + 1))
    y0 = int(rng.integers(src_h - crop_h + 1))
    patch = rgb[y0 : y0 + crop_h, x0 : x0 + crop_w]
    if (crop_w, crop_h) != (w, h):
        patch = np.asarray(Image.fromarray(np.ascontiguousarray(patch)).resize((w, h), Image.Resampling.BILINEAR))
    return patch, OccluderSource(name, stem, (x0, y0, x0 + crop_w, y0 + crop_h), same)


def _occluder_positions(
    eboxes: list[Box], start: int, length: int, size: tuple[int, int], width: int, height: int, from_left: bool
) -> dict[int, Box]:
    """{frame index: the occluder's unclipped rectangle} for the slide-in, covered and slide-out frames.

    Covered frames: centred on the frame's enlarged box, clamped inside the frame (it still contains
    the box, as the occluder is at least that large). Slide frames: on a line from fully outside the
    frame (entry side) to the first covered position, and from the last covered position to fully
    outside the other side; one that would still contain its frame's enlarged box is pushed back
    towards the outside so that the box is covered on exactly the L covered frames.
    """
    w, h = size
    rects: dict[int, Box] = {}
    for t in range(start, start + length):
        ex0, ey0, ex1, ey1 = eboxes[t]
        x = min(max(_round((ex0 + ex1 - w) / 2), 0), width - w)
        y = min(max(_round((ey0 + ey1 - h) / 2), 0), height - h)
        rects[t] = (x, y, x + w, y + h)
        assert _contains(rects[t], eboxes[t]), (rects[t], eboxes[t])
    first, last = rects[start], rects[start + length - 1]
    left_out, right_out = -w, width
    slides = [
        (start - SLIDE - 1 + k, left_out if from_left else right_out, first[0], first[1], k / (SLIDE + 1), from_left)
        for k in range(1, SLIDE + 1)
    ] + [
        (start + length - 1 + k, last[0], right_out if from_left else left_out, last[1], k / (SLIDE + 1), not from_left)
        for k in range(1, SLIDE + 1)
    ]  # (frame, x from, x to, y, fraction, outside is on the left)
    for t, x_from, x_to, y, frac, outside_left in slides:
        if t >= len(eboxes):
            continue
        x = _round(x_from + (x_to - x_from) * frac)
        rect = (x, y, x + w, y + h)
        box = eboxes[t]
        if _contains(rect, box):
            x = box[2] - w - 1 if outside_left else box[0] + 1
            rect = (x, y, x + w, y + h)
        rects[t] = rect
    return rects


def _write_occlusion(
    data: _Dataset, seq: _Sequence, plan: _Plan, length: int, seed: int, writer: _SetWriter
) -> StressSequence:
    rng = _rng(seed, seq.name, "occlusion", length)
    obj = plan.obj_id
    boxes = [None if (m := seq.object_mask(t, obj)) is None else _bbox(m) for t in range(seq.n)]
    filled = _filled_boxes(boxes)
    eboxes = [_enlarged(b, seq.width, seq.height) for b in filled]
    low, high = plan.prompt + 1 + SLIDE, seq.n - AFTER - length
    start = int(rng.integers(low, high + 1))
    covered = range(start, start + length)
    size = (
        min(seq.width, max(eboxes[t][2] - eboxes[t][0] for t in covered)),
        min(seq.height, max(eboxes[t][3] - eboxes[t][1] for t in covered)),
    )
    from_left = bool(rng.integers(2))
    patch, source = _occluder_patch(data, seq, rng, covered, size)
    rects = _occluder_positions(eboxes, start, length, size, seq.width, seq.height, from_left)

    hidden, shown, reappear = [], {}, None
    for t, stem in enumerate(seq.stems):
        rect = rects.get(t)
        clipped = None if rect is None else _clip(rect, seq.width, seq.height)
        labels, encoding = seq.labels[t], seq.encodings[t]
        edited = labels
        if rect is None or clipped is None:
            _copy_file(seq.images[t], writer.image(seq.images[t]))
        else:
            x0, y0, x1, y1 = clipped
            rgb = _read_rgb(seq.images[t], (seq.width, seq.height)).copy()
            rgb[y0:y1, x0:x1] = patch[y0 - rect[1] : y1 - rect[1], x0 - rect[0] : x1 - rect[0]]
            _write_rgb(writer.image(seq.images[t]), rgb)
            shown[stem] = clipped
            if labels is not None and np.any(labels[y0:y1, x0:x1]):
                edited = labels.copy()
                edited[y0:y1, x0:x1] = 0
        if labels is not None and edited is not None and encoding is not None:
            if edited is labels:
                seq.copy_mask(t, writer.mask(stem))
            else:
                _write_mask(writer.mask(stem), edited, encoding)
            if np.any(labels == obj) and not np.any(edited == obj):
                hidden.append(stem)
            if reappear is None and t >= covered.stop and np.any(edited == obj):
                reappear = stem
    return StressSequence(
        name=writer.name, kind="occlusion", source_sequence=seq.name, prompt=seq.stems[plan.prompt], obj_id=obj,
        length=length, hidden=tuple(hidden), covered=tuple(seq.stems[t] for t in covered), reappear=reappear,
        occluder_from=source, occluder_boxes=shown,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------
# The distractor set


def _path(
    rng: np.random.Generator, frames: int, size: tuple[int, int], width: int, height: int
) -> list[tuple[int, int]]:
    """Top-left positions along a straight line that bounces off the frame's borders."""
    w, h = size
    span_x, span_y = width - w, height - h
    x, y = rng.uniform(0, span_x), rng.uniform(0, span_y)
    speed, angle = rng.uniform(*SPEED), rng.uniform(0, 2 * math.pi)
    vx, vy = speed * math.cos(angle), speed * math.sin(angle)
    out = []
    for _ in range(frames):
        out.append((min(max(_round(x), 0), span_x), min(max(_round(y), 0), span_y)))
        x, y = x + vx, y + vy
        if x < 0 or x > span_x:
            x, vx = (-x if x < 0 else 2 * span_x - x), -vx
            x = min(max(x, 0.0), float(span_x))
        if y < 0 or y > span_y:
            y, vy = (-y if y < 0 else 2 * span_y - y), -vy
            y = min(max(y, 0.0), float(span_y))
    return out


def _free(forbidden: np.ndarray, mask: np.ndarray, pos: tuple[int, int]) -> bool:
    x, y = pos
    h, w = mask.shape
    return not np.any(forbidden[y : y + h, x : x + w] & mask)


def _nearest_free(forbidden: np.ndarray, mask: np.ndarray, pos: tuple[int, int], radius: int) -> tuple[int, int] | None:
    """The free position nearest `pos` within `radius` (Euclidean; ties: the first in row order)."""
    counts = _overlaps(forbidden, mask)
    x, y = pos
    ys, xs = slice(max(0, y - radius), y + radius + 1), slice(max(0, x - radius), x + radius + 1)
    window = counts[ys, xs] < 0.5
    if not window.any():
        return None
    gy, gx = np.mgrid[ys.start : ys.start + window.shape[0], xs.start : xs.start + window.shape[1]]
    dist = np.where(window, (gx - x) ** 2 + (gy - y) ** 2, np.iinfo(np.int64).max)
    k = int(np.argmin(dist))
    found = int(gx.flat[k]), int(gy.flat[k])
    return found if _free(forbidden, mask, found) else None


def _resized_copy(patch: np.ndarray, mask: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The copy's image and mask scaled by `scale` (as they are when it is 1)."""
    if scale >= 1.0:
        return patch, mask
    size = (max(1, math.floor(mask.shape[1] * scale)), max(1, math.floor(mask.shape[0] * scale)))
    image = np.asarray(Image.fromarray(np.ascontiguousarray(patch)).resize(size, Image.Resampling.BILINEAR))
    grey = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR)
    return image, np.asarray(grey) >= 128


def _write_distractor(seq: _Sequence, plan: _Plan, seed: int, writer: _SetWriter) -> StressSequence:
    rng = _rng(seed, seq.name, "distractor")
    obj = plan.obj_id
    masks = {i: m for i in range(plan.prompt + COPY_GAP, seq.n) if _any(m := seq.object_mask(i, obj))}
    boxes: dict[int, Box] = {i: b for i, m in masks.items() if (b := _bbox(m)) is not None}
    inside = [i for i, b in boxes.items() if b[0] > 0 and b[1] > 0 and b[2] < seq.width and b[3] < seq.height]
    pool = inside or list(boxes)  # a copy cut by the frame's border looks cut: avoid it where possible
    copy_index = pool[int(rng.integers(len(pool)))]
    x0, y0, x1, y1 = boxes[copy_index]
    patch = _read_rgb(seq.images[copy_index], (seq.width, seq.height))[y0:y1, x0:x1]
    mask = masks[copy_index][y0:y1, x0:x1]
    after = list(range(plan.prompt + 1, seq.n))
    # Objects and void, dilated; frames without a mask are left alone (where the objects are is unknown).
    forbidden = {t: _dilate(labels != 0, DILATE) for t in after if (labels := seq.labels[t]) is not None}
    area = (x1 - x0) * (y1 - y0)
    largest = min(1.0, math.sqrt(MAX_COPY_AREA * seq.width * seq.height / area))
    best: tuple[int, float, np.ndarray, np.ndarray, list[tuple[int, int]]] | None = None
    for factor in COPY_SCALES:  # the largest scale whose freest path is free on half the frames
        scale = largest * factor
        copy_patch, copy_mask = _resized_copy(patch, mask, scale)
        if not copy_mask.any():
            break
        h, w = copy_mask.shape
        paths = [_path(rng, len(after), (w, h), seq.width, seq.height) for _ in range(PATH_CANDIDATES)]
        scores = [
            sum(1 for t, pos in zip(after, p) if t in forbidden and _free(forbidden[t], copy_mask, pos)) for p in paths
        ]
        k = int(np.argmax(scores))  # the first of the best
        if best is None or scores[k] > best[0]:
            best = (scores[k], scale, copy_patch, copy_mask, paths[k])
        if 2 * scores[k] >= len(forbidden):
            break
    assert best is not None
    _, scale, patch, mask, path = best
    h, w = mask.shape
    radius = max(w, h)
    pasted, not_pasted = [], []
    for t, stem in enumerate(seq.stems):
        seq.copy_mask(t, writer.mask(stem))
        pos = None
        if t in forbidden:
            pos = path[t - plan.prompt - 1]
            if not _free(forbidden[t], mask, pos):
                pos = _nearest_free(forbidden[t], mask, pos, radius)
        if pos is None:
            _copy_file(seq.images[t], writer.image(seq.images[t]))
            if t > plan.prompt:
                not_pasted.append(stem)
            continue
        x, y = pos
        rgb = _read_rgb(seq.images[t], (seq.width, seq.height)).copy()
        region = rgb[y : y + h, x : x + w]
        region[mask] = patch[mask]
        _write_rgb(writer.image(seq.images[t]), rgb)
        full = np.zeros((seq.height, seq.width), dtype=bool)
        full[y : y + h, x : x + w] = mask
        _write_binary(writer.distractor(stem), full)
        pasted.append(stem)
    return StressSequence(
        name=writer.name, kind="distractor", source_sequence=seq.name, prompt=seq.stems[plan.prompt], obj_id=obj,
        copy_from=seq.stems[copy_index], copy_box=(x0, y0, x1, y1), scale=round(scale, 6),
        pasted=tuple(pasted), not_pasted=tuple(not_pasted), masks=f"Distractors/{writer.name}",
    )  # fmt: skip


def _write_plain(seq: _Sequence, plan: _Plan, writer: _SetWriter) -> StressSequence:
    for t, stem in enumerate(seq.stems):
        _copy_file(seq.images[t], writer.image(seq.images[t]))
        seq.copy_mask(t, writer.mask(stem))
    return StressSequence(name=writer.name, kind="plain", source_sequence=seq.name, prompt=seq.stems[plan.prompt])


# --------------------------------------------------------------------------------------------------
# The build


def _check_arguments(occlusion: Sequence[int], seed: int) -> tuple[int, ...]:
    lengths = tuple(occlusion)
    for value in lengths:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise EvalError(
                f"Occlusion length {value!r} is not a positive whole number of frames; pass lengths such as (5, 15, 40)."
            )
    if len(set(lengths)) != len(lengths):
        raise EvalError(f"Occlusion lengths {list(lengths)} repeat a value; pass each length once.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise EvalError(f"Seed {seed!r} is not a whole number; pass an int such as 0.")
    return tuple(int(v) for v in lengths)


def _prepare_out_dir(out: Path, arguments: dict[str, Any]) -> StressManifest | None:
    """Check out_dir: a finished build with the same arguments gives its manifest; an interrupted one
    with the same arguments is resumed; anything else non-empty is refused."""
    if out.exists() and not out.is_dir():
        raise EvalError(f"Output '{out}' is a file; pass a new or empty folder for the stress set.")
    build = out / _BUILD_DIR
    manifest_path = out / MANIFEST_NAME
    if manifest_path.is_file():
        data = _read_json(manifest_path)
        previous = {key: data.get(key) for key in arguments}
        if previous != arguments:
            differ = sorted(key for key in arguments if previous[key] != arguments[key])
            raise EvalError(
                f"Output folder '{out}' holds a stress set built with other arguments ({', '.join(differ)} differ); "
                "pass a new or empty folder, or the same arguments."
            )
        if build.is_dir():
            shutil.rmtree(build)  # stress.json is written last: the build finished
        return StressManifest.from_json(data)
    if out.is_dir() and any(out.iterdir()):
        marker = build / _ARGS_FILE
        if not marker.is_file() or _read_json(marker) != arguments:
            raise EvalError(
                f"Output folder '{out}' is not empty and holds no stress set built with these arguments; "
                "pass a new or empty folder."
            )
    return None


def build_stress_sets(
    dataset: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    occlusion: Sequence[int] = (5, 15, 40),
    distractor: bool = False,
    seed: int = 0,
    include_plain: bool = True,
    sequences: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> StressManifest:
    """Write stress sets of a DAVIS-layout dataset as a new DAVIS-layout dataset at `out_dir`.

    Arguments:
        dataset: root holding `JPEGImages/<seq>/` (or `JPEGImages/480p/<seq>/`) and `Annotations/<seq>/`.
        out_dir: a new or empty folder; one holding a finished build with the same arguments is
            returned as it is, one holding an interrupted build with the same arguments is resumed.
        occlusion: occlusion lengths L; each gives `<seq>_occ<L>` (skipped, and listed in the
            manifest's `skipped`, for a sequence too short for it).
        distractor: also write `<seq>_dis`, with a moving copy of the target object.
        seed: every random choice derives from it and the sequence's name.
        include_plain: also write `<seq>`, the unaltered copy (the reference run).
        sequences: source sequences to stress (default: all); occluder textures may come from any.
        progress: called as progress(name, done, total) after each stress sequence is written (or,
            when resuming, found complete); total counts the sequences that will be written.

    Returns:
        The `StressManifest`, also written to `out_dir/stress.json`. Raises `EvalError` for a dataset
        that is not in the DAVIS layout, unknown sequences, bad lengths or a non-empty out_dir.
    """
    lengths = _check_arguments(occlusion, seed)
    data = _open_dataset(dataset)
    if sequences is None:
        names = list(data.sequences)
    else:
        names = list(sequences)
        unknown = [n for n in names if n not in data.sequences]
        if unknown or not names:
            raise EvalError(
                f"Sequence(s) {unknown or names} are not in the dataset '{data.images}'; pick names of its subfolders."
            )
        if len(set(names)) != len(names):
            raise EvalError(f"Sequences {names} repeat a name; pass each sequence once.")
    if not (include_plain or lengths or distractor):
        raise EvalError(
            "Stress sets with include_plain=False, no occlusion lengths and distractor=False are empty; ask for at least one kind."
        )
    selection = None if sequences is None else tuple(names)
    arguments = _arguments_json(str(data.root), int(seed), lengths, bool(distractor), bool(include_plain), selection)
    out = Path(out_dir).resolve()
    if out == data.root:
        raise EvalError(f"Output folder '{out}' is the source dataset; pass a new or empty folder for the stress set.")
    finished = _prepare_out_dir(out, arguments)
    if finished is not None:
        return finished
    plans = [_plan(_load_sequence(data, n), int(seed), lengths, bool(distractor), bool(include_plain)) for n in names]
    set_names = [set_name for p in plans for set_name, _, _ in p.sets]
    clashes = sorted({n for n in set_names if set_names.count(n) > 1})
    if clashes:
        raise EvalError(
            f"Stress sequence name(s) {clashes} would be written twice (a source sequence already has such a name); "
            "leave one of the source sequences out with sequences=."
        )
    build = out / _BUILD_DIR
    (build / "done").mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(build / _ARGS_FILE, _dump_json(arguments))
    total = sum(len(p.sets) for p in plans)
    entries: dict[str, StressSequence] = {}
    done = 0
    for plan in plans:
        if not plan.sets:
            continue
        seq: _Sequence | None = None
        for set_name, kind, length in plan.sets:
            entry_path = build / "done" / f"{set_name}.json"
            if entry_path.is_file():
                entries[set_name] = StressSequence.from_json(set_name, _read_json(entry_path))
            else:
                if seq is None:
                    seq = _load_sequence(data, plan.name)
                writer = _SetWriter(out, build, set_name)
                if kind == "plain":
                    entry = _write_plain(seq, plan, writer)
                elif kind == "occlusion":
                    assert length is not None
                    entry = _write_occlusion(data, seq, plan, length, int(seed), writer)
                else:
                    entry = _write_distractor(seq, plan, int(seed), writer)
                writer.commit()
                write_bytes_atomic(entry_path, _dump_json(entry.to_json()))
                entries[set_name] = entry
            done += 1
            if progress is not None:
                progress(set_name, done, total)
    manifest = StressManifest(
        source=str(data.root), seed=int(seed), occlusion=lengths, distractor=bool(distractor), sequences=entries,
        skipped=tuple(s for p in plans for s in p.skipped), include_plain=bool(include_plain), selection=selection,
    )  # fmt: skip
    write_bytes_atomic(out / MANIFEST_NAME, _dump_json(manifest.to_json()))
    shutil.rmtree(build)
    return manifest
