"""How a session lets a memory policy pick among the decoder's candidate masks: the candidates' boxes
(and masks) handed to `MemoryPolicy.choose_mask`, the state each object carries from frame to frame,
and the replay of recorded choices when evicted memories are rebuilt."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maskvos.inference.memory_bank import MemoryBank, RebuildView
from maskvos.inference.policies import MaskCandidates, MaskChoice, MemoryPolicy
from maskvos.model.sam2 import MaskChooser


def policy_chooser(policy: MemoryPolicy, states: list[tuple[float, ...] | None]) -> tuple[MaskChooser | None, list[MaskChoice]]:
    """The mask chooser of a policy that picks among the decoder's candidates (None for SAM2's rule),
    for objects whose carried states are `states`, and the list it fills with each object's
    `MaskChoice` when the decoder gives several candidates."""
    if not policy.chooses_masks:
        return None, []
    choices: list[MaskChoice] = []

    def choose(multimask_logits: torch.Tensor, ious: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        high_res = F.interpolate(multimask_logits, size=image_size, mode="bilinear", align_corners=False) > 0
        boxes = candidate_boxes(high_res)
        masks = high_res.cpu().numpy() if policy.needs_candidate_masks else None
        for row, state in enumerate(states):
            candidates = MaskCandidates(boxes[row], tuple(ious[row].float().tolist()), None if masks is None else masks[row])
            choices.append(policy.choose_mask(candidates, state))
        return torch.tensor([c.index for c in choices], dtype=torch.int64)

    return choose, choices


def replay_chooser(candidates: list[int | None]) -> tuple[MaskChooser, list[MaskChoice]]:
    """A chooser that takes the candidates chosen before (a rebuild of SAM2Long memories, whose tree
    chose them; SAM2's rule where none was recorded), and the list of its choices."""
    choices: list[MaskChoice] = []

    def choose(multimask_logits: torch.Tensor, ious: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        best = ious.argmax(dim=-1).tolist()
        choices.extend(MaskChoice(b if c is None else c) for b, c in zip(best, candidates))
        return torch.tensor([c.index for c in choices], dtype=torch.int64)

    return choose, choices


def chosen_before(bank: MemoryBank, obj_id: int, frame_idx: int) -> int | None:
    """The candidate the object's stored (or evicted) output on a frame was."""
    mem = bank.objects[obj_id]
    entry = mem.tracked.get(frame_idx)
    signals = entry.signals if entry is not None else mem.evicted_signals.get(frame_idx)
    return None if signals is None else signals.candidate


def carried_state(
    bank: MemoryBank, obj_id: int, frame_idx: int, reverse: bool, rebuild: RebuildView | None
) -> tuple[float, ...] | None:
    """What the policy carried to `frame_idx` from the object's previous frame in the pass (a
    prompt's, or a frame tracked in the same direction and visible to a rebuild); None otherwise."""
    previous = frame_idx + (1 if reverse else -1)
    mem = bank.objects[obj_id]
    entry = mem.prompted.get(previous)
    if entry is None:
        entry = mem.tracked.get(previous)
        if entry is None or mem.directions.get(previous) != reverse:
            return None
        if rebuild is not None and not rebuild.sees(obj_id, previous, entry):
            return None
    return entry.track_state


def candidate_boxes(masks: torch.Tensor) -> list[tuple[tuple[int, int, int, int] | None, ...]]:
    """Per object and candidate, the (x0, y0, x1, y1) inclusive pixel bounds of a (B, M, H, W) bool
    mask's foreground; None where it is empty."""
    rows, cols = masks.any(dim=-1), masks.any(dim=-2)  # (B, M, H), (B, M, W)
    height, width = masks.shape[-2:]
    y0 = rows.int().argmax(-1)
    y1 = height - 1 - rows.flip(-1).int().argmax(-1)
    x0 = cols.int().argmax(-1)
    x1 = width - 1 - cols.flip(-1).int().argmax(-1)
    present = rows.any(-1)
    bounds = torch.stack([x0, y0, x1, y1], dim=-1).tolist()
    return [tuple(tuple(b) if p else None for b, p in zip(bounds[i], present[i].tolist())) for i in range(masks.shape[0])]
