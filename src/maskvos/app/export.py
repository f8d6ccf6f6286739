"""Convert existing results (label-map PNGs) into any output format that needs no images.

`export_results` is what `maskvos export PRED_DIR --format F --out OUT` runs. It finds the videos in
`pred_dir`, reads each frame's label map (`maskvos.io.masks.read_label_map`) and hands it to the same
writers a `maskvos segment` run uses, through a frame source that knows the frames' names and size
but has no images (`LabelMapFrames`). What `pred_dir` may be:

- a `maskvos segment --out` folder: the label maps in `<pred_dir>/masks/*.png`, one video;
- a folder of label-map PNGs `<pred_dir>/<frame>.png`, one video;
- a DAVIS-layout predictions folder `<pred_dir>/<seq>/<frame>.png` (what `maskvos eval-run` writes),
  or a folder of `maskvos segment --out` folders `<pred_dir>/<video>/masks/*.png` (what `maskvos
  batch` writes): one video per sub-folder.

One video is written to `out` in the layout of `maskvos segment --out`; several videos each to
`out/<video>/`. Frames are numbered by their names when every name is a number (DAVIS, YouTube-VOS
and `maskvos segment` name frames so), else by their order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maskvos.errors import MaskvosError
from maskvos.io.coco import ObjectCategories
from maskvos.io.frames import FrameSource, FrameSourceError, natural_key
from maskvos.io.masks import label_map_to_masks, read_label_map
from maskvos.io.writers import (
    FORMATS,
    WRITERS,
    AnnotationInfo,
    OutputFrame,
    OutputTarget,
    finishing,
    open_writers,
    prepare_output_dir,
)

#: The formats an export can write: those whose writers need no images (not the overlay preview).
EXPORT_FORMATS: tuple[str, ...] = tuple(name for name in FORMATS if not WRITERS[name].needs_image)
_HINT = "pass a `maskvos segment --out` folder, a folder of label-map PNGs or a DAVIS-layout folder <seq>/<frame>.png"


class ExportError(MaskvosError):
    """Results that cannot be exported: a missing or empty folder, or a format an export cannot write."""


@dataclass(frozen=True)
class LabelMapVideo:
    """One video of a results folder: its name and its label-map PNGs in frame order."""

    name: str
    folder: Path
    paths: list[Path]

    def frame_indices(self) -> list[int]:
        """Each file's frame index: its stem's number when every stem is a distinct number, else its position."""
        stems = [p.stem for p in self.paths]
        if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
            return [int(s) for s in stems]
        return list(range(len(stems)))


class LabelMapFrames(FrameSource):
    """The frames of a video known by its label maps alone: names (stems) and size, no images.

    `num_frames` is one more than the last frame index; a frame without a label map is named by its
    zero-padded index, as video frames are.
    """

    def __init__(self, video: LabelMapVideo, frame_indices: Sequence[int], height: int, width: int) -> None:
        self.video = video
        self._stems = {idx: path.stem for idx, path in zip(frame_indices, video.paths)}
        self.num_frames = max(frame_indices) + 1
        self.height, self.width = height, width

    def __repr__(self) -> str:
        return f"LabelMapFrames('{self.video.folder}')"

    def stem(self, frame_idx: int) -> str:
        return self._stems.get(frame_idx, f"{frame_idx:05d}")

    def frames(self, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        raise FrameSourceError(f"The results in '{self.video.folder}' have no images; export to a format that needs none.")


@dataclass(frozen=True)
class _LabelMapResult:
    """A `MaskFrame` of one label map read from a file."""

    frame_idx: int
    labels: np.ndarray
    obj_ids: list[int] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "obj_ids", sorted(label_map_to_masks(self.labels)))

    def label_map(self) -> np.ndarray:
        return self.labels

    def masks_by_id(self) -> dict[int, np.ndarray]:
        return label_map_to_masks(self.labels)


@dataclass
class ExportSummary:
    """What an export wrote."""

    out_dir: Path
    formats: list[str]
    videos: list[str]
    frames: int
    obj_ids: list[int]
    files_written: int
    seconds: float
    outputs: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"exported {self.frames} frames of {len(self.videos)} video(s) with {len(self.obj_ids)} object(s) "
            f"to {', '.join(self.formats)}: {self.files_written} file(s) in {self.seconds:.1f} s",
            f"  objects: {', '.join(map(str, self.obj_ids)) or 'none'}",
        ]
        out += [f"  {line}" for line in self.outputs]
        if len(self.videos) > 1:
            out.append(f"  ... the same for each of the {len(self.videos)} videos under {self.out_dir}/<video>/")
        return out


def export_results(
    pred_dir: str | Path,
    fmt: str | Sequence[str],
    out: str | Path,
    *,
    categories: ObjectCategories | None = None,
    video_name: str | None = None,
    image_prefix: str = "",
    image_suffix: str = ".jpg",
) -> ExportSummary:
    """Write the label maps of `pred_dir` in the format(s) `fmt` under `out` (see the module).

    Arguments:
        pred_dir: a `maskvos segment --out` folder, a folder of label-map PNGs, or a DAVIS-layout folder.
        fmt: one format name or several (see `EXPORT_FORMATS`; the overlay needs images, so not it).
        out: the output folder (created).
        categories: each object's category (default: every object "object", id 1).
        video_name: the name of the one video (default: the folder's name); not for several videos.
        image_prefix, image_suffix: how the formats name the frames' images (see `AnnotationInfo`).

    Raises:
        ExportError: a missing or empty `pred_dir`, an unknown format, or label maps of several sizes.
        OutputError: `out` cannot be written.
    """
    began = time.perf_counter()
    formats = _check_formats([fmt] if isinstance(fmt, str) else list(fmt))
    out_dir = Path(out)
    videos = find_label_map_videos(pred_dir, exclude=out_dir)
    if video_name and len(videos) > 1:
        raise ExportError(f"A video name was given but '{pred_dir}' holds {len(videos)} videos; drop the video name.")
    out_dir = prepare_output_dir(out_dir)
    before = _file_stamps(out_dir)
    frames, obj_ids, outputs = 0, set(), []
    for video in videos:
        name = video_name or video.name
        video_out = out_dir if len(videos) == 1 else prepare_output_dir(out_dir / name)
        info = AnnotationInfo(name, categories or ObjectCategories(), image_prefix, image_suffix)
        written, ids, lines = _export_video(video, formats, video_out, info)
        frames += written
        obj_ids |= ids
        outputs = outputs or lines
    after = _file_stamps(out_dir)
    return ExportSummary(
        out_dir=out_dir,
        formats=formats,
        videos=[video_name or v.name for v in videos],
        frames=frames,
        obj_ids=sorted(obj_ids),
        files_written=sum(1 for path, stamp in after.items() if before.get(path) != stamp),
        seconds=time.perf_counter() - began,
        outputs=outputs,
    )


def find_label_map_videos(pred_dir: str | Path, exclude: Path | None = None) -> list[LabelMapVideo]:
    """The videos of a results folder (see the module), each with its PNGs in natural order.

    Arguments:
        exclude: a folder not to take as a video (the export's own output inside `pred_dir`).

    Raises:
        ExportError: `pred_dir` is missing, not a folder, or holds no label-map PNGs.
    """
    root = Path(pred_dir)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise ExportError(f"Results folder '{root}' {what}; {_HINT}.")
    for folder in (root / "masks", root):
        if pngs := _pngs(folder):
            return [LabelMapVideo(root.resolve().name, folder, pngs)]
    skip = exclude.resolve() if exclude is not None else None
    videos = []
    for sub in sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: natural_key(p.name)):
        if sub.resolve() == skip:
            continue
        for folder in (sub / "masks", sub):
            if pngs := _pngs(folder):
                videos.append(LabelMapVideo(sub.name, folder, pngs))
                break
    if not videos:
        raise ExportError(f"Results folder '{root}' holds no label-map PNGs; {_HINT}.")
    return videos


def _check_formats(formats: list[str]) -> list[str]:
    """The formats in the writers' order, each once; refuses unknown ones and those needing images."""
    if not formats:
        raise ExportError(f"No export format was given; use any of {', '.join(EXPORT_FORMATS)}.")
    for name in formats:
        if name not in WRITERS:
            raise ExportError(f"Export format '{name}' is unknown; use any of {', '.join(EXPORT_FORMATS)}.")
        if name not in EXPORT_FORMATS:
            raise ExportError(
                f"Format '{name}' needs the video's images, which exported label maps do not have; "
                f"run `maskvos segment --format {name}` instead."
            )
    return [name for name in EXPORT_FORMATS if name in formats]


def _export_video(video: LabelMapVideo, formats: list[str], out_dir: Path, info: AnnotationInfo) -> tuple[int, set[int], list[str]]:
    """Write one video's label maps with one writer per format; (frames, object ids, summary lines).

    The formats a writer requires are not added: they serve a resumed run's rebuild, and an export
    writes every frame in one go (resume=False) from label maps that already exist.
    """
    indices = video.frame_indices()
    first = read_label_map(video.paths[0])
    source = LabelMapFrames(video, indices, *first.shape[:2])
    target = OutputTarget(out_dir, source, out_dir / "masks", resume=False, annotation=info)
    writers = open_writers(formats, target, with_required=False)
    obj_ids: set[int] = set()
    with finishing(writers):
        for frame_idx, path in zip(indices, video.paths):
            labels = first if path == video.paths[0] else read_label_map(path)
            if labels.shape != first.shape:
                raise ExportError(
                    f"Label map '{path}' is {labels.shape[1]}x{labels.shape[0]} but '{video.paths[0].name}' is "
                    f"{first.shape[1]}x{first.shape[0]}; every frame of a video must have one size."
                )
            result = _LabelMapResult(frame_idx, labels)
            obj_ids.update(result.obj_ids)
            frame = OutputFrame(frame_idx, path.stem, None)
            for writer in writers:
                writer.write(frame, result)
    return len(video.paths), obj_ids, [w.describe() for w in writers]


def _pngs(folder: Path) -> list[Path]:
    """The PNG files directly in `folder` (not hidden), in natural order of their names."""
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png" and not p.name.startswith(".")]
    return sorted(files, key=lambda p: natural_key(p.name))


def _file_stamps(folder: Path) -> dict[Path, tuple[int, int]]:
    """(modification time, size) of every file under `folder`."""
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*") if p.is_file()}
