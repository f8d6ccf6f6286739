"""Training clips as SAM2 trains its video model, scaled down: a few consecutive frames, the first
prompted (by its mask, or by a box or a click sampled from the mask), the rest tracked through memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from maskvos.train.data import TrainSequence

PROMPT_KINDS = ("mask", "box", "click")
#: Objects smaller than this many pixels (at model input size) on the first frame are not prompted.
MIN_PROMPT_PIXELS = 16


@dataclass
class Clip:
    """One training sample.

    Attributes:
        seq: the sequence.
        frames: indices into `seq` of the clip's frames, in order.
        obj_ids: the prompted objects (present on the first frame).
        prompt: "mask", "box" or "click" (the same kind for every object of the clip).
        points: (B, P, 2) coordinates at model input size and (B, P) int32 labels for box / click
            prompts; None for mask prompts.
    """

    seq: TrainSequence
    frames: list[int]
    obj_ids: list[int]
    prompt: str
    points: tuple[torch.Tensor, torch.Tensor] | None = None

    def targets(self, k: int, resolution: int) -> torch.Tensor:
        """(B, 1, S, S) float 0/1 ground truth of every prompted object on the clip's k-th frame."""
        labels = torch.from_numpy(self.seq.labels(self.frames[k], resolution).astype(np.int64))
        ids = torch.tensor(self.obj_ids)
        return (labels[None] == ids[:, None, None]).float()[:, None]


def sample_clip(
    rng: np.random.Generator,
    sequences: list[TrainSequence],
    frames_per_clip: int,
    resolution: int,
    max_objects: int = 3,
    prompt_probs: tuple[float, float, float] = (0.5, 0.25, 0.25),
) -> Clip:
    """A random clip: a sequence (weighted by length), a start frame where some object is visible,
    up to `max_objects` of its objects, and a prompt kind drawn with `prompt_probs` (mask, box, click)."""
    weights = np.array([max(1, len(s) - frames_per_clip + 1) for s in sequences], dtype=np.float64)
    for _ in range(100):
        seq = sequences[int(rng.choice(len(sequences), p=weights / weights.sum()))]
        length = min(frames_per_clip, len(seq))
        start = int(rng.integers(0, len(seq) - length + 1))
        ids = seq.object_ids(start, resolution, MIN_PROMPT_PIXELS)
        if ids:
            break
    else:
        raise ValueError("no frame of the training data shows an object of at least 16 pixels")
    if len(ids) > max_objects:
        ids = sorted(int(i) for i in rng.choice(ids, size=max_objects, replace=False))
    kind = PROMPT_KINDS[int(rng.choice(3, p=np.asarray(prompt_probs) / sum(prompt_probs)))]
    clip = Clip(seq, list(range(start, start + length)), ids, kind)
    if kind != "mask":
        clip.points = _point_prompts(rng, clip.targets(0, resolution)[:, 0] > 0, kind)
    return clip


def _point_prompts(rng: np.random.Generator, masks: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Box corners jittered by up to 10 % of the box side (labels 2, 3), or one click on a random pixel
    of the object (label 1), per object of `masks` (B, S, S)."""
    coords, labels = [], []
    size = masks.shape[-1]
    for mask in masks:
        ys, xs = torch.nonzero(mask, as_tuple=True)
        if kind == "box":
            x0, x1, y0, y1 = xs.min().item(), xs.max().item() + 1, ys.min().item(), ys.max().item() + 1
            w, h = x1 - x0, y1 - y0
            jitter = rng.normal(0, 0.05, size=4) * np.array([w, h, w, h])
            jitter = np.clip(jitter, -0.1 * np.array([w, h, w, h]), 0.1 * np.array([w, h, w, h]))
            box = np.clip(np.array([x0, y0, x1, y1], dtype=np.float64) + jitter, 0, size)
            coords.append(torch.tensor(box, dtype=torch.float32).view(2, 2))
            labels.append(torch.tensor([2, 3], dtype=torch.int32))
        else:
            i = int(rng.integers(0, len(xs)))
            coords.append(torch.tensor([[xs[i].item() + 0.5, ys[i].item() + 0.5]], dtype=torch.float32))
            labels.append(torch.tensor([1], dtype=torch.int32))
    return torch.stack(coords), torch.stack(labels)
