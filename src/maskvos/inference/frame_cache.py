"""Frames and their image features for a session: read lazily, encoded once, a few kept.

`FrameCache` owns the frame source. Sequential passes read frames in order (with a background
prefetch) and encode each once; a small LRU keeps the most recent frames and features so a prompt
frame is not encoded twice, and a stream (which can only be read forward) can still give back the
frames just read.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

import numpy as np
import torch

from maskvos.io.frames import FrameSource, FrameSourceError, StreamSource, VideoFileSource, prefetch
from maskvos.model.preprocess import to_model_input
from maskvos.model.sam2 import FrameFeatures, SAM2Model

#: Bytes of decoded RGB frames that reading a video file backward holds at once (H * W * 3 per
#: frame): 512 MiB is 436 frames at 854x480 (a default x264 group of 250 fits), 86 at 1920x1080.
REVERSE_BUDGET_BYTES = 512 * 2**20


def sam2_encoder(model: SAM2Model, resolution: int, device: torch.device) -> Callable[[np.ndarray], FrameFeatures]:
    """A frame encoder for `FrameCache`: resize and normalise, then SAM2's image encoder (batch 1)."""

    def encode(frame: np.ndarray) -> FrameFeatures:
        return model.encode_image(to_model_input(frame, resolution).to(device)[None])

    return encode


#: What an engine's encoder makes of a frame (SAM2: `FrameFeatures`; featmatch: a key tensor).
FeaturesT = TypeVar("FeaturesT")


class FrameCache(Generic[FeaturesT]):
    """Frames of one source and their features (whatever `encode` makes of a frame)."""

    #: Bytes of frames a backward read of a video file holds at once (see `_reverse_video`).
    reverse_budget_bytes: int = REVERSE_BUDGET_BYTES

    def __init__(
        self,
        source: FrameSource,
        encode: Callable[[np.ndarray], FeaturesT],
        cache_size: int = 4,
        prefetch_depth: int = 4,
    ) -> None:
        self.source = source
        self.encode = encode
        self.cache_size = cache_size
        self.prefetch_depth = prefetch_depth
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._features: OrderedDict[int, FeaturesT] = OrderedDict()
        self.num_encoded = 0

    @property
    def num_frames(self) -> int | None:
        return self.source.num_frames

    def _remember(self, store: OrderedDict, key: int, value) -> None:
        store[key] = value
        store.move_to_end(key)
        while len(store) > self.cache_size:
            store.popitem(last=False)

    def frame(self, frame_idx: int) -> np.ndarray:
        """The RGB frame (H, W, 3) uint8."""
        if frame_idx in self._frames:
            self._frames.move_to_end(frame_idx)
            return self._frames[frame_idx]
        self.source.check_index(frame_idx)
        if isinstance(self.source, StreamSource):
            frame = None
            for idx, img in self.source.frames(min(frame_idx, self.source.position)):
                self._remember(self._frames, idx, img)
                if idx == frame_idx:
                    frame = img
                    break
            if frame is None:
                raise FrameSourceError(f"Frame {frame_idx} is past the end of the stream; pass a valid frame index.")
            return frame
        frame = self.source.frame(frame_idx)
        self._remember(self._frames, frame_idx, frame)
        return frame

    @torch.inference_mode()
    def features(self, frame_idx: int, frame: np.ndarray | None = None) -> FeaturesT:
        """The features of a frame, encoded once while they stay cached."""
        if frame_idx in self._features:
            self._features.move_to_end(frame_idx)
            return self._features[frame_idx]
        if frame is None:
            frame = self.frame(frame_idx)
        feats = self.encode(frame)
        self.num_encoded += 1
        self._remember(self._features, frame_idx, feats)
        return feats

    def iterate(self, start: int, stop: int | None, reverse: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """(frame_idx, frame) from `start` to `stop` inclusive, backward if `reverse`.

        `stop` None reads forward to the end of the source (a stream: until it ends).
        """
        if reverse:
            order = range(start, (stop if stop is not None else 0) - 1, -1)
        elif stop is not None:
            order = range(start, stop + 1)
        else:
            order = None
        if order is not None and all(t in self._frames for t in order):
            for t in order:
                yield t, self.frame(t)
            return
        if isinstance(self.source, StreamSource):
            if reverse:
                raise FrameSourceError("A stream can only be tracked forward; use direction 'forward'.")
            yield from self._iterate_stream(start, stop)
            return
        if order is None:
            order = range(start, self.source.num_frames)
        if isinstance(self.source, VideoFileSource):
            reader = self._reverse_video(order) if reverse else self._forward_video(order)
        else:
            reader = ((t, self.source.frame(t)) for t in order)
        for t, frame in prefetch(reader, self.prefetch_depth):
            self._remember(self._frames, t, frame)
            yield t, frame

    def _iterate_stream(self, start: int, stop: int | None) -> Iterator[tuple[int, np.ndarray]]:
        position = start
        while (stop is None or position <= stop) and position in self._frames:
            yield position, self._frames[position]
            position += 1
        if stop is not None and position > stop:
            return
        for t, frame in self.source.frames(position):
            self._remember(self._frames, t, frame)
            yield t, frame
            if stop is not None and t >= stop:
                return

    def _forward_video(self, order: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        last = order[-1]
        for t, frame in self.source.frames(order[0]):
            yield t, frame
            if t >= last:
                return

    def _reverse_video(self, order: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        """Frames order[0], order[0] - 1, ..., order[-1] of a video file, which decodes only forward.

        The video is read backward in chunks, each decoded forward and handed out reversed. A chunk
        starts at a keyframe (where decoding can start without decoding what comes before) and
        ends at the highest frame not yet handed out, so a backward pass over N frames decodes
        each frame once: N frames, plus those between the keyframe before order[-1] and order[-1].
        A chunk holds at most `reverse_budget_bytes` of frames, M = budget / (H * W * 3) of them.
        A group of G frames from one keyframe to the next that does not fit (G > M) is read in
        ceil(G / M) chunks of M frames from its end, each decoded from the keyframe and keeping only
        its last M frames: about G * (G / M + 1) / 2 decodes for that group instead of G (2G for a
        250-frame group at 1080p). A source that cannot seek gives keyframe 0: chunks of M frames,
        each decoded from frame 0.
        """
        source = self.source
        max_frames = max(1, self.reverse_budget_bytes // (source.height * source.width * 3))
        high, low = order[0], order[-1]
        while high >= low:
            chunk_start = max(low, source.keyframe_at_or_before(high), high - max_frames + 1)
            chunk = []
            for t, frame in source.frames(chunk_start):
                chunk.append((t, frame))
                if t >= high:
                    break
            yield from reversed(chunk)
            high = chunk_start - 1
