"""Seconds and decoded frames of a forward and a backward pass over a video file through `FrameCache`.

The video is a 600-frame 854x480 mp4 written with PyAV/libx264 at its default settings (default
group of pictures: a keyframe every 250 frames at most, more at scene cuts). Its frames are the DAVIS
2016 train sequences of ../shared/data/vos, one after another (resized to 854x480 where needed); a
synthetic moving texture where that data is absent. Each pass reads every frame through
`FrameCache.iterate` and encodes it with a trivial encoder (identity), so the time is reading only.

A video file decodes only forward, so a backward pass decodes chunks and hands them out reversed.
"before" is the code this replaced: every read decoded from frame 0 (converting each frame to RGB)
and the backward pass read 32-frame chunks, about N^2 / 64 decodes. "after" seeks to the keyframe
before each read and aligns backward chunks to keyframes (512 MiB of frames at most), about N
decodes. The goal: a backward pass costs at most 1.5x a forward pass.

    python benchmarks/backward_decode.py --frames 600 --repeats 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import av
import numpy as np
from PIL import Image

from maskvos.inference.frame_cache import FrameCache
from maskvos.io.frames import VideoFileSource

ROOT = Path(__file__).resolve().parents[1]
DAVIS = ROOT.parent / "shared" / "data" / "vos" / "davis2016-train" / "JPEGImages"
WIDTH, HEIGHT = 854, 480
#: Frames per backward chunk in the code before keyframe-aligned chunks.
LEGACY_CHUNK = 32


def real_frames(num_frames: int) -> Iterator[np.ndarray] | None:
    """DAVIS 2016 train frames, sequence after sequence, as (480, 854, 3) uint8; None without the data."""
    root = DAVIS / "480p" if (DAVIS / "480p").is_dir() else DAVIS
    sequences = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    paths = [f for seq in sequences for f in sorted(seq.glob("*.jpg"))][:num_frames]
    if len(paths) < num_frames:
        return None

    def read() -> Iterator[np.ndarray]:
        for path in paths:
            with Image.open(path) as img:
                img = img.convert("RGB")
                if img.size != (WIDTH, HEIGHT):
                    img = img.resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR)
                yield np.asarray(img)

    return read()


def synthetic_frames(num_frames: int) -> Iterator[np.ndarray]:
    """A random texture (blocks of 8 pixels) panning 3 pixels a frame."""
    rng = np.random.default_rng(0)
    texture = (rng.random((HEIGHT // 8, (WIDTH + 3 * num_frames) // 8 + 1, 3)) * 255).astype(np.uint8)
    texture = texture.repeat(8, 0).repeat(8, 1)
    for t in range(num_frames):
        yield np.ascontiguousarray(texture[:, 3 * t : 3 * t + WIDTH])


def write_mp4(path: Path, frames: Iterator[np.ndarray]) -> None:
    """An mp4 of `frames` with libx264 at its default settings (default GOP), 25 frames per second."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


class LegacyVideoSource(VideoFileSource):
    """The reads of the code before: decode from frame 0 and convert every frame, keep those from `start`."""

    def frames(self, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        self.check_index(start)
        with av.open(str(self.path)) as container:
            for frame_idx, frame in enumerate(container.decode(video=0)):
                self.decoded_frames += 1
                rgb = frame.to_ndarray(format="rgb24")
                if frame_idx >= start:
                    yield frame_idx, rgb


class LegacyFrameCache(FrameCache):
    """The backward reads of the code before: chunks of 32 frames, each read from its first frame."""

    def _reverse_video(self, order: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        high, low = order[0], order[-1]
        while high >= low:
            chunk_start = max(low, high - LEGACY_CHUNK + 1)
            chunk = []
            for t, frame in self.source.frames(chunk_start):
                chunk.append((t, frame))
                if t >= high:
                    break
            yield from reversed(chunk)
            high = chunk_start - 1


def timed_pass(path: Path, is_backward: bool, is_legacy: bool) -> tuple[float, int]:
    """Seconds and frames decoded for one pass over every frame (a fresh source and cache)."""
    source = (LegacyVideoSource if is_legacy else VideoFileSource)(path)
    cache = (LegacyFrameCache if is_legacy else FrameCache)(source, encode=lambda frame: frame)
    last = source.num_frames - 1
    before = source.decoded_frames
    start = time.perf_counter()
    order = cache.iterate(last, 0, reverse=True) if is_backward else cache.iterate(0, last)
    seen = 0
    for t, frame in order:
        cache.features(t, frame)
        seen += 1
    seconds = time.perf_counter() - start
    if seen != source.num_frames:
        raise SystemExit(f"a pass gave {seen} of {source.num_frames} frames")
    return seconds, source.decoded_frames - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3, help="passes timed per row of 'after' (the fastest is shown)")
    parser.add_argument("--video", type=Path, help="time this video instead of writing one")
    parser.add_argument("--skip-before", action="store_true", help="do not time the code before (slow: ~N^2/64 decodes)")
    args = parser.parse_args()

    if args.video is not None:
        path, origin = args.video, "given"
    else:
        path = Path(tempfile.mkdtemp(prefix="maskvos-bench-")) / "video.mp4"
        frames = real_frames(args.frames)
        origin = "DAVIS 2016 train frames" if frames is not None else "synthetic texture"
        write_mp4(path, frames if frames is not None else synthetic_frames(args.frames))
    source = VideoFileSource(path)
    keyframes = source.index.keyframes if source.index is not None else []
    print(
        f"{path.name}: {source.num_frames} frames {source.width}x{source.height} ({origin}), libx264 defaults, "
        f"keyframes at {keyframes}\n"
    )
    print("| code | forward s | backward s | forward decodes | backward decodes | backward / forward |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = [("before (decode from 0, 32-frame chunks)", True, 1)] if not args.skip_before else []
    rows.append(("after (keyframe seeks, keyframe-aligned chunks)", False, args.repeats))
    for name, is_legacy, repeats in rows:
        forward = min(timed_pass(path, False, is_legacy) for _ in range(repeats))
        backward = min(timed_pass(path, True, is_legacy) for _ in range(repeats))
        print(
            f"| {name} | {forward[0]:.2f} | {backward[0]:.2f} | {forward[1]} | {backward[1]} | "
            f"{backward[0] / forward[0]:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
