"""Small synthetic media for tests: numbered frames and videos of them written with PyAV."""

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


def write_video(
    path: Path,
    n: int,
    h: int = 48,
    w: int = 64,
    *,
    codec: str = "mpeg4",
    gop_size: int | None = None,
    max_b_frames: int | None = None,
    options: dict[str, str] | None = None,
) -> None:
    """A video file of `n` numbered frames (the container from the file's suffix), MPEG-4 by default.

    `gop_size` (frames from one keyframe to the next at most), `max_b_frames` and the encoder's
    `options` (e.g. {"x264-params": "open-gop=1"}) are the encoder's defaults unless given.
    """
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=10, options=options or {})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if gop_size is not None:
            stream.codec_context.gop_size = gop_size
        if max_b_frames is not None:
            stream.codec_context.max_b_frames = max_b_frames
        for i in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(numbered_frame(i, h, w), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


OCCLUSION_SIZE = (160, 224)


def occlusion_video(n: int = 12) -> tuple[np.ndarray, list[dict[int, np.ndarray]]]:
    """Two textured objects moving over a textured background; object 1 passes behind object 2."""
    H, W = OCCLUSION_SIZE
    rng = np.random.default_rng(0)
    background = (rng.random((H // 8, W // 8, 3)) * 120 + 60).repeat(8, 0).repeat(8, 1)
    tex1 = np.kron(rng.random((6, 6, 3)) > 0.5, np.ones((6, 6, 1))) * np.array([200, 40, 40]) + 30
    tex2 = np.kron(rng.random((8, 5, 3)) > 0.5, np.ones((6, 6, 1))) * np.array([40, 60, 210]) + 20
    frames, truths = [], []
    for t in range(n):
        img = background.copy()
        y1, x1 = 50, 20 + 12 * t  # object 1 moves right...
        y2, x2 = 40, 110  # ...behind the still object 2 (frames ~5-9)
        img[y1 : y1 + 36, x1 : x1 + 36] = tex1
        m1 = np.zeros((H, W), bool)
        m1[y1 : y1 + 36, x1 : x1 + 36] = True
        img[y2 : y2 + 48, x2 : x2 + 30] = tex2
        m2 = np.zeros((H, W), bool)
        m2[y2 : y2 + 48, x2 : x2 + 30] = True
        m1 &= ~m2
        frames.append(img.clip(0, 255).astype(np.uint8))
        truths.append({1: m1, 2: m2})
    return np.stack(frames), truths
