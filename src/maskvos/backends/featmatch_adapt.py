"""Test-time adaptation for `featmatch` (OSVOS-style): a small per-video head on the frozen keys.

When a video's prompted frames are known, `PromptHead` is fitted on them: a two-layer perceptron on
each stride-8 cell's (projected) key and the mean key of its 3x3 neighbourhood, giving one logit per
label (background and each object), trained for a few hundred Adam steps with a soft cross-entropy
against the prompted frames' grid labels (each label weighted by the inverse square root of its
area, so a small object is not drowned by the background), with seeded feature dropout as
augmentation. (A 3x3 convolution head was 15x slower to fit on a CPU: 15 s for 200 steps at 480p.)
On every tracked frame its label probabilities are fused with featmatch's matching probabilities by
a weighted geometric mean (a weighted average of log-probabilities, renormalised): where the head
is sure a cell is background, a far false positive of the matching is vetoed.

`PromptAdapter` owns the head of one session: it refits only when the prompted frames' labels change
(so a second pass over the same prompts costs nothing), and its `state_dict` holds the head's
weights and the labels it was fitted on, so a resumed session continues bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-4
#: Hidden channels of the head.
HIDDEN = 32
#: Adam learning rate of the fit.
LEARNING_RATE = 1e-2
#: Probability that a key channel is zeroed in a training step.
KEY_DROPOUT = 0.1


def cell_features(keys: torch.Tensor) -> torch.Tensor:
    """Keys (T, C, h, w) -> each cell's features (T, h * w, 2C): its key and the mean key of its
    3x3 neighbourhood (some context, at the cost of one pooling)."""
    context = F.avg_pool2d(keys, 3, 1, 1, count_include_pad=False)
    return torch.cat([keys, context], dim=1).flatten(2).transpose(1, 2)


class PromptHead(nn.Module):
    """Cell features (..., 2C) -> label logits (..., L): Linear(2C, hidden), ReLU, Linear(hidden, L),
    the same on every cell (a two-layer 1x1 convolution over `cell_features`)."""

    def __init__(self, feature_dims: int, num_labels: int, hidden: int = HIDDEN, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.hidden = nn.Linear(feature_dims, hidden)
        self.out = nn.Linear(hidden, num_labels)
        with torch.no_grad():  # seeded initialisation (the bounds of nn.Linear's default)
            for layer in (self.hidden, self.out):
                bound = layer.in_features**-0.5
                layer.weight.copy_((torch.rand(layer.weight.shape, generator=generator) * 2 - 1) * bound)
                layer.bias.copy_((torch.rand(layer.bias.shape, generator=generator) * 2 - 1) * bound)

    @property
    def num_labels(self) -> int:
        return self.out.out_features

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.hidden(feats)))


def fit_head(keys: torch.Tensor, labels: torch.Tensor, steps: int, seed: int = 0) -> PromptHead:
    """Fit a `PromptHead` to frames' keys (T, C, h, w) and soft labels (T, L, h, w) (each cell's
    labels sum to 1). Deterministic for a given seed (and thread count).

    Each step drops each feature channel of each frame with probability KEY_DROPOUT, then takes a
    soft cross-entropy over all cells in which label l is weighted by 1 / sqrt(its share of the
    cells), and one Adam step."""
    generator = torch.Generator().manual_seed(seed)
    with torch.inference_mode(False), torch.enable_grad():
        feats = cell_features(keys.detach().float()).clone()  # normal tensors (the session runs in inference mode)
        targets = labels.detach().float().flatten(2).transpose(1, 2).clone()  # (T, N, L)
        t, _, c = feats.shape
        head = PromptHead(c, targets.shape[-1], generator=generator)
        share = targets.sum((0, 1)) / (targets.shape[0] * targets.shape[1])
        weights = share.clamp(min=1e-3).rsqrt()
        weights = weights / (weights * share).sum()  # the mean cell weighs 1
        optimiser = torch.optim.Adam(head.parameters(), lr=LEARNING_RATE)
        for _ in range(steps):
            keep = (torch.rand(t, 1, c, generator=generator) >= KEY_DROPOUT).float() / (1 - KEY_DROPOUT)
            loss = -(weights * targets * F.log_softmax(head(feats * keep), dim=-1)).sum(-1).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return head.eval().requires_grad_(False)


def fuse(match_probs: torch.Tensor, head_probs: torch.Tensor, weight: float) -> torch.Tensor:
    """Weighted geometric mean of two label distributions (L, N), renormalised over L:
    softmax((1 - weight) * log p_match + weight * log p_head), each clamped at 1e-4."""
    log = (1 - weight) * match_probs.clamp(min=_EPS).log() + weight * head_probs.clamp(min=_EPS).log()
    return torch.softmax(log, dim=0)


class PromptAdapter:
    """The test-time head of one session, fitted on its prompted frames and refitted when they change."""

    def __init__(self, steps: int, weight: float, seed: int = 0) -> None:
        self.steps = steps
        self.weight = weight
        self.seed = seed
        self.head: PromptHead | None = None
        #: (frames, labels (T, L, N)) the head was fitted on.
        self._fitted_on: tuple[tuple[int, ...], torch.Tensor] | None = None
        #: Seconds spent fitting, summed over this session's fits (for benchmarks).
        self.fit_seconds = 0.0

    def refresh(self, frames: Sequence[int], keys: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], h: int, w: int) -> None:
        """Fit the head on prompted frames (keys (C, N) and soft labels (L, N) of each, N = h * w)
        unless it was fitted on exactly these frames and labels."""
        if not frames:
            self.head, self._fitted_on = None, None
            return
        frames = tuple(frames)
        stacked = torch.stack([lab.float() for lab in labels])
        if self._fitted_on is not None and self._fitted_on[0] == frames and torch.equal(self._fitted_on[1], stacked):
            return
        start = time.perf_counter()
        key_grid = torch.stack(list(keys)).view(len(frames), -1, h, w)
        self.head = fit_head(key_grid, stacked.view(len(frames), -1, h, w), self.steps, self.seed)
        self._fitted_on = (frames, stacked)
        self.fit_seconds += time.perf_counter() - start

    def probs(self, keys: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """The head's label probabilities (L, N) of a frame's keys (C, N)."""
        assert self.head is not None
        logits = self.head(cell_features(keys.float().view(1, -1, h, w))[0])  # (N, L)
        return torch.softmax(logits, dim=1).T.contiguous()

    def apply(self, match_probs: torch.Tensor, keys: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """featmatch's soft labels (L, N) fused with the head's; unchanged when there is no head or
        it has another number of labels (objects were added since it was fitted)."""
        if self.head is None or self.head.num_labels != match_probs.shape[0]:
            return match_probs
        return fuse(match_probs, self.probs(keys, h, w), self.weight)

    def state_dict(self) -> dict:
        if self.head is None or self._fitted_on is None:
            return {}
        return {
            "frames": list(self._fitted_on[0]),
            "labels": self._fitted_on[1],
            "head": {k: v.clone() for k, v in self.head.state_dict().items()},
        }

    def load_state_dict(self, state: dict) -> None:
        if not state:
            self.head, self._fitted_on = None, None
            return
        weights = state["head"]
        hidden, feature_dims = weights["hidden.weight"].shape
        head = PromptHead(feature_dims, weights["out.weight"].shape[0], hidden=hidden)
        head.load_state_dict(weights)
        self.head = head.eval().requires_grad_(False)
        self._fitted_on = (tuple(int(t) for t in state["frames"]), state["labels"])
