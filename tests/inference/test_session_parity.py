"""End-to-end parity: `VideoSession` against Meta's SAM2VideoPredictor on the same checkpoint file.

The reference runs with `add_all_frames_to_correct_as_cond=True` (a correction stays a prompt, as in
the session). The session batches objects and evicts memories; neither may change a result. Default
runs use the tiny models at input 256; the `parity` marker adds tiny at the native 1024.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from maskvos.checkpoints import load_model
from maskvos.inference.session import VideoSession
from maskvos.model.config import get_config

from parity_tools import (
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
]


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
    ours = load_model(path, config=dataclasses.replace(get_config(name), image_size=size))
    ref = reference_predictor(name, path, image_size=size, corrections_as_prompts=True)
    # Random SAM2.0 weights are bistable: once an object is judged absent it stays absent, so few of
    # its masks are non-trivial; SAM2.1 keeps most of them.
    min_nontrivial = 2 if name.startswith("sam2-") else NUM_FRAMES // 2
    return f"{name}@{size}", ours, ref, video, min_nontrivial


class Checker:
    """Compares every yielded frame and the stored per-object outputs behind it."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.worst = 0.0
        self.present = self.absent = self.nontrivial = 0
        self.frames: list[int] = []

    def frame(self, session: VideoSession, state, result, ref_ids, ref_masks) -> None:
        assert list(ref_ids) == result.obj_ids
        for i, obj_id in enumerate(result.obj_ids):
            ref_logits = ref_masks[i : i + 1, 0]
            given = session._prompt_masks.get((obj_id, result.frame_idx))
            if given is not None:
                # The session returns the user's mask itself; the reference a 256-pixel approximation of it.
                assert np.array_equal(result.masks[i].numpy(), given)
                continue
            self.compare(result.mask_logits[i : i + 1], ref_logits, f"frame {result.frame_idx}")
        for obj_idx, obj_id in enumerate(state["obj_ids"]):
            per_obj = state["output_dict_per_obj"][obj_idx]
            t = result.frame_idx
            ref_out = per_obj["cond_frame_outputs"].get(t) or per_obj["non_cond_frame_outputs"][t]
            mem = session.bank.objects[obj_id]
            ours = mem.prompted.get(t) or mem.tracked[t]
            score = ref_out["object_score_logits"]
            assert torch.equal(ours.object_score_logits > 0, score > 0), f"{self.label}: presence differs on frame {t}"
            self.present += int((score > 0).sum())
            self.absent += int((score <= 0).sum())
            assert max_abs_diff(ours.obj_ptr, ref_out["obj_ptr"]) <= 1e-3
            a, b = ours.mem_feats.float(), ref_out["maskmem_features"].float()
            assert ((a - b).abs() - (1e-3 + b.abs() * 2**-7)).max().item() <= 0, "memory features differ"
        self.frames.append(result.frame_idx)

    def compare(self, ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
        """Masks within tolerance; counts those that are neither empty nor full."""
        self.worst = max(self.worst, assert_masks_match(ours, ref, f"{self.label} {what}"))
        fg = (ref > 0).float().mean().item()
        self.nontrivial += int(0.001 < fg < 0.999)

    def run(self, session_iter, ref_iter, session, state) -> list[int]:
        start = len(self.frames)
        for (t, ids, ref_masks), result in zip(ref_iter, session_iter, strict=True):
            assert t == result.frame_idx
            self.frame(session, state, result, ids, ref_masks)
        return self.frames[start:]

    def done(self, min_nontrivial: int) -> None:
        print(f"\n[{self.label}] max |dlogit| {self.worst:.2e}, present {self.present}, absent {self.absent}")
        assert self.nontrivial >= min_nontrivial, f"{self.nontrivial} non-trivial masks are too few to prove parity"
        assert self.present > 0 and self.absent > 0, "one of the present/absent paths went untested"


def test_forward_two_objects_then_correction(setup):
    label, ours, ref, video, min_nontrivial = setup
    check = Checker(f"{label} forward+correction")
    state = ref.init_state(str(video))
    session = VideoSession(ours, video)
    for obj_id, mask in synthetic_masks(0).items():
        ref.add_new_mask(state, 0, obj_id, mask)
        result = session.add_mask(0, obj_id, mask)
        assert np.array_equal(result.masks[0].numpy(), mask), "the user's mask must come back unchanged"
    assert check.run(session.propagate(), ref.propagate_in_video(state), session, state) == list(range(NUM_FRAMES))
    k = NUM_FRAMES // 2
    ys, xs = synthetic_masks(k)[1].nonzero()
    point, labels = [[float(xs.mean()), float(ys.mean())], [5.0, 5.0]], [1, 0]
    _, _, ref_masks = ref.add_new_points_or_box(state, k, 1, points=point, labels=labels)
    result = session.add_points(k, 1, point, labels)
    check.compare(result.mask_logits, ref_masks[0:1, 0], "correction")
    # The next propagation starts at the correction by default.
    frames = check.run(session.propagate(), ref.propagate_in_video(state, start_frame_idx=k), session, state)
    assert frames == list(range(k, NUM_FRAMES))
    check.done(min_nontrivial)


def test_backward_from_middle_then_late_box_object(setup):
    label, ours, ref, video, min_nontrivial = setup
    check = Checker(f"{label} backward+late object")
    state = ref.init_state(str(video))
    session = VideoSession(ours, video)
    mid = NUM_FRAMES // 2
    mask = synthetic_masks(mid)[1]
    ref.add_new_mask(state, mid, 1, mask)
    session.add_mask(mid, 1, mask)
    frames = check.run(
        session.propagate(direction="backward"), ref.propagate_in_video(state, reverse=True, start_frame_idx=mid), session, state
    )
    assert frames == list(range(mid, -1, -1))
    late = mid + 2
    ys, xs = synthetic_masks(late)[2].nonzero()
    box = [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]
    _, _, ref_masks = ref.add_new_points_or_box(state, late, 2, box=box)
    check.compare(session.add_box(late, 2, box).mask_logits, ref_masks[1:2, 0], "box prompt")
    check.run(session.propagate(start=0), ref.propagate_in_video(state, start_frame_idx=0), session, state)
    check.done(min_nontrivial)


def test_both_directions_and_mask_refined_by_points(setup):
    label, ours, ref, video, min_nontrivial = setup
    check = Checker(f"{label} both directions")
    state = ref.init_state(str(video))
    session = VideoSession(ours, video)
    mid = 3
    truth = synthetic_masks(mid)
    ref.add_new_mask(state, mid, 1, truth[1])
    session.add_mask(mid, 1, truth[1])
    # A mask, then clicks on the same frame: the clicks refine the mask.
    ys, xs = truth[1].nonzero()
    point = [[float(xs.mean()), float(ys.mean())]]
    _, _, ref_masks = ref.add_new_points_or_box(state, mid, 1, points=point, labels=[1])
    check.compare(session.add_points(mid, 1, point, [1]).mask_logits, ref_masks[0:1, 0], "mask+points")
    ref.add_new_mask(state, mid, 2, truth[2])
    session.add_mask(mid, 2, truth[2])

    def reference_both():
        yield from ref.propagate_in_video(state, start_frame_idx=mid)
        for i, item in enumerate(ref.propagate_in_video(state, start_frame_idx=mid, reverse=True)):
            if i > 0:  # the session yields the start frame once
                yield item

    frames = check.run(session.propagate(direction="both"), reference_both(), session, state)
    assert frames == list(range(mid, NUM_FRAMES)) + list(range(mid - 1, -1, -1))
    check.done(min_nontrivial)


def test_eviction_and_rebuild_keep_parity(video, tmp_path):
    """Over 48 frames memories are evicted; a correction that needs evicted ones rebuilds them exactly."""
    num_frames = 48
    long_video = tmp_path / "long"
    synthetic_video(long_video, num_frames)
    # Calibrated on the short video (cheap); with seed 1 about 3/4 of the long video's frames are "present".
    path = calibrated_checkpoint("sam2.1-tiny", tmp_path / "ck.pt", video, {1: synthetic_masks(0)[1]}, 128, seed=1)
    ours = load_model(path, config=dataclasses.replace(get_config("sam2.1-tiny"), image_size=128))
    ref = reference_predictor("sam2.1-tiny", path, image_size=128, corrections_as_prompts=True)
    state = ref.init_state(str(long_video))
    session = VideoSession(ours, long_video)
    check = Checker("tiny@128 eviction")
    mask = synthetic_masks(0)[1]
    ref.add_new_mask(state, 0, 1, mask)
    session.add_mask(0, 1, mask)
    peak = 0
    for (_, ids, ref_masks), result in zip(ref.propagate_in_video(state), session.propagate(), strict=True):
        check.frame(session, state, result, ids, ref_masks)
        peak = max(peak, session.bank.num_entries())
    # Without eviction 48 entries would be stored; SAM2's window needs at most 16 recent ones plus
    # those within the anchor window of the prompt.
    assert peak <= 1 + 16 + session.bank.anchor_window, peak
    assert session.bank.num_entries() < num_frames
    k = 36
    assert session.bank.missing_context(1, k, False), "the test needs a correction whose context was evicted"
    encoded_before = session.frames.num_encoded
    ys, xs = np.nonzero(synthetic_masks(0)[1])
    point = [[float(xs.mean()), float(ys.mean())]]
    _, _, ref_masks = ref.add_new_points_or_box(state, k, 1, points=point, labels=[0])
    result = session.add_points(k, 1, point, [0])
    assert session.frames.num_encoded > encoded_before, "evicted context was not rebuilt"
    check.compare(result.mask_logits, ref_masks[0:1, 0], "correction after eviction")
    check.run(session.propagate(), ref.propagate_in_video(state, start_frame_idx=k), session, state)
    check.done(num_frames // 2)
