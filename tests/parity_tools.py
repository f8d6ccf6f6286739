"""Tools for parity tests against Meta's reference implementation (sam2==1.1.0).

- `make_checkpoint` builds the reference model with random, non-trivial weights and saves them as an
  official-format checkpoint file, which both implementations then load;
- `reference_predictor` builds the reference `SAM2VideoPredictor` from that file;
- `MiniLoop` drives our per-frame step functions with the reference predictor's semantics
  (prompt frames, temporary outputs, preflight memory encoding, forward/backward propagation,
  corrections), one object per call as the reference does. It is deliberately minimal: the real
  session lives in `maskvos.inference`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from maskvos.inference.memory_bank import pointer_distances, recent_frame_slots, select_prompted_frames
from maskvos.model.preprocess import to_model_input
from maskvos.model.sam2 import (
    MemoryContext,
    MemoryFrame,
    ObjectPointer,
    SAM2Model,
)

sam2 = pytest.importorskip("sam2", reason="the reference implementation sam2==1.1.0 is not installed")

REFERENCE_CONFIGS = {
    "sam2.1-tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1-small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1-base-plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1-large": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2-tiny": "configs/sam2/sam2_hiera_t.yaml",
    "sam2-small": "configs/sam2/sam2_hiera_s.yaml",
    "sam2-base-plus": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2-large": "configs/sam2/sam2_hiera_l.yaml",
}
OBJ_SCORE_BIAS_KEY = "sam_mask_decoder.pred_obj_score_head.layers.2.bias"


def _overrides(image_size: int) -> list[str]:
    if image_size == 1024:
        return []
    grid = image_size // 16
    return [
        f"++model.image_size={image_size}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{grid},{grid}]",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{grid},{grid}]",
    ]


def reference_predictor(
    name: str, checkpoint: str | os.PathLike[str] | None, image_size: int = 1024, corrections_as_prompts: bool = False
):
    """Meta's SAM2VideoPredictor, configured as `build_sam2_video_predictor` does, on the CPU.

    `corrections_as_prompts` sets the reference's `add_all_frames_to_correct_as_cond`, under which a
    correction on a tracked frame becomes a conditioning frame, as in maskvos' `VideoSession`.
    """
    from sam2.build_sam import build_sam2_video_predictor

    overrides = _overrides(image_size)
    if corrections_as_prompts:
        overrides.append("++model.add_all_frames_to_correct_as_cond=true")
    model = build_sam2_video_predictor(
        REFERENCE_CONFIGS[name],
        None if checkpoint is None else str(checkpoint),
        device="cpu",
        hydra_overrides_extra=overrides,
    )
    _patch_bfloat16_memory(model)
    return model


def _patch_bfloat16_memory(model) -> None:
    """Work around a reference bug on float32 CPU runs.

    The reference stores memories in bfloat16 and concatenates them with float32 object pointers,
    which promotes the memory to float32. When a frame has no object pointer (an object whose only
    prompt lies later in the video, tracked before it), the memory stays bfloat16 and the float32
    memory attention raises a dtype error (on GPU, autocast hides this). We cast the memory to
    float32 there, which is exactly what the promotion does in every other case.
    """
    attention = model.memory_attention
    original = attention.forward

    def forward(curr, memory, curr_pos=None, memory_pos=None, num_obj_ptr_tokens=0):
        dtype = curr[0].dtype if isinstance(curr, list) else curr.dtype
        return original(curr, memory.to(dtype), curr_pos, memory_pos.to(dtype), num_obj_ptr_tokens)

    attention.forward = forward


def randomize_(state_dict: dict[str, torch.Tensor], seed: int) -> None:
    """Re-draw every tensor so that no weight keeps a constant initial value.

    Linear and conv weights get std 1/sqrt(fan_in) (activations keep their scale through depth);
    norm scales are 1 +- 0.1; biases, embeddings and position embeddings small Gaussians;
    the memory encoder's layer-scale gammas (initialised to 1e-6) become O(0.1) so the fuser matters.
    """
    gen = torch.Generator().manual_seed(seed)
    for key, t in state_dict.items():
        if not t.is_floating_point():
            continue
        noise = torch.randn(t.shape, generator=gen, dtype=torch.float32)
        if key.endswith("gamma"):
            new = 0.1 * noise
        elif key.endswith("weight") and t.ndim >= 2:
            new = noise / t[0].numel() ** 0.5
        elif key.endswith("weight"):  # norm scales
            new = 1.0 + 0.1 * noise
        elif key.endswith("gaussian_matrix"):
            new = noise
        else:
            new = 0.1 * noise
        t.copy_(new.to(t.dtype))


def make_checkpoint(
    name: str, path: str | os.PathLike[str], seed: int = 0, obj_score_bias: float = 0.0, image_size: int = 1024
) -> Path:
    """Save a random-weight checkpoint in the official format ({"model": state_dict})."""
    model = reference_predictor(name, None, image_size=image_size)
    sd = model.state_dict()
    randomize_(sd, seed)
    sd[OBJ_SCORE_BIAS_KEY] += obj_score_bias
    path = Path(path)
    torch.save({"model": {k: v.clone() for k, v in sd.items()}}, path)
    return path


def synthetic_video(folder: Path, num_frames: int, height: int = 96, width: int = 128, seed: int = 0) -> list[np.ndarray]:
    """Frames with two textured shapes moving over a textured background, saved as <i>.jpg."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:height, 0:width]
    background = (rng.random((height // 8 + 1, width // 8 + 1, 3)) * 255).repeat(8, 0).repeat(8, 1)[:height, :width]
    frames = []
    for i in range(num_frames):
        img = background.copy()
        cx, cy = 30 + 5 * i, 40 + 2 * i
        disk = (xx - cx) ** 2 + (yy - cy) ** 2 < 18**2
        img[disk] = [220, 40, 40] + 20 * rng.standard_normal((disk.sum(), 3))
        x0, y0 = 90 - 4 * i, 20 + 3 * i
        rect = (xx >= x0) & (xx < x0 + 24) & (yy >= y0) & (yy < y0 + 30)
        img[rect] = [40, 200, 60] + 20 * rng.standard_normal((rect.sum(), 3))
        frame = np.clip(img, 0, 255).astype(np.uint8)
        Image.fromarray(frame).save(folder / f"{i}.jpg", quality=95)
        frames.append(frame)
    return frames


def synthetic_masks(frame_idx: int, height: int = 96, width: int = 128) -> dict[int, np.ndarray]:
    """The true masks of the two shapes of `synthetic_video` on a frame, keyed by object id."""
    yy, xx = np.mgrid[0:height, 0:width]
    cx, cy = 30 + 5 * frame_idx, 40 + 2 * frame_idx
    x0, y0 = 90 - 4 * frame_idx, 20 + 3 * frame_idx
    return {
        1: (xx - cx) ** 2 + (yy - cy) ** 2 < 18**2,
        2: (xx >= x0) & (xx < x0 + 24) & (yy >= y0) & (yy < y0 + 30),
    }


def load_frame(path: Path, image_size: int) -> tuple[torch.Tensor, int, int]:
    """A frame file as the model's input (3, S, S), with its original height and width."""
    frame = np.asarray(Image.open(path).convert("RGB"))
    return to_model_input(frame, image_size), frame.shape[0], frame.shape[1]


@dataclass
class FrameOut:
    low_res_logits: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    mem_feats: torch.Tensor | None = None
    mem_pos: torch.Tensor | None = None


@dataclass
class ObjState:
    cond: dict[int, FrameOut] = field(default_factory=dict)
    non_cond: dict[int, FrameOut] = field(default_factory=dict)
    temp_cond: dict[int, FrameOut] = field(default_factory=dict)
    temp_non_cond: dict[int, FrameOut] = field(default_factory=dict)
    tracked: dict[int, bool] = field(default_factory=dict)  # frame -> tracked in reverse


class MiniLoop:
    """Our step functions driven with SAM2VideoPredictor's semantics (objects one at a time)."""

    def __init__(self, model: SAM2Model, frame_dir: Path, num_frames: int) -> None:
        self.model = model
        self.frame_dir = frame_dir
        self.num_frames = num_frames
        self.image_size = model.config.image_size
        _, self.height, self.width = load_frame(frame_dir / "0.jpg", self.image_size)
        self.objects: dict[int, ObjState] = {}
        self._feature_cache: tuple[int, object] | None = None

    def features(self, frame_idx: int):
        if self._feature_cache is None or self._feature_cache[0] != frame_idx:
            image, _, _ = load_frame(self.frame_dir / f"{frame_idx}.jpg", self.image_size)
            self._feature_cache = (frame_idx, self.model.encode_image(image[None]))
        return self._feature_cache[1]

    def _obj(self, obj_id: int) -> ObjState:
        return self.objects.setdefault(obj_id, ObjState())

    def video_res(self, low_res: torch.Tensor) -> torch.Tensor:
        return F.interpolate(low_res, size=(self.height, self.width), mode="bilinear", align_corners=False)

    # ---------------------------------------------------------------- prompts
    @torch.inference_mode()
    def add_mask(self, frame_idx: int, obj_id: int, mask: np.ndarray) -> torch.Tensor:
        st = self._obj(obj_id)
        m = torch.from_numpy(mask).float()[None, None]
        size = (self.image_size, self.image_size)
        if m.shape[-2:] != size:
            m = (F.interpolate(m, size=size, mode="bilinear", align_corners=False, antialias=True) >= 0.5).float()
        out = self.model.track_frame(self.features(frame_idx), mask_input=m)
        is_cond = frame_idx not in st.tracked
        fo = FrameOut(out.low_res_logits, out.obj_ptr, out.object_score_logits)
        (st.temp_cond if is_cond else st.temp_non_cond)[frame_idx] = fo
        return self.video_res(out.low_res_logits)

    @torch.inference_mode()
    def add_points(self, frame_idx: int, obj_id: int, points=None, labels=None, box=None) -> torch.Tensor:
        st = self._obj(obj_id)
        pts = torch.zeros(0, 2) if points is None else torch.tensor(points, dtype=torch.float32)
        lbl = torch.zeros(0, dtype=torch.int32) if labels is None else torch.tensor(labels, dtype=torch.int32)
        if box is not None:
            pts = torch.cat([torch.tensor(box, dtype=torch.float32).view(2, 2), pts])
            lbl = torch.cat([torch.tensor([2, 3], dtype=torch.int32), lbl])
        pts = pts / torch.tensor([self.width, self.height]) * self.image_size
        is_init = frame_idx not in st.tracked
        reverse = False if is_init else st.tracked[frame_idx]
        temp = st.temp_cond if is_init else st.temp_non_cond
        prev = temp.get(frame_idx) or st.cond.get(frame_idx) or st.non_cond.get(frame_idx)
        prev_logits = None if prev is None else prev.low_res_logits.clamp(-32.0, 32.0)
        memory = None if is_init else self.memory_context(st, frame_idx, reverse)
        out = self.model.track_frame(
            self.features(frame_idx), memory=memory, points=(pts[None], lbl[None]), prev_mask_logits=prev_logits
        )
        temp[frame_idx] = FrameOut(out.low_res_logits, out.obj_ptr, out.object_score_logits)
        return self.video_res(out.low_res_logits)

    # ---------------------------------------------------------------- memory
    def memory_context(self, st: ObjState, frame_idx: int, reverse: bool) -> MemoryContext:
        cfg = self.model.config
        selected, unselected = select_prompted_frames(frame_idx, list(st.cond), -1)
        frames = [MemoryFrame(st.cond[t].mem_feats, st.cond[t].mem_pos, 0) for t in selected]
        for t_pos, t in recent_frame_slots(frame_idx, cfg.num_maskmem, 1, reverse):
            out = st.non_cond.get(t) or (st.cond.get(t) if t in unselected else None)
            if out is not None:
                frames.append(MemoryFrame(out.mem_feats, out.mem_pos, t_pos))
        prompted, recent, max_distance = pointer_distances(
            frame_idx,
            selected,
            self.num_frames,
            reverse=reverse,
            signed=cfg.use_signed_tpos_enc_to_obj_ptrs,
        )
        pointers = [ObjectPointer(st.cond[t].obj_ptr, d) for t, d in prompted]
        for t, d in recent:
            out = st.non_cond.get(t) or (st.cond.get(t) if t in unselected else None)
            if out is not None:
                pointers.append(ObjectPointer(out.obj_ptr, d))
        return MemoryContext(frames=frames, pointers=pointers, max_ptr_distance=max_distance)

    def _encode(self, frame_idx: int, low_res: torch.Tensor, high_res: torch.Tensor | None, scores, binarize: bool):
        if high_res is None:
            size = (self.image_size, self.image_size)
            high_res = F.interpolate(low_res, size=size, mode="bilinear", align_corners=False)
        feats, pos = self.model.encode_memory(self.features(frame_idx), high_res, scores, binarize=binarize)
        return feats.to(torch.bfloat16), pos

    def preflight(self) -> None:
        for st in self.objects.values():
            for temp, store in ((st.temp_non_cond, st.non_cond), (st.temp_cond, st.cond)):
                for t, fo in temp.items():
                    fo.mem_feats, fo.mem_pos = self._encode(t, fo.low_res_logits, None, fo.object_score_logits, True)
                    store[t] = fo
                temp.clear()
            for t in st.cond:
                st.non_cond.pop(t, None)

    @torch.inference_mode()
    def propagate(self, start: int | None = None, reverse: bool = False):
        """Yields (frame_idx, {obj_id: video-res logits (1,1,H,W)})."""
        self.preflight()
        if start is None:
            start = min(t for st in self.objects.values() for t in st.cond)
        if reverse:
            order = range(start, -1, -1) if start > 0 else []
        else:
            order = range(start, self.num_frames)
        for t in order:
            result = {}
            for obj_id, st in self.objects.items():
                if t in st.cond:
                    low = st.cond[t].low_res_logits
                else:
                    feats = self.features(t)
                    out = self.model.track_frame(feats, memory=self.memory_context(st, t, reverse))
                    fo = FrameOut(out.low_res_logits, out.obj_ptr, out.object_score_logits)
                    fo.mem_feats, fo.mem_pos = self._encode(
                        t, out.low_res_logits, out.high_res_logits, out.object_score_logits, False
                    )
                    st.non_cond[t] = fo
                    low = out.low_res_logits
                st.tracked[t] = reverse
                result[obj_id] = self.video_res(low)
            yield t, result


OBJ_SCORE_WEIGHT_KEY = "sam_mask_decoder.pred_obj_score_head.layers.2.weight"


def calibrated_checkpoint(
    name: str, path: Path, frame_dir: Path, masks: dict[int, np.ndarray], image_size: int, seed: int = 0
) -> Path:
    """A random checkpoint whose object scores straddle zero on the test video.

    Random weights give nearly the same object score everywhere, so every object would be judged
    present (or absent) on every frame and one of the two code paths would go untested. We amplify
    the score head's last layer, run the reference, and shift its bias until between 10 % and 70 %
    of the tracked frames are judged absent.
    """
    make_checkpoint(name, path, seed=seed, image_size=image_size)
    sd = torch.load(path, weights_only=True)["model"]
    sd[OBJ_SCORE_WEIGHT_KEY] *= 100.0
    sd[OBJ_SCORE_BIAS_KEY] *= 100.0
    torch.save({"model": sd}, path)
    # The absent path changes later frames' scores (SAM2.0 is bistable: one early absence and
    # the object stays absent), so bisect the bias offset until both outcomes occur with a margin.
    base = sd[OBJ_SCORE_BIAS_KEY].clone()
    present_offset, absent_offset, offset = None, None, 0.0
    for _ in range(10):
        sd[OBJ_SCORE_BIAS_KEY] = base + offset
        torch.save({"model": sd}, path)
        scores = np.array(_reference_scores(name, path, frame_dir, masks, image_size))
        absent = float((scores <= 0).mean())
        if 0.0 < absent < 1.0 and np.abs(scores).min() > 0.02:
            return path
        if absent >= 0.5:
            absent_offset = offset
        else:
            present_offset = offset
        if present_offset is None or absent_offset is None:
            offset -= float(np.quantile(scores, 0.3))
        else:
            offset = (present_offset + absent_offset) / 2
    raise RuntimeError(f"could not find an object-score bias that exercises both paths for {name}")


def _reference_scores(name: str, path: Path, frame_dir: Path, masks: dict[int, np.ndarray], image_size: int):
    pred = reference_predictor(name, path, image_size=image_size)
    state = pred.init_state(str(frame_dir))
    for obj_id, mask in masks.items():
        pred.add_new_mask(state, 0, obj_id, mask)
    scores = []
    for t, _, _ in pred.propagate_in_video(state):
        for per_obj in state["output_dict_per_obj"].values():
            out = per_obj["non_cond_frame_outputs"].get(t)
            if out is not None:
                scores.append(out["object_score_logits"].item())
    return scores


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def assert_masks_match(ours: torch.Tensor, ref: torch.Tensor, what: str, tol: float = 1e-3) -> float:
    """Logits within `tol` and binarised masks equal on >= 99.9 % of pixels. Returns max |diff|."""
    diff = max_abs_diff(ours, ref)
    agree = ((ours > 0) == (ref > 0)).float().mean().item()
    assert diff <= tol, f"{what}: max |dlogit| {diff:.2e} > {tol}"
    assert agree >= 0.999, f"{what}: binarised masks agree on only {agree:.4%} of pixels"
    return diff


# ---------------------------------------------------------------------------------------------------
# SAMURAI: a video and a checkpoint on which its motion-aware choice has something to decide

IOU_HEAD_WEIGHT_KEY = "sam_mask_decoder.iou_prediction_head.layers.2.weight"
IOU_HEAD_BIAS_KEY = "sam_mask_decoder.iou_prediction_head.layers.2.bias"


def disk_video(folder: Path, num_frames: int, size: int = 128, seed: int = 0, second: bool = False) -> list:
    """Textured disks moving over a black background (random weights then give compact candidate
    masks, whose boxes a motion model can tell apart), saved as <i>.jpg. Returns the true masks of
    the first disk, or with `second` a dict {1: disk, 2: second disk} per frame."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size]
    masks = []
    for i in range(num_frames):
        img = np.zeros((size, size, 3))
        disk = (xx - (30 + 3 * i)) ** 2 + (yy - (40 + 2 * i)) ** 2 < 14**2
        img[disk] = [220, 40, 40] + 30 * rng.standard_normal((disk.sum(), 3))
        other = (xx - (100 - 2 * i)) ** 2 + (yy - (95 - i)) ** 2 < 11**2
        if second:
            img[other] = [40, 200, 60] + 30 * rng.standard_normal((other.sum(), 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=95)
        masks.append({1: disk, 2: other} if second else disk)
    return masks


def samurai_checkpoint(path: Path, frame_dir: Path, mask: np.ndarray, image_size: int) -> Path:
    """A random sam2.1-tiny checkpoint (objects present) whose IoU head is scaled by 10 and shifted
    so that, on `disk_video`, candidates 1 and 2 have predicted IoUs near 0.5 that cross each other
    (candidate 0, a full-frame mask there, well below): the memory threshold and the motion term
    then both decide something. The shift is measured with our own SAMURAI policy on the video."""
    import dataclasses

    from maskvos.checkpoints import load_model
    from maskvos.inference.config import InferenceConfig
    from maskvos.inference.policies import SamuraiPolicy
    from maskvos.inference.session import VideoSession
    from maskvos.model.config import get_config

    raw = make_checkpoint("sam2.1-tiny", path.with_suffix(".raw.pt"), seed=3, obj_score_bias=5.0, image_size=image_size)
    seen: list = []

    @dataclasses.dataclass(frozen=True)
    class Probe(SamuraiPolicy):
        def choose_mask(self, candidates, state):
            seen.append(candidates.ious)
            return super().choose_mask(candidates, state)

    model = load_model(raw, config=dataclasses.replace(get_config("sam2.1-tiny"), image_size=image_size))
    session = VideoSession(model, frame_dir, InferenceConfig(memory_policy=Probe()))
    session.add_mask(0, 1, mask)
    for _ in session.propagate():
        pass
    ious = np.array(seen)
    mean_logits = np.log(ious / (1 - ious)).mean(0)
    sd = torch.load(raw, weights_only=True)
    weights = sd["model"]
    scale, targets = 10.0, (-1.0, -0.25, -0.1)
    bias = weights[IOU_HEAD_BIAS_KEY].clone()
    weights[IOU_HEAD_WEIGHT_KEY] *= scale
    for k, target in enumerate(targets):
        weights[IOU_HEAD_BIAS_KEY][k + 1] = float(target - scale * (mean_logits[k] - bias[k + 1].item()))
    torch.save(sd, path)
    return path


# ---------------------------------------------------------------------------------------------------
# EdgeTAM: its reference (edgetam-dimos, with timm) runs in its own process (tests/edgetam_oracle.py)

EDGETAM_ORACLE_DIR = Path(__file__).resolve().parents[1] / ".oracles" / "edgetam"
EDGETAM_ORACLE = Path(__file__).resolve().parent / "edgetam_oracle.py"


def edgetam_checkpoint(path: Path, seed: int = 3) -> Path:
    """A random EdgeTAM checkpoint in the official format ({"model": state_dict}) whose objects are
    present (object-score bias +5) and whose masks on `disk_video` are non-trivial (10-40 % of the
    frame for seed 3). Built from our own module tree, whose keys and shapes the tests check against
    the reference's; batch-norm variances stay positive and the trunk's batch-norm scales are 0.5 so
    that activations keep their scale through RepViT's residual blocks."""
    from maskvos.model.config import EDGETAM
    from maskvos.model.sam2 import SAM2Model

    sd = SAM2Model(EDGETAM).state_dict()
    randomize_(sd, seed)
    gen = torch.Generator().manual_seed(seed + 100)
    for key, t in sd.items():
        if key.endswith("running_var"):
            t.copy_(0.5 + torch.rand(t.shape, generator=gen))
        if key.startswith("image_encoder.trunk") and key.endswith("bn.weight"):
            t.copy_(0.5 + 0.05 * torch.randn(t.shape, generator=gen))
    sd[OBJ_SCORE_BIAS_KEY] += 5.0
    torch.save({"model": sd}, path)
    return path


def run_edgetam_oracle(*args: str) -> None:
    """Run tests/edgetam_oracle.py with the installed reference; a failure shows its stderr."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(EDGETAM_ORACLE), str(EDGETAM_ORACLE_DIR), *args],
                          capture_output=True, text=True, cwd=Path(args[-1]).parent)
    if proc.returncode:
        raise AssertionError(f"the EdgeTAM reference failed:\n{proc.stderr[-3000:]}")


# ---------------------------------------------------------------------------------------------------
# EfficientTAM: its reference (efficient-track-anything) runs in its own process (tests/efficienttam_oracle.py)

EFFICIENTTAM_ORACLE_DIR = Path(__file__).resolve().parents[1] / ".oracles" / "efficienttam"
EFFICIENTTAM_ORACLE = Path(__file__).resolve().parent / "efficienttam_oracle.py"


def efficienttam_checkpoint(path: Path, name: str, seed: int = 0) -> Path:
    """A random checkpoint of EfficientTAM `name` (official format), objects present (object-score bias +5)."""
    from maskvos.model.config import get_config
    from maskvos.model.sam2 import SAM2Model

    sd = SAM2Model(get_config(name)).state_dict()
    randomize_(sd, seed)
    sd[OBJ_SCORE_BIAS_KEY] += 5.0
    torch.save({"model": sd}, path)
    return path


def run_efficienttam_oracle(variant: str, *args: str) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(EFFICIENTTAM_ORACLE), str(EFFICIENTTAM_ORACLE_DIR), variant, *args],
                          capture_output=True, text=True, cwd=Path(args[-1]).parent if "/" in args[-1] else None)
    if proc.returncode:
        raise AssertionError(f"the EfficientTAM reference failed:\n{proc.stderr[-3000:]}")
