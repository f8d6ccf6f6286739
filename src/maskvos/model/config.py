"""Model configurations: what changes the network's weights or checkpoint keys.

One frozen dataclass per network; one named instance per published checkpoint. Runtime
policy (memory stride, resolution, smoothing) lives in `InferenceConfig`, not here.
Variants are made with `dataclasses.replace`.

Everything that is the same in all eight published SAM2 / SAM2.1 configurations (a
256-wide transformer, 64-wide memories, 7 memory slots, an object-score MLP, multimask
object pointers, ...) is part of the architecture and not a field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from maskvos.errors import ConfigError


@dataclass(frozen=True)
class HieraConfig:
    """The Hiera trunk of the image encoder."""

    embed_dim: int = 96
    num_heads: int = 1
    stages: tuple[int, ...] = (1, 2, 7, 2)
    global_att_blocks: tuple[int, ...] = (5, 7, 9)
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (7, 7)
    q_pool: int = 3
    q_stride: tuple[int, int] = (2, 2)
    dim_mul: float = 2.0
    head_mul: float = 2.0

    @property
    def channel_list(self) -> tuple[int, ...]:
        """Output channels per stage, lowest resolution first (as the FPN neck lists them)."""
        dims = [int(self.embed_dim * self.dim_mul**i) for i in range(len(self.stages))]
        return tuple(reversed(dims))


@dataclass(frozen=True)
class RepViTConfig:
    """The RepViT trunk of EdgeTAM's image encoder (RepViT-M1: widths 48..384, depths 2, 2, 14, 2)."""

    embed_dims: tuple[int, ...] = (48, 96, 192, 384)
    depths: tuple[int, ...] = (2, 2, 14, 2)
    mlp_ratio: int = 2

    @property
    def stages(self) -> tuple[int, ...]:
        return self.depths

    @property
    def channel_list(self) -> tuple[int, ...]:
        """Output channels per stage, lowest resolution first (as the FPN neck lists them)."""
        return tuple(reversed(self.embed_dims))


@dataclass(frozen=True)
class ViTConfig:
    """The plain ViT trunk of EfficientTAM's image encoder (one stride-16 map, no pyramid)."""

    embed_dim: int = 384
    num_heads: int = 6
    depth: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    window_size: int = 14
    global_blocks: tuple[int, ...] = (2, 5, 8, 11)
    pretrain_grid: int = 14

    @property
    def stages(self) -> tuple[int, ...]:
        return (self.depth,)

    @property
    def channel_list(self) -> tuple[int, ...]:
        return (self.embed_dim,)


@dataclass(frozen=True)
class PerceiverConfig:
    """EdgeTAM's spatial perceiver, which compresses each memory into global and window latents.

    Attributes:
        num_latents: global latents (attend to the whole memory).
        windows_per_side: the memory is cut into this many windows per side, one latent each.
        depth, heads, dim_head, ff_mult: the layers (shared by both kinds of latents).
    """

    dim: int = 64
    num_latents: int = 256
    windows_per_side: int = 16
    depth: int = 2
    heads: int = 1
    dim_head: int = 64
    ff_mult: int = 4


Trunk = Union[HieraConfig, RepViTConfig, ViTConfig]


@dataclass(frozen=True)
class ModelConfig:
    """A SAM2-family network.

    Attributes:
        name: the canonical model name, e.g. "sam2.1-tiny".
        trunk: the Hiera trunk.
        image_size: the square input size the checkpoint was trained at.
        d_model: transformer width (image features, prompts, decoder, memory attention).
        mem_dim: memory feature width (memory encoder output).
        num_maskmem: memory slots: 1 prompt slot plus (num_maskmem - 1) recent frames.
        fpn_top_down_levels: FPN levels (0 = highest resolution) that receive top-down features.
        memory_attention_layers: number of memory-attention layers.
        no_obj_embed_spatial: add a learned embedding to memories of frames with no object (SAM2.1).
        add_tpos_enc_to_obj_ptrs: temporal position encoding on object pointers (SAM2.1).
        proj_tpos_enc_in_obj_ptrs: a linear projection of that encoding (SAM2.1).
        use_signed_tpos_enc_to_obj_ptrs: signed rather than absolute frame distance (SAM2.1).
        perceiver: compress memories with a spatial perceiver before they are stored (EdgeTAM); its
            window latents' keys get RoPE on their own window grid in memory attention, its global
            latents' keys none.
        use_high_res_features: the decoder adds stride-4 and stride-8 image features while upsampling
            (SAM2, EdgeTAM); EfficientTAM's one-level ViT has none.
        memory_pooling: EfficientTAM's efficient memory cross-attention: 0 none; 1 or 2 average the
            memory keys and values over 2x2 cells of each frame when two or more memory frames are
            attended to, with a bias of ln 4 on the pooled tokens' logits (1) or added to every
            channel of their keys (2), as the two published variants do.
    """

    name: str
    trunk: Trunk
    image_size: int = 1024
    d_model: int = 256
    mem_dim: int = 64
    num_maskmem: int = 7
    fpn_top_down_levels: tuple[int, ...] = (2, 3)
    memory_attention_layers: int = 4
    no_obj_embed_spatial: bool = True
    add_tpos_enc_to_obj_ptrs: bool = True
    proj_tpos_enc_in_obj_ptrs: bool = True
    use_signed_tpos_enc_to_obj_ptrs: bool = True
    perceiver: PerceiverConfig | None = None
    use_high_res_features: bool = True
    memory_pooling: int = 0

    @property
    def family(self) -> str:
        """"sam2", "sam2.1", "edgetam" (the name without its size)."""
        return self.name.split("-")[0]


_TRUNKS = {
    "tiny": HieraConfig(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9)),
    "small": HieraConfig(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13)),
    "base-plus": HieraConfig(
        embed_dim=112,
        num_heads=2,
        stages=(2, 3, 16, 3),
        global_att_blocks=(12, 16, 20),
        window_pos_embed_bkg_spatial_size=(14, 14),
    ),
    "large": HieraConfig(
        embed_dim=144,
        num_heads=2,
        stages=(2, 6, 36, 4),
        global_att_blocks=(23, 33, 43),
        window_spec=(8, 4, 16, 8),
    ),
}

SIZES: tuple[str, ...] = tuple(_TRUNKS)


def _sam2_1(size: str) -> ModelConfig:
    return ModelConfig(name=f"sam2.1-{size}", trunk=_TRUNKS[size])


def _sam2(size: str) -> ModelConfig:
    return ModelConfig(
        name=f"sam2-{size}",
        trunk=_TRUNKS[size],
        no_obj_embed_spatial=False,
        add_tpos_enc_to_obj_ptrs=False,
        proj_tpos_enc_in_obj_ptrs=False,
        use_signed_tpos_enc_to_obj_ptrs=False,
    )


#: EdgeTAM (Meta): a RepViT-M1 trunk, two memory-attention layers, memories compressed by a perceiver,
#: and SAM2's (not SAM2.1's) object-pointer and no-object settings.
EDGETAM = ModelConfig(
    name="edgetam",
    trunk=RepViTConfig(),
    memory_attention_layers=2,
    no_obj_embed_spatial=False,
    add_tpos_enc_to_obj_ptrs=False,
    proj_tpos_enc_in_obj_ptrs=False,
    use_signed_tpos_enc_to_obj_ptrs=False,
    perceiver=PerceiverConfig(),
)

def _efficienttam(size: str, image_size: int = 1024, pooling: int = 0) -> ModelConfig:
    width, heads = {"s": (384, 6), "ti": (192, 3)}[size]
    suffix = {0: "" if image_size == 1024 else "-512", 1: "-1", 2: "-2"}[pooling]
    return ModelConfig(
        name=f"efficienttam-{size}{suffix}",
        trunk=ViTConfig(embed_dim=width, num_heads=heads),
        image_size=image_size,
        no_obj_embed_spatial=False,
        add_tpos_enc_to_obj_ptrs=False,
        proj_tpos_enc_in_obj_ptrs=False,
        use_signed_tpos_enc_to_obj_ptrs=False,
        use_high_res_features=False,
        memory_pooling=pooling,
    )


#: EfficientTAM: a plain ViT-S or ViT-Ti, no high-resolution decoder features, SAM2's object-pointer
#: settings; "-512" variants at 512 pixels; "-1" / "-2" with the efficient memory cross-attention.
EFFICIENTTAM = {
    cfg.name: cfg
    for size in ("s", "ti")
    for cfg in (_efficienttam(size), _efficienttam(size, 512), _efficienttam(size, pooling=1), _efficienttam(size, pooling=2))
}

MODEL_CONFIGS: dict[str, ModelConfig] = {
    **{f"sam2.1-{s}": _sam2_1(s) for s in SIZES},
    **{f"sam2-{s}": _sam2(s) for s in SIZES},
    "edgetam": EDGETAM,
    **EFFICIENTTAM,
}


def get_config(name: str) -> ModelConfig:
    """The configuration of a published model by name (e.g. "sam2.1-base-plus")."""
    key = name.strip().lower().replace("_", "-").replace("b+", "base-plus")
    if key not in MODEL_CONFIGS:
        known = ", ".join(MODEL_CONFIGS)
        raise ConfigError(f"Unknown model name '{name}'; use one of: {known}.")
    return MODEL_CONFIGS[key]
