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
    """

    name: str
    trunk: HieraConfig
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


MODEL_CONFIGS: dict[str, ModelConfig] = {
    **{f"sam2.1-{s}": _sam2_1(s) for s in SIZES},
    **{f"sam2-{s}": _sam2(s) for s in SIZES},
}


def get_config(name: str) -> ModelConfig:
    """The configuration of a published model by name (e.g. "sam2.1-base-plus")."""
    key = name.strip().lower().replace("_", "-").replace("b+", "base-plus")
    if key not in MODEL_CONFIGS:
        known = ", ".join(MODEL_CONFIGS)
        raise ConfigError(f"Unknown model name '{name}'; use one of: {known}.")
    return MODEL_CONFIGS[key]
