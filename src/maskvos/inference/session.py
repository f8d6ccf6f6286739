"""`VideoSession`: prompt objects on any frame, then propagate their masks through the video.

The session drives the model's per-frame step functions with SAM2's video semantics and gives the
same masks as Meta's `SAM2VideoPredictor` (with `add_all_frames_to_correct_as_cond=True`, so a
correction stays a prompt), without its limits: frames are read lazily from any source, memories
no longer selectable are evicted (resident memory does not grow with the video), the objects of a
frame run through memory attention, decoder and memory encoder as one batch on a GPU (one at a time
on a CPU, where that is as fast and keeps rebuilds bit-exact), and results come at
the frame's own size, with a user's mask prompt returned unchanged. Before a pass starts, and before
a correction, memories it would attend to that were evicted are rebuilt (`_restore_context`), so
eviction never changes a result.

State is split into small parts: `FrameCache` (frames, features), `ObjectRegistry` (ids),
`MemoryBank` (memories; the only writer of them, with the `MemoryPolicy` of the configuration
deciding admission, selection and so eviction), and the prompt masks kept to be returned as given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from maskvos.inference.api import FrameResult, Pass, SessionBase, SessionError, parse_prompt_state_key, prompt_state_key
from maskvos.inference.config import InferenceConfig
from maskvos.inference.frame_cache import FrameCache, sam2_encoder
from maskvos.inference.mask_choice import carried_state, chosen_before, policy_chooser, replay_chooser
from maskvos.inference.memory_bank import MemoryBank, MemoryEntry, MemoryPlan, RebuildView, bank_state, restore_bank
from maskvos.inference.objects import ObjectRegistry
from maskvos.inference.pathways import PathwayTree, run_pathway_pass
from maskvos.inference.policies import PROMPT_SCORE, FrameSignals, MaskChoice, MemoryWindow
from maskvos.inference.prompts import check_mask, mask_to_model_input, points_to_model_input
from maskvos.io.frames import FrameSource, open_source
from maskvos.model.execution import Execution, check_compile
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

#: Logits are clamped to this range before they are given back to the decoder as a dense prompt.
PREV_LOGIT_CLAMP = 32.0

__all__ = ["FrameResult", "SessionError", "VideoSession"]


class VideoSession(SessionBase):
    """Prompts and propagation over one video for one model.

    Example:
        >>> session = VideoSession(model, "video.mp4")
        >>> session.add_mask(0, obj_id=1, mask=first_mask)
        >>> for result in session.propagate():
        ...     labels = result.label_map()
    """

    prompt_types = frozenset({"mask", "points", "box"})

    def __init__(
        self,
        model: SAM2Model,
        source: str | FrameSource | np.ndarray | Iterable[np.ndarray],
        config: InferenceConfig | None = None,
    ) -> None:
        self.config = config or InferenceConfig()
        self.device = next(model.parameters()).device
        #: the model as the configuration runs it (dtype, compiled steps); the model itself by default.
        self.model = model.eval().for_execution(_execution(model, self.config, self.device))
        self.resolution = self.config.resolution or model.image_size
        model.check_resolution(self.resolution)
        self.frames = FrameCache(
            open_source(source),
            sam2_encoder(self.model, self.resolution, self.device),
            cache_size=self.config.feature_cache,
            prefetch_depth=self.config.prefetch,
        )
        self.objects = ObjectRegistry()
        window = MemoryWindow(
            num_maskmem=model.config.num_maskmem,
            stride=self.config.memory_stride,
            max_pointers=self.config.max_pointers,
            max_prompted_frames=self.config.max_prompted_frames,
            signed_pointers=model.config.use_signed_tpos_enc_to_obj_ptrs,
            num_frames=self.num_frames,
        )
        #: the configuration's memory policy with its model-dependent settings resolved.
        self.policy = self.config.memory_policy.for_model(model.config.name)
        self.bank = MemoryBank(window, self.policy, keep_all=self.config.keep_all_memories)
        #: (obj_id, frame_idx) -> the user's mask prompt, returned unchanged on that frame.
        self._prompt_masks: dict[tuple[int, int], np.ndarray] = {}
        self._memory_batch = self.config.memory_batch
        if self._memory_batch is None and self.device.type == "cpu":
            self._memory_batch = 1
        #: frames prompted since the last propagation (where the next one starts by default).
        self._new_prompt_frames: set[int] = set()
        #: On a CPU objects (and SAM2Long's pathways) are tracked and encoded one row at a time: a
        #: rebuilt memory then equals the evicted one bit for bit (a batch of another size, as when one
        #: object's memories are rebuilt without the others, rounds differently), and batching them
        #: measured no faster there.
        self._rows_one_by_one = self._memory_batch == 1
        #: a SAM2Long pass between two frames (its trees and undecided frames), for `state_dict`.
        self._pathway_pass: dict | None = None
        #: SAM2Long decisions: frames all pathways agreed on, and frames the lag bound decided.
        self.pathway_stats = {"agreed": 0, "forced": 0}

    # ------------------------------------------------------------------ prompts
    @torch.inference_mode()
    def add_mask(self, frame_idx: int, obj_id: int, mask: np.ndarray | torch.Tensor) -> FrameResult:
        """Prompt object `obj_id` on `frame_idx` with a mask (H, W) of the frame's size (nonzero = object).

        Returns the object's result on that frame: the mask itself.
        """
        self._check_idle()
        self._check_frame(frame_idx)
        mask_bool = check_mask(mask, self.height, self.width, f"The mask of object {obj_id} on frame {frame_idx}")
        self.objects.add(obj_id)
        features = self.frames.features(frame_idx)
        out = self.model.track_frame(
            features,
            mask_input=mask_to_model_input(mask_bool, self.resolution, self.device),
            presence_threshold=self.policy.presence_threshold(),
        )
        entry = _entries(out)[0]
        self.bank.stage_prompt(obj_id, frame_idx, entry)
        self._prompt_masks[(obj_id, frame_idx)] = mask_bool
        self._new_prompt_frames.add(frame_idx)
        return self._result(frame_idx, [obj_id], [entry])

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
        self._check_idle()
        self._check_frame(frame_idx)
        coords, lbls = points_to_model_input(
            points, labels, box, self.height, self.width, self.resolution, self.device
        )
        self.objects.add(obj_id)
        reverse = self.bank.direction(obj_id, frame_idx)
        memory = None
        if reverse is not None:  # a frame processed before: condition on the memories it had
            self._restore_context(frame_idx, reverse, [obj_id], with_frame=True)
            memory = self._memory_context(self.bank.plan(obj_id, frame_idx, reverse), [obj_id])
        prev = self.bank.latest(obj_id, frame_idx)
        prev_logits = None if prev is None else prev.low_res_logits.clamp(-PREV_LOGIT_CLAMP, PREV_LOGIT_CLAMP)
        choose, choices = policy_chooser(self.policy, [None])  # a click restarts the policy's per-object state
        out = self.model.track_frame(
            self.frames.features(frame_idx),
            memory=memory,
            points=(coords, lbls),
            prev_mask_logits=prev_logits,
            choose=choose,
            presence_threshold=self.policy.presence_threshold(),
        )
        entry = _entries(out, choices)[0]
        self.bank.stage_prompt(obj_id, frame_idx, entry)
        self._prompt_masks.pop((obj_id, frame_idx), None)
        self._new_prompt_frames.add(frame_idx)
        return self._result(frame_idx, [obj_id], [entry])

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
        self._check_idle()
        self.objects.remove(obj_id)
        self.bank.remove(obj_id)
        for key in [k for k in self._prompt_masks if k[0] == obj_id]:
            del self._prompt_masks[key]

    # ------------------------------------------------------------------ propagation
    @torch.inference_mode()
    def _run(self, passes: Sequence[Pass]) -> Iterator[FrameResult]:
        self._encode_prompts()
        run_pass = self._run_pass if self.policy.num_pathways == 1 else partial(run_pathway_pass, self)
        for p in passes:
            if self.policy.num_pathways == 1:  # a pathway pass restores the context where it goes on
                self._restore_context(p.start, p.reverse, self.obj_ids)
            for i, result in enumerate(run_pass(p.start, p.stop, p.reverse, self.obj_ids)):
                if not (p.skip_start and i == 0):
                    yield result

    def _prompted_frames(self) -> set[int]:
        return {t for m in self.bank.objects.values() for t in (*m.prompted, *m.pending)}

    def _run_pass(self, start: int, stop: int | None, reverse: bool, obj_ids: list[int]) -> Iterator[FrameResult]:
        """Process frames `start`..`stop` (inclusive) for `obj_ids`, yielding their results."""
        for frame_idx, entries in self._track_range(start, stop, reverse, obj_ids):
            yield self._result(frame_idx, obj_ids, entries)

    def _track_range(
        self, start: int, stop: int | None, reverse: bool, obj_ids: list[int], rebuild: RebuildView | None = None
    ) -> Iterator[tuple[int, list[MemoryEntry]]]:
        """Track frames `start`..`stop` (inclusive) for `obj_ids`, storing memories and evicting old ones.

        A rebuild (`rebuild` says what it may attend to) recomputes outputs of an earlier pass: its
        entries keep their stamps, and it is no visit of the prompt frames it goes through (their
        direction stays that of the last pass through them).
        """
        for frame_idx, frame in self.frames.iterate(start, stop, reverse):
            # Evict before, not after, a frame: what the last frame of a pass attended to stays, so a
            # correction there needs no rebuild.
            self.bank.evict(frame_idx, reverse, obj_ids)
            features = self.frames.features(frame_idx, frame)
            yield frame_idx, self._track_frame(frame_idx, features, reverse, obj_ids, rebuild)

    def _track_frame(
        self,
        frame_idx: int,
        features: FrameFeatures,
        reverse: bool,
        obj_ids: list[int],
        rebuild: RebuildView | None = None,
    ) -> list[MemoryEntry]:
        """Outputs of `obj_ids` on one frame: stored prompts as they are, the others tracked in batches
        of objects that attend to the same frames, then handed to the bank (the policy admits them)."""
        entries: dict[int, MemoryEntry] = {}
        groups: dict[MemoryPlan, list[int]] = {}
        for obj_id in obj_ids:
            prompt = self.bank.objects[obj_id].prompted.get(frame_idx)
            if prompt is not None:
                entries[obj_id] = prompt
                if rebuild is None:
                    self.bank.mark_visited(obj_id, frame_idx, reverse)
            elif self._rows_one_by_one:
                groups[(obj_id,)] = [obj_id]  # type: ignore[index]
            else:
                groups.setdefault(self.bank.plan(obj_id, frame_idx, reverse, rebuild), []).append(obj_id)
        tracked_ids, outputs, new = [], [], []
        for key, group in groups.items():
            plan = key if isinstance(key, MemoryPlan) else self.bank.plan(group[0], frame_idx, reverse, rebuild)
            if rebuild is not None and self.policy.num_pathways > 1:
                choose, choices = replay_chooser([chosen_before(self.bank, o, frame_idx) for o in group])
            else:
                states = [carried_state(self.bank, o, frame_idx, reverse, rebuild) for o in group]
                choose, choices = policy_chooser(self.policy, states)
            out = self.model.track_frame(
                features.expand(len(group)),
                memory=self._memory_context(plan, group),
                memory_batch=self._memory_batch,
                choose=choose,
                presence_threshold=self.policy.presence_threshold(),
            )
            tracked_ids += group
            outputs.append(out)
            new += _entries(out, choices)
        if tracked_ids:
            encode = self._memory_encoder(features, outputs)
            self.bank.admit(frame_idx, reverse, list(zip(tracked_ids, new)), encode, is_rebuild=rebuild is not None)
            entries.update(zip(tracked_ids, new))
        return [entries[obj_id] for obj_id in obj_ids]

    def _memory_encoder(
        self, features: FrameFeatures, outputs: list[TrackOutput]
    ) -> Callable[[list[int]], list[torch.Tensor]]:
        """What `MemoryBank.admit` calls to encode the admitted rows of `outputs` (concatenated) into
        memories (1, D, h, w) in the bank's dtype; all rows are encoded as one unchanged batch."""
        high_res = torch.cat([o.high_res_logits for o in outputs])
        scores = torch.cat([o.object_score_logits for o in outputs])

        def encode(rows: list[int]) -> list[torch.Tensor]:
            if self._rows_one_by_one and len(rows) > 1:
                return [m for r in rows for m in encode([r])]
            hr, sc = high_res, scores
            if len(rows) < high_res.shape[0]:
                index = torch.tensor(rows, device=high_res.device)
                hr, sc = high_res[index], scores[index]
            mem_feats, mem_pos = self.model.encode_memory(features.expand(len(rows)), hr, sc)
            self.bank.set_mem_pos_enc(mem_pos)
            return [mem_feats[k : k + 1].to(self.config.memory_dtype).clone() for k in range(len(rows))]

        return encode

    def _memory_context(
        self, plan: MemoryPlan, group: list, lookup: Callable[[object, int, bool], MemoryEntry] | None = None
    ) -> MemoryContext:
        """The memories `plan` names for each row of `group` (obj_ids, or rows `lookup` resolves to
        entries), with the policy's key scales where it has them."""
        if lookup is None:
            lookup = self.bank.entry
        spatial = [[lookup(o, t, is_prompted) for o in group] for t, _, is_prompted in plan.spatial]
        ptrs = [[lookup(o, t, is_prompted) for o in group] for t, _, is_prompted in plan.pointers]
        frame_scales, ptr_scales = self._key_scales(plan, spatial, ptrs, len(group))
        frames = [
            MemoryFrame(torch.cat([e.mem_feats for e in entries]), self.bank.mem_pos_enc, t_pos, frame_scales[i])
            for i, ((_, t_pos, _), entries) in enumerate(zip(plan.spatial, spatial))
        ]
        pointers = [
            ObjectPointer(torch.cat([e.obj_ptr for e in entries]), distance, ptr_scales[i])
            for i, ((_, distance, _), entries) in enumerate(zip(plan.pointers, ptrs))
        ]
        return MemoryContext(frames=frames, pointers=pointers, max_ptr_distance=plan.max_distance)

    def _key_scales(
        self, plan: MemoryPlan, spatial: list[list[MemoryEntry]], ptrs: list[list[MemoryEntry]], rows: int
    ) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None]]:
        """Per memory frame and pointer, (rows,) factors on their keys from the policy (SAM2Long's
        ranking by object score, a prompt counting `PROMPT_SCORE`); None entries leave keys as they are."""
        none = [None] * len(spatial), [None] * len(ptrs)
        per_row = []
        for r in range(rows):
            frame_scores = [PROMPT_SCORE if p else float(spatial[i][r].object_score_logits) for i, (_, _, p) in enumerate(plan.spatial)]
            ptr_scores = [PROMPT_SCORE if p else float(ptrs[i][r].object_score_logits) for i, (_, _, p) in enumerate(plan.pointers)]
            per_row.append(self.policy.memory_key_scales(frame_scores, ptr_scores))
        if all(s is None for s in per_row):
            return none
        per_row = [s or ([1.0] * len(spatial), [1.0] * len(ptrs)) for s in per_row]
        frame_scales = [torch.tensor([s[0][i] for s in per_row], device=self.device) for i in range(len(spatial))]
        ptr_scales = [torch.tensor([s[1][i] for s in per_row], device=self.device) for i in range(len(ptrs))]
        return frame_scales, ptr_scales

    def _encode_prompts(self) -> None:
        """Encode the memories of new prompts (binarised masks, as SAM2 does for frames the user touched)."""
        for frame_idx, group in sorted(self.bank.pending_prompts(self.obj_ids).items()):
            entries = [self.bank.objects[o].pending[frame_idx] for o in group]
            low_res = torch.cat([e.low_res_logits for e in entries])
            high_res = F.interpolate(low_res, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
            scores = torch.cat([e.object_score_logits for e in entries])
            features = self.frames.features(frame_idx).expand(len(group))
            mem_feats, mem_pos = self.model.encode_memory(features, high_res, scores, binarize=True)
            self.bank.set_mem_pos_enc(mem_pos)
            for i, obj_id in enumerate(group):
                self.bank.promote(obj_id, frame_idx, mem_feats[i : i + 1].to(self.config.memory_dtype).clone())

    # ------------------------------------------------------------------ rebuilding evicted memories
    def _restore_context(
        self,
        frame_idx: int,
        reverse: bool,
        obj_ids: list[int],
        with_frame: bool = False,
        _seen: set[tuple[int, bool]] | None = None,
    ) -> None:
        """Rebuild the evicted memories that `frame_idx`, tracked in direction `reverse`, can attend to
        (by the policy's window property, all that a pass starting there can), and with `with_frame`
        the frame's own output if it was dropped (the previous mask of a correction).

        A pass start and a correction both call this. An evicted frame is re-tracked from the
        nearest prompt before it in the direction of the pass that produced it (which may be the
        other direction than the coming pass), attending only to what that pass had
        (`MemoryBank.rebuild_view`), so the recomputed memories equal the evicted ones; what
        `frame_idx` needs is pinned meanwhile so the rebuild does not evict it again.
        """
        seen = _seen if _seen is not None else set()
        seen.add((frame_idx, reverse))
        spans: dict[tuple[int, int, bool], list[int]] = {}
        pins: dict[int, set[int]] = {}
        for obj_id in obj_ids:
            wanted = self.bank.missing(obj_id, frame_idx, reverse)
            if with_frame and self.bank.latest(obj_id, frame_idx) is None:
                wanted.add(frame_idx)
            if not wanted:
                continue
            pins[obj_id] = {*self.bank.context(obj_id, frame_idx, reverse), *wanted}
            if with_frame:
                pins[obj_id].add(frame_idx)
            for span in self.bank.rebuild_spans(obj_id, wanted):
                spans.setdefault(span, []).append(obj_id)
        if not spans:
            return
        with self.bank.pinned(pins):
            for (start, stop, span_reverse), group in sorted(spans.items()):
                if (start, span_reverse) not in seen:  # the span's start (where no prompt is) may miss context too
                    self._restore_context(start, span_reverse, group, _seen=seen)
                self._rebuild(group, start, stop, span_reverse)

    def _rebuild(self, obj_ids: list[int], start: int, stop: int, reverse: bool) -> None:
        """Re-track `obj_ids` over frames `start`..`stop` to recompute evicted memories."""
        view = self.bank.rebuild_view(obj_ids, start, stop, reverse)
        for _ in self._track_range(start, stop, reverse, obj_ids, view):
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
            "prompt_masks": {prompt_state_key(o, t): torch.from_numpy(m) for (o, t), m in self._prompt_masks.items()},
            "new_prompt_frames": sorted(self._new_prompt_frames),
            "pathway_pass": None if self._pathway_pass is None else _pathway_pass_state(self._pathway_pass),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict` saved from a session on the same video, model and configuration."""
        self._check_idle("loading a saved state")
        self.objects = ObjectRegistry()
        for obj_id in state["obj_ids"]:
            self.objects.add(int(obj_id))
        restore_bank(self.bank, state["bank"], self.device)
        self._prompt_masks = {}
        for key, mask in state["prompt_masks"].items():
            self._prompt_masks[parse_prompt_state_key(key)] = mask.numpy().astype(bool)
        self._new_prompt_frames = {int(t) for t in state["new_prompt_frames"]}
        saved = state.get("pathway_pass")
        self._pathway_pass = None if saved is None else _pathway_pass_from_state(saved, self.device)

    # ------------------------------------------------------------------ helpers
    def _result(self, frame_idx: int, obj_ids: list[int], entries: list[MemoryEntry]) -> FrameResult:
        low_res = torch.cat([e.low_res_logits for e in entries]).float()
        logits = F.interpolate(low_res, size=(self.height, self.width), mode="bilinear", align_corners=False)
        logits = logits[:, 0].cpu()
        masks = logits > 0
        is_prompt = []
        for i, obj_id in enumerate(obj_ids):
            prompt_entry = self._prompt_entry(obj_id, frame_idx)
            is_prompt.append(prompt_entry is not None and entries[i] is prompt_entry)
            given = self._prompt_masks.get((obj_id, frame_idx))
            if given is not None and is_prompt[-1]:
                mask_t = torch.from_numpy(given)
                masks[i] = mask_t
                logits[i] = mask_t.float() * MASK_PROMPT_SCALE + MASK_PROMPT_BIAS
        scores = torch.cat([e.object_score_logits for e in entries]).float().view(-1).cpu()
        return FrameResult(frame_idx, list(obj_ids), logits, masks, scores, self.config.overlap, is_prompt)

    def _prompt_entry(self, obj_id: int, frame_idx: int) -> MemoryEntry | None:
        mem = self.bank.objects[obj_id]
        return mem.pending.get(frame_idx) or mem.prompted.get(frame_idx)


def _execution(model: SAM2Model, config: InferenceConfig, device: torch.device) -> Execution:
    """How `config` runs `model`: its compute dtype; with `compile`, compiled by the backend of a
    model already compiled (a test's "aot_eager"), else by inductor (refused where it cannot work)."""
    backend = None
    if config.compile:
        backend = model.execution.compile_backend or "inductor"
        check_compile(device, backend)
    return Execution(config.compute_dtype, backend)


def _entries(out: TrackOutput, choices: Sequence[MaskChoice] = ()) -> list[MemoryEntry]:
    """One entry per object row of a `track_frame` output, with its quality signals and, where a
    policy chose the mask (`choices`, one per row, or empty), its motion score and carried state."""
    scores = out.object_score_logits[:, 0].float().tolist()
    ious = out.chosen_iou.float().tolist()
    entries = []
    for row in range(out.obj_ptr.shape[0]):
        choice = choices[row] if choices else None
        entries.append(
            MemoryEntry(
                low_res_logits=out.low_res_logits[row : row + 1].clone(),
                obj_ptr=out.obj_ptr[row : row + 1].clone(),
                object_score_logits=out.object_score_logits[row : row + 1].clone(),
                signals=FrameSignals(
                    object_score=scores[row],
                    iou=ious[row],
                    motion=None if choice is None else choice.motion,
                    area=None if choice is None else choice.area,
                    resolves_distractor=choice is not None and choice.resolves_distractor,
                    candidate=None if choice is None else choice.index,
                ),
                track_state=None if choice is None else choice.state,
            )
        )
    return entries


def _pathway_pass_state(saved: dict) -> dict:
    return {
        "reverse": saved["reverse"],
        "last": saved["last"],
        "pending": list(saved["pending"]),
        "trees": {o: tree.state() for o, tree in saved["trees"].items()},
    }


def _pathway_pass_from_state(saved: dict, device: torch.device) -> dict:
    return {
        "reverse": bool(saved["reverse"]),
        "last": int(saved["last"]),
        "pending": [int(t) for t in saved["pending"]],
        "trees": {int(o): PathwayTree.from_state(tree, device) for o, tree in saved["trees"].items()},
    }
