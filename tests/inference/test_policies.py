"""The memory-policy seam: `SAM2Policy` against SAM2's selection rules, eviction derived from selection,
a custom policy honoured by a session, policies by name, and the signals a policy is given."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from maskvos.errors import ConfigError
from maskvos.inference.config import InferenceConfig
from maskvos.inference.memory_bank import (
    MemoryBank,
    MemoryEntry,
    pointer_distances,
    recent_frame_slots,
    select_prompted_frames,
)
from maskvos.inference.policies import (
    POLICY_NAMES,
    ConfidentPolicy,
    FrameSignals,
    MemoryPlan,
    MemoryPolicy,
    MemoryWindow,
    SAM2Policy,
    SamuraiPolicy,
    get_policy,
)
from maskvos.inference.session import VideoSession
from maskvos.model.sam2 import SAM2Model

from model_tools import tiny_sam2
from policy_tools import assert_window_property

H, W = 72, 96


# ------------------------------------------------------------------------------------------ helpers
def old_plan(window: MemoryWindow, frame_idx: int, reverse: bool, prompted: list[int], tracked: set[int]) -> MemoryPlan:
    """`MemoryBank.plan` as it was before the policy seam, from the three rule functions."""
    selected, unselected = select_prompted_frames(frame_idx, sorted(prompted), window.max_prompted_frames)
    spatial = [(t, 0, True) for t in selected]
    for t_pos, t in recent_frame_slots(frame_idx, window.num_maskmem, window.stride, reverse):
        if t in tracked:
            spatial.append((t, t_pos, False))
        elif t in unselected:
            spatial.append((t, t_pos, True))
    prompted_ptrs, recent_ptrs, max_distance = pointer_distances(
        frame_idx, selected, window.num_frames, max_pointers=window.max_pointers, reverse=reverse, signed=window.signed_pointers
    )
    pointers = [(t, d, True) for t, d in prompted_ptrs]
    for t, d in recent_ptrs:
        if t in tracked:
            pointers.append((t, d, False))
        elif t in unselected:
            pointers.append((t, d, True))
    return MemoryPlan(tuple(spatial), tuple(pointers), max_distance)


def fake_entry(iou: float = 0.5) -> MemoryEntry:
    return MemoryEntry(torch.zeros(1, 1, 4, 4), torch.zeros(1, 8), torch.ones(1, 1), signals=FrameSignals(1.0, iou))


def encode(rows: list[int]) -> list[torch.Tensor]:
    return [torch.zeros(1, 4, 1, 1) for _ in rows]


def bank_with_prompt(window: MemoryWindow, policy: MemoryPolicy | None = None, keep_all: bool = False, prompt: int = 0) -> MemoryBank:
    bank = MemoryBank(window, policy, keep_all=keep_all)
    bank.stage_prompt(1, prompt, fake_entry())
    bank.promote(1, prompt, torch.zeros(1, 4, 1, 1))
    return bank


@dataclass(frozen=True)
class MinIoU(SAM2Policy):
    """Admits a tracked frame only where the decoder predicts an IoU of at least `threshold`."""

    threshold: float = 0.5

    def admits(self, signals: FrameSignals) -> bool:
        return signals.iou is not None and signals.iou >= self.threshold


@dataclass(frozen=True)
class Recording(SAM2Policy):
    """SAM2's rules, remembering every signal it was asked about."""

    seen: list = field(default_factory=list, compare=False, repr=False)

    def admits(self, signals: FrameSignals) -> bool:
        self.seen.append(signals)
        return True


@pytest.fixture(scope="module")
def model() -> SAM2Model:
    return tiny_sam2()


def frames(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    video = (rng.random((n, H, W, 3)) * 255).astype(np.uint8)
    for i in range(n):
        video[i, 20:50, 10 + 2 * i % 50 : 40 + 2 * i % 50] = [230, 30, 30]
    return video


def square() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[20:50, 10:40] = True
    return m


# ------------------------------------------------------------------------------------------ selection
@pytest.mark.parametrize("stride", [1, 3, 5])
@pytest.mark.parametrize("max_prompted", [-1, 2, 3])
@pytest.mark.parametrize("num_frames", [40, None])
def test_sam2_policy_selects_as_the_rule_functions(stride, max_prompted, num_frames):
    rng = np.random.default_rng(stride * 10 + max_prompted)
    policy = SAM2Policy()
    for signed in (True, False):
        window = MemoryWindow(7, stride, 16, max_prompted, signed, num_frames)
        for _ in range(6):
            prompted = sorted(rng.choice(40, size=rng.integers(1, 6), replace=False).tolist())
            tracked = {t for t in range(40) if t not in prompted and rng.random() < 0.7}
            for frame_idx in range(40):
                for reverse in (False, True):
                    got = policy.select(window, frame_idx, reverse, prompted, tracked)
                    assert got == old_plan(window, frame_idx, reverse, prompted, tracked), (frame_idx, reverse, prompted)


@pytest.mark.parametrize("stride", [1, 2, 3, 5])
@pytest.mark.parametrize("max_pointers", [4, 16])
def test_sam2_policy_has_the_window_property(stride, max_pointers):
    """Frames further along a pass reach, before the pass's start, only what the start frame reaches."""
    window = MemoryWindow(7, stride, max_pointers, num_frames=80)
    policy = SAM2Policy()
    everything = set(range(80))
    for k in range(80):
        for reverse in (False, True):
            at_start = policy.reach(window, k, reverse, [], everything)
            step = -1 if reverse else 1
            for f in range(k + step, k + 40 * step, step):
                if not 0 <= f < 80:
                    break
                before = {t for t in policy.reach(window, f, reverse, [], everything) if (t > k if reverse else t < k)}
                assert before <= at_start, (k, f, reverse, before - at_start)


def test_derived_retention_cannot_be_overridden():
    with pytest.raises(TypeError, match="retention derives from select"):

        @dataclass(frozen=True)
        class KeepsMore(SAM2Policy):
            def retained(self, *args, **kwargs):
                return set()


# ------------------------------------------------------------------------------------------ eviction
@pytest.mark.parametrize("stride", [1, 3])
@pytest.mark.parametrize("reverse", [False, True])
def test_eviction_keeps_exactly_what_selection_can_reach(stride, reverse):
    window = MemoryWindow(7, stride, 16, num_frames=80)
    prompt = 79 if reverse else 0
    bank = bank_with_prompt(window, prompt=prompt)
    full = bank_with_prompt(window, keep_all=True, prompt=prompt)
    order = range(78, 9, -1) if reverse else range(1, 70)
    policy = SAM2Policy()
    anchored = policy.reach(window, prompt, False, [prompt], set(range(80))) | policy.reach(
        window, prompt, True, [prompt], set(range(80))
    )
    for t in order:
        bank.evict(t, reverse)
        # Eviction never takes what selection would use: the plan equals the one of a bank that keeps all.
        assert bank.plan(1, t, reverse) == full.plan(1, t, reverse), t
        stored = set(bank.objects[1].tracked)
        assert stored == set(bank.plan(1, t, reverse).tracked_frames) | (anchored & stored), t
        for b in (bank, full):
            b.admit(t, reverse, [(1, fake_entry())], encode)
    nxt = order[-1] - 1 if reverse else order[-1] + 1
    bank.evict(nxt, reverse)
    far = {t for t in bank.objects[1].tracked if abs(t - prompt) > window.reach}
    assert far and far == set(bank.plan(1, nxt, reverse).tracked_frames)
    assert set(bank.objects[1].evicted) == set(order) - set(bank.objects[1].tracked)
    assert not bank.missing(1, nxt, reverse)
    assert bank.missing(1, order[len(order) // 2], reverse), "frames in the middle were evicted"


def test_outputs_not_admitted_are_never_selected_and_not_taken_for_evicted():
    """Odd frames get a low IoU and are not admitted: they are kept as outputs where a memory would be kept,
    never selected, and dropping them records no eviction."""
    window = MemoryWindow(7, 1, 16, num_frames=60)
    bank = bank_with_prompt(window, MinIoU(threshold=0.5))
    for t in range(1, 50):
        bank.evict(t, False)
        plan = bank.plan(1, t, False)
        assert all(bank.objects[1].tracked[s].is_memory for s in plan.tracked_frames)
        assert bank.admit(t, False, [(1, fake_entry(0.9 if t % 2 == 0 else 0.1))], encode) == [t % 2 == 0]
    mem = bank.objects[1]
    assert all(e.mem_feats is None and not e.is_memory for t, e in mem.tracked.items() if t % 2)
    assert any(t % 2 for t in mem.tracked), "outputs not admitted are kept near the end of the pass"
    assert mem.evicted and all(t % 2 == 0 for t in mem.evicted)
    # Frame 49's own neighbourhood holds every memory it selects: nothing is missing there.
    assert not bank.missing(1, 49, False)


# ------------------------------------------------------------------------------------------ configuration
def test_policies_by_name_and_as_objects():
    assert POLICY_NAMES == ("sam2", "confident", "confident-strict", "samurai", "sam2long", "dam4sam")
    assert get_policy("samurai") == SamuraiPolicy()
    assert get_policy("confident") == ConfidentPolicy()
    assert get_policy("confident-strict").max_shrink is None and ConfidentPolicy().max_shrink == 0.5
    assert get_policy("sam2") == SAM2Policy()
    config = InferenceConfig()
    assert config.memory_policy == SAM2Policy() and "memory_policy=SAM2Policy()" in repr(config)
    custom = InferenceConfig(memory_policy=MinIoU(0.7))
    assert custom.memory_policy is not None and "MinIoU(threshold=0.7)" in repr(custom)
    assert dataclasses.replace(custom, memory_stride=2).memory_policy == MinIoU(0.7)
    assert InferenceConfig(memory_policy="sam2") == InferenceConfig()


@pytest.mark.parametrize(
    "policy, message",
    [
        ("nope", "Memory policy 'nope' is unknown; use one of sam2, confident."),
        (3, "is neither a policy name nor a MemoryPolicy"),
    ],
)
def test_bad_policies_raise_one_sentence(policy, message):
    with pytest.raises(ConfigError, match=message) as info:
        InferenceConfig(memory_policy=policy)
    assert str(info.value).count(". ") == 0 and str(info.value).endswith(".")


def test_a_policy_must_be_a_frozen_dataclass():
    class Loose(MemoryPolicy):
        def select(self, window, frame_idx, reverse, prompted, memories):
            return SAM2Policy().select(window, frame_idx, reverse, prompted, memories)

    @dataclass
    class Mutable(Loose):
        threshold: float = 0.5

    for policy in (Loose(), Mutable()):
        with pytest.raises(ConfigError, match="is not a frozen dataclass"):
            InferenceConfig(memory_policy=policy)


# ------------------------------------------------------------------------------------------ in a session
def test_signals_carry_the_iou_the_decoder_predicted(model, monkeypatch):
    policy = Recording()
    session = VideoSession(model, frames(8), InferenceConfig(resolution=64, memory_policy=policy))
    outputs = []
    track = model.track_frame

    def spy(*args, **kwargs):
        out = track(*args, **kwargs)
        if kwargs.get("memory") is not None:
            outputs.append(out)
        return out

    monkeypatch.setattr(model, "track_frame", spy)
    session.add_mask(0, 1, square())
    list(session.propagate())
    assert len(outputs) == len(policy.seen) == 7
    for out, signals in zip(outputs, policy.seen, strict=True):
        # The candidate the decoder returned, found by comparing masks, and its predicted IoU.
        chosen = [j for j in range(out.multimask_logits.shape[1]) if torch.equal(out.multimask_logits[0, j], out.low_res_logits[0, 0])]
        assert chosen and signals.iou == pytest.approx(out.iou_scores[0, chosen[0]].item(), abs=1e-7)
        assert signals.object_score == pytest.approx(out.object_score_logits[0, 0].item(), abs=1e-6)
    assert len({round(s.iou, 6) for s in policy.seen}) > 1, "the IoUs should vary between frames"
    stored = session.bank.objects[1].tracked
    assert stored[7].signals == policy.seen[-1]


def test_a_custom_policy_is_honoured_by_the_session(model, monkeypatch):
    video = frames(24)
    probe = Recording()
    base = VideoSession(model, video, InferenceConfig(resolution=64, memory_policy=probe))
    base.add_mask(0, 1, square())
    baseline = [r.mask_logits for r in base.propagate()]
    threshold = float(np.median([s.iou for s in probe.seen]))

    session = VideoSession(model, video, InferenceConfig(resolution=64, memory_policy=MinIoU(threshold)))
    plans, admitted = [], {}
    plan, admit = session.bank.plan, session.bank.admit

    def spy_plan(obj_id, frame_idx, reverse, view=None):
        result = plan(obj_id, frame_idx, reverse, view)
        plans.append(result)
        return result

    def spy_admit(frame_idx, reverse, outputs, encode, is_rebuild=False):
        flags = admit(frame_idx, reverse, outputs, encode, is_rebuild)
        admitted[frame_idx] = flags[0]
        return flags

    monkeypatch.setattr(session.bank, "plan", spy_plan)
    monkeypatch.setattr(session.bank, "admit", spy_admit)
    session.add_mask(0, 1, square())
    results = list(session.propagate())
    assert [r.frame_idx for r in results] == list(range(24))
    not_admitted = {t for t, ok in admitted.items() if not ok}
    assert not_admitted and len(not_admitted) < 23, "the threshold should split the frames"
    for entry in session.bank.objects[1].tracked.values():
        assert entry.is_memory == (entry.signals.iou >= threshold) and (entry.mem_feats is None) != entry.is_memory
    assert all(not (p.tracked_frames & not_admitted) for p in plans), "a frame not admitted was selected"
    assert any(not torch.equal(a, r.mask_logits) for a, r in zip(baseline, results)), "the policy changed nothing"

    # A correction on a kept frame that was not admitted: its output is the previous mask, nothing is rebuilt.
    k = max(t for t in not_admitted if t in session.bank.objects[1].tracked)
    previous = session.bank.latest(1, k)
    assert previous is not None and not previous.is_memory
    rebuilds = []
    rebuild = session._rebuild
    monkeypatch.setattr(session, "_rebuild", lambda *a: rebuilds.append(a) or rebuild(*a))
    encoded = session.frames.num_encoded
    session.add_points(k, 1, [[30, 30]], [1])
    assert rebuilds == [] and session.frames.num_encoded - encoded <= 1
    assert [r.frame_idx for r in session.propagate()] == list(range(k, 24))


def test_saved_state_keeps_admission_and_evictions(model, tmp_path):
    video = frames(50)
    config = InferenceConfig(resolution=64, memory_policy=MinIoU(0.513))
    full = VideoSession(model, video, config)
    full.add_mask(0, 1, square())
    expected = [r.mask_logits for r in full.propagate()]
    first = VideoSession(model, video, config)
    first.add_mask(0, 1, square())
    for _ in first.propagate(end=40):
        pass
    assert first.bank.objects[1].evicted, "the test needs evicted memories"
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = VideoSession(model, video, config)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    a, b = first.bank.objects[1], resumed.bank.objects[1]
    assert a.evicted == b.evicted and a.directions == b.directions and first.bank.clock == resumed.bank.clock
    def summary(m):
        return {t: (e.is_memory, e.signals, e.stamp) for t, e in m.tracked.items()}

    assert summary(a) == summary(b)
    assert any(not e.is_memory for e in b.tracked.values())
    rest = list(resumed.propagate(start=41))
    assert [r.frame_idx for r in rest] == list(range(41, 50))
    for r in rest:
        assert torch.equal(r.mask_logits, expected[r.frame_idx])


# ------------------------------------------------------------------------------------------ confident
def test_confident_admission_rule():
    policy = ConfidentPolicy(min_object_score=0.0, min_iou=0.5, min_confidence=0.6)
    assert policy.admits(FrameSignals(2.0, iou=0.5))
    assert not policy.admits(FrameSignals(2.0, iou=0.49)), "a low predicted IoU stays out"
    assert not policy.admits(FrameSignals(0.0, iou=0.99)), "an object judged absent writes no memory"
    assert not policy.admits(FrameSignals(-3.0, confidence=0.9))
    assert policy.admits(FrameSignals(1.0, confidence=0.6)) and not policy.admits(FrameSignals(1.0, confidence=0.59))
    assert policy.admits(FrameSignals(0.1)), "signals an engine lacks do not count against a frame"
    with pytest.raises(ConfigError, match="scan 0 is not supported"):
        ConfidentPolicy(scan=0)
    with pytest.raises(ConfigError, match=r"max_shrink 0 is not supported; use None"):
        ConfidentPolicy(max_shrink=0)


def test_confident_presence_comes_back_on_a_rise_above_the_absent_floor():
    """A drop against the recent memories makes an object absent; once absent, a confidence
    `min_rise` above its absent floor makes it present again, though still below the old reference."""
    policy = ConfidentPolicy()
    assert not policy.present(FrameSignals(1.0, confidence=0.55, reference=0.8)), "0.55 < 0.75 x 0.8"
    assert not policy.present(FrameSignals(1.0, confidence=0.55, reference=0.8, absent_floor=0.52)), "rise 0.03 < 0.04"
    assert policy.present(FrameSignals(1.0, confidence=0.56, reference=0.8, absent_floor=0.515)), "rise 0.045"
    assert not policy.present(FrameSignals(1.0, confidence=0.29, reference=0.3, absent_floor=0.1)), "below min_confidence"
    assert not ConfidentPolicy(min_rise=0.1).present(FrameSignals(1.0, confidence=0.56, reference=0.8, absent_floor=0.5))


def test_confident_presence_holds_while_the_object_looks_like_its_recent_memories():
    """A drop against the prompt does not make an object absent while it still looks like itself
    on its recent memories (continuity >= min_continuity); without the rule (None) it does."""
    drop = dict(confidence=0.55, reference=0.8)
    policy = ConfidentPolicy(min_continuity=0.65)
    assert policy.present(FrameSignals(1.0, **drop, continuity=0.66))
    assert not policy.present(FrameSignals(1.0, **drop, continuity=0.64))
    assert not ConfidentPolicy().present(FrameSignals(1.0, **drop, continuity=0.9)), "off by default"
    assert policy.admits(FrameSignals(1.0, **drop, continuity=0.7)), "a present object's frame is admitted"
    assert not policy.present(FrameSignals(1.0, confidence=0.2, reference=0.3, continuity=0.9)), "min_confidence"


def test_confident_presence_holds_through_a_gradual_drift_that_keeps_the_area():
    """With max_shrink, a drop below min_relative x reference is a drift of the object's look (it
    stays present) when it was gradual (not below min_relative x its last few memories) and its area
    kept more than max_shrink x its recent area; a sudden drop or a shrunk area makes it absent, and
    an object already judged absent (no recent references) comes back only by the strict rules."""
    policy = ConfidentPolicy()
    drift = dict(confidence=0.55, reference=0.8, recent_reference=0.6, area_reference=100.0, continuity=0.7)
    assert policy.present(FrameSignals(1.0, **drift, area=60.0)), "gradual, area kept: a drift"
    assert not policy.present(FrameSignals(1.0, **drift, area=50.0)), "area halved: covered"
    assert not policy.present(FrameSignals(1.0, **{**drift, "recent_reference": 0.74}, area=90.0)), "0.55 < 0.75 x 0.74: sudden"
    assert policy.present(FrameSignals(1.0, **{**drift, "recent_reference": 0.73}, area=90.0))
    assert not policy.present(FrameSignals(1.0, confidence=0.55, reference=0.8, area=90.0)), "judged absent: strict"
    assert not ConfidentPolicy(max_shrink=None).present(FrameSignals(1.0, **drift, area=90.0)), "off: the drop rule alone"
    assert not policy.present(FrameSignals(1.0, **{**drift, "confidence": 0.29}, area=90.0)), "min_confidence"
    assert policy.admits(FrameSignals(1.0, **drift, area=60.0)), "a present object's frame is admitted"
    assert not policy.present(FrameSignals(1.0, **{**drift, "continuity": 0.59}, area=90.0)), "unlike its last frames"


@pytest.mark.parametrize("scan", [None, 15, 3])
def test_confident_selection_takes_the_most_recent_memories(scan):
    rng = np.random.default_rng(0 if scan is None else scan)
    policy = ConfidentPolicy(scan=scan)
    window = MemoryWindow(7, 1, 16, num_frames=80)
    for _ in range(20):
        memories = {t for t in range(80) if rng.random() < 0.4}
        for frame_idx in range(80):
            for reverse in (False, True):
                plan = policy.select(window, frame_idx, reverse, [0], memories)
                before = [t for t in memories if (t > frame_idx if reverse else t < frame_idx)]
                if scan is not None:
                    before = [t for t in before if abs(t - frame_idx) <= scan]
                want = sorted(before, key=lambda t: abs(t - frame_idx))[:6]
                recent = [(t, t_pos) for t, t_pos, is_prompted in plan.spatial if not is_prompted]
                assert recent == [(t, 6 - i) for i, t in enumerate(want)], (frame_idx, reverse)
                assert (0, 0, True) in plan.spatial, "the prompted frame always stays"
                assert all(t in memories for t, _, p in plan.pointers if not p)


@pytest.mark.parametrize("scan", [None, 15])
def test_confident_policy_has_the_window_property(scan):
    rng = np.random.default_rng(1)
    window = MemoryWindow(7, 1, 16, num_frames=80)
    policy = ConfidentPolicy(scan=scan)
    for _ in range(5):
        memories = {t for t in range(80) if rng.random() < 0.3}
        assert_window_property(policy, window, memories, range(0, 80, 3), range(80))


def test_confident_eviction_keeps_what_selection_reaches():
    """With frames left out of memory, eviction still never takes what a later frame selects: plans
    equal those of a bank that keeps everything, and the bank stays bounded."""
    window = MemoryWindow(7, 1, 16, num_frames=200)
    policy = ConfidentPolicy()
    bank = bank_with_prompt(window, policy)
    full = bank_with_prompt(window, policy, keep_all=True)
    rng = np.random.default_rng(3)
    for t in range(1, 190):
        bank.evict(t, False)
        assert bank.plan(1, t, False) == full.plan(1, t, False), t
        if t == 100:  # 60 frames into the bad spell: the last confident memories, from before it
            recent = [f for f, _, is_prompted in bank.plan(1, t, False).spatial if not is_prompted]
            assert len(recent) == 6 and all(f < 40 for f in recent), recent
        iou = 0.9 if (t < 40 or t > 120) and rng.random() < 0.8 else 0.1  # frames 40..120: a long bad spell
        for b in (bank, full):
            b.admit(t, False, [(1, fake_entry(iou))], encode)
        # Bounded, whatever the length: 6 spatial slots and 15 recent pointers of the next frame, as
        # many for a pass starting at the prompt (either direction), and the frame just admitted.
        assert sum(e.is_memory for e in bank.objects[1].tracked.values()) <= 2 * (6 + 15) + 1


def _absent_after_prompt(model, policy, video):
    session = VideoSession(model, video, InferenceConfig(resolution=64, memory_policy=policy))
    session.add_mask(0, 1, square())
    head = model.sam_mask_decoder.pred_obj_score_head.layers[2].bias
    saved = head.detach().clone()
    with torch.no_grad():
        head.fill_(-5.0)  # every tracked frame: the object is judged absent
    try:
        results = list(session.propagate())
    finally:
        with torch.no_grad():
            head.copy_(saved)
    return session, results


def test_an_absent_object_writes_no_memory(model):
    video = frames(10)
    session, results = _absent_after_prompt(model, ConfidentPolicy(), video)
    assert all(float(r.object_scores[0]) <= 0 for r in results[1:]), "the test needs an absent object"
    tracked = session.bank.objects[1].tracked
    assert tracked and all(not e.is_memory and e.mem_feats is None for e in tracked.values())
    for t in range(1, 10):
        assert not session.bank.plan(1, t, False).tracked_frames, "only the prompt is attended to"
    plain, _ = _absent_after_prompt(model, SAM2Policy(), video)
    assert any(e.is_memory for e in plain.bank.objects[1].tracked.values()), "SAM2's rule admits absent frames"


def test_confident_policy_leaves_low_iou_frames_out_and_resumes_exactly(model, tmp_path):
    video = frames(30)
    probe = Recording()
    base = VideoSession(model, video, InferenceConfig(resolution=64, memory_policy=probe))
    base.add_mask(0, 1, square())
    list(base.propagate())
    threshold = float(np.median([s.iou for s in probe.seen]))
    config = InferenceConfig(resolution=64, memory_policy=ConfidentPolicy(min_iou=threshold))
    full = VideoSession(model, video, config)
    full.add_mask(0, 1, square())
    expected = [r.mask_logits for r in full.propagate()]
    entries = full.bank.objects[1].tracked.values()
    assert any(not e.is_memory for e in entries) and any(e.is_memory for e in entries)
    for e in entries:
        assert e.is_memory == (e.signals.object_score > 0 and e.signals.iou >= threshold)
    first = VideoSession(model, video, config)
    first.add_mask(0, 1, square())
    for _ in first.propagate(end=17):
        pass
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = VideoSession(model, video, config)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    for r in resumed.propagate(start=18):
        assert torch.equal(r.mask_logits, expected[r.frame_idx]), r.frame_idx
