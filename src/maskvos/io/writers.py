"""Streaming result writers: one file per frame, each written atomically.

- `PalettePngWriter`: DAVIS-style palette PNG label maps, `<out>/<stem>.png`;
- `ObjectPngWriter`: per-object binary (0/255) PNGs, `<out>/<obj_id>/<stem>.png`;
- `RleJsonWriter`: COCO RLE (pycocotools) per frame, `<out>/<stem>.json`;
- `OverlayVideoWriter`: an MP4 preview with each object tinted in its own colour (PyAV).

A frame is complete once its file exists (temporary name, then rename), so an interrupted run can
resume after the last complete frame (`completed_frames`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from maskvos.errors import MaskvosError
from maskvos.io.masks import davis_palette, write_label_map


class OutputError(MaskvosError):
    """An output location that cannot be written."""


def prepare_output_dir(path: str | Path) -> Path:
    """Create the output folder and check that it is writable."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".maskvos-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"Output folder '{path}' is not writable ({exc.strerror}); pass a writable --out folder.") from None
    return path


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class PalettePngWriter:
    """Label maps as palette PNGs named by frame stem."""

    suffix = ".png"

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = prepare_output_dir(out_dir)

    def write(self, stem: str, labels: np.ndarray, masks: dict[int, np.ndarray], frame: np.ndarray | None = None) -> None:
        write_label_map(self.out_dir / f"{stem}.png", labels)

    def close(self) -> None:
        pass


class ObjectPngWriter:
    """One 0/255 PNG per object and frame: `<out>/<obj_id>/<stem>.png`."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = prepare_output_dir(out_dir)

    def write(self, stem: str, labels: np.ndarray, masks: dict[int, np.ndarray], frame: np.ndarray | None = None) -> None:
        for obj_id, mask in masks.items():
            folder = self.out_dir / str(obj_id)
            folder.mkdir(exist_ok=True)
            path = folder / f"{stem}.png"
            tmp = path.with_name(path.name + ".part")
            Image.fromarray(mask.astype(np.uint8) * 255).save(tmp, format="PNG")
            os.replace(tmp, path)

    def close(self) -> None:
        pass


def encode_rle(mask: np.ndarray) -> dict[str, object]:
    """COCO RLE of a boolean mask: {"size": [H, W], "counts": str}."""
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict[str, object]) -> np.ndarray:
    """Inverse of `encode_rle`."""
    from pycocotools import mask as coco_mask

    return coco_mask.decode({"size": rle["size"], "counts": str(rle["counts"]).encode("ascii")}).astype(bool)


class RleJsonWriter:
    """Per frame `<out>/<stem>.json`: {"frame": stem, "objects": {obj_id: RLE}}."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = prepare_output_dir(out_dir)

    def write(self, stem: str, labels: np.ndarray, masks: dict[int, np.ndarray], frame: np.ndarray | None = None) -> None:
        record = {"frame": stem, "objects": {str(k): encode_rle(v) for k, v in masks.items()}}
        _atomic_bytes(self.out_dir / f"{stem}.json", json.dumps(record).encode())

    def close(self) -> None:
        pass


class OverlayVideoWriter:
    """An H.264 (or MPEG-4) preview: each object's pixels tinted with its palette colour."""

    def __init__(self, path: str | Path, fps: float = 24.0, alpha: float = 0.5) -> None:
        self.path = Path(path)
        prepare_output_dir(self.path.parent)
        self.tmp = self.path.with_name(self.path.name + ".part.mp4")
        self.fps = fps
        self.alpha = alpha
        self.palette = np.asarray(davis_palette(), dtype=np.float32).reshape(256, 3)
        self._container = None
        self._stream = None

    def _open(self, height: int, width: int) -> None:
        import av

        self._container = av.open(str(self.tmp), "w")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._stream = self._container.add_stream(codec, rate=round(self.fps))
        self._stream.width, self._stream.height = width - width % 2, height - height % 2
        self._stream.pix_fmt = "yuv420p"

    def write(self, stem: str, labels: np.ndarray, masks: dict[int, np.ndarray], frame: np.ndarray | None = None) -> None:
        import av

        if frame is None:
            raise ValueError("the overlay writer needs the frame itself")
        if self._container is None:
            self._open(*frame.shape[:2])
        tinted = frame.astype(np.float32)
        fg = labels > 0
        tinted[fg] = (1 - self.alpha) * tinted[fg] + self.alpha * self.palette[labels[fg]]
        out = tinted[: self._stream.height, : self._stream.width].astype(np.uint8)
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(out, format="rgb24")):
            self._container.mux(packet)

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        os.replace(self.tmp, self.path)
        self._container = None

    def discard(self) -> None:
        """Abandon the video: close and delete the temporary file, leaving no partial output."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the file is deleted anyway
                pass
            self._container = None
        self.tmp.unlink(missing_ok=True)


def completed_frames(out_dir: str | Path, suffix: str = ".png") -> set[str]:
    """Stems of frames whose output file is complete (temporary `.part` files do not count)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return set()
    return {p.stem for p in out_dir.iterdir() if p.suffix == suffix and not p.name.endswith(".part")}
