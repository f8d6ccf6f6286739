"""Small synthetic media for tests: numbered frames and an MPEG-4 video written with PyAV."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def numbered_frame(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A frame whose red level and green column encode its index i."""
    f = np.zeros((h, w, 3), np.uint8)
    f[..., 0] = (i * 20) % 256
    f[:, (4 * i) % w, 1] = 255
    return f


def write_video(path: Path, n: int, h: int = 48, w: int = 64) -> None:
    """An MPEG-4 file of `n` numbered frames."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(numbered_frame(i, h, w), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
