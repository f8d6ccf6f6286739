"""Video propagation parity: Meta's SAM2VideoPredictor versus our step functions in a minimal loop.

Both load the same random-weight checkpoint file. Default runs use the tiny model at input 256 (cheap);
the `parity` marker adds tiny and base_plus at the native 1024 input.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from maskvos.checkpoints import load_model
from maskvos.model.config import get_config

from parity_tools import (
    MiniLoop,
    assert_masks_match,
    calibrated_checkpoint,
    max_abs_diff,
    reference_predictor,
    synthetic_masks,
    synthetic_video,
)

NUM_FRAMES = 8
CASES = [
    pytest.param(("sam2.1-tiny", 256), id="tiny-256"),
    pytest.param(("sam2-tiny", 256), id="sam2-tiny-256"),
    pytest.param(("sam2.1-tiny", 1024), id="tiny-1024", marks=pytest.mark.parity),
    pytest.param(("sam2.1-base-plus", 1024), id="base_plus-1024", marks=pytest.mark.parity),
]
STATS: dict[str, float] = {}


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("video") / "frames"
    synthetic_video(folder, NUM_FRAMES)
    return folder


@pytest.fixture(scope="module", params=CASES)
def setup(request, video, tmp_path_factory):
    name, size = request.param
    path = tmp_path_factory.mktemp("ckpt") / f"{name}-{size}.pt"
    calibrated_checkpoint(name, path, video, synthetic_masks(0), size)
    config = dataclasses.replace(get_config(name), image_size=size)
    ours = load_model(path, config=config)
    ref = reference_predictor(name, path, image_size=size)
    return name, size, ours, ref, video


class Recorder:
    """Collects every compared quantity and checks that the comparison was not trivial."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.max_diff: dict[str, float] = {}
        self.present = self.absent = 0
        self.nontrivial_frames = 0

    def note(self, stage: str, diff: float) -> None:
        self.max_diff[stage] = max(self.max_diff.get(stage, 0.0), diff)

    def masks(self, stage: str, ours: torch.Tensor, ref: torch.Tensor) -> None:
        self.note(stage, assert_masks_match(ours, ref, f"{self.label} {stage}"))
        fg = (ref > 0).float().mean().item()
        if 0.001 < fg < 0.999:
            self.nontrivial_frames += 1

    def internals(self, ours_out, ref_out) -> None:
        score = ref_out["object_score_logits"]
        assert torch.equal(ours_out.object_score_logits > 0, score > 0), "presence decision differs"
        self.present += int((score > 0).sum())
        self.absent += int((score <= 0).sum())
        self.note("object score", max_abs_diff(ours_out.object_score_logits, score))
        self.note("object pointer", max_abs_diff(ours_out.obj_ptr, ref_out["obj_ptr"]))
        self.note("low-res logits", max_abs_diff(ours_out.low_res_logits, ref_out["pred_masks"]))
        if ref_out.get("maskmem_features") is not None:
            # Both store memories in bfloat16: float32 values within 1e-3 may round to neighbouring
            # bfloat16 values, so allow 1e-3 plus one bfloat16 step (at most 2^-7 of the value).
            a, b = ours_out.mem_feats.float(), ref_out["maskmem_features"].float()
            excess = ((a - b).abs() - (1e-3 + b.abs() * 2**-7)).max().item()
            assert excess <= 0, f"memory features differ by more than 1e-3 + one bfloat16 step ({excess:.2e} over)"
            self.note("memory features (bf16)", max_abs_diff(a, b))

    def report(self) -> None:
        STATS.update({f"{self.label} {k}": v for k, v in self.max_diff.items()})
        print(f"\n[{self.label}] " + ", ".join(f"{k}: {v:.2e}" for k, v in self.max_diff.items()))


def _compare_outputs(rec: Recorder, loop: MiniLoop, state, frame_idx: int) -> None:
    for obj_idx, obj_id in enumerate(state["obj_ids"]):
        ref_dicts = state["output_dict_per_obj"][obj_idx]
        ref_out = ref_dicts["non_cond_frame_outputs"].get(frame_idx) or ref_dicts["cond_frame_outputs"].get(frame_idx)
        st = loop.objects[obj_id]
        ours_out = st.non_cond.get(frame_idx) or st.cond.get(frame_idx)
        rec.internals(ours_out, ref_out)


def _propagate_both(rec: Recorder, loop: MiniLoop, ref, state, **kwargs) -> list[int]:
    frames = []
    ours_iter = loop.propagate(start=kwargs.get("start_frame_idx"), reverse=kwargs.get("reverse", False))
    for (t, obj_ids, ref_masks), (t2, ours) in zip(ref.propagate_in_video(state, **kwargs), ours_iter, strict=True):
        assert t == t2
        for i, obj_id in enumerate(obj_ids):
            rec.masks("video-res masks", ours[obj_id][0], ref_masks[i : i + 1])
        _compare_outputs(rec, loop, state, t)
        frames.append(t)
    return frames


def test_forward_with_correction(setup):
    name, size, ours, ref, video = setup
    rec = Recorder(f"{name}@{size} forward+correction")
    state = ref.init_state(str(video))
    loop = MiniLoop(ours, video, NUM_FRAMES)
    for obj_id, mask in synthetic_masks(0).items():
        _, _, ref_masks = ref.add_new_mask(state, 0, obj_id, mask)
        rec.masks("prompt-frame masks", loop.add_mask(0, obj_id, mask)[0], ref_masks[obj_id - 1 : obj_id])
    assert _propagate_both(rec, loop, ref, state) == list(range(NUM_FRAMES))
    # A correction click on a tracked frame, then propagation again.
    k = NUM_FRAMES // 2
    truth = synthetic_masks(k)[1]
    ys, xs = truth.nonzero()
    point, label = [[float(xs.mean()), float(ys.mean())], [5.0, 5.0]], [1, 0]
    _, _, ref_masks = ref.add_new_points_or_box(state, k, 1, points=point, labels=label)
    rec.masks("correction masks", loop.add_points(k, 1, point, label)[0], ref_masks[0:1])
    _propagate_both(rec, loop, ref, state)
    rec.report()
    assert rec.nontrivial_frames >= NUM_FRAMES, "too few frames with a non-trivial mask to prove parity"
    assert rec.present > 0 and rec.absent > 0, f"present {rec.present}, absent {rec.absent}: one path untested"


def test_reverse_from_middle_and_late_object(setup):
    name, size, ours, ref, video = setup
    rec = Recorder(f"{name}@{size} reverse+late object")
    state = ref.init_state(str(video))
    loop = MiniLoop(ours, video, NUM_FRAMES)
    mid = NUM_FRAMES // 2
    mask = synthetic_masks(mid)[1]
    _, _, ref_masks = ref.add_new_mask(state, mid, 1, mask)
    rec.masks("prompt-frame masks", loop.add_mask(mid, 1, mask)[0], ref_masks[0:1])
    assert _propagate_both(rec, loop, ref, state, start_frame_idx=mid, reverse=True) == list(range(mid, -1, -1))
    # Object 2 first appears (as a box) on a later frame; then propagate forward over everything.
    late = mid + 2
    truth = synthetic_masks(late)[2]
    ys, xs = truth.nonzero()
    box = [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]
    _, _, ref_masks = ref.add_new_points_or_box(state, late, 2, box=box)
    rec.masks("box prompt masks", loop.add_points(late, 2, box=box)[0], ref_masks[1:2])
    _propagate_both(rec, loop, ref, state)
    rec.report()
    assert rec.nontrivial_frames >= NUM_FRAMES
    assert rec.present > 0 and rec.absent > 0, f"present {rec.present}, absent {rec.absent}: one path untested"


def test_perturbed_memory_attention_weight_is_detected(video, tmp_path):
    """The comparison is sensitive: one memory-attention weight changed breaks parity on tracked frames."""
    path = calibrated_checkpoint("sam2.1-tiny", tmp_path / "ck.pt", video, synthetic_masks(0), 256)
    ours = load_model(path, config=dataclasses.replace(get_config("sam2.1-tiny"), image_size=256))
    ref = reference_predictor("sam2.1-tiny", path, image_size=256)
    state = ref.init_state(str(video))
    loop = MiniLoop(ours, video, NUM_FRAMES)
    weight = dict(ours.named_parameters())["memory_attention.layers.0.cross_attn_image.v_proj.weight"]
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.add_(0.05 * torch.randn_like(weight))
        masks = synthetic_masks(0)
        for obj_id, mask in masks.items():
            ref.add_new_mask(state, 0, obj_id, mask)
            loop.add_mask(0, obj_id, mask)
        worst = 0.0
        for (t, _, ref_masks), (_, mine) in zip(ref.propagate_in_video(state), loop.propagate()):
            if t > 0:
                worst = max(worst, max_abs_diff(mine[1][0], ref_masks[0:1]))
        assert worst > 1e-2, f"perturbation went unnoticed (max diff {worst:.2e})"
    finally:
        with torch.no_grad():
            weight.copy_(saved)
