"""Parity of the memory encoder and the memory attention with the reference (sam2==1.1.0).

The reference modules are built directly (no hydra) with the hyperparameters of
configs/sam2.1/sam2.1_hiera_t.yaml, which are the same for every size and for SAM2 / SAM2.1. Every
parameter is re-drawn at random (layer norms and layer scales included) so that no path sits at its
initial value; our modules load the reference state dicts strictly.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from maskvos.model.memory_attention import AxialRope, MemoryAttention
from maskvos.model.memory_encoder import MemoryEncoder

pytest.importorskip("sam2", reason="the reference implementation sam2==1.1.0 is not installed")

from sam2.modeling import memory_attention as ref_ma
from sam2.modeling import memory_encoder as ref_me
from sam2.modeling.position_encoding import PositionEmbeddingSine, compute_axial_cis
from sam2.modeling.sam.transformer import RoPEAttention

TOL = 1e-4
D_MODEL, MEM_DIM = 256, 64


def _randomise(module: nn.Module, seed: int) -> None:
    """Re-draw every parameter: matrices and kernels ~ N(0, 1.5^2 / fan_in), biases ~ N(0, 0.2^2),
    norm weights ~ 1 + N(0, 0.2^2), layer scales ~ 0.5 + N(0, 0.2^2)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim >= 2:
                p.copy_(noise * 1.5 / math.sqrt(p[0].numel()))
            elif name.endswith("gamma"):
                p.copy_(0.5 + 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.2 * noise)
            else:
                p.copy_(1.0 + 0.2 * noise)


def _reference_memory_attention(grid: int = 64) -> nn.Module:
    def rope_attention(**extra: object) -> RoPEAttention:
        return RoPEAttention(
            D_MODEL, 1, downsample_rate=1, dropout=0.1, rope_theta=10000.0, feat_sizes=(grid, grid), **extra
        )

    layer = ref_ma.MemoryAttentionLayer(
        activation="relu",
        cross_attention=rope_attention(rope_k_repeat=True, kv_in_dim=MEM_DIM),
        d_model=D_MODEL,
        dim_feedforward=2048,
        dropout=0.1,
        pos_enc_at_attn=False,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        self_attention=rope_attention(),
    )
    model = ref_ma.MemoryAttention(d_model=D_MODEL, pos_enc_at_input=True, layer=layer, num_layers=4)
    _randomise(model, seed=1)
    return model.eval()


def _reference_memory_encoder() -> nn.Module:
    block = ref_me.CXBlock(dim=D_MODEL, kernel_size=7, padding=3, layer_scale_init_value=1e-6, use_dwconv=True)
    model = ref_me.MemoryEncoder(
        out_dim=MEM_DIM,
        mask_downsampler=ref_me.MaskDownSampler(kernel_size=3, stride=2, padding=1),
        fuser=ref_me.Fuser(block, num_layers=2),
        position_encoding=PositionEmbeddingSine(num_pos_feats=MEM_DIM, normalize=True, scale=None, temperature=10000),
        in_dim=D_MODEL,
    )
    _randomise(model, seed=2)
    return model.eval()


@pytest.fixture(scope="module")
def attention_pair() -> tuple[nn.Module, MemoryAttention]:
    reference = _reference_memory_attention()
    ours = MemoryAttention().eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


@pytest.fixture(scope="module")
def encoder_pair() -> tuple[nn.Module, MemoryEncoder]:
    reference = _reference_memory_encoder()
    ours = MemoryEncoder().eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


def _memory_inputs(
    batch: int, height: int, width: int, num_frames: int, num_ptr_tokens: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Batch-first inputs: curr (B, HW, C), memory (B, T*HW + pointers, D), and their encodings."""
    gen = torch.Generator().manual_seed(seed)
    num_mem = num_frames * height * width + num_ptr_tokens

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    return {
        "curr_feats": draw(batch, height * width, D_MODEL),
        "curr_pos": draw(batch, height * width, D_MODEL),
        "memory": draw(batch, num_mem, MEM_DIM),
        "memory_pos": draw(batch, num_mem, MEM_DIM),
    }


def _run_reference_attention(reference: nn.Module, inputs: dict[str, torch.Tensor], num_ptr: int) -> torch.Tensor:
    """The reference is token-first (N, B, C); returns batch-first (B, HW, C)."""
    with torch.inference_mode():
        out = reference(
            curr=inputs["curr_feats"].transpose(0, 1),
            memory=inputs["memory"].transpose(0, 1),
            curr_pos=inputs["curr_pos"].transpose(0, 1),
            memory_pos=inputs["memory_pos"].transpose(0, 1),
            num_obj_ptr_tokens=num_ptr,
        )
    return out.transpose(0, 1)


def _run_ours_attention(
    ours: MemoryAttention, inputs: dict[str, torch.Tensor], num_ptr: int, feat_size: tuple[int, int]
) -> torch.Tensor:
    with torch.inference_mode():
        return ours(**inputs, num_obj_ptr_tokens=num_ptr, feat_size=feat_size)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


def test_state_dict_keys_and_shapes_match_the_reference(attention_pair, encoder_pair):
    for reference, ours in (attention_pair, encoder_pair):
        ref_shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
        our_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
        assert our_shapes == ref_shapes


@pytest.mark.parametrize(("num_frames", "num_ptr"), [(3, 16), (3, 0), (1, 4)])
def test_memory_attention_matches_reference_small_grid(attention_pair, num_frames, num_ptr):
    reference, ours = attention_pair
    inputs = _memory_inputs(batch=2, height=8, width=8, num_frames=num_frames, num_ptr_tokens=num_ptr)
    expected = _run_reference_attention(reference, inputs, num_ptr)
    actual = _run_ours_attention(ours, inputs, num_ptr, (8, 8))
    assert _max_diff(actual, expected) <= TOL
    # the memory matters: dropping a frame changes the result by far more than the tolerance
    if num_frames > 1:
        fewer = {k: v[:, 64:] if k.startswith("memory") else v for k, v in inputs.items()}
        assert _max_diff(_run_ours_attention(ours, fewer, num_ptr, (8, 8)), expected) > 100 * TOL


def test_memory_attention_non_square_grid_matches_reference_with_its_tables(attention_pair):
    """The reference assumes square grids; given rotation tables built for 6 rows x 10 columns it
    computes the same thing as ours with feat_size=(6, 10)."""
    _, ours = attention_pair
    height, width = 6, 10
    reference = _reference_memory_attention(grid=8)
    reference.load_state_dict(ours.state_dict(), strict=True)
    for module in reference.modules():
        if isinstance(module, RoPEAttention):
            module.freqs_cis = compute_axial_cis(dim=D_MODEL, end_x=width, end_y=height)
    inputs = _memory_inputs(batch=1, height=height, width=width, num_frames=2, num_ptr_tokens=8, seed=3)
    expected = _run_reference_attention(reference, inputs, 8)
    assert _max_diff(_run_ours_attention(ours, inputs, 8, (height, width)), expected) <= TOL
    # rows and columns are not interchangeable
    assert _max_diff(_run_ours_attention(ours, inputs, 8, (width, height)), expected) > 100 * TOL


def test_rope_tables_equal_the_reference_and_cover_non_square_grids():
    rope = AxialRope(head_dim=D_MODEL)
    full = rope.rotations(8, 8, torch.device("cpu"))
    assert torch.equal(full, compute_axial_cis(dim=D_MODEL, end_x=8, end_y=8))
    # a 4 x 6 grid's token (row, col) rotates like token (row, col) of the 8 x 8 grid
    assert torch.equal(rope.rotations(4, 6, torch.device("cpu")), full.view(8, 8, -1)[:4, :6].reshape(24, -1))


def test_perturbed_memory_attention_weight_is_detected(attention_pair):
    reference, _ = attention_pair
    perturbed = MemoryAttention().eval()
    state = reference.state_dict()
    state["layers.2.cross_attn_image.k_proj.weight"] = state["layers.2.cross_attn_image.k_proj.weight"].clone()
    state["layers.2.cross_attn_image.k_proj.weight"][5, 7] += 0.05
    perturbed.load_state_dict(state, strict=True)
    inputs = _memory_inputs(batch=1, height=8, width=8, num_frames=3, num_ptr_tokens=16)
    expected = _run_reference_attention(reference, inputs, 16)
    assert _max_diff(_run_ours_attention(perturbed, inputs, 16, (8, 8)), expected) > TOL


def test_memory_attention_rejects_memory_that_is_not_whole_frames(attention_pair):
    _, ours = attention_pair
    inputs = _memory_inputs(batch=1, height=4, width=4, num_frames=2, num_ptr_tokens=5)
    with pytest.raises(ValueError, match="whole frames"):
        _run_ours_attention(ours, inputs, 4, (4, 4))


def _encoder_inputs(batch: int, height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (B, C, h, w) and masks in the encoder's scale, sigmoid(logits) * 20 - 10, (B, 1, 16h, 16w)."""
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(batch, D_MODEL, height, width, generator=gen)
    logits = 4 * torch.randn(batch, 1, 16 * height, 16 * width, generator=gen)
    return feats, torch.sigmoid(logits) * 20 - 10


def _check_encoder(reference: nn.Module, ours: MemoryEncoder, height: int, width: int, batch: int) -> None:
    feats, masks = _encoder_inputs(batch, height, width)
    with torch.inference_mode():
        expected = reference(feats, masks, skip_mask_sigmoid=True)
        actual_feats, actual_pos = ours(feats, masks)
    assert actual_pos.dtype == torch.float32
    assert _max_diff(actual_feats, expected["vision_features"]) <= TOL
    assert _max_diff(actual_pos, expected["vision_pos_enc"][0]) <= TOL
    # the mask matters
    with torch.inference_mode():
        flipped_feats, _ = ours(feats, -masks)
    assert _max_diff(flipped_feats, expected["vision_features"]) > 100 * TOL


@pytest.mark.parametrize(("height", "width"), [(8, 8), (6, 10)])
def test_memory_encoder_matches_reference(encoder_pair, height, width):
    _check_encoder(*encoder_pair, height=height, width=width, batch=2)


@pytest.mark.parity
def test_memory_encoder_matches_reference_at_1024(encoder_pair):
    _check_encoder(*encoder_pair, height=64, width=64, batch=2)


@pytest.mark.parity
def test_memory_attention_matches_reference_full_bank(attention_pair):
    """1024 input: a 64x64 grid, 7 memory frames and 16 pointers of 4 tokens each, batch of 2."""
    reference, ours = attention_pair
    inputs = _memory_inputs(batch=2, height=64, width=64, num_frames=7, num_ptr_tokens=64, seed=5)
    expected = _run_reference_attention(reference, inputs, 64)
    actual = _run_ours_attention(ours, inputs, 64, (64, 64))
    assert _max_diff(actual, expected) <= TOL
