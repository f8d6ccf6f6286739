"""Frame sources: video files, image folders, arrays and any iterator of frames.

Every source yields RGB uint8 frames (H, W, 3) lazily; none holds the whole video. Video files are
decoded with PyAV, a read from a later frame seeking to the keyframe before it; image folders are
read in natural order of file names. `prefetch` decodes a few frames ahead on a background thread.
"""

from __future__ import annotations

import bisect
import queue
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterable, Iterator
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from maskvos.errors import MaskvosError

if TYPE_CHECKING:
    import av

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}


class FrameSourceError(MaskvosError):
    """A video, folder or frame that cannot be read."""


def natural_key(name: str) -> tuple[tuple[int | str, ...], str]:
    """Sort key that orders digit runs by value, other text case-insensitively: 'Frame2' < 'frame10'.

    Names equal under that order (`01` / `1`, `A` / `a`) are ordered by the name itself, so the
    order is total and the same everywhere (frame folders, annotation folders, evaluation).
    """
    parts = tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name))
    return parts, name


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
        for _, frame in self.frames(frame_idx):
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


class VideoIndex:
    """Frames of a video stream as its packets list them (demuxed, not decoded).

    `pts[frame_idx]` is the presentation timestamp of each frame (in the stream's time base), in
    presentation order; `keyframes` are the sorted indices of the frames decoding can start at.
    """

    def __init__(self, pts: Iterable[int], keyframe_pts: Iterable[int]) -> None:
        self.pts: list[int] = sorted(pts)
        self.frame_at_pts: dict[int, int] = {p: i for i, p in enumerate(self.pts)}
        keys = set(keyframe_pts)
        self.keyframes: list[int] = [i for i, p in enumerate(self.pts) if p in keys]

    def __len__(self) -> int:
        return len(self.pts)

    def keyframe_at_or_before(self, frame_idx: int) -> int:
        """The last keyframe at or before `frame_idx` (0 when none is)."""
        pos = bisect.bisect_right(self.keyframes, frame_idx) - 1
        return self.keyframes[pos] if pos >= 0 else 0


def read_video_index(path: str | Path) -> VideoIndex | None:
    """The index of the first video stream of a file, from demuxing its packets (cheap: nothing is decoded).

    None where packets cannot stand for frames one to one: a packet without a timestamp, two packets
    with one timestamp, a packet marked corrupt or to be discarded, or a demuxing error.
    """
    import av

    pts: list[int] = []
    keyframe_pts: list[int] = []
    try:
        with av.open(str(path)) as container:
            for packet in container.demux(container.streams.video[0]):
                if packet.size == 0:  # the empty packet that flushes the decoder at the end
                    continue
                if packet.pts is None or packet.is_discard or packet.is_corrupt:
                    return None
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keyframe_pts.append(packet.pts)
    except (av.error.FFmpegError, OSError, ValueError, IndexError):
        return None
    if not pts or len(set(pts)) != len(pts):
        return None
    return VideoIndex(pts, keyframe_pts)


class VideoFileSource(FrameSource):
    """A video file decoded lazily with PyAV; a read from frame `start` seeks to the keyframe before it.

    Seeking uses a packet index (`index`, read on first need) and is checked frame by frame against
    it: wherever it looks wrong, the read falls back to decoding from frame 0, so `frames(start)`
    always gives exactly the frames that decoding from frame 0 gives. `num_frames` is the
    container's count, else the index's, else a count by decoding. `seek=False` turns the index
    off: every read decodes from frame 0 and an unstored count is found by decoding.

    Counters for tests and benchmarks: `decoded_frames` (frames the decoder produced, all reads
    together) and `seek_fallbacks` (reads that gave up a seek and decoded from frame 0).
    """

    def __init__(self, path: str | Path, seek: bool = True) -> None:
        import av

        self.path = Path(path)
        self.decoded_frames = 0
        self.seek_fallbacks = 0
        self._is_seek_allowed = seek
        self._index: VideoIndex | None = None
        self._is_index_read = False
        self._index_lock = threading.Lock()
        if not self.path.is_file():
            raise FrameSourceError(f"Video file '{self.path}' does not exist; pass an existing video or frame folder.")
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise FrameSourceError(f"File '{self.path}' has no video stream; pass a video file.")
                stream = container.streams.video[0]
                first = next(container.decode(stream))
                self.decoded_frames += 1
                self.height, self.width = first.height, first.width
                self._first_pts: int | None = first.pts
                self._stored_count: int | None = stream.frames or None
                rate = stream.average_rate or stream.guessed_rate
                #: frames per second as the container states it (None when it states none)
                self.fps: float | None = float(rate) if rate else None
        except FrameSourceError:
            raise
        except (av.error.FFmpegError, StopIteration, OSError, ValueError) as exc:
            raise FrameSourceError(f"Video file '{self.path}' cannot be decoded ({exc}); check or re-encode it.") from None
        self.num_frames = self._stored_count
        if self.num_frames is None:
            index = self.index
            self.num_frames = len(index) if index is not None else sum(1 for _ in self._decoded())

    def __repr__(self) -> str:
        return f"VideoFileSource('{self.path}')"

    @property
    def index(self) -> VideoIndex | None:
        """The packet index seeks use, read once; None when seeking is off or packets and frames do not match.

        They match when every packet has its own timestamp, the first decoded frame has the smallest
        one, and the packets are as many as the frames the container says it holds (when it says).
        """
        with self._index_lock:
            if not self._is_index_read:
                self._is_index_read = True
                index = read_video_index(self.path) if self._is_seek_allowed else None
                if index is not None and (
                    index.pts[0] != self._first_pts
                    or (self._stored_count is not None and len(index) != self._stored_count)
                ):
                    index = None
                self._index = index
            return self._index

    def keyframe_at_or_before(self, frame_idx: int) -> int:
        """The frame that decoding must start from to reach `frame_idx`: its keyframe, or 0 without an index."""
        self.check_index(frame_idx)
        index = self.index if frame_idx > 0 else None
        return index.keyframe_at_or_before(frame_idx) if index is not None else 0

    def frames(self, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (frame_idx, RGB uint8 (H, W, 3)) from `start` on, decoding from the keyframe at or before it."""
        self.check_index(start)
        index = self.index if start > 0 else None
        keyframe = index.keyframe_at_or_before(start) if index is not None else 0
        if keyframe > 0:
            owed = yield from self._frames_after_seek(index, keyframe, start)
            if owed is None:
                return
            self.seek_fallbacks += 1
            self._index = None  # this file's packets mislead: decode from frame 0 from now on
            start = owed
        yield from self._frames_from_zero(start)

    def _frames_after_seek(
        self, index: VideoIndex, keyframe: int, start: int
    ) -> Generator[tuple[int, np.ndarray], None, int | None]:
        """Frames from `start` on, decoded after a seek to `keyframe` (<= start), each placed by its pts.

        Frames before `start` (the keyframe's group up to `start`, open-GOP leading frames) are
        dropped. Returns None when the stream ends at the index's last frame; at the first surprise (a
        pts not in the index, a frame out of place, an early end) it stops and returns the first frame
        index not yet given, for the caller to decode from frame 0.
        """
        owed = start
        with closing(self._decoded(seek_pts=index.pts[keyframe])) as decoded:
            for frame in decoded:
                frame_idx = index.frame_at_pts.get(frame.pts) if frame.pts is not None else None
                if frame_idx is not None and frame_idx < start and owed == start:
                    continue
                if frame_idx != owed:
                    return owed
                yield frame_idx, frame.to_ndarray(format="rgb24")
                owed += 1
        return None if owed == len(index) else owed

    def _frames_from_zero(self, start: int) -> Iterator[tuple[int, np.ndarray]]:
        """Frames from `start` on, decoded from frame 0 and numbered in decoding order (what seeks must match).

        Where a frame's pts is not the one the index gives its number, or the video ends before the
        index does, the index is dropped.
        """
        index = self._index
        num_decoded = 0
        for frame_idx, frame in enumerate(self._decoded()):
            num_decoded += 1
            if index is not None and (frame_idx >= len(index) or frame.pts != index.pts[frame_idx]):
                self._index = index = None
            if frame_idx >= start:
                yield frame_idx, frame.to_ndarray(format="rgb24")
        if index is not None and num_decoded != len(index):
            self._index = None

    def _decoded(self, seek_pts: int | None = None) -> Iterator[av.VideoFrame]:
        """Decoded frames in presentation order, from the start or from a seek to the keyframe at `seek_pts`.

        A failed seek yields nothing (the caller then decodes from frame 0).
        """
        import av

        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                if seek_pts is not None:
                    try:
                        container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
                    except av.error.FFmpegError:
                        return
                for frame in container.decode(stream):
                    self.decoded_frames += 1
                    yield frame
        except av.error.FFmpegError as exc:
            raise FrameSourceError(f"Video file '{self.path}' is corrupt ({exc}); check or re-encode it.") from None


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
        except BaseException as exc:
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
