"""Frame sources: video files, image folders, arrays and any iterator of frames.

Every source yields RGB uint8 frames (H, W, 3) lazily; none holds the whole video. Video files are
decoded with PyAV; image folders are read in natural order of file names. `prefetch` decodes a few
frames ahead on a background thread, and `to_model_input` resizes and normalises one frame the way
SAM2's reference loader does.
"""

from __future__ import annotations

import queue
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from maskvos.errors import MaskvosError
from maskvos.model.sam2 import PIXEL_MEAN, PIXEL_STD

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}


class FrameSourceError(MaskvosError):
    """A video, folder or frame that cannot be read."""


def natural_key(name: str) -> list[object]:
    """Sort key that orders 'frame2' before 'frame10'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class FrameSource(ABC):
    """Frames of one video in order. `num_frames` is None for a stream of unknown length."""

    num_frames: int | None
    height: int
    width: int

    @abstractmethod
    def frames(self, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (frame_idx, RGB uint8 (H, W, 3)) from `start` on."""

    def frame(self, frame_idx: int) -> np.ndarray:
        """One frame by index (sources that allow random access override this cheaply)."""
        self.check_index(frame_idx)
        for idx, frame in self.frames(frame_idx):
            return frame
        raise FrameSourceError(f"Frame {frame_idx} could not be read from {self}; check the video.")

    def stem(self, frame_idx: int) -> str:
        """The name outputs of this frame get: the image's own name for a folder, else the zero-padded index."""
        return f"{frame_idx:05d}"

    def check_index(self, frame_idx: int) -> None:
        """Raise a clear error for an index outside the video."""
        if frame_idx < 0 or (self.num_frames is not None and frame_idx >= self.num_frames):
            last = "?" if self.num_frames is None else self.num_frames - 1
            raise FrameSourceError(f"Frame index {frame_idx} is outside the video (frames 0..{last}); pass a valid --frame.")


class ImageFolderSource(FrameSource):
    """A folder of image files, in natural order of their names (any names, not only '<int>.jpg')."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FrameSourceError(f"Frame folder '{self.folder}' does not exist; pass a folder of images or a video file.")
        files = [p for p in self.folder.iterdir() if p.is_file() and not p.name.startswith(".")]
        others = sorted(p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES)
        if others:
            shown = ", ".join(others[:3]) + (" ..." if len(others) > 3 else "")
            raise FrameSourceError(
                f"Frame folder '{self.folder}' holds files that are not images ({shown}); move them out of the folder."
            )
        self.paths = sorted((p for p in files), key=lambda p: natural_key(p.name))
        if not self.paths:
            raise FrameSourceError(f"Frame folder '{self.folder}' holds no images; pass a folder of frames or a video file.")
        stems = [p.stem for p in self.paths]
        if len(set(stems)) != len(stems):
            twice = sorted({s for s in stems if stems.count(s) > 1})[0]
            raise FrameSourceError(
                f"Frame folder '{self.folder}' has several images named '{twice}' (different extensions); keep one."
            )
        self.num_frames = len(self.paths)
        first = self._read(0)
        self.height, self.width = first.shape[:2]

    def __repr__(self) -> str:
        return f"ImageFolderSource('{self.folder}')"

    def stem(self, frame_idx: int) -> str:
        return self.paths[frame_idx].stem

    def _read(self, frame_idx: int) -> np.ndarray:
        path = self.paths[frame_idx]
        try:
            with Image.open(path) as img:
                return np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise FrameSourceError(f"Image '{path}' cannot be read ({exc}); replace or remove it.") from None

    def frame(self, frame_idx: int) -> np.ndarray:
        self.check_index(frame_idx)
        frame = self._read(frame_idx)
        if frame.shape[:2] != (self.height, self.width):
            raise FrameSourceError(
                f"Image '{self.paths[frame_idx]}' is {frame.shape[1]}x{frame.shape[0]} but the first frame is "
                f"{self.width}x{self.height}; all frames of a video must have one size."
            )
        return frame

    def frames(self, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        for idx in range(start, self.num_frames):
            yield idx, self.frame(idx)


class VideoFileSource(FrameSource):
    """A video file decoded lazily with PyAV."""

    def __init__(self, path: str | Path) -> None:
        import av

        self.path = Path(path)
        if not self.path.is_file():
            raise FrameSourceError(f"Video file '{self.path}' does not exist; pass an existing video or frame folder.")
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise FrameSourceError(f"File '{self.path}' has no video stream; pass a video file.")
                stream = container.streams.video[0]
                first = next(container.decode(stream))
                self.height, self.width = first.height, first.width
                self.num_frames = stream.frames or None
        except FrameSourceError:
            raise
        except (av.error.FFmpegError, StopIteration, OSError, ValueError) as exc:
            raise FrameSourceError(f"Video file '{self.path}' cannot be decoded ({exc}); check or re-encode it.") from None
        if self.num_frames is None:
            self.num_frames = sum(1 for _ in self._decode())

    def __repr__(self) -> str:
        return f"VideoFileSource('{self.path}')"

    def _decode(self) -> Iterator[np.ndarray]:
        import av

        try:
            with av.open(str(self.path)) as container:
                for frame in container.decode(video=0):
                    yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as exc:
            raise FrameSourceError(f"Video file '{self.path}' is corrupt ({exc}); check or re-encode it.") from None

    def frames(self, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        self.check_index(start)
        for idx, frame in enumerate(self._decode()):
            if idx >= start:
                yield idx, frame


class ArraySource(FrameSource):
    """Frames held by the caller as an array (T, H, W, 3) uint8 (or a list of such frames)."""

    def __init__(self, frames: np.ndarray | list[np.ndarray]) -> None:
        self.array = frames
        if len(frames) == 0:
            raise FrameSourceError("The frame array is empty; pass at least one frame.")
        shape = np.asarray(frames[0]).shape
        if len(shape) != 3 or shape[2] != 3:
            raise FrameSourceError(f"Frames must be RGB arrays of shape (H, W, 3), got {shape}; convert them first.")
        self.num_frames = len(frames)
        self.height, self.width = shape[:2]

    def frame(self, frame_idx: int) -> np.ndarray:
        self.check_index(frame_idx)
        return _as_uint8(np.asarray(self.array[frame_idx]))

    def frames(self, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        for idx in range(start, self.num_frames):
            yield idx, self.frame(idx)


class StreamSource(FrameSource):
    """Any iterator of frames (a camera, a network stream): read once, in order, length unknown."""

    def __init__(self, frames: Iterable[np.ndarray]) -> None:
        self._iterator = iter(frames)
        self._next_idx = 0
        try:
            self._head: np.ndarray | None = _as_uint8(np.asarray(next(self._iterator)))
        except StopIteration:
            raise FrameSourceError("The frame stream is empty; pass a stream that yields frames.") from None
        self.height, self.width = self._head.shape[:2]
        self.num_frames = None

    @property
    def position(self) -> int:
        """Index of the next frame the stream will give."""
        return self._next_idx

    def frames(self, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        if start < self._next_idx:
            raise FrameSourceError("A stream can only be read forward; start at or after the last frame read.")
        while True:
            if self._head is not None:
                frame, self._head = self._head, None
            else:
                try:
                    frame = _as_uint8(np.asarray(next(self._iterator)))
                except StopIteration:
                    return
            idx = self._next_idx
            self._next_idx += 1
            if idx >= start:
                yield idx, frame


def _as_uint8(frame: np.ndarray) -> np.ndarray:
    if frame.dtype != np.uint8:
        if np.issubdtype(frame.dtype, np.floating) and frame.max(initial=0) <= 1.0:
            frame = frame * 255.0
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    return frame


def open_source(source: str | Path | np.ndarray | Iterable[np.ndarray]) -> FrameSource:
    """A frame source for a video file, an image folder, an array of frames, or an iterator of frames."""
    if isinstance(source, FrameSource):
        return source
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            return ImageFolderSource(path)
        if not path.exists():
            raise FrameSourceError(f"Video source '{path}' does not exist; pass a video file or a folder of frames.")
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise FrameSourceError(
                f"File '{path}' is not a supported video ({', '.join(sorted(VIDEO_SUFFIXES))}); pass a video or a frame folder."
            )
        return VideoFileSource(path)
    if isinstance(source, (np.ndarray, list, tuple)):
        return ArraySource(source)  # type: ignore[arg-type]
    return StreamSource(source)


def prefetch(frames: Iterator[tuple[int, np.ndarray]], depth: int = 4) -> Iterator[tuple[int, np.ndarray]]:
    """Run `frames` on a background thread, at most `depth` frames ahead. Errors surface in the caller."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def worker() -> None:
        try:
            for item in frames:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(done)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            buffer.put(exc)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def to_model_input(frame: np.ndarray, image_size: int) -> torch.Tensor:
    """An RGB uint8 frame (H, W, 3) as the model's input (3, S, S): bicubic resize, [0, 1], ImageNet norm."""
    resized = Image.fromarray(frame).resize((image_size, image_size), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(resized, dtype=np.float64) / 255.0).float().permute(2, 0, 1)
    mean = torch.tensor(PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(3, 1, 1)
    return (x - mean) / std
