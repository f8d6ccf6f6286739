"""SAM2Long's memory tree in a streaming session: per object, P pathways (hypotheses), each with its
own lineage of outputs since the pass started or the object's last prompt; frames leave the tree
(and become the object's memories in the bank) once decided.

`PathwayTree` holds one object's pathways and the frames decided but not yet handed to the bank;
`run_pathway_pass` drives a `VideoSession` pass with the trees of its objects: every frame each
distinct lineage is tracked (lineages that are identical, as all are while the object is certain,
run once), the survivors are picked by the policy's rule (`SAM2LongPolicy`), and a frame is output
when every object has decided it. A frame is decided when all pathways hold the same output there
(so they share its whole past), or, `lag` frames later, by the best pathway, the others that
disagree there being replaced by copies of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from maskvos.inference.api import FrameResult
from maskvos.inference.memory_bank import MemoryEntry, entry_from_state, entry_state
from maskvos.inference.policies import FrameSignals, MemoryPlan
from maskvos.inference.policies.sam2long import SAM2LongPolicy

if TYPE_CHECKING:
    from maskvos.inference.session import VideoSession
    from maskvos.model.sam2 import FrameFeatures

#: Added to a predicted IoU before its logarithm (SAM2Long's constant).
_LOG_EPS = 1e-5


@dataclass
class Pathway:
    """One hypothesis: its cumulative score and its undecided outputs by frame (shared with the
    pathways that branched from the same parent)."""

    score: float
    suffix: dict[int, MemoryEntry] = field(default_factory=dict)


@dataclass
class PathwayTree:
    """One object's pathways.

    Attributes:
        pathways: P hypotheses, best first.
        decided: frames decided but not yet stored in the bank -> their output.
        fresh: no frame tracked since the tree started (the first keeps the best candidate only).
        forced: decisions the lag bound forced; agreed: frames decided by agreement.
    """

    pathways: list[Pathway]
    decided: dict[int, MemoryEntry] = field(default_factory=dict)
    fresh: bool = True
    forced: int = 0
    agreed: int = 0

    @classmethod
    def start(cls, num_pathways: int) -> PathwayTree:
        return cls([Pathway(0.0) for _ in range(num_pathways)])

    def lineages(self) -> list[list[int]]:
        """Pathway indices grouped by identical lineage (the same outputs on every undecided frame)."""
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(self.pathways):
            key = tuple(sorted((t, id(e)) for t, e in p.suffix.items()))
            groups.setdefault(key, []).append(i)
        return list(groups.values())

    def undecided(self) -> list[int]:
        return sorted(self.pathways[0].suffix)

    def settle(self, frame_idx: int, reverse: bool, lag: int, force: bool = False) -> None:
        """Decide the oldest undecided frames that all pathways agree on, or that lie `lag` or more
        frames before `frame_idx` (all of them with `force`)."""
        frames = self.undecided()
        for t in reversed(frames) if reverse else frames:
            entries = [p.suffix[t] for p in self.pathways]
            best = entries[0]
            if all(e is best for e in entries):
                self.agreed += 1
            elif force or abs(frame_idx - t) >= lag:
                self.forced += 1
                self.pathways = [p if p.suffix[t] is best else _copy(self.pathways[0]) for p in self.pathways]
            else:
                return
            self.decided[t] = best
            for p in self.pathways:
                p.suffix.pop(t, None)

    def restart(self, frame_idx: int, reverse: bool, lag: int) -> None:
        """A prompt: decide every undecided frame, then start the pathways afresh."""
        self.settle(frame_idx, reverse, lag, force=True)
        self.pathways = [Pathway(0.0) for _ in self.pathways]
        self.fresh = True

    def state(self) -> dict:
        entries: dict[int, dict] = {}
        for e in [*self.decided.values(), *(e for p in self.pathways for e in p.suffix.values())]:
            entries.setdefault(id(e), entry_state(e))
        keys = {k: i for i, k in enumerate(entries)}
        return {
            "entries": [entries[k] for k in keys],
            "pathways": [{"score": p.score, "suffix": {t: keys[id(e)] for t, e in p.suffix.items()}} for p in self.pathways],
            "decided": {t: keys[id(e)] for t, e in self.decided.items()},
            "fresh": self.fresh,
            "forced": self.forced,
            "agreed": self.agreed,
        }

    @classmethod
    def from_state(cls, state: dict, device: torch.device) -> PathwayTree:
        entries = [entry_from_state(e, device) for e in state["entries"]]
        pathways = [
            Pathway(float(p["score"]), {int(t): entries[int(k)] for t, k in p["suffix"].items()}) for p in state["pathways"]
        ]
        decided = {int(t): entries[int(k)] for t, k in state["decided"].items()}
        return cls(pathways, decided, bool(state["fresh"]), int(state["forced"]), int(state["agreed"]))


def _copy(p: Pathway) -> Pathway:
    return Pathway(p.score, dict(p.suffix))


def survivors(
    policy: SAM2LongPolicy, tree: PathwayTree, ious: dict[int, list[float]], scores: dict[int, float]
) -> list[tuple[float, int, int]]:
    """The P (score, parent pathway, candidate) that survive a frame, best first.

    `ious[i]` / `scores[i]`: pathway i's candidates' predicted IoUs and its object score."""
    p_count = len(tree.pathways)
    children = [
        (tree.pathways[i].score + math.log(iou + _LOG_EPS), i, j) for i in range(p_count) for j, iou in enumerate(ious[i])
    ]
    ranked = sorted(children, key=lambda c: c[0], reverse=True)  # stable: equal scores keep pathway, then candidate order
    if tree.fresh:
        best = max(range(len(ious[0])), key=lambda j: (ious[0][j], -j))
        return [(tree.pathways[0].score + math.log(ious[0][best] + _LOG_EPS), 0, best)] * p_count
    if max(abs(scores[i]) for i in range(p_count)) > policy.uncertainty:
        return ranked[:p_count]
    kept, seen = [], set()
    for child in ranked:
        _, i, j = child
        key = round(ious[i][j] if scores[i] > 0 else -ious[i][j], 2)
        if key not in seen:
            seen.add(key)
            kept.append(child)
        if len(kept) == p_count:
            return kept
    for i in range(p_count):
        if len(kept) == p_count:
            break
        if all(c[1] != i for c in kept):
            kept.append(next(c for c in ranked if c[1] == i))
    return kept


# ---------------------------------------------------------------------------------------------------
# Driving a session pass


def run_pathway_pass(
    session: VideoSession, start: int, stop: int | None, reverse: bool, obj_ids: list[int]
) -> Iterator[FrameResult]:
    """A pass of `session` with SAM2Long's trees: yields each frame once all objects decided it.

    Between yields the session's `state_dict` holds the trees, so a resumed pass starting at the
    first undecided frame continues them exactly."""
    policy: SAM2LongPolicy = session.policy  # type: ignore[assignment]
    step = -1 if reverse else 1
    saved = session._pathway_pass
    resumes = saved is not None and saved["reverse"] == reverse and set(saved["trees"]) == set(obj_ids)
    if resumes and (saved["pending"][0] if saved["pending"] else saved["last"] + step) == start:
        trees, pending, first = saved["trees"], list(saved["pending"]), saved["last"] + step
    else:
        trees = {o: PathwayTree.start(policy.pathways) for o in obj_ids}
        pending, first = [], start
    session._restore_context(first, reverse, obj_ids)
    # Live: between two yields `state_dict` saves exactly what a resumed pass needs.
    live = {"reverse": reverse, "last": first - step, "pending": pending, "trees": trees}
    session._pathway_pass = live
    if stop is None or (first <= stop if not reverse else first >= stop):
        for frame_idx, frame in session.frames.iterate(first, stop, reverse):
            session.bank.evict(frame_idx, reverse, obj_ids)
            features = session.frames.features(frame_idx, frame)
            _track(session, policy, trees, frame_idx, features, reverse, obj_ids)
            pending.append(frame_idx)
            live["last"] = frame_idx
            for tree in trees.values():
                tree.settle(frame_idx, reverse, policy.lag)
            yield from _emit(session, trees, pending, reverse, obj_ids)
    for tree in trees.values():
        tree.settle(live["last"], reverse, policy.lag, force=True)
    yield from _emit(session, trees, pending, reverse, obj_ids)
    session._pathway_pass = None
    for tree in trees.values():
        session.pathway_stats["forced"] += tree.forced
        session.pathway_stats["agreed"] += tree.agreed


def _emit(
    session: VideoSession, trees: dict[int, PathwayTree], pending: list[int], reverse: bool, obj_ids: list[int]
) -> Iterator[FrameResult]:
    """Hand decided frames to the bank and yield their results, in order."""
    while pending:
        t = pending[0]
        prompts = {o: session.bank.objects[o].prompted.get(t) for o in obj_ids}
        if any(prompts[o] is None and t not in trees[o].decided for o in obj_ids):
            return
        pending.pop(0)
        outputs = [(o, trees[o].decided.pop(t)) for o in obj_ids if prompts[o] is None]
        if outputs:
            encoded = [e.mem_feats for _, e in outputs]
            session.bank.admit(t, reverse, outputs, lambda rows, encoded=encoded: [encoded[r] for r in rows])
        entries = [prompts[o] if prompts[o] is not None else next(e for oo, e in outputs if oo == o) for o in obj_ids]
        yield session._result(t, obj_ids, entries)


def _track(
    session: VideoSession,
    policy: SAM2LongPolicy,
    trees: dict[int, PathwayTree],
    frame_idx: int,
    features: FrameFeatures,
    reverse: bool,
    obj_ids: list[int],
) -> None:
    """Track every distinct lineage of every object on one frame and grow the trees."""
    bank = session.bank
    rows: list[tuple[int, list[int], MemoryPlan]] = []  # (obj_id, its pathways, plan)
    for obj_id in obj_ids:
        tree = trees[obj_id]
        if frame_idx in bank.objects[obj_id].prompted:
            bank.mark_visited(obj_id, frame_idx, reverse)
            tree.restart(frame_idx, reverse, policy.lag)
            continue
        mem = bank.objects[obj_id]
        for group in tree.lineages():
            suffix = tree.pathways[group[0]].suffix
            memories = {**mem.memory_signals(), **{t: e.signals for t, e in tree.decided.items()},
                        **{t: e.signals for t, e in suffix.items()}}
            plan = policy.select(bank.window, frame_idx, reverse, sorted(mem.prompted), memories)
            rows.append((obj_id, group, plan))
    if not rows:
        return

    def lookup(row: int, t: int, is_prompted: bool) -> MemoryEntry:
        obj_id, group, _ = rows[row]
        if is_prompted:
            return bank.entry(obj_id, t, True)
        tree = trees[obj_id]
        return tree.pathways[group[0]].suffix.get(t) or tree.decided.get(t) or bank.entry(obj_id, t, False)

    by_plan: dict[MemoryPlan, list[int]] = {}
    if session._rows_one_by_one:
        by_plan = {i: [i] for i in range(len(rows))}  # type: ignore[misc]
    else:
        for i, (_, _, plan) in enumerate(rows):
            by_plan.setdefault(plan, []).append(i)
    outs: dict[int, tuple] = {}  # row -> (multimask low-res (3, h, w), ious, score, candidate pointers)
    for members in by_plan.values():
        context = session._memory_context(rows[members[0]][2], members, lookup)
        out = session.model.track_frame(
            features.expand(len(members)), memory=context, memory_batch=session._memory_batch, multimask_output=True
        )
        for k, row in enumerate(members):
            outs[row] = (out.multimask_logits[k], out.iou_scores[k].float().tolist(),
                         float(out.object_score_logits[k, 0]), out.candidate_ptrs[k], out.object_score_logits[k : k + 1])
    new_entries: list[tuple[MemoryEntry, torch.Tensor]] = []  # (entry, its high-res logits) to encode
    for obj_id in obj_ids:
        tree = trees[obj_id]
        obj_rows = [r for r, (o, _, _) in enumerate(rows) if o == obj_id]
        if not obj_rows:
            continue
        row_of = {i: r for r in obj_rows for i in rows[r][1]}
        ious = {i: outs[row_of[i]][1] for i in range(len(tree.pathways))}
        scores = {i: outs[row_of[i]][2] for i in range(len(tree.pathways))}
        made: dict[tuple[int, int], MemoryEntry] = {}
        new_paths = []
        for score, parent, j in survivors(policy, tree, ious, scores):
            row = row_of[parent]
            key = (row, j)
            if key not in made:
                logits, cand_ious, obj_score, ptrs, score_logits = outs[row]
                entry = MemoryEntry(
                    low_res_logits=logits[j : j + 1, None].clone(),
                    obj_ptr=ptrs[j : j + 1].clone(),
                    object_score_logits=score_logits.clone(),
                    signals=FrameSignals(object_score=obj_score, iou=cand_ious[j], candidate=j),
                )
                made[key] = entry
                high_res = F.interpolate(entry.low_res_logits, size=features.image_size, mode="bilinear", align_corners=False)
                new_entries.append((entry, high_res))
            new_paths.append(Pathway(score, {**tree.pathways[parent].suffix, frame_idx: made[key]}))
        tree.pathways = new_paths
        tree.fresh = False
    chunks = [new_entries[k : k + 1] for k in range(len(new_entries))] if session._rows_one_by_one else [new_entries]
    for chunk in chunks:
        high_res = torch.cat([h for _, h in chunk])
        scores_t = torch.cat([e.object_score_logits for e, _ in chunk])
        mem_feats, mem_pos = session.model.encode_memory(features.expand(len(chunk)), high_res, scores_t)
        bank.set_mem_pos_enc(mem_pos)
        for k, (entry, _) in enumerate(chunk):
            entry.mem_feats = mem_feats[k : k + 1].to(session.config.memory_dtype).clone()
