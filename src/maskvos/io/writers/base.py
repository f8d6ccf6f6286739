"""What every output format shares: the `Writer` protocol, what a writer is given, and output errors.

A run opens its writers on an `OutputTarget`, hands each one every frame's `OutputFrame` and result
(`MaskFrame`), and ends with `close()` (the output is complete) or, after an error or interrupt,
`discard()` (no partial file stays; complete per-frame files do, a resumed run continues after them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, TypeVar

import numpy as np

from maskvos.errors import MaskvosError
from maskvos.io.coco import ObjectCategories
from maskvos.io.frames import FrameSource

T = TypeVar("T")


class OutputError(MaskvosError):
    """An output location that cannot be written, or an output format that does not exist."""


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


class MaskFrame(Protocol):
    """What a writer needs of one frame's result (`maskvos.inference.FrameResult` is one)."""

    frame_idx: int
    obj_ids: list[int]

    def label_map(self) -> np.ndarray:
        """(H, W) integer label map, 0 background, each pixel the id of at most one object."""
        ...

    def masks_by_id(self) -> dict[int, np.ndarray]:
        """{obj_id: (H, W) bool} for every object of the frame."""
        ...


@dataclass(frozen=True)
class AnnotationInfo:
    """What the annotation formats (coco-video, mots, youtube-vos, cvat-xml, label-studio) say of a
    video besides its masks.

    Attributes:
        video_name: the video's name in their files; None: the source's folder or file name, else the
            output folder's name.
        categories: each object's category (default: every object "object", id 1).
        image_prefix: put before "<video>/<image file>" where a format names a frame's image (Label
            Studio's `data.image`, e.g. "/data/local-files/?d=").
        image_suffix: the image file ending of frames whose source has no files (arrays, video files,
            exports of label maps).
    """

    video_name: str | None = None
    categories: ObjectCategories = field(default_factory=ObjectCategories)
    image_prefix: str = ""
    image_suffix: str = ".jpg"


@dataclass(frozen=True)
class OutputTarget:
    """Where, and from what, a run's outputs are written.

    Attributes:
        out_dir: the run's output folder (exists, writable).
        source: the video's frames; `source.stem(i)` names frame i's files.
        masks_dir: where the png writer puts label maps (usually `out_dir / "masks"`; may be `out_dir`).
        fps: frame rate of the overlay preview.
        resume: the run continues an interrupted run in the same folder.
        annotation: the video's name, its objects' categories and its image names, for the
            annotation formats.
    """

    out_dir: Path
    source: FrameSource
    masks_dir: Path
    fps: float = 24.0
    resume: bool = False
    annotation: AnnotationInfo = field(default_factory=AnnotationInfo)


@dataclass(frozen=True)
class OutputFrame:
    """One frame as writers see it.

    Attributes:
        frame_idx: 0-based frame index.
        stem: file stem of this frame's outputs.
        image: the frame, RGB uint8 (H, W, 3); given to writers whose `needs_image` is True, else may be None.
    """

    frame_idx: int
    stem: str
    image: np.ndarray | None = None


class Writer(Protocol):
    """One output format. Constructed without arguments, then `open`, `write` per frame, `close`."""

    name: ClassVar[str]
    """The format's name, as `--format` spells it."""
    needs_image: ClassVar[bool]
    """Whether `write` needs `OutputFrame.image`."""
    requires: ClassVar[tuple[str, ...]]
    """Other formats this one needs opened with it (the overlay needs "png")."""

    def open(self, target: OutputTarget) -> None:
        """Prepare to write into `target` (create folders); raises `OutputError` if it cannot."""
        ...

    def write(self, frame: OutputFrame, result: MaskFrame) -> None:
        """Write one frame's result."""
        ...

    def close(self) -> None:
        """Finish: the output is complete."""
        ...

    def discard(self) -> None:
        """Abandon after an error or interrupt: no partial file stays (complete per-frame files do)."""
        ...

    def describe(self) -> str:
        """One summary line naming what was written where, e.g. "label maps:      out/masks/"."""
        ...


def opened(value: T | None, writer: object) -> T:
    """`value` set by the writer's `open`; a clear error when the writer is used before `open`."""
    if value is None:
        raise RuntimeError(f"{type(writer).__name__} was used before open()")
    return value


class FolderWriter(ABC):
    """Base of the writers that put one complete file per frame in one folder (png, objects, rle):
    `open` creates the folder, `write` is theirs, and close/discard have nothing to do (every file is
    written atomically, so a file that exists is complete and a resumed run rewrites frames as they
    come again).

    Subclasses set `name`, `label` (the summary's text) and `folder_of(target)`, and implement `write`.
    """

    name: ClassVar[str] = ""
    needs_image: ClassVar[bool] = False
    requires: ClassVar[tuple[str, ...]] = ()
    #: The summary line's text before the folder, padded like the others.
    label: ClassVar[str] = ""
    #: Appended to the folder in the summary line (e.g. "<id>/").
    suffix: ClassVar[str] = ""

    def __init__(self) -> None:
        self._folder: Path | None = None

    @property
    def folder(self) -> Path:
        return opened(self._folder, self)

    @abstractmethod
    def folder_of(self, target: OutputTarget) -> Path:
        """The folder this writer's files go to."""

    @abstractmethod
    def write(self, frame: OutputFrame, result: MaskFrame) -> None:
        """Write one frame's file(s)."""

    def open(self, target: OutputTarget) -> None:
        self._folder = prepare_output_dir(self.folder_of(target))

    def close(self) -> None:  # noqa: B027 - deliberately empty for every folder writer
        """Nothing to finish: each frame's file was complete when written."""

    def discard(self) -> None:  # noqa: B027 - deliberately empty for every folder writer
        """Nothing to remove: complete per-frame files stay for a resumed run."""

    def describe(self) -> str:
        return f"{self.label + ':':<16} {self._folder}/{self.suffix}"
