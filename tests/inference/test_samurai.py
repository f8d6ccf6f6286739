"""The `samurai` policy's rules and its behaviour in a session: mask choice by motion, memory by
confidence with the frame before always taken, bounded memory, each object's own filter (two objects
together equal one-object runs), both directions, corrections and exact resume. Parity with the
authors' code: test_samurai_parity.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from maskvos.checkpoints import load_model
from maskvos.errors import ConfigError
from maskvos.inference.config import InferenceConfig
from maskvos.inference.mask_choice import candidate_boxes
from maskvos.inference.policies import FrameSignals, MaskCandidates, MemoryWindow, SamuraiPolicy, get_policy
from maskvos.inference.session import VideoSession
from maskvos.model.config import get_config

from parity_tools import disk_video, samurai_checkpoint
from policy_tools import admit_output, assert_window_property, prompted_banks

WINDOW = MemoryWindow(num_maskmem=7, stride=1, max_pointers=16, num_frames=100)
GOOD = FrameSignals(object_score=2.0, iou=0.9)
BAD = FrameSignals(object_score=2.0, iou=0.4)


def recent(plan) -> list[tuple[int, int]]:
    return [(t, t_pos) for t, t_pos, is_prompted in plan.spatial if not is_prompted]


# ------------------------------------------------------------------------------------------ rules
def test_confidence_needs_iou_object_score_and_motion():
    policy = SamuraiPolicy()
    assert policy.is_confident(FrameSignals(1.0, 0.51))
    assert not policy.is_confident(FrameSignals(1.0, 0.5)), "predicted IoU must exceed 0.5"
    assert not policy.is_confident(FrameSignals(0.0, 0.9)), "object score must exceed 0"
    assert not policy.is_confident(FrameSignals(1.0, 0.9, motion=0.0)), "motion score must exceed 0"
    assert policy.is_confident(FrameSignals(1.0, 0.9, motion=0.01))
    assert not policy.is_confident(None)


def test_recent_slots_take_the_frame_before_and_the_nearest_confident_ones():
    policy = SamuraiPolicy()
    memories = {t: (GOOD if t % 3 == 0 else BAD) for t in range(1, 40)}
    plan = policy.select(WINDOW, 40, False, [0], memories)
    # frame 39 is not confident, yet it takes the nearest slot; then 39 -> 36, 33, ... by confidence.
    assert recent(plan) == [(39, 6), (36, 5), (33, 4), (30, 3), (27, 2), (24, 1)]
    assert (0, 0, True) in plan.spatial
    # Pointers stay SAM2's: the 15 frames before, whatever their confidence.
    assert [t for t, _, p in plan.pointers if not p] == list(range(39, 24, -1))
    # Reverse tracking mirrors it.
    memories = {t: (GOOD if t % 3 == 0 else BAD) for t in range(61, 99)}
    plan = policy.select(WINDOW, 60, True, [99], memories)
    assert recent(plan) == [(61, 6), (63, 5), (66, 4), (69, 3), (72, 2), (75, 1)]


def test_the_frame_after_a_prompt_is_only_taken_as_the_frame_before():
    memories = dict.fromkeys(range(1, 4), GOOD)
    assert recent(SamuraiPolicy().select(WINDOW, 4, False, [0], memories)) == [(3, 6), (2, 5)]
    assert recent(SamuraiPolicy().select(WINDOW, 2, False, [0], memories)) == [(1, 6)]
    with_it = SamuraiPolicy(skip_after_prompt=False).select(WINDOW, 4, False, [0], memories)
    assert recent(with_it) == [(3, 6), (2, 5), (1, 4)]


def test_samurai_policy_has_the_window_property():
    rng = np.random.default_rng(1)
    for _ in range(4):
        memories = {t: FrameSignals(1.0, float(rng.uniform(0.3, 0.9))) for t in range(80) if rng.random() < 0.7}
        assert_window_property(SamuraiPolicy(), WINDOW, memories, range(0, 80, 4), range(80))


def test_eviction_keeps_what_selection_reaches_and_stays_bounded():
    policy = SamuraiPolicy()
    window = MemoryWindow(7, 1, 16, num_frames=300)
    banks = prompted_banks(window, policy)
    rng = np.random.default_rng(2)
    for t in range(1, 290):
        banks[0].evict(t, False)
        assert banks[0].plan(1, t, False) == banks[1].plan(1, t, False), t
        if t == 200:  # 80 frames into a bad spell: the confident memories from before it remain
            assert [f for f, _ in recent(banks[0].plan(1, t, False))][1:] == sorted(
                (f for f in range(100, 121) if banks[1].objects[1].tracked[f].signals.iou > 0.5), reverse=True
            )[:5]
        iou = 0.2 if 120 < t < 250 else float(rng.uniform(0.3, 0.95))
        for bank in banks:
            admit_output(bank, t, FrameSignals(1.0, iou))
        assert len(banks[0].objects[1].tracked) <= 2 * (6 + 15) + 1


def candidates(*boxes_and_ious) -> MaskCandidates:
    return MaskCandidates(tuple(b for b, _ in boxes_and_ious), tuple(i for _, i in boxes_and_ious))


def test_mask_choice_follows_the_filter_once_the_track_is_stable():
    policy = SamuraiPolicy(stable_frames=3, motion_weight=0.25)
    state = None
    for i in range(6):  # a box moving right by 4 pixels a frame; the first candidate follows it
        moving = (10 + 4 * i, 10, 40 + 4 * i, 40)
        choice = policy.choose_mask(candidates((moving, 0.7), ((60, 60, 90, 90), 0.6), (None, 0.1)), state)
        assert choice.index == 0
        assert (choice.motion is None) == (i < 3), "motion scores start once the track is stable"
        state = choice.state
    assert choice.motion > 0.8
    # Now the box we followed scores slightly lower than one far away: motion keeps us on it.
    moving = (10 + 4 * 6, 10, 40 + 4 * 6, 40)
    choice = policy.choose_mask(candidates((moving, 0.62), ((60, 60, 90, 90), 0.66), (None, 0.1)), state)
    assert choice.index == 0 and choice.motion > 0.8
    # SAM2's rule (and SAMURAI before the track is stable) takes the highest predicted IoU.
    fresh = policy.choose_mask(candidates((moving, 0.62), ((60, 60, 90, 90), 0.66), (None, 0.1)), None)
    assert fresh.index == 1 and fresh.state[0] == 1.0
    # A chosen mask of low predicted IoU makes the track unstable again.
    low = policy.choose_mask(candidates((moving, 0.2), ((60, 60, 90, 90), 0.1), (None, 0.05)), choice.state)
    assert low.state[0] == 0.0


def test_motion_weight_depends_on_the_model_size_as_the_authors_set_it():
    assert get_policy("samurai").for_model("sam2.1-large").motion_weight == 0.15
    assert get_policy("samurai").for_model("sam2.1-base-plus").motion_weight == 0.25
    assert SamuraiPolicy(motion_weight=0.5).for_model("sam2.1-large").motion_weight == 0.5
    with pytest.raises(ConfigError, match="motion_weight"):
        SamuraiPolicy(motion_weight=2.0)


def test_candidate_boxes_are_inclusive_pixel_bounds():
    masks = torch.zeros(1, 3, 20, 30, dtype=torch.bool)
    masks[0, 0, 3:7, 5:12] = True
    masks[0, 2, 19, 29] = True
    assert candidate_boxes(masks) == [((5, 3, 11, 6), None, (29, 19, 29, 19))]


# ------------------------------------------------------------------------------------------ sessions
SIZE = 256


@pytest.fixture(scope="module")
def two_disks(tmp_path_factory):
    root = tmp_path_factory.mktemp("samurai-session")
    masks = disk_video(root / "frames", 14, second=True)
    path = samurai_checkpoint(root / "ck.pt", root / "frames", masks[0][1], SIZE)
    model = load_model(path, config=dataclasses.replace(get_config("sam2.1-tiny"), image_size=SIZE))
    return model, root / "frames", masks


CONFIG = InferenceConfig(memory_policy=SamuraiPolicy(stable_frames=4))


def _run(model, frames, masks, obj_ids, config=CONFIG, prompts=None, **kwargs):
    """A session with `obj_ids` prompted by their masks (on frame 0, or on `prompts[obj_id]`),
    propagated forward from frame 0."""
    session = VideoSession(model, frames, config)
    for obj_id in obj_ids:
        t = (prompts or {}).get(obj_id, 0)
        session.add_mask(t, obj_id, masks[t][obj_id])
    return session, {r.frame_idx: r for r in session.propagate(start=0, **kwargs)}


def test_two_objects_together_equal_one_object_runs(two_disks):
    """Object 2 is prompted later (frame 6): its filter restarts there while object 1's runs on, so
    a filter shared between objects (as in the authors' code, which reads the first object) would
    show; each object tracked together with the other equals its run alone."""
    model, frames, masks = two_disks
    prompts = {2: 6}
    together, both = _run(model, frames, masks, [1, 2], prompts=prompts)
    motion_frames = 0
    for i, obj_id in enumerate([1, 2]):
        alone, single = _run(model, frames, masks, [obj_id], prompts=prompts)
        for t, result in single.items():
            assert (result.mask_logits[0] - both[t].mask_logits[i]).abs().max() <= 1e-4, (obj_id, t)
            a, b = alone.bank.objects[obj_id].tracked.get(t), together.bank.objects[obj_id].tracked.get(t)
            if a is None:  # the object's prompt frame
                assert b is None and t == prompts.get(obj_id, 0)
                continue
            assert abs(a.signals.iou - b.signals.iou) <= 1e-5
            assert (a.signals.motion is None) == (b.signals.motion is None)
            np.testing.assert_allclose(a.track_state, b.track_state, rtol=1e-6, atol=1e-4)
            motion_frames += a.signals.motion is not None
    assert motion_frames >= 2 * 6, "both filters must have become stable"
    first, second = (together.bank.objects[o].tracked[8] for o in (1, 2))
    assert first.signals.motion is not None and second.signals.motion is None
    assert first.track_state[0] == 4.0 and second.track_state[0] == 2.0, "each object counts its own stable frames"


def test_resume_is_exact_with_samurai(two_disks, tmp_path):
    model, frames, masks = two_disks
    _, expected = _run(model, frames, masks, [1, 2])
    first, _ = _run(model, frames, masks, [1, 2], end=7)
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = VideoSession(model, frames, CONFIG)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert resumed.bank.objects[1].tracked[7].track_state is not None
    for r in resumed.propagate(start=8):
        assert torch.equal(r.mask_logits, expected[r.frame_idx].mask_logits), r.frame_idx


def test_backward_pass_and_a_click_correction_restart_the_filter(two_disks):
    model, frames, masks = two_disks
    session = VideoSession(model, frames, CONFIG)
    session.add_mask(13, 1, masks[13][1])
    results = list(session.propagate(direction="backward"))
    assert [r.frame_idx for r in results] == list(range(13, -1, -1))
    tracked = session.bank.objects[1].tracked
    assert tracked[12].track_state[0] == 1.0, "the filter starts on the first frame after the prompt"
    assert sum(tracked[t].signals.motion is not None for t in range(0, 13)) >= 6
    ys, xs = np.nonzero(masks[5][1])
    session.add_points(5, 1, [[float(xs.mean()), float(ys.mean())]], [1])
    assert session.bank.objects[1].pending[5].track_state[0] == 1.0, "a click starts a new track"


@pytest.mark.parametrize("name", ["samurai", "dam4sam"])
def test_featmatch_refuses_policies_that_choose_masks(name):
    from maskvos.backends.featmatch import FeatMatchModel, FeatMatchSession

    with pytest.raises(ConfigError, match=rf"^The featmatch backend cannot run the {name} memory policy[^.]*\.$"):
        FeatMatchSession(FeatMatchModel(), np.zeros((3, 64, 64, 3), np.uint8), InferenceConfig(memory_policy=name))
