"""The SAM2 network composed from its parts, with the per-frame step functions a video session calls.

The model holds no state across calls. A video session drives it frame by frame:

1. `encode_image` once per frame (batch of 1), then `FrameFeatures.expand` to the number of objects;
2. `track_frame` for all objects of the frame at once, given their prompts and/or the memories and
   object pointers the session selected for them;
3. `encode_memory` on the chosen masks, giving the memory the session stores for later frames.

Which memories to select and how long to keep them is the session's policy
(`maskvos.inference.memory_bank`), not the model's.

Shapes: B objects, C = d_model (256), D = mem_dim (64), image input H x W, features h = H/16, w = W/16;
low-resolution masks are 4h x 4w (256 x 256 at 1024 input).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from maskvos.errors import ConfigError
from maskvos.model.common import MLP
from maskvos.model.config import ModelConfig
from maskvos.model.execution import DEFAULT_EXECUTION, Execution, execution_variant, pad_memory
from maskvos.model.image_encoder import ImageEncoder
from maskvos.model.mask_decoder import MaskDecoder
from maskvos.model.memory_attention import MemoryAttention
from maskvos.model.memory_encoder import MemoryEncoder
from maskvos.model.perceiver import SpatialPerceiver
from maskvos.model.position_encoding import sine_encoding_1d
from maskvos.model.prompt_encoder import PromptEncoder

#: The mask logit given to every pixel of an object judged absent from a frame.
NO_OBJECT_LOGIT = -1024.0
#: Mask prompts become logits of +/-10 (sigmoid(-10) = 4.5e-5) when used directly as output.
MASK_PROMPT_SCALE, MASK_PROMPT_BIAS = 20.0, -10.0
#: The memory encoder sees sigmoid(logits) * 20 - 10.
MEMORY_SIGMOID_SCALE, MEMORY_SIGMOID_BIAS = 20.0, -10.0
#: ImageNet normalisation of RGB frames in [0, 1].
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)


@dataclass
class FrameFeatures:
    """Image-encoder outputs of one frame, ready for the decoder and the memory modules.

    Attributes:
        feats: (B, C, h, w) lowest-resolution features (stride 16).
        pos_enc: (B, C, h, w) their sine position encoding.
        high_res_feats: [(B, C/8, 4h, 4w), (B, C/4, 2h, 2w)] already projected for the decoder.
        image_size: (H, W) of the model input.
    """

    feats: torch.Tensor
    pos_enc: torch.Tensor
    high_res_feats: list[torch.Tensor]
    image_size: tuple[int, int]

    def expand(self, batch_size: int) -> FrameFeatures:
        """The same features repeated (as views, no copy) for `batch_size` objects."""

        def grow(x: torch.Tensor) -> torch.Tensor:
            return x.expand(batch_size, -1, -1, -1)

        return FrameFeatures(
            feats=grow(self.feats),
            pos_enc=grow(self.pos_enc),
            high_res_feats=[grow(x) for x in self.high_res_feats],
            image_size=self.image_size,
        )


@dataclass
class MemoryFrame:
    """One frame's spatial memory as the memory attention sees it.

    Attributes:
        feats: (B, D, h, w) memory features (any float dtype; stored memories are often bfloat16).
        pos_enc: (B or 1, D, h, w) their spatial position encoding.
        t_pos: temporal slot: 0 for prompted (conditioning) frames, 1..num_maskmem-1 for recent
            frames, where num_maskmem-1 is the frame right next to the current one.
        key_scale: (B,) factor on the memory-attention keys of its tokens (SAM2Long); None: 1.
    """

    feats: torch.Tensor
    pos_enc: torch.Tensor
    t_pos: int
    key_scale: torch.Tensor | None = None


@dataclass
class ObjectPointer:
    """One earlier frame's object pointer. `ptr` (B, C); `distance` the temporal offset to the current
    frame; `key_scale` (B,) a factor on its tokens' memory-attention keys (None: 1)."""

    ptr: torch.Tensor
    distance: int
    key_scale: torch.Tensor | None = None


@dataclass
class MemoryContext:
    """Everything `track_frame` conditions on besides the current frame.

    Attributes:
        frames: spatial memories, prompted frames first, in the order they are concatenated.
        pointers: object pointers, prompted frames first.
        max_ptr_distance: the normaliser of pointer distances: min(num_frames, max_pointers) - 1.
    """

    frames: list[MemoryFrame] = field(default_factory=list)
    pointers: list[ObjectPointer] = field(default_factory=list)
    max_ptr_distance: int = 15


@dataclass
class TrackOutput:
    """Outputs of `track_frame` for B objects.

    Attributes:
        low_res_logits: (B, 1, 4h, 4w) chosen mask logits.
        high_res_logits: (B, 1, H, W) the same upsampled to the model input size.
        obj_ptr: (B, C) object pointer for later frames.
        object_score_logits: (B, 1) > 0 where the object is judged present.
        iou_scores: (B, M) predicted IoU of each candidate mask (M = 3 with multimask output).
        multimask_logits: (B, M, 4h, 4w) all candidate masks.
        choice: (B,) int64 index of the chosen candidate (0 where there is one).
        candidate_ptrs: (B, M, C) the object pointer each candidate would give.
    """

    low_res_logits: torch.Tensor
    high_res_logits: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    iou_scores: torch.Tensor
    multimask_logits: torch.Tensor
    choice: torch.Tensor
    candidate_ptrs: torch.Tensor | None = None

    @property
    def chosen_iou(self) -> torch.Tensor:
        """(B,) the predicted IoU of the chosen mask."""
        return self.iou_scores.gather(1, self.choice[:, None])[:, 0]


#: Picks one of M candidate masks per object: (multimask logits (B, M, 4h, 4w), predicted IoUs (B, M),
#: model-input size (H, W)) -> (B,) int64 indices.
MaskChooser = Callable[[torch.Tensor, torch.Tensor, tuple[int, int]], torch.Tensor]


class SAM2Model(nn.Module):
    """SAM2 / SAM2.1 with checkpoint-compatible parameter names.

    `execution` says how the step functions run (float32 eager here; `for_execution` gives a variant
    sharing the weights that runs in bfloat16 and/or with compiled steps).
    """

    execution: Execution = DEFAULT_EXECUTION

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c, d = config.d_model, config.mem_dim
        self.image_encoder = ImageEncoder(config.trunk, c, config.fpn_top_down_levels)
        self.memory_attention = MemoryAttention(
            d_model=c, mem_dim=d, num_layers=config.memory_attention_layers, pooling=config.memory_pooling
        )
        self.memory_encoder = MemoryEncoder(in_dim=c, out_dim=d)
        self.sam_prompt_encoder = PromptEncoder(embed_dim=c, mask_in_chans=16)
        self.sam_mask_decoder = MaskDecoder(transformer_dim=c, use_high_res_features=config.use_high_res_features)
        # Turns a full-resolution mask prompt into stride-4 logits for the decoder.
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.obj_ptr_proj = MLP(c, c, c, 3)
        self.obj_ptr_tpos_proj: nn.Module = nn.Linear(c, d) if config.proj_tpos_enc_in_obj_ptrs else nn.Identity()
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(config.num_maskmem, 1, 1, d))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, c))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, c))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, c))
        if config.no_obj_embed_spatial:
            self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, d))
        else:
            self.register_parameter("no_obj_embed_spatial", None)
        self.spatial_perceiver: SpatialPerceiver | None = None
        if config.perceiver is not None:
            self.spatial_perceiver = SpatialPerceiver(config.perceiver)

    def for_execution(self, execution: Execution) -> SAM2Model:
        """This model running as `execution` says (see `maskvos.model.execution`), weights shared."""
        return execution_variant(self, execution)  # type: ignore[return-value]

    def _autocast(self):
        return self.execution.autocast(self.no_mem_embed.device.type)

    # ------------------------------------------------------------------ images
    @property
    def image_size(self) -> int:
        """The checkpoint's native square input size."""
        return self.config.image_size

    def check_resolution(self, resolution: int) -> None:
        """Refuse an input size the network cannot take, in one sentence: a perceiver (EdgeTAM) cuts
        each stride-16 memory into a fixed grid of windows, so its input must be a multiple of
        16 x windows per side (256)."""
        perceiver = self.config.perceiver
        if perceiver is not None and resolution % (16 * perceiver.windows_per_side):
            step = 16 * perceiver.windows_per_side
            raise ConfigError(
                f"Resolution {resolution} does not suit {self.config.name}, whose memories are cut into "
                f"{perceiver.windows_per_side}x{perceiver.windows_per_side} windows; use a multiple of {step} such as 512 or 1024."
            )

    def encode_image(self, images: torch.Tensor) -> FrameFeatures:
        """Run the image encoder.

        Arguments:
            images: (B, 3, H, W) normalised frames (see `PIXEL_MEAN`, `PIXEL_STD`); H, W multiples of 16.
        Returns:
            The frame's features (batch B; bfloat16 under a bfloat16 execution).
        """
        with self._autocast():
            fpn_feats, pos_encs = self.image_encoder(images)
            decoder = self.sam_mask_decoder
            high_res = [decoder.conv_s0(fpn_feats[0]), decoder.conv_s1(fpn_feats[1])] if decoder.use_high_res_features else []
        return FrameFeatures(
            feats=fpn_feats[-1],
            pos_enc=pos_encs[-1],
            high_res_feats=high_res,
            image_size=(images.shape[-2], images.shape[-1]),
        )

    # ------------------------------------------------------------------ tracking
    def track_frame(
        self,
        features: FrameFeatures,
        memory: MemoryContext | None = None,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask_input: torch.Tensor | None = None,
        prev_mask_logits: torch.Tensor | None = None,
        multimask_output: bool | None = None,
        memory_batch: int | None = None,
        choose: MaskChooser | None = None,
        presence_threshold: float = 0.0,
    ) -> TrackOutput:
        """Predict the masks of B objects on one frame.

        Arguments:
            features: the frame's features expanded to B rows.
            memory: memories and pointers to condition on; None for a frame that starts an object's track
                (an initial conditioning frame), where the learned no-memory embedding is added instead.
            points: coords (B, P, 2) in model-input pixels (x, y) and labels (B, P) int32
                (1 positive, 0 negative, -1 padding, 2/3 box corners).
            mask_input: (B, 1, H, W) binary mask prompt at model-input size. It is taken as the output
                directly (SAM2's `use_mask_input_as_output_without_sam`); `points` must then be None.
            prev_mask_logits: (B, 1, 4h, 4w) earlier logits on this frame, given to the decoder as a dense
                prompt together with new points (corrections).
            multimask_output: None applies SAM2's rule: three candidates when at most one point is given.
            memory_batch: run memory attention on at most this many objects at a time (None: all at
                once). On CPUs one at a time is faster: the attention is compute-bound and a smaller
                working set stays in cache.
            choose: picks among multimask candidates (None: SAM2's rule, the highest predicted IoU).
            presence_threshold: the object-score logit above which an object's mask and pointer
                count it as present (SAM2: 0; SAMURAI's configurations: -1).
        Returns:
            The chosen masks, pointers and scores (float32 whatever the execution's dtype).
        """
        if mask_input is not None and points is not None:
            raise ValueError("mask_input and points cannot be combined; give the mask as prev_mask_logits")
        with self._autocast():
            if mask_input is not None:
                out = self._mask_as_output(features, mask_input, presence_threshold)
            else:
                pix_feats = self.condition_on_memory(features, memory, memory_batch)
                if multimask_output is None:
                    num_points = 0 if points is None else points[1].shape[1]
                    multimask_output = num_points <= 1
                out = self._decode(
                    features, pix_feats, points, prev_mask_logits, multimask_output, choose=choose,
                    presence_threshold=presence_threshold,
                )
        return out if self.execution.compute_dtype == torch.float32 else _float32_outputs(out)

    def condition_on_memory(
        self, features: FrameFeatures, memory: MemoryContext | None, memory_batch: int | None = None
    ) -> torch.Tensor:
        """Fuse the frame's lowest-resolution features with memory (`memory_batch` objects at a time).

        Returns:
            (B, C, h, w) memory-conditioned features.
        """
        feats = features.feats
        b, c, h, w = feats.shape
        if memory is None:
            return feats + self.no_mem_embed.view(1, c, 1, 1)
        if memory_batch is not None and b > memory_batch:
            parts = []
            for start in range(0, b, memory_batch):
                rows = slice(start, start + memory_batch)
                parts.append(self.condition_on_memory(_rows(features, rows), _memory_rows(memory, rows)))
            return torch.cat(parts)
        if not memory.frames:
            raise ValueError("a tracked frame needs at least one memory frame (a prompted frame)")
        mem_tokens, mem_pos = [], []
        num_slots = self.config.num_maskmem
        for frame in memory.frames:
            mem_tokens.append(frame.feats.to(feats.dtype).flatten(2).transpose(1, 2).expand(b, -1, -1))
            tpos = self.maskmem_tpos_enc[num_slots - frame.t_pos - 1].view(1, 1, -1)
            pos = frame.pos_enc.to(feats.dtype).flatten(2).transpose(1, 2) + tpos
            mem_pos.append(pos.expand(b, -1, -1))
        num_ptr_tokens = 0
        if memory.pointers:
            ptr_tokens, ptr_pos = self._pointer_tokens(memory.pointers, memory.max_ptr_distance, b)
            mem_tokens.append(ptr_tokens)
            mem_pos.append(ptr_pos)
            num_ptr_tokens = ptr_tokens.shape[1]
        tokens_per_ptr = num_ptr_tokens // max(len(memory.pointers), 1)
        key_scales = _key_scales(memory, b, tokens_per_ptr, feats)
        curr = feats.flatten(2).transpose(1, 2)
        curr_pos = features.pos_enc.to(feats.dtype).flatten(2).transpose(1, 2)
        layout = self._memory_token_layout()
        memory_feats, memory_pos, memory_mask = torch.cat(mem_tokens, dim=1), torch.cat(mem_pos, dim=1), None
        # A fixed layout, so that the compiled attention keeps its shapes; EfficientTAM's pooling applies
        # from two memory frames on, so its first tracked frame (one memory frame) keeps its own shape.
        if self.execution.static_memory and not (self.config.memory_pooling and len(memory.frames) < 2):
            per_frame = mem_tokens[0].shape[1]
            memory_feats, memory_pos, key_scales, memory_mask, num_ptr_tokens = pad_memory(
                memory_feats, memory_pos, key_scales, len(memory.frames), per_frame, len(memory.pointers),
                self.config.d_model // self.config.mem_dim, frames_base=num_slots,
            )
        fused = self.memory_attention(
            curr,
            curr_pos,
            memory_feats,
            memory_pos,
            num_obj_ptr_tokens=num_ptr_tokens,
            feat_size=(h, w),
            key_scales=key_scales,
            memory_tokens=layout,
            memory_mask=memory_mask,
        )
        return fused.transpose(1, 2).reshape(b, c, h, w)

    def _memory_token_layout(self) -> tuple[int, int, tuple[int, int]] | None:
        """How a memory frame's tokens are laid out for memory attention (see `MemoryAttention`)."""
        perceiver = self.config.perceiver
        if perceiver is None:
            return None
        side = perceiver.windows_per_side
        return perceiver.num_latents + side * side, perceiver.num_latents, (side, side)

    def _pointer_tokens(
        self, pointers: Sequence[ObjectPointer], max_distance: int, batch_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Object pointers as memory tokens: each C-wide pointer becomes C/D tokens of width D.

        Returns:
            tokens and their temporal position encodings, both (B, len(pointers) * C/D, D).
        """
        c, d = self.config.d_model, self.config.mem_dim
        ptrs = torch.stack([p.ptr for p in pointers], dim=1)  # (B, P, C)
        num_ptrs = ptrs.shape[1]
        if self.config.add_tpos_enc_to_obj_ptrs:
            distances = torch.tensor([p.distance for p in pointers], dtype=torch.float32, device=ptrs.device)
            enc_dim = c if self.config.proj_tpos_enc_in_obj_ptrs else d
            pos = sine_encoding_1d(distances / max_distance, enc_dim)
            pos = self.obj_ptr_tpos_proj(pos.to(ptrs.dtype))  # (P, D)
        else:
            pos = ptrs.new_zeros(num_ptrs, d)
        split = c // d
        tokens = ptrs.reshape(batch_size, num_ptrs * split, d)
        pos = pos.repeat_interleave(split, dim=0).unsqueeze(0).expand(batch_size, -1, -1)
        return tokens, pos

    def _decode(
        self,
        features: FrameFeatures,
        pix_feats: torch.Tensor,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        mask_logits: torch.Tensor | None,
        multimask_output: bool,
        with_high_res: bool = True,
        choose: MaskChooser | None = None,
        presence_threshold: float = 0.0,
    ) -> TrackOutput:
        """Prompt encoder + mask decoder + object pointer (SAM2's `_forward_sam_heads`).

        `with_high_res=False` skips upsampling the chosen mask to input size (`high_res_logits` is then
        the low-resolution mask) for callers that only need the pointer.
        """
        b = pix_feats.shape[0]
        device = pix_feats.device
        image_size = features.image_size
        if points is None:
            # An empty prompt is a single padding point.
            points = (
                torch.zeros(b, 1, 2, device=device),
                -torch.ones(b, 1, dtype=torch.int32, device=device),
            )
        dense_prompt = None
        if mask_logits is not None:
            low_res_size = (image_size[0] // 4, image_size[1] // 4)
            dense_prompt = mask_logits
            if mask_logits.shape[-2:] != low_res_size:
                dense_prompt = F.interpolate(
                    mask_logits.float(), size=low_res_size, mode="bilinear", align_corners=False, antialias=True
                )
        sparse, dense = self.sam_prompt_encoder(points, None, dense_prompt, image_size)
        multimasks, ious, tokens, obj_scores = self.sam_mask_decoder(
            pix_feats,
            self.sam_prompt_encoder.dense_pe(image_size),
            sparse,
            dense,
            multimask_output,
            features.high_res_feats,
        )
        is_present = obj_scores > presence_threshold
        multimasks = torch.where(is_present[:, :, None, None], multimasks, NO_OBJECT_LOGIT).float()
        token = tokens[:, 0]
        best = torch.zeros(b, dtype=torch.int64, device=device)
        if multimask_output:
            best = torch.argmax(ious, dim=-1) if choose is None else choose(multimasks, ious, image_size).to(device)
            rows = torch.arange(b, device=device)
            low_res = multimasks[rows, best].unsqueeze(1)
            if tokens.shape[1] > 1:
                token = tokens[rows, best]
        else:
            low_res = multimasks
        high_res = low_res
        if with_high_res:
            high_res = F.interpolate(low_res, size=image_size, mode="bilinear", align_corners=False)
        obj_ptr = self._gate_pointer(self.obj_ptr_proj(token), is_present.float())
        candidate_ptrs = None
        if multimask_output and tokens.shape[1] > 1:
            # One candidate at a time, as the chosen one's pointer is computed (the same rounding).
            presence = is_present.float()
            candidate_ptrs = torch.stack(
                [self._gate_pointer(self.obj_ptr_proj(tokens[:, j]), presence) for j in range(tokens.shape[1])], dim=1
            )
        return TrackOutput(
            low_res_logits=low_res,
            high_res_logits=high_res,
            obj_ptr=obj_ptr,
            object_score_logits=obj_scores,
            iou_scores=ious,
            multimask_logits=multimasks,
            choice=best,
            candidate_ptrs=candidate_ptrs,
        )

    def _gate_pointer(self, obj_ptr: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
        """Replace the pointer of absent objects by the learned `no_obj_ptr`. presence: (B, 1) in {0, 1}."""
        return presence * obj_ptr + (1 - presence) * self.no_obj_ptr

    def _mask_as_output(self, features: FrameFeatures, mask_input: torch.Tensor, presence_threshold: float = 0.0) -> TrackOutput:
        """A mask prompt taken as the prediction; the decoder only supplies the object pointer."""
        high_res = mask_input.float() * MASK_PROMPT_SCALE + MASK_PROMPT_BIAS
        low_res = F.interpolate(
            high_res,
            size=(high_res.shape[-2] // 4, high_res.shape[-1] // 4),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        # The pointer comes from the decoder on the raw (not memory-conditioned) features.
        decoded = self._decode(
            features,
            features.feats,
            None,
            self.mask_downsample(mask_input.float()),
            multimask_output=False,
            with_high_res=False,
            presence_threshold=presence_threshold,
        )
        presence = (mask_input.flatten(1).float() > 0).any(dim=1, keepdim=True).float()
        obj_scores = presence * MASK_PROMPT_SCALE + MASK_PROMPT_BIAS
        # `decoded.obj_ptr` was already gated by the decoder's own score: SAM2 gates it again by the
        # mask's presence, and so do we (for a present object this is the identity).
        obj_ptr = self._gate_pointer(decoded.obj_ptr, presence)
        ones = mask_input.new_ones(mask_input.shape[0], 1).float()
        return TrackOutput(
            low_res_logits=low_res,
            high_res_logits=high_res,
            obj_ptr=obj_ptr,
            object_score_logits=obj_scores,
            iou_scores=ones,
            multimask_logits=low_res,
            choice=torch.zeros(mask_input.shape[0], dtype=torch.int64, device=mask_input.device),
        )

    # ------------------------------------------------------------------ memory
    def encode_memory(
        self,
        features: FrameFeatures,
        high_res_logits: torch.Tensor,
        object_score_logits: torch.Tensor,
        binarize: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a frame and its chosen masks into a memory.

        Arguments:
            features: the frame's features, B rows.
            high_res_logits: (B, 1, H, W) mask logits at model-input size.
            object_score_logits: (B, 1); absent objects get the learned no-object embedding (SAM2.1).
            binarize: use the hard mask (logits > 0) instead of its sigmoid, as SAM2 does for masks
                that came from clicks.
        Returns:
            memory features (B, D, h, w) and their position encoding (B, D, h, w); with a spatial
            perceiver (EdgeTAM) its N tokens instead, laid out as a 1 x N grid: (B, D, 1, N).
            Under a bfloat16 execution the features are bfloat16.
        """
        with self._autocast():
            return self._encode_memory(features, high_res_logits, object_score_logits, binarize)

    def _encode_memory(
        self, features: FrameFeatures, high_res_logits: torch.Tensor, object_score_logits: torch.Tensor, binarize: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if binarize:
            mask_probs = (high_res_logits > 0).float()
        else:
            mask_probs = torch.sigmoid(high_res_logits)
        mask_in = mask_probs * MEMORY_SIGMOID_SCALE + MEMORY_SIGMOID_BIAS
        mem_feats, mem_pos = self.memory_encoder(features.feats, mask_in)
        if self.no_obj_embed_spatial is not None:
            is_absent = (object_score_logits <= 0).to(mem_feats.dtype)  # (B, 1)
            mem_feats = mem_feats + is_absent[:, :, None, None] * self.no_obj_embed_spatial[:, :, None, None]
        if self.spatial_perceiver is not None:
            tokens, token_pos = self.spatial_perceiver(mem_feats, mem_pos)
            return tokens.transpose(1, 2).unsqueeze(2), token_pos.transpose(1, 2).unsqueeze(2)
        return mem_feats, mem_pos


def _float32_outputs(out: TrackOutput) -> TrackOutput:
    """A reduced-precision step's outputs with their floating-point tensors in float32."""

    def f32(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.float()

    return TrackOutput(
        low_res_logits=out.low_res_logits.float(),
        high_res_logits=out.high_res_logits.float(),
        obj_ptr=out.obj_ptr.float(),
        object_score_logits=out.object_score_logits.float(),
        iou_scores=out.iou_scores.float(),
        multimask_logits=out.multimask_logits.float(),
        choice=out.choice,
        candidate_ptrs=f32(out.candidate_ptrs),
    )


def _rows(features: FrameFeatures, rows: slice) -> FrameFeatures:
    """The features of some objects (a slice of the batch)."""
    return FrameFeatures(
        feats=features.feats[rows],
        pos_enc=features.pos_enc[rows],
        high_res_feats=[x[rows] for x in features.high_res_feats],
        image_size=features.image_size,
    )


def _memory_rows(memory: MemoryContext, rows: slice) -> MemoryContext:
    """The memories of some objects; position encodings shared by all objects (batch 1) stay as they are."""
    return MemoryContext(
        frames=[
            MemoryFrame(
                f.feats[rows],
                f.pos_enc if f.pos_enc.shape[0] == 1 else f.pos_enc[rows],
                f.t_pos,
                None if f.key_scale is None else f.key_scale[rows],
            )
            for f in memory.frames
        ],
        pointers=[
            ObjectPointer(p.ptr[rows], p.distance, None if p.key_scale is None else p.key_scale[rows])
            for p in memory.pointers
        ],
        max_ptr_distance=memory.max_ptr_distance,
    )


def _key_scales(memory: MemoryContext, batch_size: int, tokens_per_pointer: int, like: torch.Tensor) -> torch.Tensor | None:
    """(B, M) per-token factors on the memory-attention keys, from the frames' and pointers'
    `key_scale`; None where none is set."""
    items = [(f.key_scale, f.feats.shape[-2] * f.feats.shape[-1]) for f in memory.frames]
    items += [(p.key_scale, tokens_per_pointer) for p in memory.pointers]
    if all(scale is None for scale, _ in items):
        return None
    parts = []
    for scale, count in items:
        if scale is None:
            scale = like.new_ones(batch_size)
        parts.append(scale.to(like.dtype).view(batch_size, 1).expand(batch_size, count))
    return torch.cat(parts, dim=1)
