"""What the whole-video formats share: `VideoFileWriter`, a writer that encodes each frame as it
comes, keeps the encoding (not the label map) and writes one file for the whole video at `close`.

The file is written atomically at `close` and never at `discard`. A resumed run did not see the
frames written before the interruption, so at `close` it reads them back from files that are
complete per frame: the label maps of the "png" writer (`target.masks_dir`, hence `requires =
("png",)`) or, for formats that write their own per-frame images (mots, youtube-vos), those images.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

import numpy as np

from maskvos.io.coco import ObjectCategories
from maskvos.io.files import write_bytes_atomic
from maskvos.io.masks import read_label_map
from maskvos.io.writers.base import MaskFrame, OutputError, OutputFrame, OutputTarget, opened, prepare_output_dir

R = TypeVar("R")


@dataclass(frozen=True)
class VideoInfo:
    """The video as a whole-video file describes it.

    Attributes:
        name: the video's name (see `video_name_of`).
        width, height: frame size in pixels (of the label maps).
        num_frames: the source's frame count (None for a stream).
        categories: each object's category.
        image_names: per frame index, the frame's image file name (its file for a frame folder,
            else "<stem><image_suffix>").
        image_prefix: see `AnnotationInfo.image_prefix`.
    """

    name: str
    width: int
    height: int
    num_frames: int | None
    categories: ObjectCategories
    image_names: dict[int, str]
    image_prefix: str = ""

    def image_path(self, frame_idx: int) -> str:
        """The frame's image as "<video>/<file>" (the layout of YouTube-VIS' "file_names")."""
        return f"{self.name}/{self.image_names[frame_idx]}"


@dataclass(frozen=True)
class FrameRecord(Generic[R]):
    """One frame's encoding, as a whole-video writer keeps it."""

    frame_idx: int
    stem: str
    data: R


def video_name_of(target: OutputTarget) -> str:
    """The video's name: the one given, else its frame folder's or video file's name, else the
    output folder's."""
    if target.annotation.video_name:
        return target.annotation.video_name
    source = target.source
    folder = getattr(source, "folder", None)
    if isinstance(folder, Path):
        return folder.name
    path = getattr(source, "path", None)
    if isinstance(path, Path):
        return path.stem
    return target.out_dir.resolve().name or "video"


def image_name_of(target: OutputTarget, frame_idx: int, stem: str) -> str:
    """Frame `frame_idx`'s image file name: its file for a frame folder, else "<stem><image_suffix>"."""
    paths = getattr(target.source, "paths", None)
    if isinstance(paths, list) and 0 <= frame_idx < len(paths) and isinstance(paths[frame_idx], Path):
        return paths[frame_idx].name
    return f"{stem}{target.annotation.image_suffix}"


class VideoFileWriter(ABC, Generic[R]):
    """Base of the writers of one file per video (coco-video, the MOTS txt, the YouTube-VOS
    meta.json, cvat-xml, label-studio).

    Subclasses set `name`, `label` and `file_of(target)`, and implement `encode_frame` (a frame's
    label map -> what is kept of it) and `render` (the kept frames, in frame order -> the file's
    bytes). Formats with per-frame images of their own override `write` (to write them as well),
    `stored_labels` (to read them back on resume) and set `requires = ()`.
    """

    name: ClassVar[str] = ""
    needs_image: ClassVar[bool] = False
    requires: ClassVar[tuple[str, ...]] = ("png",)
    #: The summary line's text before the file, padded like the others.
    label: ClassVar[str] = ""

    def __init__(self) -> None:
        self._target: OutputTarget | None = None
        self._records: dict[int, FrameRecord[R]] = {}
        self._size: tuple[int, int] | None = None

    @property
    def target(self) -> OutputTarget:
        return opened(self._target, self)

    @property
    def path(self) -> Path:
        """Where the video's file goes."""
        return self.file_of(self.target)

    @abstractmethod
    def file_of(self, target: OutputTarget) -> Path:
        """The whole-video file this writer writes."""

    @abstractmethod
    def encode_frame(self, frame_idx: int, stem: str, labels: np.ndarray) -> R:
        """What is kept of one frame's (H, W) label map (0 background, k object id k)."""

    @abstractmethod
    def render(self, video: VideoInfo, frames: list[FrameRecord[R]]) -> bytes:
        """The file's content from the frames kept, in frame order."""

    def open(self, target: OutputTarget) -> None:
        prepare_output_dir(self.file_of(target).parent)
        self._target = target
        self._records = {}
        self._size = None

    def write(self, frame: OutputFrame, result: MaskFrame) -> None:
        self.target  # noqa: B018 - refuses a write before open()
        self.add(frame.frame_idx, frame.stem, result.label_map())

    def add(self, frame_idx: int, stem: str, labels: np.ndarray) -> None:
        """Keep one frame's encoding (a frame given again replaces the earlier one)."""
        if self._size is None:
            self._size = (int(labels.shape[0]), int(labels.shape[1]))
        elif labels.shape[:2] != self._size:
            raise OutputError(
                f"Frame '{stem}' is {labels.shape[1]}x{labels.shape[0]} but the video's first frame is "
                f"{self._size[1]}x{self._size[0]}; every frame of a video must have one size."
            )
        self._records[frame_idx] = FrameRecord(frame_idx, stem, self.encode_frame(frame_idx, stem, labels))

    def stored_labels(self, target: OutputTarget, frame_idx: int, stem: str) -> np.ndarray | None:
        """A frame written before a resume, read back: its label map in `target.masks_dir`, or None."""
        path = target.masks_dir / f"{stem}.png"
        return read_label_map(path) if path.is_file() else None

    def close(self) -> None:
        target = self.target
        if target.resume:
            self._add_stored(target)
        frames = [self._records[i] for i in sorted(self._records)]
        write_bytes_atomic(self.file_of(target), self.render(self._video(target, frames), frames))
        self._records = {}

    def discard(self) -> None:
        """Forget the frames kept: the video's file is written only by `close`."""
        self._records = {}

    def describe(self) -> str:
        return f"{self.label + ':':<16} {self.path}"

    def _add_stored(self, target: OutputTarget) -> None:
        """Add the frames an interrupted run wrote (those this run did not write again)."""
        last = target.source.num_frames
        if last is None:  # a stream: its frames are numbered from 0 up to the last one seen
            last = max(self._records, default=-1) + 1
        for frame_idx in range(last):
            if frame_idx in self._records:
                continue
            stem = target.source.stem(frame_idx)
            labels = self.stored_labels(target, frame_idx, stem)
            if labels is not None:
                self.add(frame_idx, stem, labels)

    def _video(self, target: OutputTarget, frames: list[FrameRecord[R]]) -> VideoInfo:
        height, width = self._size or (target.source.height, target.source.width)
        return VideoInfo(
            name=video_name_of(target),
            width=width,
            height=height,
            num_frames=target.source.num_frames,
            categories=target.annotation.categories,
            image_names={r.frame_idx: image_name_of(target, r.frame_idx, r.stem) for r in frames},
            image_prefix=target.annotation.image_prefix,
        )
