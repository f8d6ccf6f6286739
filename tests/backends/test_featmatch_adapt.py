"""featmatch test-time adaptation: the head fits a synthetic frame, a session with it tracks two
objects, is deterministic, resumes exactly, leaves prompts alone, and is off by default."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskvos.backends.featmatch import FeatMatchConfig, FeatMatchModel, FeatMatchSession
from maskvos.backends.featmatch_adapt import PromptAdapter, cell_features, fit_head, fuse
from maskvos.eval.metrics import region_similarity

from media_tools import occlusion_video

ADAPT = FeatMatchConfig(scale=1.0, adapt=True, adapt_steps=100)


@pytest.fixture(scope="module")
def model() -> FeatMatchModel:
    return FeatMatchModel(FeatMatchConfig(scale=1.0))


@pytest.fixture(scope="module")
def adapt_model(model) -> FeatMatchModel:
    adapted = FeatMatchModel(ADAPT)
    adapted.net = model.net  # the same Lite0 trunk (loaded once)
    return adapted


def _square_frame(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 160x224 frame: a 64x64 square of coarse red/white checks on fine blue-green noise."""
    rng = np.random.default_rng(seed)
    frame = (rng.random((160 // 4, 224 // 4, 3)) * np.array([40, 140, 160]) + 40).repeat(4, 0).repeat(4, 1)
    checks = np.kron(rng.random((8, 8)) > 0.5, np.ones((8, 8)))[..., None]
    frame[48:112, 80:144] = checks * np.array([220, 220, 220]) + (1 - checks) * np.array([200, 30, 30])
    mask = np.zeros((160, 224), bool)
    mask[48:112, 80:144] = True
    return frame.astype(np.uint8), mask


def _grid_labels(mask: np.ndarray, h: int, w: int) -> torch.Tensor:
    obj = F.adaptive_avg_pool2d(torch.from_numpy(mask).float()[None, None], (h, w))[0]
    return torch.cat([1 - obj, obj])  # (2, h, w)


def test_head_fits_a_textured_square_and_is_seeded(model):
    frame, mask = _square_frame()
    keys = model.encode(frame)  # (C, h, w)
    h, w = keys.shape[1:]
    labels = _grid_labels(mask, h, w)
    head = fit_head(keys[None], labels[None], steps=100, seed=0)
    probs = torch.softmax(head(cell_features(keys[None])[0]), dim=-1)[:, 1].view(h, w)
    truth = labels[1] > 0.5
    accuracy = float(((probs > 0.5) == truth).float().mean())
    iou = float(((probs > 0.5) & truth).sum() / ((probs > 0.5) | truth).sum())
    assert accuracy >= 0.97 and iou >= 0.85, (accuracy, iou)
    # Seeded: the same fit gives the same weights; another seed others.
    again = fit_head(keys[None], labels[None], steps=100, seed=0)
    other = fit_head(keys[None], labels[None], steps=100, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(head.state_dict().values(), again.state_dict().values()))
    assert not torch.equal(head.out.weight, other.out.weight)
    # It generalises to a new frame of the same two textures (other random layout, same square).
    frame2, mask2 = _square_frame(seed=0)
    frame2 = np.roll(frame2, (8, -24), axis=(0, 1))
    keys2 = model.encode(frame2)
    probs2 = torch.softmax(head(cell_features(keys2[None])[0]), dim=-1)[:, 1].view(h, w)
    truth2 = _grid_labels(np.roll(mask2, (8, -24), axis=(0, 1)), h, w)[1] > 0.5
    iou2 = float(((probs2 > 0.5) & truth2).sum() / ((probs2 > 0.5) | truth2).sum())
    assert iou2 >= 0.7, iou2


def test_fuse_is_a_weighted_geometric_mean():
    a = torch.tensor([[0.9, 0.2], [0.1, 0.8]])
    b = torch.tensor([[0.5, 0.99], [0.5, 0.01]])
    assert torch.allclose(fuse(a, b, 0.0), a, atol=1e-6)
    assert torch.allclose(fuse(a, b, 1.0), b, atol=1e-6)
    half = fuse(a, b, 0.5)
    expected = (a * b).sqrt() / (a * b).sqrt().sum(0)
    assert torch.allclose(half, expected, atol=1e-6)
    # The head vetoes a cell it is sure is background: 0.8 object -> below 0.5.
    assert half[1, 1] < 0.5 < a[1, 1]


def _track(model, frames, truths, **propagate):
    session = FeatMatchSession(model, frames)
    for obj_id, mask in truths[0].items():
        session.add_mask(0, obj_id, mask)
    return session, {r.frame_idx: r for r in session.propagate(**propagate)}


def test_adapted_session_tracks_two_objects_and_differs_from_off(model, adapt_model):
    frames, truths = occlusion_video()
    _, off = _track(model, frames, truths)
    session, on = _track(adapt_model, frames, truths)
    assert session.adapter is not None and session.adapter.head is not None
    assert session.adapter.head.num_labels == 3  # background and both objects
    changed = sum(not torch.equal(off[t].masks, on[t].masks) for t in range(1, len(frames)))
    assert changed >= 3, changed
    j = {o: float(np.mean([region_similarity(on[t].label_map() == o, truths[t][o]) for t in range(1, len(frames))])) for o in (1, 2)}
    # Measured (adapt_steps=100): J 0.68 and 0.87; off 0.80 and 0.91 (the head, fitted on frame 0,
    # takes some of object 2 for object 1 once it is behind it): thresholds leave a margin.
    assert j[1] >= 0.6 and j[2] >= 0.8, j
    for r in on.values():
        assert not (r.masks[0] & r.masks[1]).any(), "objects must not overlap"


def test_adapted_session_is_deterministic(adapt_model):
    frames, truths = occlusion_video()
    _, a = _track(adapt_model, frames, truths)
    _, b = _track(adapt_model, frames, truths)
    assert all(torch.equal(a[t].mask_logits, b[t].mask_logits) for t in a)


def test_adapted_resume_is_exact_and_does_not_refit(adapt_model):
    frames, truths = occlusion_video()
    _, full = _track(adapt_model, frames, truths)
    first, _ = _track(adapt_model, frames, truths, end=5)
    state = first.state_dict()
    assert set(state["adapter"]) == {"frames", "labels", "head"}
    resumed = FeatMatchSession(adapt_model, frames)
    resumed.load_state_dict(state)
    results = list(resumed.propagate(start=6))
    assert [r.frame_idx for r in results] == list(range(6, len(frames)))
    for r in results:
        assert torch.equal(r.mask_logits, full[r.frame_idx].mask_logits)
    assert resumed.adapter.fit_seconds == 0.0, "the head comes from the saved state, not a new fit"


def test_prompt_frames_are_untouched_and_a_new_prompt_refits(adapt_model):
    frames, truths = occlusion_video()
    session, results = _track(adapt_model, frames, truths)
    for obj_id in (1, 2):
        assert np.array_equal(results[0].masks[obj_id - 1].numpy(), truths[0][obj_id])
    fitted = session.adapter.head.state_dict()["out.weight"].clone()
    # Another pass over the same prompts reuses the head.
    list(session.propagate())
    assert torch.equal(session.adapter.head.state_dict()["out.weight"], fitted)
    # A correction on frame 8 comes back exactly as given and refits the head on both prompted frames.
    correction = truths[8][1]
    assert np.array_equal(session.add_mask(8, 1, correction).masks[0].numpy(), correction)
    results = {r.frame_idx: r for r in session.propagate()}
    assert np.array_equal(results[8].masks[0].numpy(), correction)
    assert session.adapter.state_dict()["frames"] == [0, 8]
    assert not torch.equal(session.adapter.head.state_dict()["out.weight"], fitted)


def test_adaptation_is_off_by_default_and_inert_when_off(model):
    assert FeatMatchConfig().adapt is False
    frames, truths = occlusion_video()
    session, plain = _track(model, frames, truths)
    assert session.adapter is None and session.state_dict()["adapter"] == {}
    # The adaptation settings do nothing while it is off.
    other = FeatMatchModel(dataclasses.replace(model.config, adapt_steps=7, adapt_weight=0.9))
    other.net = model.net
    _, same = _track(other, frames, truths)
    assert all(torch.equal(plain[t].mask_logits, same[t].mask_logits) for t in plain)


def test_adapter_without_prompts_has_no_head_and_leaves_probs_alone():
    adapter = PromptAdapter(steps=10, weight=0.5)
    adapter.refresh([], [], [], 4, 4)
    probs = torch.softmax(torch.randn(2, 16), 0)
    assert adapter.head is None and adapter.apply(probs, torch.randn(8, 16), 4, 4) is probs
    assert adapter.state_dict() == {}
