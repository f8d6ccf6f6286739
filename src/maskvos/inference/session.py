"""`VideoSession`: prompt objects on any frame, then propagate their masks through the video.

The session drives the model's per-frame step functions with SAM2's video semantics and gives the
same masks as Meta's `SAM2VideoPredictor` (with `add_all_frames_to_correct_as_cond=True`, so a
correction stays a prompt), without its limits: frames are read lazily from any source, memories
no longer selectable are evicted (resident memory does not grow with the video), the objects of a
frame run through memory attention, decoder and memory encoder as one batch, and results come at
the frame's own size, with a user's mask prompt returned unchanged.

State is split into small parts: `FrameCache` (frames, features), `ObjectRegistry` (ids),
`MemoryBank` (memories and selection), and the prompt masks kept to be returned as given.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from maskvos.errors import MaskvosError
from maskvos.inference.config import InferenceConfig
from maskvos.inference.frame_cache import FrameCache, sam2_encoder
from maskvos.inference.memory_bank import MemoryBank, MemoryEntry, MemoryPlan, bank_state, restore_bank
from maskvos.inference.objects import ObjectRegistry
from maskvos.inference.prompts import check_mask, mask_to_model_input, points_to_model_input
from maskvos.io.frames import FrameSource, open_source
from maskvos.io.masks import masks_to_label_map
from maskvos.model.sam2 import (
    MASK_PROMPT_BIAS,
    MASK_PROMPT_SCALE,
    FrameFeatures,
    MemoryContext,
    MemoryFrame,
    ObjectPointer,
    SAM2Model,
    TrackOutput,
)

DIRECTIONS = ("forward", "backward", "both")
#: Logits are clamped to this range before they are given back to the decoder as a dense prompt.
PREV_LOGIT_CLAMP = 32.0


class SessionError(MaskvosError):
    """A session used out of order or with arguments that do not fit the video."""


@dataclass
class FrameResult:
    """All objects' results on one frame, at the frame's original size.

    Attributes:
        frame_idx: 0-based frame index.
        obj_ids: object ids, one per row below.
        mask_logits: (B, H, W) float32 mask logits (> 0 inside). On a frame prompted with a mask the
            row is +10 inside the given mask and -10 outside.
        masks: (B, H, W) bool masks; on a mask-prompted frame exactly the mask given.
        object_scores: (B,) object presence logits (> 0: present).
        overlap: the rule `label_map` uses by default ("score" or "order").
    """

    frame_idx: int
    obj_ids: list[int]
    mask_logits: torch.Tensor
    masks: torch.Tensor
    object_scores: torch.Tensor
    overlap: str = "score"

    def masks_by_id(self) -> dict[int, np.ndarray]:
        """{obj_id: bool (H, W)}."""
        masks = self.masks.numpy()
        return {obj_id: masks[i] for i, obj_id in enumerate(self.obj_ids)}

    def label_map(self, overlap: str | None = None) -> np.ndarray:
        """(H, W) label map, each pixel the id of at most one object (0 background).

        With overlap "score" the object with the highest logit wins a contested pixel; with "order"
        the object listed last wins.
        """
        rule = overlap or self.overlap
        if not self.obj_ids:
            raise SessionError("This frame has no objects; prompt an object first.")
        scores = None
        if rule == "score":
            logits = self.mask_logits.numpy()
            scores = {obj_id: logits[i] for i, obj_id in enumerate(self.obj_ids)}
        return masks_to_label_map(self.masks_by_id(), scores)


class SessionBase(ABC):
    """What every session (SAM2's `VideoSession`, the `featmatch` backend's) shares: the frames, the
    object ids, frame-index checks, and how `propagate` arguments become passes over the video.

    Subclasses set `frames` (a `FrameCache`), `objects` (an `ObjectRegistry`) and
    `_new_prompt_frames`, and list their prompted frames in `_prompted_frames`.
    """

    frames: FrameCache
    objects: ObjectRegistry
    _new_prompt_frames: set[int]

    @property
    def num_frames(self) -> int | None:
        """Frames in the video; None for a stream of unknown length."""
        return self.frames.num_frames

    @property
    def height(self) -> int:
        return self.frames.source.height

    @property
    def width(self) -> int:
        return self.frames.source.width

    @property
    def obj_ids(self) -> list[int]:
        return self.objects.obj_ids

    @abstractmethod
    def _prompted_frames(self) -> set[int]:
        """Frames that hold a prompt (where a default propagation may start)."""

    def _check_frame(self, frame_idx: int) -> None:
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)):
            raise SessionError(f"Frame index {frame_idx!r} is not an integer; pass a 0-based frame number.")
        self.frames.source.check_index(int(frame_idx))

    def _plan_passes(self, start: int | None, end: int | None, direction: str) -> list[tuple[int, int | None, bool, bool]]:
        """Check `propagate`'s arguments and turn them into passes: (start, stop inclusive or None for
        the end of the source, reverse, skip the first frame). Clears the record of new prompts."""
        if direction not in DIRECTIONS:
            raise SessionError(f"Direction '{direction}' is unknown; use forward, backward or both.")
        if not len(self.objects):
            raise SessionError("No object has been prompted; add a mask, points or a box first.")
        if direction != "forward" and self.num_frames is None:
            raise SessionError(f"A stream can only be tracked forward, not '{direction}'; use direction 'forward'.")
        prompted = self._prompted_frames()
        fresh = self._new_prompt_frames & prompted or prompted
        if start is None:
            start = max(fresh) if direction == "backward" else min(fresh)
        self._check_frame(start)
        if direction == "backward":
            stop = 0 if end is None else end
            self._check_frame(stop)
            if stop > start:
                raise SessionError(f"Going backward, end frame {stop} must not come after start frame {start}.")
            passes = [(start, stop, True, False)]
        else:
            if end is not None:
                self._check_frame(end)
                if end < start:
                    raise SessionError(f"Going forward, end frame {end} must not come before start frame {start}.")
            last = self.num_frames - 1 if self.num_frames is not None else None
            passes = [(start, end if end is not None else last, False, False)]
            if direction == "both":
                passes.append((start, 0, True, True))
        self._new_prompt_frames.clear()
        return passes


class VideoSession(SessionBase):
    """Prompts and propagation over one video for one model.

    Example:
        >>> session = VideoSession(model, "video.mp4")
        >>> session.add_mask(0, obj_id=1, mask=first_mask)
        >>> for result in session.propagate():
        ...     labels = result.label_map()
    """

    def __init__(
        self,
        model: SAM2Model,
        source: str | FrameSource | np.ndarray | Iterable[np.ndarray],
        config: InferenceConfig | None = None,
    ) -> None:
        self.model = model.eval()
        self.config = config or InferenceConfig()
        self.device = next(model.parameters()).device
        self.resolution = self.config.resolution or model.image_size
        self.frames = FrameCache(
            open_source(source),
            sam2_encoder(model, self.resolution, self.device),
            cache_size=self.config.feature_cache,
            prefetch_depth=self.config.prefetch,
        )
        self.objects = ObjectRegistry()
        self.bank = MemoryBank(
            model.config.num_maskmem,
            stride=self.config.memory_stride,
            max_pointers=self.config.max_pointers,
            max_prompted_frames=self.config.max_prompted_frames,
            keep_all=self.config.keep_all_memories,
        )
        #: (obj_id, frame_idx) -> the user's mask prompt, returned unchanged on that frame.
        self._prompt_masks: dict[tuple[int, int], np.ndarray] = {}
        self._memory_batch = self.config.memory_batch
        if self._memory_batch is None and self.device.type == "cpu":
            self._memory_batch = 1
        #: frames prompted since the last propagation (where the next one starts by default).
        self._new_prompt_frames: set[int] = set()

    # ------------------------------------------------------------------ prompts
    @torch.inference_mode()
    def add_mask(self, frame_idx: int, obj_id: int, mask: np.ndarray | torch.Tensor) -> FrameResult:
        """Prompt object `obj_id` on `frame_idx` with a mask (H, W) of the frame's size (nonzero = object).

        Returns the object's result on that frame: the mask itself.
        """
        self._check_frame(frame_idx)
        mask_bool = check_mask(mask, self.height, self.width, f"The mask of object {obj_id} on frame {frame_idx}")
        self.objects.add(obj_id)
        mem = self.bank.object(obj_id)
        features = self.frames.features(frame_idx)
        out = self.model.track_frame(features, mask_input=mask_to_model_input(mask_bool, self.resolution, self.device))
        mem.pending[frame_idx] = _entry(out, 0)
        self._prompt_masks[(obj_id, frame_idx)] = mask_bool
        self._new_prompt_frames.add(frame_idx)
        return self._result(frame_idx, [obj_id], [mem.pending[frame_idx]])

    @torch.inference_mode()
    def add_points(
        self,
        frame_idx: int,
        obj_id: int,
        points: Sequence[Sequence[float]] | np.ndarray | None = None,
        labels: Sequence[int] | np.ndarray | None = None,
        box: Sequence[float] | np.ndarray | None = None,
    ) -> FrameResult:
        """Prompt or correct object `obj_id` on `frame_idx` with clicks and/or a box.

        Arguments:
            points: (P, 2) (x, y) pixel coordinates.
            labels: (P,) 1 for the object, 0 for background (default all 1).
            box: x0, y0, x1, y1 in pixels.
        The new points replace earlier points of the object on this frame; the object's current mask
        there (a mask prompt, earlier clicks, or the tracked mask) is refined. On an already tracked
        frame this is a correction: the frame becomes a prompt, and the next `propagate()` starts here.
        """
        self._check_frame(frame_idx)
        coords, lbls = points_to_model_input(
            points, labels, box, self.height, self.width, self.resolution, self.device
        )
        self.objects.add(obj_id)
        mem = self.bank.object(obj_id)
        is_first_visit = frame_idx not in mem.directions
        reverse = mem.directions.get(frame_idx, False)
        memory = None
        if not is_first_visit:
            if mem.latest(frame_idx) is None or self.bank.missing_context(obj_id, frame_idx, reverse):
                self._rebuild(obj_id, frame_idx, reverse)
            plan = self.bank.plan(obj_id, frame_idx, reverse, self.num_frames, self._signed)
            memory = self._memory_context(plan, [obj_id])
        prev = mem.latest(frame_idx)
        prev_logits = None if prev is None else prev.low_res_logits.clamp(-PREV_LOGIT_CLAMP, PREV_LOGIT_CLAMP)
        out = self.model.track_frame(
            self.frames.features(frame_idx), memory=memory, points=(coords, lbls), prev_mask_logits=prev_logits
        )
        mem.pending[frame_idx] = _entry(out, 0)
        self._prompt_masks.pop((obj_id, frame_idx), None)
        self._new_prompt_frames.add(frame_idx)
        return self._result(frame_idx, [obj_id], [mem.pending[frame_idx]])

    def add_box(
        self,
        frame_idx: int,
        obj_id: int,
        box: Sequence[float] | np.ndarray,
        points: Sequence[Sequence[float]] | np.ndarray | None = None,
        labels: Sequence[int] | np.ndarray | None = None,
    ) -> FrameResult:
        """Prompt object `obj_id` with a box x0, y0, x1, y1 (pixels), optionally with clicks."""
        return self.add_points(frame_idx, obj_id, points, labels, box=box)

    def remove_object(self, obj_id: int) -> None:
        """Forget an object and all its prompts and memories."""
        self.objects.remove(obj_id)
        self.bank.remove(obj_id)
        for key in [k for k in self._prompt_masks if k[0] == obj_id]:
            del self._prompt_masks[key]

    # ------------------------------------------------------------------ propagation
    def propagate(
        self, start: int | None = None, end: int | None = None, direction: str = "forward"
    ) -> Iterator[FrameResult]:
        """Track every object through the video, yielding one `FrameResult` per frame.

        Arguments:
            start: first frame; by default the earliest frame prompted since the last propagation
                (the latest, going backward), or the earliest prompt of all when nothing is new.
            end: last frame, inclusive; by default the last frame (forward) or frame 0 (backward).
            direction: "forward", "backward", or "both" (forward from `start`, then backward from it;
                every frame is yielded once).
        """
        passes = self._plan_passes(start, end, direction)
        return self._propagate(passes)

    @torch.inference_mode()
    def _propagate(self, passes: list[tuple[int, int | None, bool, bool]]) -> Iterator[FrameResult]:
        self._encode_prompts()
        for start, stop, reverse, skip_first in passes:
            for i, result in enumerate(self._run_pass(start, stop, reverse, self.obj_ids)):
                if not (skip_first and i == 0):
                    yield result

    def _prompted_frames(self) -> set[int]:
        return {t for m in self.bank.objects.values() for t in (*m.prompted, *m.pending)}

    def _run_pass(self, start: int, stop: int | None, reverse: bool, obj_ids: list[int]) -> Iterator[FrameResult]:
        """Process frames `start`..`stop` (inclusive) for `obj_ids`, storing memories and evicting old ones."""
        for frame_idx, frame in self.frames.iterate(start, stop, reverse):
            # Evict before, not after, a frame: what the last frame of a pass attended to stays, so a
            # correction there needs no rebuild.
            self.bank.evict(frame_idx, reverse, obj_ids)
            features = self.frames.features(frame_idx, frame)
            entries = self._track_frame(frame_idx, features, reverse, obj_ids)
            for obj_id in obj_ids:
                self.bank.objects[obj_id].directions[frame_idx] = reverse
            yield self._result(frame_idx, obj_ids, entries)

    def _track_frame(self, frame_idx: int, features: FrameFeatures, reverse: bool, obj_ids: list[int]) -> list[MemoryEntry]:
        """Outputs of `obj_ids` on one frame: stored prompts as they are, the others tracked in batches
        of objects that attend to the same frames."""
        entries: dict[int, MemoryEntry] = {}
        groups: dict[MemoryPlan, list[int]] = {}
        for obj_id in obj_ids:
            mem = self.bank.objects[obj_id]
            if frame_idx in mem.prompted:
                entries[obj_id] = mem.prompted[frame_idx]
            else:
                plan = self.bank.plan(obj_id, frame_idx, reverse, self.num_frames, self._signed)
                groups.setdefault(plan, []).append(obj_id)
        tracked_ids, outputs = [], []
        for plan, group in groups.items():
            out = self.model.track_frame(
                features.expand(len(group)), memory=self._memory_context(plan, group), memory_batch=self._memory_batch
            )
            tracked_ids += group
            outputs.append(out)
        if tracked_ids:
            high_res = torch.cat([o.high_res_logits for o in outputs])
            scores = torch.cat([o.object_score_logits for o in outputs])
            mem_feats, mem_pos = self.model.encode_memory(features.expand(len(tracked_ids)), high_res, scores)
            self._set_mem_pos(mem_pos)
            row = 0
            for out in outputs:
                for i in range(out.obj_ptr.shape[0]):
                    entry = _entry(out, i)
                    entry.mem_feats = mem_feats[row : row + 1].to(self.config.memory_dtype).clone()
                    obj_id = tracked_ids[row]
                    self.bank.objects[obj_id].tracked[frame_idx] = entry
                    entries[obj_id] = entry
                    row += 1
        return [entries[obj_id] for obj_id in obj_ids]

    def _memory_context(self, plan: MemoryPlan, group: list[int]) -> MemoryContext:
        frames = []
        for t, t_pos, is_prompted in plan.spatial:
            feats = torch.cat([self.bank.entry(o, t, is_prompted).mem_feats for o in group])
            frames.append(MemoryFrame(feats, self.bank.mem_pos_enc, t_pos))
        pointers = [
            ObjectPointer(torch.cat([self.bank.entry(o, t, is_prompted).obj_ptr for o in group]), distance)
            for t, distance, is_prompted in plan.pointers
        ]
        return MemoryContext(frames=frames, pointers=pointers, max_ptr_distance=plan.max_distance)

    def _encode_prompts(self) -> None:
        """Encode the memories of new prompts (binarised masks, as SAM2 does for frames the user touched)."""
        by_frame: dict[int, list[int]] = {}
        for obj_id in self.obj_ids:
            for frame_idx in self.bank.objects[obj_id].pending:
                by_frame.setdefault(frame_idx, []).append(obj_id)
        for frame_idx, group in sorted(by_frame.items()):
            entries = [self.bank.objects[o].pending.pop(frame_idx) for o in group]
            low_res = torch.cat([e.low_res_logits for e in entries])
            high_res = F.interpolate(low_res, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
            scores = torch.cat([e.object_score_logits for e in entries])
            features = self.frames.features(frame_idx).expand(len(group))
            mem_feats, mem_pos = self.model.encode_memory(features, high_res, scores, binarize=True)
            self._set_mem_pos(mem_pos)
            for i, (obj_id, entry) in enumerate(zip(group, entries)):
                entry.mem_feats = mem_feats[i : i + 1].to(self.config.memory_dtype).clone()
                mem = self.bank.objects[obj_id]
                mem.prompted[frame_idx] = entry
                mem.tracked.pop(frame_idx, None)

    def _rebuild(self, obj_id: int, frame_idx: int, reverse: bool) -> None:
        """Re-track an object up to `frame_idx` when memories it needs there were evicted.

        Starts at the closest earlier prompted frame of the pass that tracked `frame_idx` (or where
        that pass began), so the recomputed memories equal the evicted ones.
        """
        mem = self.bank.objects[obj_id]
        step = 1 if reverse else -1
        start = frame_idx
        while start not in mem.prompted and mem.directions.get(start + step) == reverse:
            start += step
        for _ in self._run_pass(start, frame_idx, reverse, [obj_id]):
            pass

    # ------------------------------------------------------------------ saving
    def state_dict(self) -> dict:
        """Everything a session has learnt (objects, prompts, memories) as plain containers of tensors.

        Saved between frames of a propagation and restored into a new session on the same video and
        model, the continued propagation gives exactly the results of an uninterrupted one.
        """
        return {
            "obj_ids": self.obj_ids,
            "bank": bank_state(self.bank),
            "prompt_masks": {f"{o}:{t}": torch.from_numpy(m) for (o, t), m in self._prompt_masks.items()},
            "new_prompt_frames": sorted(self._new_prompt_frames),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict` saved from a session on the same video, model and configuration."""
        self.objects = ObjectRegistry()
        for obj_id in state["obj_ids"]:
            self.objects.add(int(obj_id))
        restore_bank(self.bank, state["bank"], self.device)
        self._prompt_masks = {}
        for key, mask in state["prompt_masks"].items():
            obj_id, frame_idx = (int(x) for x in key.split(":"))
            self._prompt_masks[(obj_id, frame_idx)] = mask.numpy().astype(bool)
        self._new_prompt_frames = {int(t) for t in state["new_prompt_frames"]}

    # ------------------------------------------------------------------ helpers
    @property
    def _signed(self) -> bool:
        return self.model.config.use_signed_tpos_enc_to_obj_ptrs

    def _set_mem_pos(self, mem_pos: torch.Tensor) -> None:
        if self.bank.mem_pos_enc is None or self.bank.mem_pos_enc.shape[-2:] != mem_pos.shape[-2:]:
            self.bank.mem_pos_enc = mem_pos[:1].clone()

    def _result(self, frame_idx: int, obj_ids: list[int], entries: list[MemoryEntry]) -> FrameResult:
        low_res = torch.cat([e.low_res_logits for e in entries]).float()
        logits = F.interpolate(low_res, size=(self.height, self.width), mode="bilinear", align_corners=False)
        logits = logits[:, 0].cpu()
        masks = logits > 0
        for i, obj_id in enumerate(obj_ids):
            given = self._prompt_masks.get((obj_id, frame_idx))
            if given is not None and entries[i] is self._prompt_entry(obj_id, frame_idx):
                mask_t = torch.from_numpy(given)
                masks[i] = mask_t
                logits[i] = mask_t.float() * MASK_PROMPT_SCALE + MASK_PROMPT_BIAS
        scores = torch.cat([e.object_score_logits for e in entries]).float().view(-1).cpu()
        return FrameResult(frame_idx, list(obj_ids), logits, masks, scores, self.config.overlap)

    def _prompt_entry(self, obj_id: int, frame_idx: int) -> MemoryEntry | None:
        mem = self.bank.objects[obj_id]
        return mem.pending.get(frame_idx) or mem.prompted.get(frame_idx)


def _entry(out: TrackOutput, row: int) -> MemoryEntry:
    return MemoryEntry(
        low_res_logits=out.low_res_logits[row : row + 1].clone(),
        obj_ptr=out.obj_ptr[row : row + 1].clone(),
        object_score_logits=out.object_score_logits[row : row + 1].clone(),
    )
