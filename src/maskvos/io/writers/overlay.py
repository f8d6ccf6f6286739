"""The overlay preview ("overlay"): an MP4 of the video with each object tinted in its palette colour.

Encoded with PyAV: H.264 (libx264) where available, else MPEG-4; width and height cropped to even
numbers (yuv420p needs them).
"""

from __future__ import annotations

from collections.abc import Generator
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np

from maskvos.io.files import atomic_path
from maskvos.io.masks import davis_palette, read_label_map
from maskvos.io.writers.base import (
    MaskFrame,
    OutputFrame,
    OutputTarget,
    opened,
    prepare_output_dir,
)

OVERLAY_NAME = "overlay.mp4"
#: The temporary name keeps the ".mp4" ending, from which the container format is chosen.
VIDEO_PART_SUFFIX = ".part.mp4"


@lru_cache(maxsize=1)
def _palette_rgb() -> np.ndarray:
    """The DAVIS palette as (256, 3) float32."""
    return np.asarray(davis_palette(), dtype=np.float32).reshape(256, 3)


def tint(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The frame with each object's pixels blended with its palette colour.

    Arguments:
        image: RGB uint8 (H, W, 3).
        labels: (H, W) label map, 0 background; ids above 255 reuse the colours of 1..255 in turn.
        alpha: weight of the colour (0: the frame unchanged, 1: flat colour).

    Returns:
        RGB uint8 (H, W, 3).
    """
    out = image.astype(np.float32)
    fg = labels > 0
    colour_idx = (labels[fg].astype(np.int64) - 1) % 255 + 1
    out[fg] = (1 - alpha) * out[fg] + alpha * _palette_rgb()[colour_idx]
    return out.astype(np.uint8)


class _VideoEncoder:
    """Frames in, one video file out, written atomically: `add` each frame, then `finish` (the file
    is renamed into place) or `abandon` (the temporary file is deleted).

    Packets are flushed to the temporary file as they are encoded, so memory stays bounded (the
    encoder holds back a few dozen frames of look-ahead at most).
    """

    def __init__(self, path: Path, fps: float, height: int, width: int) -> None:
        self._steps = self._encode(path, fps, height, width)
        next(self._steps)  # opens the temporary file and the stream

    @staticmethod
    def _encode(path: Path, fps: float, height: int, width: int) -> Generator[None, np.ndarray | None, None]:
        """Receives RGB frames (H, W, 3) by `send`; None ends the video. Closing it deletes the file."""
        import av

        with atomic_path(path, VIDEO_PART_SUFFIX) as tmp, av.open(str(tmp), "w", options={"flush_packets": "1"}) as container:
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            stream = container.add_stream(codec, rate=max(1, round(fps)))
            stream.width, stream.height = width - width % 2, height - height % 2
            stream.pix_fmt = "yuv420p"
            while (rgb := (yield)) is not None:
                rgb = np.ascontiguousarray(rgb[: stream.height, : stream.width])
                for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)

    def add(self, rgb: np.ndarray) -> None:
        """Encode one RGB uint8 frame (H, W, 3) of the size given at construction."""
        self._steps.send(rgb)

    def finish(self) -> None:
        """Flush the encoder, close the file and rename it into place."""
        try:
            self._steps.send(None)
        except StopIteration:
            return
        raise RuntimeError("the video encoder did not finish")  # unreachable: `_encode` returns on None

    def abandon(self) -> None:
        """Close and delete the temporary file (safe after `finish` or a failed `add`)."""
        self._steps.close()


class OverlayVideoWriter:
    """`out_dir/overlay.mp4`: a preview of the video, each object's pixels tinted with its palette colour.

    It streams when it can: frames that arrive in increasing `frame_idx` order (the usual forward
    run) are tinted and encoded as they come, into a temporary file that `close` renames into place.
    It cannot stream when frames arrive out of order (a backward or "both" run; what was encoded so
    far is dropped) or when the run is a resume (earlier frames came from the interrupted run): then
    `close` rebuilds the whole video from the label maps in `target.masks_dir` and the frames of
    `target.source`, in frame order, skipping frames that have no label map. That is why it requires
    the "png" writer. `discard` deletes the temporary video; no `overlay.mp4` is written then.
    """

    name: ClassVar[str] = "overlay"
    needs_image: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ("png",)

    def __init__(self, alpha: float = 0.5) -> None:
        self.alpha = alpha
        self._target: OutputTarget | None = None
        self._encoder: _VideoEncoder | None = None
        self._is_streaming = False
        self._last_frame_idx = -1

    @property
    def path(self) -> Path:
        """Where the finished video goes."""
        return opened(self._target, self).out_dir / OVERLAY_NAME

    @property
    def is_streaming(self) -> bool:
        """Whether frames are encoded as they arrive (else the video is rebuilt at `close`)."""
        return self._is_streaming

    def open(self, target: OutputTarget) -> None:
        prepare_output_dir(target.out_dir)
        self._target = target
        self._is_streaming = not target.resume
        self._last_frame_idx = -1

    def write(self, frame: OutputFrame, result: MaskFrame) -> None:
        target = opened(self._target, self)
        if not self._is_streaming:
            return
        if frame.frame_idx <= self._last_frame_idx:
            self._stop_streaming()
            return
        if frame.image is None:
            raise ValueError("OverlayVideoWriter needs OutputFrame.image (its needs_image is True)")
        rgb = tint(frame.image, result.label_map(), self.alpha)
        if self._encoder is None:
            self._encoder = _VideoEncoder(self.path, target.fps, *rgb.shape[:2])
        self._encoder.add(rgb)
        self._last_frame_idx = frame.frame_idx

    def close(self) -> None:
        target = opened(self._target, self)
        if not self._is_streaming:
            self._rebuild(target)
        elif self._encoder is not None:
            self._encoder.finish()
        self._encoder = None

    def discard(self) -> None:
        self._stop_streaming()

    def describe(self) -> str:
        return f"overlay preview: {self.path}"

    def _stop_streaming(self) -> None:
        """Drop what was encoded; `close` rebuilds the video from the label maps instead."""
        if self._encoder is not None:
            self._encoder.abandon()
            self._encoder = None
        self._is_streaming = False

    def _rebuild(self, target: OutputTarget) -> None:
        """The whole video, in frame order, from the label maps written and the source's frames."""
        encoder: _VideoEncoder | None = None
        try:
            for frame_idx, image in target.source.frames(0):
                label_path = target.masks_dir / f"{target.source.stem(frame_idx)}.png"
                if not label_path.is_file():
                    continue
                rgb = tint(image, read_label_map(label_path), self.alpha)
                if encoder is None:
                    encoder = _VideoEncoder(self.path, target.fps, *rgb.shape[:2])
                encoder.add(rgb)
        except BaseException:
            if encoder is not None:
                encoder.abandon()
            raise
        if encoder is not None:
            encoder.finish()
