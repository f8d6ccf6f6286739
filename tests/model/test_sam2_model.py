"""SAM2Model behaviour that the reference cannot check: other input sizes, misuse, RoPE geometry."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from maskvos.errors import ConfigError
from maskvos.model.config import get_config
from maskvos.model.memory_attention import AxialRope
from maskvos.model.sam2 import MemoryContext, MemoryFrame, ObjectPointer, SAM2Model


@pytest.fixture(scope="module")
def model() -> SAM2Model:
    torch.manual_seed(0)
    return SAM2Model(dataclasses.replace(get_config("sam2.1-tiny"), image_size=256)).eval()


def test_non_square_input_runs_end_to_end(model):
    image = torch.randn(1, 3, 256, 384)
    with torch.inference_mode():
        feats = model.encode_image(image)
        assert feats.feats.shape == (1, 256, 16, 24)
        assert [x.shape[-2:] for x in feats.high_res_feats] == [(64, 96), (32, 48)]
        objs = feats.expand(2)
        mask = torch.zeros(2, 1, 256, 384)
        mask[0, :, 50:120, 100:200] = 1
        out = model.track_frame(objs, mask_input=mask)
        assert out.low_res_logits.shape == (2, 1, 64, 96)
        assert torch.equal(out.object_score_logits[:, 0] > 0, torch.tensor([True, False]))
        mem, pos = model.encode_memory(objs, out.high_res_logits, out.object_score_logits)
        assert mem.shape == pos.shape == (2, 64, 16, 24)
        ctx = MemoryContext([MemoryFrame(mem, pos, 0)], [ObjectPointer(out.obj_ptr, 1)], 15)
        nxt = model.track_frame(objs, memory=ctx)
        assert nxt.high_res_logits.shape == (2, 1, 256, 384)
        assert torch.isfinite(nxt.low_res_logits).all()


def test_image_size_must_be_a_multiple_of_32(model):
    with pytest.raises(ConfigError, match="multiple of 32"):
        model.encode_image(torch.randn(1, 3, 250, 256))


def test_mask_and_points_together_is_an_error(model):
    feats = model.encode_image(torch.randn(1, 3, 256, 256))
    pts = (torch.zeros(1, 1, 2), torch.ones(1, 1, dtype=torch.int32))
    with pytest.raises(ValueError, match="cannot be combined"):
        model.track_frame(feats, points=pts, mask_input=torch.zeros(1, 1, 256, 256))
    with pytest.raises(ValueError, match="at least one memory frame"):
        model.track_frame(feats, memory=MemoryContext())


def test_multimask_rule(model):
    feats = model.encode_image(torch.randn(1, 3, 256, 256))
    one = (torch.tensor([[[10.0, 20.0]]]), torch.ones(1, 1, dtype=torch.int32))
    two = (torch.tensor([[[10.0, 20.0], [50.0, 60.0]]]), torch.tensor([[1, 0]], dtype=torch.int32))
    with torch.inference_mode():
        assert model.track_frame(feats, points=one).iou_scores.shape == (1, 3)
        assert model.track_frame(feats, points=two).iou_scores.shape == (1, 1)


def test_rope_rotation_angles_follow_the_grid():
    rope = AxialRope(head_dim=8)
    rot = rope.rotations(2, 3, torch.device("cpu"))  # 6 tokens, 4 complex channels
    angles = torch.angle(rot)
    freqs = 1.0 / (10000.0 ** (torch.tensor([0.0, 4.0]) / 8))
    for token in range(6):
        y, x = divmod(token, 3)
        expected = torch.cat([x * freqs, y * freqs])
        assert torch.allclose(angles[token], torch.atan2(torch.sin(expected), torch.cos(expected)), atol=1e-6)
