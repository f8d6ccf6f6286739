"""Parity of the image encoder (Hiera trunk + FPN neck) with the reference sam2==1.1.0.

The reference component is instantiated from the official SAM2.1 yaml configs (the `image_encoder`
subtree, with `scalp=1`), given random non-trivial weights, and its state dict is loaded into ours
with strict=True. Both run in eval mode in float32 on the same input; every FPN level and position
encoding must agree within `TOL`. Default cases use the tiny trunk at small square and non-square
inputs (pos-embed interpolation, window padding at strides 16 and 32, batch of two); the `parity`
marker adds 512 and the native 1024 for tiny and base_plus.
"""

from __future__ import annotations

import pytest
import torch

from maskvos.errors import ConfigError
from maskvos.model.config import MODEL_CONFIGS
from maskvos.model.image_encoder import ImageEncoder

pytest.importorskip("sam2", reason="the reference implementation sam2==1.1.0 is not installed")

TOL = 1e-4
YAML = {
    "sam2.1-tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1-small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1-base-plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1-large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}


def reference_image_encoder(name: str) -> torch.nn.Module:
    """The reference `ImageEncoder` built by hydra from the official config, as build_sam does."""
    import sam2  # noqa: F401  (initialises hydra's config module)
    from hydra import compose
    from hydra.utils import instantiate

    cfg = compose(config_name=YAML[name])
    return instantiate(cfg.model.image_encoder, _recursive_=True).eval()


def ours_for(name: str) -> ImageEncoder:
    cfg = MODEL_CONFIGS[name]
    return ImageEncoder(cfg.trunk, cfg.d_model, cfg.fpn_top_down_levels).eval()


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Re-draw every parameter: matrices and conv kernels with std 1/sqrt(fan_in), norm scales 1 +- 0.2,
    biases 0.1 * N(0, 1), position embeddings 0.5 * N(0, 1) (their initial values are zeros)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        noise = torch.randn(p.shape, generator=gen)
        if "pos_embed" in name:
            p.copy_(0.5 * noise)
        elif p.ndim >= 2:
            p.copy_(noise / p[0].numel() ** 0.5)
        elif "norm" in name and name.endswith("weight"):
            p.copy_(1.0 + 0.2 * noise)
        else:
            p.copy_(0.1 * noise)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def reference_outputs(ref: torch.nn.Module, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    with torch.inference_mode():
        out = ref(images)
    return out["backbone_fpn"], out["vision_pos_enc"]


def output_diffs(
    ours: ImageEncoder, expected: tuple[list[torch.Tensor], list[torch.Tensor]], images: torch.Tensor
) -> dict[str, float]:
    """Max |ours - reference| per output ("fpn0".."fpn2", "pos0".."pos2"); shapes must match."""
    with torch.inference_mode():
        feats, pos = ours(images)
    ref_feats, ref_pos = expected
    assert len(feats) == len(pos) == len(ref_feats) == len(ref_pos) == 3
    diffs = {}
    for level in range(3):
        assert feats[level].shape == ref_feats[level].shape, f"level {level}"
        assert pos[level].shape == ref_pos[level].shape, f"level {level}"
        diffs[f"fpn{level}"] = max_abs_diff(feats[level], ref_feats[level])
        diffs[f"pos{level}"] = max_abs_diff(pos[level], ref_pos[level])
    return diffs


@pytest.fixture(scope="module")
def tiny_pair() -> tuple[ImageEncoder, torch.nn.Module]:
    ref = reference_image_encoder("sam2.1-tiny")
    randomize_(ref, seed=0)
    ours = ours_for("sam2.1-tiny")
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def test_state_dict_matches_reference_keys_and_shapes(tiny_pair):
    ours, ref = tiny_pair
    theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert mine == theirs
    assert "trunk.pos_embed_window" in mine and "neck.convs.3.conv.weight" in mine


# 128x128: one padded window at strides 16 and 32; 2x128x192: batch of two, non-square grid;
# 256x384: several padded windows per image at strides 16 and 32.
@pytest.mark.parametrize(("batch", "height", "width"), [(1, 128, 128), (2, 128, 192), (1, 256, 384)])
def test_tiny_matches_reference(tiny_pair, batch, height, width):
    ours, ref = tiny_pair
    images = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(height + width))
    diffs = output_diffs(ours, reference_outputs(ref, images), images)
    assert max(diffs.values()) <= TOL, diffs
    with torch.inference_mode():
        feats, pos = ours(images)
    strides = [4, 8, 16]
    assert [tuple(f.shape) for f in feats] == [(batch, 256, height // s, width // s) for s in strides]
    assert all(p.dtype == torch.float32 for p in pos)
    assert all(f.is_contiguous() for f in feats)
    assert min(f.std().item() for f in feats) > 0.1, "features are degenerate"


def test_batch_items_are_independent(tiny_pair):
    ours, _ = tiny_pair
    images = torch.randn(2, 3, 128, 192, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        both, _ = ours(images)
        second, _ = ours(images[1:])
    for level in range(3):
        assert max_abs_diff(both[level][1:], second[level]) <= 1e-5


# Each of these perturbations must move some output by far more than the tolerance: the background
# and window position embeddings, a global-attention block, a pooling block's shortcut projection, a
# padded-window block at stride 32, and the coarsest lateral (which reaches level 2 only top-down).
PERTURBED = [
    "trunk.pos_embed",
    "trunk.pos_embed_window",
    "trunk.blocks.5.attn.qkv.weight",
    "trunk.blocks.3.proj.weight",
    "trunk.blocks.11.attn.proj.bias",
    "neck.convs.0.conv.bias",
]


@pytest.fixture(scope="module")
def perturbation_case(tiny_pair):
    images = torch.randn(1, 3, 128, 192, generator=torch.Generator().manual_seed(5))
    return images, reference_outputs(tiny_pair[1], images)


@pytest.mark.parametrize("key", PERTURBED)
def test_comparison_detects_a_perturbed_weight(tiny_pair, perturbation_case, key):
    ours, _ = tiny_pair
    images, expected = perturbation_case
    assert max(output_diffs(ours, expected, images).values()) <= TOL
    param = ours.get_parameter(key)
    original = param.detach().clone()
    try:
        with torch.no_grad():
            param += 0.05 * torch.randn(param.shape, generator=torch.Generator().manual_seed(3))
        diffs = output_diffs(ours, expected, images)
    finally:
        with torch.no_grad():
            param.copy_(original)
    assert max(diffs[f"fpn{level}"] for level in range(3)) > 100 * TOL, diffs
    assert max(diffs[f"pos{level}"] for level in range(3)) <= TOL  # weights do not move the encodings


def test_gradients_reach_position_embeddings_after_an_inference_call():
    # cached interpolation weights made under inference mode must still be usable by autograd later
    ours = ours_for("sam2.1-tiny")
    randomize_(ours, seed=2)
    images = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(11))
    with torch.inference_mode():
        ours(images)
    feats, _ = ours(images)
    sum(f.square().mean() for f in feats).backward()
    assert ours.trunk.pos_embed.grad is not None and ours.trunk.pos_embed.grad.abs().sum() > 0
    assert ours.trunk.pos_embed_window.grad.abs().sum() > 0


def test_rejects_size_not_multiple_of_32(tiny_pair):
    ours, _ = tiny_pair
    with pytest.raises(ConfigError, match="multiple of 32"):
        ours(torch.zeros(1, 3, 256, 250))


@pytest.mark.parametrize("size", [(64, 96), (32, 32), (64, 64)])
def test_position_embedding_is_bicubic_resize_plus_tiled_window(tiny_pair, size):
    trunk = tiny_pair[0].trunk
    height, width = size
    s = trunk.pos_embed_window.shape[-1]
    with torch.no_grad():
        resized = torch.nn.functional.interpolate(trunk.pos_embed, size=size, mode="bicubic", align_corners=False)
        expected = (resized + trunk.pos_embed_window.repeat(1, 1, height // s, width // s))[0].permute(1, 2, 0)
        got = trunk.position_embedding(height, width)
    assert got.shape == (height, width, trunk.pos_embed.shape[1])
    assert max_abs_diff(got, expected) <= 1e-5


@pytest.mark.parity
@pytest.mark.parametrize("size", [512, 1024])
@pytest.mark.parametrize("name", ["sam2.1-tiny", "sam2.1-base-plus"])
def test_matches_reference_at_full_size(name, size):
    ref = reference_image_encoder(name)
    randomize_(ref, seed=1)
    ours = ours_for(name)
    ours.load_state_dict(ref.state_dict(), strict=True)
    images = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(size))
    diffs = output_diffs(ours, reference_outputs(ref, images), images)
    print(name, size, {k: f"{v:.2e}" for k, v in diffs.items()})
    assert max(diffs.values()) <= TOL, diffs


@pytest.mark.parity
@pytest.mark.parametrize("name", ["sam2.1-small", "sam2.1-large"])
def test_state_dict_matches_reference_other_sizes(name):
    ref = reference_image_encoder(name)
    ours = ours_for(name)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
