"""VideoSession behaviour: prompt types, directions, batching, eviction, streams and misuse.

A random-weight tiny model at small input sizes; parity with the reference is in test_session_parity.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maskvos.errors import ConfigError
from maskvos.inference.config import InferenceConfig
from maskvos.inference.frame_cache import FrameCache, sam2_encoder
from maskvos.inference.objects import UnknownObjectError
from maskvos.inference.prompts import PromptError
from maskvos.inference.session import FrameResult, SessionError, VideoSession
from maskvos.io.frames import FrameSourceError, open_source
from maskvos.model.sam2 import SAM2Model

from media_tools import numbered_frame, write_video
from model_tools import tiny_sam2

H, W = 72, 96


@pytest.fixture(scope="module")
def model() -> SAM2Model:
    return tiny_sam2()


def frames(n: int = 6) -> np.ndarray:
    rng = np.random.default_rng(0)
    video = (rng.random((n, H, W, 3)) * 255).astype(np.uint8)
    for i in range(n):
        video[i, 20:50, 10 + 4 * i : 40 + 4 * i] = [230, 30, 30]
    return video


def square(i: int = 0) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[20:50, 10 + 4 * i : 40 + 4 * i] = True
    return m


def test_mask_prompt_comes_back_unchanged_and_every_frame_is_yielded(model):
    session = VideoSession(model, frames())
    mask = square()
    mask[0, 0] = True  # a stray pixel the 128-pixel model input cannot represent
    first = session.add_mask(0, 1, mask)
    assert np.array_equal(first.masks[0].numpy(), mask)
    results = list(session.propagate())
    assert [r.frame_idx for r in results] == list(range(6))
    assert np.array_equal(results[0].masks[0].numpy(), mask)
    for r in results:
        assert r.mask_logits.shape == r.masks.shape == (1, H, W) and r.mask_logits.dtype == torch.float32
        assert r.obj_ids == [1] and r.object_scores.shape == (1,)
        assert torch.equal(r.masks, r.mask_logits > 0) or r.frame_idx == 0


def test_points_box_and_mask_plus_points(model):
    session = VideoSession(model, frames())
    by_points = session.add_points(1, 1, [[25, 35], [80, 10]], [1, 0])
    by_box = session.add_box(2, 2, [10, 20, 40, 50])
    session.add_mask(3, 3, square(3))
    refined = session.add_points(3, 3, [[60, 60]], [0])
    for r in (by_points, by_box, refined):
        assert r.masks.shape == (1, H, W)
    # Points on a mask-prompted frame refine the mask: the output is the model's, not the given mask.
    assert (3, 3) not in session._prompt_masks
    assert not np.array_equal(refined.masks[0].numpy(), square(3))
    results = list(session.propagate(start=0))
    assert [r.obj_ids for r in results] == [[1, 2, 3]] * 6


@pytest.mark.parametrize("memory_batch", [None, 8], ids=["attention-one-by-one", "attention-batched"])
def test_batching_objects_does_not_change_results(model, memory_batch):
    video = frames()
    together = VideoSession(model, video, InferenceConfig(memory_batch=memory_batch))
    together.add_mask(0, 1, square(0))
    together.add_box(0, 2, [50, 5, 90, 30])
    batched = list(together.propagate())
    for slot, obj_id in enumerate((1, 2)):
        alone = VideoSession(model, video)
        if obj_id == 1:
            alone.add_mask(0, 1, square(0))
        else:
            alone.add_box(0, 2, [50, 5, 90, 30])
        for b, a in zip(batched, alone.propagate(), strict=True):
            assert (b.mask_logits[slot] - a.mask_logits[0]).abs().max() < 1e-3
            assert torch.equal(b.masks[slot], a.masks[0])


def test_directions_and_default_starts(model):
    session = VideoSession(model, frames(8))
    session.add_mask(3, 1, square(3))
    assert [r.frame_idx for r in session.propagate(direction="both")] == [3, 4, 5, 6, 7, 2, 1, 0]
    # A correction on a tracked frame: the next propagation starts there, forward by default.
    session.add_points(5, 1, [[30, 30]], [1])
    assert [r.frame_idx for r in session.propagate()] == [5, 6, 7]
    # Backward by default starts at the latest new prompt; `end` is inclusive.
    session.add_points(6, 1, [[30, 30]], [1])
    assert [r.frame_idx for r in session.propagate(direction="backward", end=4)] == [6, 5, 4]
    assert [r.frame_idx for r in session.propagate(start=1, end=2)] == [1, 2]


def test_remove_object(model):
    session = VideoSession(model, frames())
    session.add_mask(0, 1, square())
    session.add_box(0, 7, [50, 5, 90, 30])
    session.remove_object(1)
    assert session.obj_ids == [7]
    assert all(r.obj_ids == [7] for r in session.propagate())
    with pytest.raises(UnknownObjectError, match="not tracked"):
        session.remove_object(1)


def test_memory_stays_bounded_over_a_long_stream(model):
    """A 120-frame stream (read once, length unknown): stored memories stop growing after the window."""
    video = frames(1)[0]

    def stream():
        for i in range(120):
            yield np.roll(video, i, axis=1)

    session = VideoSession(model, stream(), InferenceConfig(resolution=64))
    assert session.num_frames is None
    session.add_mask(0, 1, square())
    counts = [session.bank.num_entries() for _ in session.propagate()]
    assert len(counts) == 120
    bound = 1 + session.config.max_pointers + session.bank.anchor_window
    assert max(counts) <= bound, (max(counts), bound)
    assert counts[-1] == counts[60], "memory kept growing with the stream"
    assert len(session.frames._features) <= session.config.feature_cache
    with pytest.raises(SessionError, match="only be tracked forward"):
        session.propagate(start=50, direction="both")


def test_keep_all_memories_keeps_everything(model):
    session = VideoSession(model, frames(30), InferenceConfig(resolution=64, keep_all_memories=True))
    session.add_mask(0, 1, square())
    for _ in session.propagate():
        pass
    assert session.bank.num_entries() == 30


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda s: s.add_mask(0, 1, np.ones((10, 10), bool)), PromptError, "is 10x10 but the video is 96x72"),
        (lambda s: s.add_mask(0, 1, np.zeros((H, W), bool)), PromptError, "is empty"),
        (lambda s: s.add_mask(9, 1, square()), FrameSourceError, "outside the video"),
        (lambda s: s.add_points(0, 1, [[500, 10]], [1]), PromptError, "outside the 96x72 frame"),
        (lambda s: s.add_points(0, 1, [[5, 10]], [3]), PromptError, "label 3 is not valid"),
        (lambda s: s.add_points(0, 1, [[5, 10], [6, 6]], [1]), PromptError, "one label per point"),
        (lambda s: s.add_points(0, 1), PromptError, "no points and no box"),
        (lambda s: s.add_box(0, 1, [40, 40, 10, 10]), PromptError, "is empty"),
        (lambda s: s.add_mask(0, 0, square()), UnknownObjectError, "positive integer"),
        (lambda s: s.propagate(), SessionError, "No object has been prompted"),
    ],
)
def test_bad_prompts_raise_one_clear_sentence(model, call, error, message):
    session = VideoSession(model, frames())
    with pytest.raises(error, match=message) as info:
        call(session)
    assert str(info.value).count(". ") == 0 and str(info.value).endswith(".")


def test_bad_propagation_arguments(model):
    session = VideoSession(model, frames())
    session.add_mask(2, 1, square(2))
    with pytest.raises(SessionError, match="Direction 'sideways'"):
        session.propagate(direction="sideways")
    with pytest.raises(SessionError, match="comes before start frame"):
        session.propagate(start=3, end=1)
    with pytest.raises(FrameSourceError, match="outside the video"):
        session.propagate(end=6)
    with pytest.raises(ConfigError, match="multiple of 32"):
        InferenceConfig(resolution=100)
    with pytest.raises(ConfigError, match="max_prompted_frames 1 is not supported"):
        InferenceConfig(max_prompted_frames=1)


def test_label_map_overlap_rules():
    a = np.zeros((4, 4), bool)
    a[:, :3] = True
    b = np.zeros((4, 4), bool)
    b[:, 1:] = True
    logits = torch.stack([torch.where(torch.from_numpy(a), 5.0, -5.0), torch.where(torch.from_numpy(b), 1.0, -5.0)])
    result = FrameResult(0, [3, 8], logits, logits > 0, torch.tensor([1.0, 1.0]))
    by_score = result.label_map()
    assert (by_score[:, 0] == 3).all() and (by_score[:, 1:3] == 3).all() and (by_score[:, 3] == 8).all()
    by_order = result.label_map("order")
    assert (by_order[:, 0] == 3).all() and (by_order[:, 1:] == 8).all()


def test_frame_cache_reads_a_video_file_backward(tmp_path, model):
    path = tmp_path / "clip.mp4"
    write_video(path, 40)
    cache = FrameCache(open_source(path), sam2_encoder(model, 64, torch.device("cpu")), cache_size=2)
    forward = [f for _, f in cache.iterate(0, None)]
    backward = list(cache.iterate(39, 0, reverse=True))
    assert [t for t, _ in backward] == list(range(39, -1, -1))
    for t, frame in backward:
        assert np.array_equal(frame, forward[t])
    assert abs(int(forward[7][..., 0].mean()) - numbered_frame(7)[..., 0].mean()) < 8


def test_saved_state_resumes_a_propagation_exactly(model, tmp_path):
    video = frames(30)
    config = InferenceConfig(resolution=64)
    full = VideoSession(model, video, config)
    full.add_mask(0, 1, square())
    full.add_box(0, 2, [50, 5, 90, 30])
    expected = [r.mask_logits for r in full.propagate()]
    first = VideoSession(model, video, config)
    first.add_mask(0, 1, square())
    first.add_box(0, 2, [50, 5, 90, 30])
    for _ in first.propagate(end=20):
        pass
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = VideoSession(model, video, config)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert resumed.obj_ids == [1, 2] and resumed.bank.num_entries() == first.bank.num_entries()
    rest = list(resumed.propagate(start=21))
    assert [r.frame_idx for r in rest] == list(range(21, 30))
    for r in rest:
        assert torch.equal(r.mask_logits, expected[r.frame_idx])
    # The mask prompt on frame 0 still comes back unchanged.
    assert np.array_equal(next(iter(resumed.propagate(start=0, end=0))).masks[0].numpy(), square())


def sliding(i: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    x = 10 + (2 * i) % 50
    m[20:50, x : x + 30] = True
    return m


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_propagating_from_a_frame_whose_context_was_evicted_equals_keeping_all(model, direction):
    """After a full forward pass, a pass from the middle of the video (far from every prompt, so what
    it attends to was evicted) rebuilds that context first: its results equal those of a session
    that keeps every memory (the reference's behaviour), bit for bit. Going backward, the frames
    attended to (k+1 ..) were tracked forward and are rebuilt forward."""
    num_frames, k = 60, 20
    video = frames(num_frames)
    for i in range(num_frames):
        video[i][sliding(i)] = [230, 30, 30]
    runs = []
    for keep_all in (True, False):
        config = InferenceConfig(resolution=64, memory_stride=3, max_prompted_frames=2, keep_all_memories=keep_all)
        session = VideoSession(model, video, config)
        for t in (0, 40, num_frames - 1):  # three prompts, two objects batched
            session.add_mask(t, 1, sliding(t))
            session.add_mask(t, 2, ~sliding(t))
        list(session.propagate())
        reverse = direction == "backward"
        missing = session.bank.missing(1, k, reverse)
        assert bool(missing) != keep_all, "the evicting session must have lost the context of frame k"
        encoded = session.frames.num_encoded
        runs.append(list(session.propagate(start=k, direction=direction)))
        encoded = session.frames.num_encoded - encoded
    for kept, rebuilt in zip(*runs, strict=True):
        assert kept.frame_idx == rebuilt.frame_idx
        assert torch.equal(kept.mask_logits, rebuilt.mask_logits), kept.frame_idx
        assert torch.equal(kept.object_scores, rebuilt.object_scores)
    passed = k + 1 if reverse else num_frames - k
    assert len(runs[1]) == passed and encoded > passed, "the evicted context was not rebuilt"


def test_rebuilding_after_both_directions_equals_keeping_all(model):
    """After tracking both ways from a prompt in the middle, a forward pass and a correction later in
    the video need forward memories that were evicted. They are rebuilt forward from the prompt
    attending only to what the original forward pass had (not to the frames tracked backward since),
    so results equal a session that keeps every memory; the rebuild is no visit of the prompt frame,
    whose direction (which a correction there conditions on) stays that of the backward pass."""
    video = frames(40)
    runs = []
    for keep_all in (True, False):
        session = VideoSession(model, video, InferenceConfig(resolution=64, keep_all_memories=keep_all))
        session.add_mask(10, 1, square(10 % 15))
        session.add_box(10, 2, [50, 5, 90, 30])
        list(session.propagate(direction="both"))
        assert session.bank.direction(1, 10) is True
        assert bool(session.bank.missing(1, 30, False)) != keep_all
        logits = [r.mask_logits for r in session.propagate(start=30)]
        assert session.bank.direction(1, 10) is True and session.bank.direction(1, 29) is False
        logits.append(session.add_points(33, 1, [[30, 30]], [1]).mask_logits)
        runs.append(logits)
    for kept, rebuilt in zip(*runs, strict=True):
        assert torch.equal(kept, rebuilt)
