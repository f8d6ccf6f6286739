"""EdgeTAM and EfficientTAM behind the ordinary session: memory policies through a whole interactive
session (a late object, both directions, a click correction on a frame whose memories were evicted),
with results bit for bit those of a session that keeps every memory; resume from a saved state; the
input sizes EdgeTAM's perceiver allows; `maskvos segment` with an EdgeTAM checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maskvos.checkpoints import load_model
from maskvos.cli import main
from maskvos.errors import ConfigError
from maskvos.inference.config import InferenceConfig
from maskvos.inference.policies import SAM2LongPolicy
from maskvos.inference.session import VideoSession
from maskvos.io.masks import read_label_map, write_label_map
from maskvos.model.config import get_config

from parity_tools import disk_video, edgetam_checkpoint, efficienttam_checkpoint

NUM_FRAMES = 56
RESOLUTION = 256
POLICIES = {"sam2": "sam2", "confident": "confident", "samurai": "samurai", "dam4sam": "dam4sam",
            "sam2long": SAM2LongPolicy(uncertainty=100.0, lag=4)}
#: The default run covers the plain rule (the policies' machinery is model-independent and tested on
#: SAM2 in test_policy_sessions.py); the full set (-m parity) all five.
DEFAULT_RUN = ("sam2",)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("edgetam-session")
    masks = disk_video(root / "frames", NUM_FRAMES, second=True)
    checkpoint = edgetam_checkpoint(root / "edgetam.pt")
    return load_model(checkpoint), root / "frames", masks, checkpoint


def _interact(session: VideoSession, masks) -> list[tuple[int, torch.Tensor]]:
    out = []
    session.add_mask(12, 2, masks[12][2])
    out += [(r.frame_idx, r.mask_logits) for r in session.propagate(direction="both")]
    session.add_mask(20, 1, masks[20][1])
    out += [(r.frame_idx, r.mask_logits) for r in session.propagate(start=0)]
    ys, xs = np.nonzero(masks[40][2])
    out.append((40, session.add_points(40, 2, [[float(xs.mean()), float(ys.mean())]], [1]).mask_logits))
    out += [(r.frame_idx, r.mask_logits) for r in session.propagate()]
    return out


@pytest.mark.parametrize("name", [n if n in DEFAULT_RUN else pytest.param(n, marks=pytest.mark.parity) for n in POLICIES])
def test_every_policy_with_eviction_equals_keeping_every_memory(setup, name):
    model, frames, masks, _ = setup
    config = InferenceConfig(memory_policy=POLICIES[name], resolution=RESOLUTION)
    evicting = VideoSession(model, frames, config)
    keeping = VideoSession(model, frames, InferenceConfig(memory_policy=POLICIES[name], resolution=RESOLUTION,
                                                          keep_all_memories=True))
    a, b = _interact(evicting, masks), _interact(keeping, masks)
    expected = [*range(12, NUM_FRAMES), *range(11, -1, -1), *range(NUM_FRAMES), 40, *range(40, NUM_FRAMES)]
    assert [t for t, _ in a] == [t for t, _ in b] == expected
    for (t, x), (_, y) in zip(a, b):
        assert torch.equal(x, y), (name, t, (x - y).abs().max())
    assert evicting.bank.num_entries() < keeping.bank.num_entries(), "memories must have been evicted"
    assert any((x > 0).any() and not (x > 0).all() for _, x in a), "masks must be non-trivial"


def test_resume_from_a_saved_state_is_exact(setup, tmp_path):
    model, frames, masks, _ = setup
    config = InferenceConfig(resolution=RESOLUTION)
    whole = VideoSession(model, frames, config)
    whole.add_mask(0, 1, masks[0][1])
    whole.add_mask(0, 2, masks[0][2])
    expected = {r.frame_idx: r.mask_logits for r in whole.propagate()}
    first = VideoSession(model, frames, config)
    first.add_mask(0, 1, masks[0][1])
    first.add_mask(0, 2, masks[0][2])
    for _ in first.propagate(end=17):
        pass
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = VideoSession(model, frames, config)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    seen = 0
    for r in resumed.propagate(start=18):
        assert torch.equal(r.mask_logits, expected[r.frame_idx]), r.frame_idx
        seen += 1
    assert seen == NUM_FRAMES - 18


def test_input_sizes_the_perceiver_allows(setup):
    model, frames, _, _ = setup
    with pytest.raises(ConfigError, match="multiple of 256"):
        VideoSession(model, frames, InferenceConfig(resolution=320))
    VideoSession(model, frames, InferenceConfig(resolution=512))


def test_segment_cli_with_an_edgetam_checkpoint(setup, tmp_path, capsys):
    _, frames, masks, checkpoint = setup
    labels = np.zeros(masks[0][1].shape, np.uint8)
    labels[masks[0][1]] = 1
    write_label_map(tmp_path / "prompt.png", labels)
    assert main(["segment", str(frames), "--prompt", str(tmp_path / "prompt.png"), "--checkpoint", str(checkpoint),
                 "--resolution", str(RESOLUTION), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    written = sorted((tmp_path / "out" / "masks").glob("*.png"))
    assert len(written) == NUM_FRAMES
    assert read_label_map(written[0]).max() == 1
    assert main(["info", "--checkpoint", str(checkpoint)]) == 0
    assert "family:       edgetam" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["sam2", pytest.param("samurai", marks=pytest.mark.parity)])
def test_efficienttam_with_pooled_memories_and_eviction_equals_keeping_every_memory(setup, tmp_path, name):
    _, frames, masks, _ = setup
    model = load_model(efficienttam_checkpoint(tmp_path / "efficienttam_ti_2.pt", "efficienttam-ti-2"),
                       config=get_config("efficienttam-ti-2"))
    evicting = VideoSession(model, frames, InferenceConfig(memory_policy=POLICIES[name], resolution=RESOLUTION))
    keeping = VideoSession(model, frames, InferenceConfig(memory_policy=POLICIES[name], resolution=RESOLUTION,
                                                          keep_all_memories=True))
    a, b = _interact(evicting, masks), _interact(keeping, masks)
    assert [t for t, _ in a] == [t for t, _ in b]
    for (t, x), (_, y) in zip(a, b):
        assert torch.equal(x, y), (name, t, (x - y).abs().max())
    assert evicting.bank.num_entries() < keeping.bank.num_entries(), "memories must have been evicted"
    assert any((x > 0).any() and not (x > 0).all() for _, x in a), "masks must be non-trivial"
