"""One training clip through the model: the prompted first frame, then each frame tracked with the
memories of the frames before it, as the video session tracks (SAM2's memory layout).

Gradients flow through the whole clip (memories included), as in SAM2's training. The clip is short
(fewer frames than memory slots), so every earlier frame is attended to: the prompted frame at
temporal slot 0 and the frame d steps back at slot num_maskmem - d; object pointers of the prompted
frame and of the frames up to max_pointers - 1 back, their distances normalised by
min(clip length, max_pointers) - 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maskvos.model.sam2 import MemoryContext, MemoryFrame, ObjectPointer, SAM2Model
from maskvos.train.clips import Clip
from maskvos.train.features import FeatureCache
from maskvos.train.losses import FrameLoss, frame_loss

MAX_POINTERS = 16


def clip_losses(model: SAM2Model, cache: FeatureCache, clip: Clip, resolution: int) -> list[FrameLoss]:
    """The loss of every supervised frame of `clip` (the first frame too when prompted by box or click)."""
    device = cache.device
    b = len(clip.obj_ids)
    num_slots = model.config.num_maskmem
    n = len(clip.frames)
    memories: list[tuple[torch.Tensor, torch.Tensor]] = []
    pointers: list[torch.Tensor] = []
    losses = []
    for k, t in enumerate(clip.frames):
        feats = cache.features(clip.seq, t, b)
        targets = clip.targets(k, resolution).to(device)
        if k == 0:
            if clip.prompt == "mask":
                out = model.track_frame(feats, mask_input=targets)
            else:
                coords, labels = clip.points
                out = model.track_frame(feats, points=(coords.to(device), labels.to(device)))
                losses.append(frame_loss(out, targets))
        else:
            frames = [MemoryFrame(memories[0][0], memories[0][1], 0)]
            frames += [
                MemoryFrame(memories[j][0], memories[j][1], num_slots - (k - j)) for j in range(max(1, k - num_slots + 1), k)
            ]
            ptrs = [ObjectPointer(pointers[0], k)]
            ptrs += [ObjectPointer(pointers[j], k - j) for j in range(max(1, k - MAX_POINTERS + 1), k)]
            context = MemoryContext(frames=frames, pointers=ptrs, max_ptr_distance=min(n, MAX_POINTERS) - 1)
            out = model.track_frame(feats, memory=context)
            losses.append(frame_loss(out, targets))
        if k < n - 1:
            high_res = out.high_res_logits
            if k == 0:  # a prompted frame's memory: its low-resolution mask upsampled, binarised (as the session does)
                high_res = F.interpolate(out.low_res_logits, size=targets.shape[-2:], mode="bilinear", align_corners=False)
            mem_feats, mem_pos = model.encode_memory(feats, high_res, out.object_score_logits, binarize=(k == 0))
            memories.append((mem_feats, mem_pos))
            pointers.append(out.obj_ptr)
    return losses
