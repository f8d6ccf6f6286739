"""The `sam2long` policy: survivor selection on constructed scores (cumulative scores that cross,
duplicates while certain, distinct hypotheses while uncertain), decisions by agreement and by the
lag bound, memory selection and key scaling, and sessions: streaming within the lag, two objects
together equal to one-object runs, exact resume between undecided frames, exact rebuilds."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from maskvos.checkpoints import load_model
from maskvos.errors import ConfigError
from maskvos.inference.config import InferenceConfig
from maskvos.inference.memory_bank import MemoryEntry
from maskvos.inference.pathways import Pathway, PathwayTree, survivors
from maskvos.inference.policies import FrameSignals, MemoryWindow, SAM2LongPolicy, get_policy
from maskvos.inference.session import VideoSession
from maskvos.model.config import get_config

from parity_tools import disk_video, samurai_checkpoint
from policy_tools import assert_window_property

WINDOW = MemoryWindow(num_maskmem=7, stride=1, max_pointers=16, num_frames=200)
POLICY = SAM2LongPolicy()


def tree(*scores: float) -> PathwayTree:
    t = PathwayTree([Pathway(s) for s in scores])
    t.fresh = False
    return t


# ------------------------------------------------------------------------------------------ survivors
def test_the_best_cumulative_scores_survive_and_can_overtake():
    # Pathway 0 leads (0.0 vs log 0.5); on this frame its candidates are poor, pathway 1's good.
    t = tree(0.0, math.log(0.5), math.log(0.25))
    ious = {0: [0.2, 0.1, 0.05], 1: [0.9, 0.6, 0.3], 2: [0.9, 0.2, 0.1]}
    scores = {0: 5.0, 1: 5.0, 2: 5.0}
    kept = survivors(POLICY, t, ious, scores)
    assert [(i, j) for _, i, j in kept] == [(1, 0), (1, 1), (2, 0)]
    assert kept[0][0] == pytest.approx(math.log(0.5) + math.log(0.9 + 1e-5))


def test_identical_pathways_stay_copies_of_the_best_while_certain():
    t = tree(-1.0, -1.0, -1.0)
    ious = {i: [0.5, 0.8, 0.3] for i in range(3)}
    kept = survivors(POLICY, t, ious, dict.fromkeys(range(3), 4.0))
    assert [(i, j) for _, i, j in kept] == [(0, 1), (1, 1), (2, 1)]


def test_uncertain_pathways_keep_distinct_hypotheses():
    t = tree(-1.0, -1.0, -1.0)
    ious = {i: [0.5, 0.8, 0.3] for i in range(3)}
    kept = survivors(POLICY, t, ious, {0: 1.5, 1: -1.0, 2: 0.5})  # |score| <= 2 everywhere
    # Distinct signed IoUs: 0.8 (pathway 0), -0.8 (pathway 1, absent), 0.5 (pathway 0).
    assert [(i, j) for _, i, j in kept] == [(0, 1), (1, 1), (0, 0)]
    # Too few distinct values: each pathway not represented adds its best candidate.
    same = {i: [0.5, 0.5, 0.5] for i in range(3)}
    kept = survivors(POLICY, t, same, dict.fromkeys(range(3), 1.0))
    assert [(i, j) for _, i, j in kept] == [(0, 0), (1, 0), (2, 0)]


def test_the_first_frame_of_a_tree_keeps_the_best_candidate_only():
    t = PathwayTree.start(3)
    kept = survivors(POLICY, t, {i: [0.3, 0.9, 0.5] for i in range(3)}, dict.fromkeys(range(3), 0.1))
    assert [(i, j) for _, i, j in kept] == [(0, 1)] * 3


# ------------------------------------------------------------------------------------------ decisions
def entry() -> MemoryEntry:
    return MemoryEntry(torch.zeros(1, 1, 4, 4), torch.zeros(1, 8), torch.ones(1, 1), signals=FrameSignals(1.0, 0.9))


def test_frames_are_decided_by_agreement_or_by_the_lag_bound():
    shared, a, b = entry(), entry(), entry()
    t = PathwayTree([Pathway(0.0, {5: shared, 6: a}), Pathway(-1.0, {5: shared, 6: b}), Pathway(-2.0, {5: shared, 6: a})])
    t.settle(7, False, lag=4)
    assert t.decided == {5: shared} and t.undecided() == [6], "frame 5 agreed; frame 6 still open"
    t.settle(9, False, lag=4)
    assert 6 not in t.decided
    t.settle(10, False, lag=4)
    assert t.decided[6] is a and t.forced == 1 and t.agreed == 1
    assert all(p.score == 0.0 or p.score == -2.0 for p in t.pathways), "the disagreeing pathway became a copy of the best"


# ------------------------------------------------------------------------------------------ memory
def test_memory_takes_the_frame_before_and_admitted_frames_with_rank_pointers():
    sig = {t: FrameSignals(1.0, 0.05 if t % 2 else 0.5) for t in range(1, 40)}
    plan = POLICY.select(WINDOW, 40, False, [0], sig)
    assert [(t, p) for t, p, pr in plan.spatial if not pr] == [(39, 6), (38, 5), (36, 4), (34, 3), (32, 2), (30, 1)]
    recent = [(t, d) for t, d, pr in plan.pointers if not pr]
    assert recent[:3] == [(39, 1), (38, 2), (36, 3)] and len(recent) == 15
    assert plan.pointers[0] == (0, 40, True)
    absent = {t: FrameSignals(-1.0, 0.9) for t in range(1, 40)}
    assert [t for t, _, pr in POLICY.select(WINDOW, 40, False, [0], absent).spatial if not pr] == [39]


def test_sam2long_policy_has_the_window_property():
    rng = np.random.default_rng(7)
    for _ in range(4):
        memories = {t: FrameSignals(float(rng.normal(1, 2)), float(rng.uniform(0, 0.3))) for t in range(80) if rng.random() < 0.8}
        assert_window_property(POLICY, WINDOW, memories, range(0, 80, 4), range(80))


def test_keys_are_scaled_by_rank_of_object_score():
    frames, pointers = POLICY.memory_key_scales([10.0, -3.0, 2.0], [10.0, 1.0])
    assert frames == pytest.approx([1.05, 0.95, 1.0]) and pointers == pytest.approx([1.05, 0.95])
    assert POLICY.memory_key_scales([10.0], [10.0]) is None, "no scaling with one memory frame"


def test_key_scaling_reaches_memory_attention():
    from maskvos.model.sam2 import MemoryContext, MemoryFrame

    from model_tools import tiny_sam2

    model = tiny_sam2()
    feats = model.encode_image(torch.rand(1, 3, 64, 64))
    mem = torch.randn(1, model.config.mem_dim, *feats.feats.shape[-2:])
    pos = torch.randn_like(mem)
    plain = MemoryContext([MemoryFrame(mem, pos, 0), MemoryFrame(mem * 0.5, pos, 6)])
    ones = MemoryContext([MemoryFrame(mem, pos, 0, torch.ones(1)), MemoryFrame(mem * 0.5, pos, 6, torch.ones(1))])
    scaled = MemoryContext([MemoryFrame(mem, pos, 0, torch.tensor([1.05])), MemoryFrame(mem * 0.5, pos, 6, torch.tensor([0.95]))])
    with torch.inference_mode():
        a, b, c = (model.condition_on_memory(feats, m) for m in (plain, ones, scaled))
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-4


def test_bad_settings_are_refused():
    assert get_policy("sam2long") == SAM2LongPolicy()
    with pytest.raises(ConfigError, match=r"^SAM2Long pathway lag 0 is not supported; use 1 or more frames\.$"):
        SAM2LongPolicy(lag=0)


# ------------------------------------------------------------------------------------------ sessions
@pytest.fixture(scope="module")
def two_disks(tmp_path_factory):
    root = tmp_path_factory.mktemp("sam2long")
    masks = disk_video(root / "frames", 20, second=True)
    path = samurai_checkpoint(root / "ck.pt", root / "frames", masks[0][1], 256)
    model = load_model(path, config=dataclasses.replace(get_config("sam2.1-tiny"), image_size=256))
    return model, root / "frames", masks


#: Random weights give object scores far from 0: with this threshold every frame is uncertain, so
#: the pathways branch and disagree.
BRANCHING = SAM2LongPolicy(uncertainty=100.0, lag=4)


def _session(model, frames, masks, obj_ids, policy=BRANCHING, **config):
    session = VideoSession(model, frames, InferenceConfig(memory_policy=policy, **config))
    for obj_id in obj_ids:
        session.add_mask(0, obj_id, masks[0][obj_id])
    return session


def test_streaming_stays_within_the_lag_and_forces_decisions(two_disks):
    model, frames, masks = two_disks
    session = _session(model, frames, masks, [1, 2])
    yielded, worst_wait = [], 0
    for r in session.propagate():
        yielded.append(r.frame_idx)
        state = session._pathway_pass
        if state is not None:
            worst_wait = max(worst_wait, state["last"] - r.frame_idx)
    assert yielded == list(range(20))
    assert 1 <= worst_wait <= BRANCHING.lag, worst_wait
    assert session.pathway_stats["forced"] > 0 and session.pathway_stats["agreed"] > 0, session.pathway_stats
    certain = _session(model, frames, masks, [1, 2], policy=SAM2LongPolicy())
    list(certain.propagate())
    assert certain.pathway_stats["forced"] == 0, "certain objects keep identical pathways: no decision is forced"


def test_two_objects_together_equal_one_object_runs(two_disks):
    model, frames, masks = two_disks
    both = {r.frame_idx: r for r in _session(model, frames, masks, [1, 2]).propagate()}
    for i, obj_id in enumerate([1, 2]):
        for r in _session(model, frames, masks, [obj_id]).propagate():
            assert (r.mask_logits[0] - both[r.frame_idx].mask_logits[i]).abs().max() <= 1e-4, (obj_id, r.frame_idx)


def test_resume_between_undecided_frames_is_exact(two_disks, tmp_path):
    model, frames, masks = two_disks
    expected = {r.frame_idx: r.mask_logits for r in _session(model, frames, masks, [1, 2]).propagate()}
    first = _session(model, frames, masks, [1, 2])
    for r in first.propagate():
        if r.frame_idx == 9:
            break
    assert first._pathway_pass is not None and first._pathway_pass["last"] > 9, "the test needs undecided frames"
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = VideoSession(model, frames, InferenceConfig(memory_policy=BRANCHING))
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    got = [r.frame_idx for r in resumed.propagate(start=10)]
    assert got == list(range(10, 20))
    again = VideoSession(model, frames, InferenceConfig(memory_policy=BRANCHING))
    again.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    for r in again.propagate(start=10):
        assert torch.equal(r.mask_logits, expected[r.frame_idx]), r.frame_idx


def test_a_correction_after_eviction_rebuilds_the_tree_s_choices_exactly(tmp_path):
    masks = disk_video(tmp_path / "frames", 44, second=True)
    path = samurai_checkpoint(tmp_path / "ck.pt", tmp_path / "frames", masks[0][2], 128)
    model = load_model(path, config=dataclasses.replace(get_config("sam2.1-tiny"), image_size=128))
    frames = tmp_path / "frames"
    evicting = _session(model, frames, masks, [2])
    keeping = _session(model, frames, masks, [2], keep_all_memories=True)
    for a, b in zip(evicting.propagate(), keeping.propagate(), strict=True):
        assert torch.equal(a.mask_logits, b.mask_logits)
    assert evicting.bank.num_entries() < 44
    k = 40
    assert evicting.bank.missing_context(2, k, False), "the correction must need evicted memories"
    assert evicting.pathway_stats["forced"] > 0
    ys, xs = np.nonzero(masks[k][2])
    point = [[float(xs.mean()), float(ys.mean())]]
    a = evicting.add_points(k, 2, point, [1])
    b = keeping.add_points(k, 2, point, [1])
    assert torch.equal(a.mask_logits, b.mask_logits), (a.mask_logits - b.mask_logits).abs().max()
    tracked = evicting.bank.objects[2].tracked
    assert all(e.signals.candidate is not None for e in tracked.values()), "a rebuilt memory keeps its candidate"
    for ra, rb in zip(evicting.propagate(), keeping.propagate(), strict=True):
        assert torch.equal(ra.mask_logits, rb.mask_logits), ra.frame_idx
