"""Temporal stability and stress measures of predicted masks, on DAVIS-layout ground truth.

Works on any DAVIS-layout ground truth (`<gt>/<sequence>/<frame>.png`, or a dataset root holding
`Annotations/`), with predictions `<pred>/<sequence>/<frame>.png`, read like `maskvos.eval.davis`
(frames paired by stem, a missing prediction file is an empty mask, 255 is void in 8-bit ground
truth). Each sequence's masks are read once; every measure comes from that one read.

Per object (and so per sequence and overall, as means over objects like J in `EvalReport`):

- J, F and J&F with the same values as `evaluate_folders` (the `metrics` functions per frame, each
  inside the box of the frame's non-zero pixels, which changes no value; see `_content_boxes`).
- **flicker**: over consecutive evaluated frame pairs (t-1, t), the *stable* pixels are those whose
  ground truth for the object (inside / outside) is the same in both frames and void in neither;
  flicker = (sum over pairs of stable pixels whose predicted inside / outside changes) / (sum over
  pairs of stable pixels), pooled over the pairs of the sequence. Lower is better; 0 for a
  prediction that changes only where the ground truth changes. The share depends on the frame size
  (every background pixel is stable), so it is also given as
- **flicker per area** = (changed stable pixels per frame pair) / (the object's mean ground-truth
  area over the evaluated frames): the fraction of the object's size that flickers per frame.
- The evaluated frames are the same as for J&F: with `skip_first_last` (the default) the first
  frame (the prompt, which many methods do not write) and the last are left out, so flicker counts
  pairs (1, 2) .. (T-3, T-2); with `skip_first_last=False` all T-1 pairs.

A stress set (a root holding `stress.json`, from the stress generator) adds one row per listed
sequence, with the measures of its target object `obj_id`. The stress measures use the frames the
index names (first and last frames included when named):

- **occlusion** (`kind: occlusion`, length L, shown as group `occL`):
  re-detection J ratio = mean J of the stress run over the `REDETECT_FRAMES` (10) frames from
  `reappear` (against the edited ground truth) / mean J of the plain run
  `<pred>/<source_sequence>` on the same stems against `Annotations/<source_sequence>`;
  frames to recover = frames from `reappear` to the first frame with J >= `RECOVER_J` (0.5):
  0 when the reappear frame itself has it, None ("never") when no later frame of the sequence has;
  false-positive area while hidden = (predicted pixels of obj_id) / (mean ground-truth area of
  obj_id over the frames where it is visible in the *plain* ground truth), mean and max over the
  `hidden` frames.
- **distractor**: the target object's J (mean over the evaluated frames), and distractor share =
  (sum over the `pasted` frames of predicted obj_id pixels on the distractor mask) / (sum over the
  same frames of predicted obj_id pixels).
- per group (plain, occ5, occ15, occ40, ..., distractor) the means over its sequences; frames to
  recover is the mean over the sequences that recover, with the count of those that never do.
- every stress row also gives its sequence's J&F and flicker (means over its objects).

Missing plain predictions: every requested sequence needs its prediction folder (an `EvalError`
names it, as in `evaluate_folders`); so with `sequences=None` on a stress set the plain copies must
have been run too. When `sequences` leaves a plain copy out and its predictions are absent, the
other measures are still computed and only the re-detection ratio is unavailable (None), with a
note in the report naming the folder and the fix. A set built without plain copies (no
`Annotations/<source_sequence>`) has neither the ratio nor the FP area (None, with a note).

Speed: the sequences are read by `workers` threads (PNG decoding, most of the time, runs outside
the GIL); measuring adds about a third to the reading time.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maskvos.eval.davis import (
    ObjectScores,
    SequenceMasks,
    load_sequence,
    no_sequences_error,
    resolve_annotations_dir,
    sequence_folders,
)
from maskvos.eval.metrics import (
    DEFAULT_BOUND_TH,
    EvalError,
    boundary_measure,
    boundary_radius,
    region_similarity,
    statistics,
)
from maskvos.io.files import atomic_path
from maskvos.io.frames import natural_key
from maskvos.io.masks import VOID_LABEL, read_label_map

STRESS_INDEX = "stress.json"
STRESS_VERSION = 1
#: Frames from `reappear` over which the re-detection J ratio is taken.
REDETECT_FRAMES = 10
#: J at or above which an occluded object counts as recovered.
RECOVER_J = 0.5
PLAIN, OCCLUSION, DISTRACTOR = "plain", "occlusion", "distractor"
OVERALL = "overall"
_REQUIRED = {
    PLAIN: ("source_sequence",),
    OCCLUSION: ("source_sequence", "length", "obj_id", "hidden", "reappear"),
    DISTRACTOR: ("source_sequence", "obj_id", "pasted"),
}


# ----------------------------------------------------------------------------------------------
# flicker on arrays


def flicker_counts(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Changed-while-stable and stable pixel counts of each consecutive frame pair of one object.

    Arguments:
        gt: (T, H, W) bool, the object's ground truth.
        pred: (T, H, W) bool, its prediction.
        void: optional (T, H, W) bool void pixels; a pixel void in either frame of a pair is not stable.

    Returns:
        (changed, stable), each (T-1,) int64: entry t-1 is for the pair (t-1, t). Stable pixels have
        the same ground truth in both frames; changed ones are stable pixels whose prediction differs.
    """
    gt = np.asarray(gt, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape or gt.ndim != 3:
        raise EvalError(
            f"Flicker needs ground truth and prediction of one shape (T, H, W), got {gt.shape} and {pred.shape}; "
            "pass stacked frames of one size."
        )
    if gt.shape[0] < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    stable = gt[1:] == gt[:-1]
    if void is not None:
        void = np.asarray(void, dtype=bool)
        stable &= ~(void[1:] | void[:-1])
    changed = stable & (pred[1:] != pred[:-1])
    return (
        np.count_nonzero(changed, axis=(1, 2)).astype(np.int64),
        np.count_nonzero(stable, axis=(1, 2)).astype(np.int64),
    )


@dataclass(frozen=True)
class Flicker:
    """Flicker of one object over `pairs` consecutive frame pairs (see the module docstring)."""

    pairs: int
    changed: int  # stable pixels whose prediction changed, summed over the pairs
    stable: int  # stable pixels, summed over the pairs
    mean_gt_area: float  # the object's mean ground-truth area (pixels) over the frames

    @property
    def share(self) -> float:
        """changed / stable, pooled over the pairs; NaN without stable pixels."""
        return self.changed / self.stable if self.stable else float("nan")

    @property
    def per_area(self) -> float:
        """(changed / pairs) / mean_gt_area; NaN without pairs or for an object absent from every frame."""
        if not self.pairs or not self.mean_gt_area:
            return float("nan")
        return self.changed / self.pairs / self.mean_gt_area


def object_flicker(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> Flicker:
    """`Flicker` of one object from its (T, H, W) bool ground truth and prediction (and void)."""
    changed, stable = flicker_counts(gt, pred, void)
    area = np.count_nonzero(np.asarray(gt, dtype=bool), axis=(1, 2))
    return Flicker(
        pairs=int(changed.size),
        changed=int(changed.sum()),
        stable=int(stable.sum()),
        mean_gt_area=float(area.mean()) if area.size else 0.0,
    )


# ----------------------------------------------------------------------------------------------
# stress measures on per-frame values


def redetection(
    stems: Sequence[str],
    j: Sequence[float],
    reappear: str | None,
    plain_j: Mapping[str, float] | None,
    window: int = REDETECT_FRAMES,
    recover_j: float = RECOVER_J,
) -> tuple[float | None, float | None, int | None]:
    """(stress J over the window, re-detection J ratio, frames to recover) of an occluded object.

    Arguments:
        stems: the stress sequence's frame stems in order; j: its per-frame J of the object.
        reappear: stem of the first frame after the covered span where the object is visible (None: never).
        plain_j: {stem: J} of the plain run of the source sequence, or None when unavailable.

    Returns:
        The mean J over the `window` frames from `reappear`; that divided by the plain run's mean J on
        the same stems (None without plain values, or when the plain mean is below `recover_j`: the
        unoccluded run itself lost the object there, and a ratio to a J near 0 says nothing); the number of frames
        from `reappear` to the first with J >= recover_j (None if none). All None when reappear is None.
    """
    if reappear is None:
        return None, None, None
    stems = list(stems)
    if reappear not in stems:
        raise EvalError(
            f"Reappear frame '{reappear}' is not a frame of the sequence; regenerate the stress set or fix its stress.json."
        )
    r = stems.index(reappear)
    j = np.asarray(j, dtype=np.float64)
    span = stems[r : r + window]
    stress_mean = float(j[r : r + window].mean())
    ratio = None
    if plain_j is not None:
        common = [i for i, s in enumerate(span) if s in plain_j]
        if common:
            plain_mean = float(np.mean([plain_j[span[i]] for i in common]))
            stress_common = float(np.mean([j[r + i] for i in common]))
            ratio = stress_common / plain_mean if plain_mean >= recover_j else None
    hits = np.flatnonzero(j[r:] >= recover_j)
    recover = int(hits[0]) if hits.size else None
    return stress_mean, ratio, recover


def hidden_fp_area(
    stems: Sequence[str], pred_area: Sequence[int], hidden: Iterable[str], plain_gt_area: Sequence[int]
) -> tuple[float | None, float | None]:
    """(mean, max) over the hidden frames of predicted object pixels / mean visible plain gt area.

    The denominator is the object's mean area over the frames where the plain ground truth shows it.
    None, None without hidden frames or when the object is never visible in the plain ground truth.
    """
    index = {s: i for i, s in enumerate(stems)}
    hidden = list(hidden)
    missing = [s for s in hidden if s not in index]
    if missing:
        raise EvalError(
            f"Hidden frame '{missing[0]}' is not a frame of the sequence; regenerate the stress set or fix its stress.json."
        )
    visible = np.asarray(plain_gt_area, dtype=np.float64)
    visible = visible[visible > 0]
    if not hidden or visible.size == 0:
        return None, None
    pred_area = np.asarray(pred_area, dtype=np.float64)
    fp = pred_area[[index[s] for s in hidden]] / visible.mean()
    return float(fp.mean()), float(fp.max())


def distractor_share(pred: np.ndarray, distractor: np.ndarray) -> float | None:
    """Predicted object pixels on the distractor / all predicted object pixels, pooled over the frames.

    Arguments:
        pred: (T, H, W) bool, the target object's prediction on the pasted frames.
        distractor: (T, H, W) bool, the pasted distractor's masks on the same frames.

    Returns:
        The share in [0, 1]; None when nothing of the object is predicted on those frames.
    """
    pred = np.asarray(pred, dtype=bool)
    total = int(np.count_nonzero(pred))
    if total == 0:
        return None
    return int(np.count_nonzero(pred & np.asarray(distractor, dtype=bool))) / total


# ----------------------------------------------------------------------------------------------
# the stress index


def read_stress_index(path: str | Path) -> dict[str, Any]:
    """Read and check a `stress.json` (a file, or the dataset root that holds one)."""
    path = Path(path)
    if path.is_dir():
        path = path / STRESS_INDEX
    try:
        index = json.loads(path.read_text())
    except OSError as exc:
        raise EvalError(f"Stress index '{path}' cannot be read ({exc}); pass the root of a stress set.") from None
    except json.JSONDecodeError as exc:
        raise EvalError(f"Stress index '{path}' is not valid JSON ({exc}); regenerate the stress set.") from None
    return check_stress_index(index, str(path))


def check_stress_index(index: Mapping[str, Any], where: str = STRESS_INDEX) -> dict[str, Any]:
    """Check a parsed stress index (version, the fields each kind needs); return it as a dict."""
    if not isinstance(index, Mapping) or not isinstance(index.get("sequences"), Mapping):
        raise EvalError(f"Stress index '{where}' has no 'sequences' mapping; regenerate the stress set.")
    if index.get("version") != STRESS_VERSION:
        raise EvalError(
            f"Stress index '{where}' has version {index.get('version')!r}, this reader knows {STRESS_VERSION}; "
            "regenerate the stress set with this version of maskvos."
        )
    for name, entry in index["sequences"].items():
        if not isinstance(entry, Mapping) or "kind" not in entry:
            raise EvalError(f"Stress index '{where}' entry '{name}' has no 'kind'; regenerate the stress set.")
        lacking = [k for k in _REQUIRED.get(entry["kind"], ()) if k not in entry]
        if lacking:
            raise EvalError(
                f"Stress index '{where}' entry '{name}' ({entry['kind']}) lacks {lacking}; regenerate the stress set."
            )
    return dict(index)


def stress_group(entry: Mapping[str, Any]) -> str:
    """The aggregate group of an index entry: 'plain', 'occ<length>', 'distractor' (other kinds: the kind)."""
    kind = str(entry["kind"])
    return f"occ{entry['length']}" if kind == OCCLUSION else kind


def _group_key(group: str) -> tuple:
    if group == PLAIN:
        return (0, 0, group)
    if group.startswith("occ") and group[3:].isdigit():
        return (1, int(group[3:]), group)
    if group == DISTRACTOR:
        return (2, 0, group)
    return (3, 0, group)


# ----------------------------------------------------------------------------------------------
# report records


@dataclass(frozen=True)
class ObjectStability:
    """J&F (as `evaluate_folders` gives them) and flicker of one object of one sequence."""

    scores: ObjectScores
    flicker: Flicker

    @property
    def sequence(self) -> str:
        return self.scores.sequence

    @property
    def obj_id(self) -> int:
        return self.scores.obj_id


@dataclass(frozen=True)
class StressScores:
    """The measures of one sequence of a stress set (its target object's, where the kind has one).

    jf_mean, flicker and flicker_per_area are the sequence's means over its objects; target_j is the
    target object's J mean over the evaluated frames. The occlusion and distractor fields are None
    where they do not apply or cannot be computed (see `note`).
    """

    sequence: str
    kind: str
    group: str
    source_sequence: str
    obj_id: int | None
    jf_mean: float
    flicker: float
    flicker_per_area: float
    target_j: float | None = None
    redetect_j: float | None = None  # mean J over the frames from reappear
    redetect_ratio: float | None = None
    frames_to_recover: int | None = None
    never_recovered: bool = False  # reappears but never reaches RECOVER_J
    fp_area_mean: float | None = None
    fp_area_max: float | None = None
    distractor_share: float | None = None
    note: str = ""


def _nanmean(values: Iterable[float | None]) -> float:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return float(np.mean(vals)) if vals else float("nan")


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.3f}"


STRESS_SUMMARY_KEYS = (
    "sequences", "jf", "target_j", "flicker", "flicker_per_area", "redetect_ratio", "frames_to_recover",
    "never_recovered", "recover_counted", "fp_area", "fp_area_max", "distractor_share",
)  # fmt: skip
CSV_FIELDS = (
    "section", "sequence", "object", "kind", "frames", "missing_frames", "J_mean", "F_mean", "JF_mean",
    "flicker", "flicker_per_area", "pairs", "changed", "stable", "mean_gt_area", "target_J", "redetect_J",
    "redetect_ratio", "frames_to_recover", "never_recovered", "fp_area_mean", "fp_area_max",
    "distractor_share", "note",
)  # fmt: skip


@dataclass
class StabilityReport:
    """Per-object J&F and flicker; with a stress set, also per stress sequence and per group.

    `rows`: one `ObjectStability` per (sequence, object); `missing_frames`: every evaluated sequence's
    count of evaluated frames without a prediction file; `stress`: one `StressScores` per evaluated
    sequence listed in the stress index (empty without one); `notes`: what could not be computed and why.
    """

    rows: list[ObjectStability]
    missing_frames: dict[str, int] = field(default_factory=dict)
    stress: list[StressScores] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def sequences(self) -> list[str]:
        return list(dict.fromkeys([*self.missing_frames, *(r.sequence for r in self.rows)]))

    def _seq_rows(self, seq: str) -> list[ObjectStability]:
        return [r for r in self.rows if r.sequence == seq]

    def sequence_means(self, seq: str) -> dict[str, float]:
        """Means over the sequence's objects: j, f, jf, flicker, flicker_per_area."""
        return _means(self._seq_rows(seq))

    @property
    def groups(self) -> list[str]:
        return sorted({s.group for s in self.stress}, key=_group_key)

    def summary(self) -> dict[str, dict[str, float]]:
        """Aggregates as plain floats (NaN where a measure does not apply or has no value).

        'overall': means over all objects (objects, sequences, j, f, jf, flicker, flicker_per_area);
        with a stress set also one entry per group (plain, occ5, ..., distractor) with the means over
        its sequences of `STRESS_SUMMARY_KEYS`: frames_to_recover is the mean over the sequences that
        recovered, never_recovered the count of those that did not, fp_area_max the max.
        """
        overall = _means(self.rows)
        out = {OVERALL: {"objects": float(len(self.rows)), "sequences": float(len(self.sequences)), **overall}}
        for group in self.groups:
            out[group] = self._group_summary([s for s in self.stress if s.group == group])
        return out

    @staticmethod
    def _group_summary(rows: list[StressScores]) -> dict[str, float]:
        recovered = [s.frames_to_recover for s in rows if s.frames_to_recover is not None]
        fp_max = [s.fp_area_max for s in rows if s.fp_area_max is not None]
        applies_recover = any(s.kind == OCCLUSION for s in rows)
        return {
            "sequences": float(len(rows)),
            "jf": _nanmean(s.jf_mean for s in rows),
            "target_j": _nanmean(s.target_j for s in rows),
            "flicker": _nanmean(s.flicker for s in rows),
            "flicker_per_area": _nanmean(s.flicker_per_area for s in rows),
            "redetect_ratio": _nanmean(s.redetect_ratio for s in rows),
            "frames_to_recover": _nanmean(recovered),
            "never_recovered": float(sum(s.never_recovered for s in rows)) if applies_recover else float("nan"),
            "recover_counted": float(len(recovered)) if applies_recover else float("nan"),
            "fp_area": _nanmean(s.fp_area_mean for s in rows),
            "fp_area_max": float(max(fp_max)) if fp_max else float("nan"),
            "distractor_share": _nanmean(s.distractor_share for s in rows),
        }

    def table(self) -> str:
        """Markdown tables: per sequence (+ overall); with a stress set, per stress sequence and per group.

        Flicker is printed in percent of the stable pixels; flicker/area as a fraction of the object's area.
        """
        lines = [
            "| sequence | objects | J | F | J&F | flicker % | flicker/area | missing frames |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for seq in self.sequences:
            m = self.sequence_means(seq)
            lines.append(
                f"| {seq} | {len(self._seq_rows(seq))} | {_num(m['j'])} | {_num(m['f'])} | {_num(m['jf'])} | "
                f"{_pct(m['flicker'])} | {_num(m['flicker_per_area'])} | {self.missing_frames.get(seq, 0)} |"
            )
        o = self.summary()[OVERALL]
        lines.append(
            f"| **{OVERALL}** | {len(self.rows)} | {_num(o['j'])} | {_num(o['f'])} | {_num(o['jf'])} | "
            f"{_pct(o['flicker'])} | {_num(o['flicker_per_area'])} | {sum(self.missing_frames.values())} |"
        )
        if self.stress:
            lines += ["", *self._stress_table(), "", *self._group_table()]
        if self.notes:
            lines += ["", *(f"- {n}" for n in self.notes)]
        return "\n".join(lines)

    def _stress_table(self) -> list[str]:
        lines = [
            "| stress sequence | group | object | J&F | target J | flicker % | flicker/area | re-det J ratio "
            "| frames to recover | FP area mean | FP area max | distractor share |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in self.stress:
            if s.frames_to_recover is not None:
                recover = str(s.frames_to_recover)
            else:
                recover = "never" if s.never_recovered else "-"
            lines.append(
                f"| {s.sequence} | {s.group} | {'-' if s.obj_id is None else s.obj_id} | {_num(s.jf_mean)} | "
                f"{_num(s.target_j)} | {_pct(s.flicker)} | {_num(s.flicker_per_area)} | {_num(s.redetect_ratio)} | "
                f"{recover} | {_num(s.fp_area_mean)} | {_num(s.fp_area_max)} | {_num(s.distractor_share)} |"
            )
        return lines

    def _group_table(self) -> list[str]:
        lines = [
            "| group | sequences | J&F | target J | flicker % | flicker/area | re-det J ratio "
            "| frames to recover (never) | FP area mean | FP area max | distractor share |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        summary = self.summary()
        for group in self.groups:
            g = summary[group]
            if math.isnan(g["never_recovered"]):
                recover = "-"
            else:
                recover = f"{_num(g['frames_to_recover'], 2)} ({int(g['never_recovered'])} never)"
            lines.append(
                f"| {group} | {int(g['sequences'])} | {_num(g['jf'])} | {_num(g['target_j'])} | {_pct(g['flicker'])} | "
                f"{_num(g['flicker_per_area'])} | {_num(g['redetect_ratio'])} | {recover} | {_num(g['fp_area'])} | "
                f"{_num(g['fp_area_max'])} | {_num(g['distractor_share'])} |"
            )
        return lines

    def write_csv(self, path: str | Path) -> None:
        """Write every row atomically: section 'object' (per object), 'overall', 'stress' (per stress
        sequence) and 'group' (per group, from `summary`); fields that do not apply are empty."""

        def cell(value: Any) -> Any:
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return ""
            return value

        records: list[dict[str, Any]] = []
        for r in self.rows:
            s, f = r.scores, r.flicker
            records.append({
                "section": "object", "sequence": s.sequence, "object": s.obj_id, "frames": s.frames,
                "missing_frames": s.missing_frames, "J_mean": s.j_mean, "F_mean": s.f_mean, "JF_mean": s.jf_mean,
                "flicker": f.share, "flicker_per_area": f.per_area, "pairs": f.pairs, "changed": f.changed,
                "stable": f.stable, "mean_gt_area": f.mean_gt_area,
            })  # fmt: skip
        summary = self.summary()
        o = summary[OVERALL]
        records.append({
            "section": OVERALL, "sequence": OVERALL, "frames": sum(r.scores.frames for r in self.rows),
            "missing_frames": sum(self.missing_frames.values()), "J_mean": o["j"], "F_mean": o["f"],
            "JF_mean": o["jf"], "flicker": o["flicker"], "flicker_per_area": o["flicker_per_area"],
        })  # fmt: skip
        for s in self.stress:
            records.append({
                "section": "stress", "sequence": s.sequence, "object": s.obj_id, "kind": s.group,
                "JF_mean": s.jf_mean, "flicker": s.flicker, "flicker_per_area": s.flicker_per_area,
                "target_J": s.target_j, "redetect_J": s.redetect_j, "redetect_ratio": s.redetect_ratio,
                "frames_to_recover": s.frames_to_recover,
                "never_recovered": int(s.never_recovered) if s.kind == OCCLUSION else None,
                "fp_area_mean": s.fp_area_mean, "fp_area_max": s.fp_area_max,
                "distractor_share": s.distractor_share, "note": s.note,
            })  # fmt: skip
        for group in self.groups:
            g = summary[group]
            records.append({
                "section": "group", "sequence": group, "kind": group, "frames": int(g["sequences"]),
                "JF_mean": g["jf"], "flicker": g["flicker"], "flicker_per_area": g["flicker_per_area"],
                "target_J": g["target_j"], "redetect_ratio": g["redetect_ratio"],
                "frames_to_recover": g["frames_to_recover"], "never_recovered": g["never_recovered"],
                "fp_area_mean": g["fp_area"], "fp_area_max": g["fp_area_max"],
                "distractor_share": g["distractor_share"],
            })  # fmt: skip
        with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
            writer.writeheader()
            for rec in records:
                writer.writerow({k: cell(rec.get(k)) for k in CSV_FIELDS})


def _means(rows: list[ObjectStability]) -> dict[str, float]:
    return {
        "j": _nanmean(r.scores.j_mean for r in rows),
        "f": _nanmean(r.scores.f_mean for r in rows),
        "jf": _nanmean(r.scores.jf_mean for r in rows),
        "flicker": _nanmean(r.flicker.share for r in rows),
        "flicker_per_area": _nanmean(r.flicker.per_area for r in rows),
    }


# ----------------------------------------------------------------------------------------------
# one pass over a sequence


@dataclass
class _Measured:
    """What one read of a sequence gives: report rows and the per-frame values the stress measures need."""

    name: str
    stems: list[str]
    frames: int  # evaluated frames
    rows: list[ObjectStability]
    missing_frames: int
    j: dict[int, np.ndarray]  # per object, per frame (all frames), void excluded
    gt_area: dict[int, np.ndarray]
    pred_area: dict[int, np.ndarray]
    distractor_share: float | None = None


def _png_stems(folder: Path) -> set[str]:
    return {p.stem for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file()}


def _pred_folder(pred_dir: Path, name: str) -> Path:
    folder = pred_dir / name
    if (folder / "masks").is_dir() and not any(folder.glob("*.png")):
        return folder / "masks"  # the layout `maskvos segment --out <pred>/<seq>` writes
    return folder


def _read_gt_only(gt_seq: Path) -> tuple[list[str], np.ndarray]:
    files = {p.stem: p for p in gt_seq.iterdir() if p.suffix.lower() == ".png" and p.is_file()}
    if not files:
        raise EvalError(
            f"Ground-truth sequence folder '{gt_seq}' holds no PNG masks; remove it or add its annotations."
        )
    stems = sorted(files, key=natural_key)
    return stems, np.stack([read_label_map(files[s]) for s in stems])


def _measure(
    name: str,
    gt_seq: Path,
    pred_seq: Path | None,
    *,
    skip_first_last: bool,
    bound_th: float,
    ignore_void: bool,
    extra_ids: Sequence[int] = (),
    distractor: tuple[Path, int, list[str]] | None = None,
    score: bool = True,
) -> _Measured:
    """Read one sequence once and measure it. pred_seq None: ground truth only (areas; no J, no rows)."""
    if pred_seq is None:
        stems, gt = _read_gt_only(gt_seq)
        ids = [int(i) for i in extra_ids]
        area = {o: np.count_nonzero(gt == o, axis=(1, 2)) for o in ids}
        return _Measured(name, stems, 0, [], 0, {}, area, {})
    seq = load_sequence(gt_seq, pred_seq, skip_first_last=False)
    have = _png_stems(pred_seq)
    measured = _measure_loaded(
        name, seq, have, skip_first_last=skip_first_last, bound_th=bound_th, ignore_void=ignore_void,
        extra_ids=extra_ids, score=score,
    )  # fmt: skip
    if distractor is not None:
        measured.distractor_share = _distractor_on(seq, *distractor)
    return measured


def measure_masks(
    seq: SequenceMasks,
    *,
    skip_first_last: bool = True,
    bound_th: float = DEFAULT_BOUND_TH,
    ignore_void: bool = True,
) -> list[ObjectStability]:
    """J, F and flicker of each object of label maps already in memory: `seq` as `load_sequence(...,
    skip_first_last=False)` gives it (every frame, (T, H, W) ground truth and prediction), measured as
    `stability_report` measures a sequence read from files (with no missing prediction files)."""
    return _measure_loaded(
        seq.name, seq, set(seq.stems), skip_first_last=skip_first_last, bound_th=bound_th, ignore_void=ignore_void,
    ).rows


def _measure_loaded(
    name: str,
    seq: SequenceMasks,
    have: set[str],
    *,
    skip_first_last: bool,
    bound_th: float,
    ignore_void: bool,
    extra_ids: Sequence[int] = (),
    score: bool = True,
) -> _Measured:
    """`_measure` on a sequence read already (`have`: the stems with a prediction file)."""
    n = len(seq.stems)
    if skip_first_last and n < 3:
        raise EvalError(
            f"Sequence '{name}' has fewer than 3 ground-truth frames; pass skip_first_last=False to evaluate it."
        )
    lo, hi = (1, n - 1) if skip_first_last else (0, n)
    missing = sum(s not in have for s in seq.stems[lo:hi])
    height, width = seq.gt.shape[1:]
    radius = boundary_radius(height, width, bound_th)
    # 255 is void only in 8-bit ground truth, and only when some frame holds it (as `score_sequence`)
    has_void = ignore_void and seq.gt.dtype == np.uint8 and bool(np.any(seq.gt == VOID_LABEL))
    boxes = _content_boxes(seq.gt, seq.pred)
    ids = list(dict.fromkeys([*seq.obj_ids, *(int(i) for i in extra_ids)]))
    j = {o: np.empty(n) for o in ids}
    f = {o: np.empty(hi - lo) for o in seq.obj_ids}
    gt_area = {o: np.zeros(n, np.int64) for o in ids}
    pred_area = {o: np.zeros(n, np.int64) for o in ids}
    changed = dict.fromkeys(seq.obj_ids, 0)
    stable = dict(changed)
    for t in range(n):
        ys, xs = boxes[t]
        g_lab, p_lab = seq.gt[t, ys, xs], seq.pred[t, ys, xs]
        void = g_lab == VOID_LABEL if has_void else None
        for o in ids:
            g, p = g_lab == o, p_lab == o
            j[o][t] = region_similarity(p, g, void)
            gt_area[o][t], pred_area[o][t] = np.count_nonzero(g), np.count_nonzero(p)
            if score and lo <= t < hi and o in f:
                f[o][t - lo] = _boundary_f(p, g, void, radius)
        if score and lo < t < hi:  # the pair (t-1, t), inside the box of both frames
            (ya, xa), (yb, xb) = boxes[t - 1], boxes[t]
            ys2 = slice(min(ya.start, yb.start), max(ya.stop, yb.stop))
            xs2 = slice(min(xa.start, xb.start), max(xa.stop, xb.stop))
            g2, p2 = seq.gt[t - 1 : t + 1, ys2, xs2], seq.pred[t - 1 : t + 1, ys2, xs2]
            void2 = g2 == VOID_LABEL if has_void else None
            outside = height * width - (ys2.stop - ys2.start) * (xs2.stop - xs2.start)
            for o in seq.obj_ids:
                c, st = flicker_counts(g2 == o, p2 == o, void2)
                changed[o] += int(c[0])
                stable[o] += int(st[0]) + outside
    rows: list[ObjectStability] = []
    if score:
        frames = hi - lo
        for o in seq.obj_ids:
            scores = ObjectScores(name, o, frames, missing, *statistics(j[o][lo:hi]), *statistics(f[o]))
            flick = Flicker(max(frames - 1, 0), changed[o], stable[o], float(gt_area[o][lo:hi].mean()))
            rows.append(ObjectStability(scores, flick))
    extra = {int(i) for i in extra_ids}
    measured = _Measured(
        name, list(seq.stems), hi - lo, rows, missing,
        {o: v for o, v in j.items() if o in extra},
        {o: v for o, v in gt_area.items() if o in extra},
        {o: v for o, v in pred_area.items() if o in extra},
    )  # fmt: skip
    return measured


def _content_boxes(gt: np.ndarray, pred: np.ndarray) -> list[tuple[slice, slice]]:
    """Per frame, the box around its non-zero pixels (ground truth, void included, or prediction)
    with a 1 px margin (clipped at the image edge); (0:1, 0:1) for a frame with none.

    Outside the box both label maps are 0, so J and the changed / stable pixel counts inside it are
    those of the whole frame (the stable pixels outside are added), and so is F: the margin keeps the
    boundary maps (`boundary_map` looks right and down only) as at full size, and the tolerance radius
    is taken from the full frame.
    """
    used = np.bitwise_or(gt, pred)  # non-zero where either is
    return [_box_of(r, c) for r, c in zip(used.max(axis=2) > 0, used.max(axis=1) > 0)]


def _box_of(rows: np.ndarray, cols: np.ndarray) -> tuple[slice, slice]:
    """The box of the True entries of a row and a column profile, with a 1 px margin; (0:1, 0:1) if none."""
    yr, xr = np.flatnonzero(rows), np.flatnonzero(cols)
    if yr.size == 0:
        return slice(0, 1), slice(0, 1)
    return (
        slice(max(int(yr[0]) - 1, 0), min(int(yr[-1]) + 2, rows.size)),
        slice(max(int(xr[0]) - 1, 0), min(int(xr[-1]) + 2, cols.size)),
    )


def _boundary_f(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None, radius: int) -> float:
    """`boundary_measure` of one (H, W) frame, taken inside the box of the two masks (see `_content_boxes`)."""
    used = pred | gt
    ys, xs = _box_of(used.any(axis=1), used.any(axis=0))
    return float(boundary_measure(pred[ys, xs], gt[ys, xs], None if void is None else void[ys, xs], bound_th=radius))


def _distractor_on(seq: SequenceMasks, folder: Path, obj_id: int, pasted: list[str]) -> float | None:
    index = {s: i for i, s in enumerate(seq.stems)}
    unknown = [s for s in pasted if s not in index]
    if unknown:
        raise EvalError(
            f"Pasted frame '{unknown[0]}' of '{seq.name}' is not a ground-truth frame; regenerate the stress set."
        )
    if not pasted:
        return None
    masks = []
    for stem in pasted:
        path = folder / f"{stem}.png"
        if not path.is_file():
            raise EvalError(f"Distractor mask '{path}' is missing; regenerate the stress set (it writes Distractors/).")
        mask = read_label_map(path) > 0
        if mask.shape != seq.gt.shape[1:]:
            raise EvalError(
                f"Distractor mask '{path}' is {mask.shape[1]}x{mask.shape[0]} but the frames are "
                f"{seq.gt.shape[2]}x{seq.gt.shape[1]}; regenerate the stress set."
            )
        masks.append(mask)
    idx = [index[s] for s in pasted]
    return distractor_share(seq.pred[idx] == obj_id, np.stack(masks))


# ----------------------------------------------------------------------------------------------
# the report


def _find_stress(gt_root: Path, annotations: Path) -> tuple[Path, Path | None]:
    """(dataset root, stress.json path or None) for a gt argument that is a root or its Annotations
    (the root holds `Distractors/` too)."""
    candidates = [gt_root]
    if annotations == gt_root:  # gt_root is the Annotations (or Annotations/480p) folder itself, or a bare one
        if gt_root.name == "480p" and gt_root.parent.name == "Annotations":
            candidates.append(gt_root.parent.parent)
        elif gt_root.name == "Annotations":
            candidates.append(gt_root.parent)
    for root in candidates:
        if (root / STRESS_INDEX).is_file():
            return root, root / STRESS_INDEX
    return candidates[-1], None


def stability_report(
    gt_root: str | Path,
    pred_dir: str | Path,
    sequences: Sequence[str] | None = None,
    stress: Mapping[str, Any] | str | Path | bool | None = None,
    skip_first_last: bool = True,
    bound_th: float = DEFAULT_BOUND_TH,
    ignore_void: bool = True,
    workers: int = 2,
    on_sequence: Callable[[str, int], None] | None = None,
) -> StabilityReport:
    """J&F and flicker per object of DAVIS-layout predictions; with a stress set also the stress measures.

    Arguments:
        gt_root: dataset root holding `Annotations/` (and, for a stress set, `stress.json`), or the
            Annotations folder itself.
        pred_dir: predictions `<seq>/<frame>.png` (or `<seq>/masks/<frame>.png`).
        sequences: names to evaluate; default every ground-truth sequence folder. Plain copies an
            occlusion set needs are read as well (not reported) when left out.
        stress: None finds `stress.json` at gt_root (or above an Annotations folder); a path or a
            parsed index uses that one; False ignores any.
        skip_first_last: leave out each sequence's first and last frame from J&F and flicker.
        bound_th, ignore_void: as for `evaluate_folders`.
        workers: sequences measured at once (threads; mask decoding and numpy release the GIL).
        on_sequence: called after each reported sequence with (name, frames evaluated).

    Returns:
        A `StabilityReport`. Raises `EvalError` for missing folders, sizes that differ, or a stress
        index that does not fit the ground truth.
    """
    gt_root = Path(gt_root)
    annotations = resolve_annotations_dir(gt_root)
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise EvalError(
            f"Prediction folder '{pred_dir}' does not exist; pass the folder that holds one subfolder per sequence."
        )
    root, found = _find_stress(gt_root, annotations)
    if stress is None:
        index = read_stress_index(found) if found is not None else None
    elif stress is False:
        index = None
    elif isinstance(stress, (str, Path)):
        index = read_stress_index(stress)
        root = Path(stress) if Path(stress).is_dir() else Path(stress).parent
    elif isinstance(stress, Mapping):
        index = check_stress_index(stress)
    else:
        raise EvalError(f"stress={stress!r} is not a stress index; pass a path to stress.json, a parsed dict or None.")
    entries: dict[str, Mapping[str, Any]] = dict(index["sequences"]) if index else {}

    available = sequence_folders(annotations)
    if sequences is None:
        names = available
        if not names:
            raise no_sequences_error(annotations)
        absent = [n for n in entries if n not in available]
        if absent:
            raise EvalError(
                f"The stress index lists '{absent[0]}' but '{annotations / absent[0]}' is missing; "
                "regenerate the stress set or copy its annotations."
            )
    else:
        names = list(sequences)
        unknown = [n for n in names if n not in available]
        if unknown:
            raise EvalError(
                f"Sequence(s) {unknown} are not in the ground truth '{annotations}'; pick names of its subfolders."
            )
    plain_names = {str(e["source_sequence"]) for e in entries.values() if e["kind"] == OCCLUSION}
    plain_names |= {n for n, e in entries.items() if e["kind"] == PLAIN}
    for name in names:  # fail before any work when a whole sequence of predictions is absent
        if not (pred_dir / name).is_dir():
            if name in plain_names:
                raise EvalError(
                    f"Prediction folder '{pred_dir / name}' of the plain copy '{name}' is missing; run the tool on the "
                    "whole stress set including the plain copies, or leave it out with sequences= (the re-detection "
                    "ratios of its occlusion sets are then unavailable)."
                )
            raise EvalError(
                f"Prediction folder '{pred_dir / name}' is missing; write the masks of sequence '{name}' there "
                "or leave the sequence out with sequences=."
            )

    # the plain sources the requested occlusion sets need, with the target ids
    needed: dict[str, set[int]] = {}
    for name in names:
        e = entries.get(name)
        if e is not None and e["kind"] == OCCLUSION:
            src = str(e["source_sequence"])
            if (annotations / src).is_dir():  # absent in a set built without plain copies: see _stress_row
                needed.setdefault(src, set()).add(int(e["obj_id"]))
    opts = dict(skip_first_last=skip_first_last, bound_th=bound_th, ignore_void=ignore_void)

    def job(name: str) -> _Measured:
        e = entries.get(name)
        distractor = None
        if e is not None and e["kind"] == DISTRACTOR:
            folder = root / str(e.get("masks", f"Distractors/{name}"))
            distractor = (folder, int(e["obj_id"]), [str(s) for s in e["pasted"]])
        extra = sorted(needed.get(name, set()))
        if e is not None and "obj_id" in e:
            extra.append(int(e["obj_id"]))
        return _measure(
            name, annotations / name, _pred_folder(pred_dir, name), extra_ids=extra, distractor=distractor, **opts
        )

    def aux_job(src: str) -> _Measured:
        pred = _pred_folder(pred_dir, src) if (pred_dir / src).is_dir() else None
        return _measure(src, annotations / src, pred, extra_ids=sorted(needed[src]), score=False, **opts)

    measured: dict[str, _Measured] = {}
    aux: dict[str, _Measured] = {}
    aux_names = [s for s in needed if s not in names]
    if workers > 1:
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            futures = {n: pool.submit(job, n) for n in names}
            aux_futures = {s: pool.submit(aux_job, s) for s in aux_names}
            for n in names:
                measured[n] = futures[n].result()
                if on_sequence is not None:
                    on_sequence(n, measured[n].frames)
            aux = {s: f.result() for s, f in aux_futures.items()}
        finally:  # on an error, do not start the sequences still queued
            pool.shutdown(wait=True, cancel_futures=True)
    else:
        for n in names:
            measured[n] = job(n)
            if on_sequence is not None:
                on_sequence(n, measured[n].frames)
        aux = {s: aux_job(s) for s in aux_names}

    report = StabilityReport(rows=[])
    for n in names:
        report.rows.extend(measured[n].rows)
        report.missing_frames[n] = measured[n].missing_frames
    plain_of = {**aux, **{n: m for n, m in measured.items() if n in needed}}
    for n in names:
        if n in entries:
            report.stress.append(_stress_row(n, entries[n], measured[n], plain_of, pred_dir))
    unavailable: dict[str, list[str]] = {}
    for s in report.stress:
        if s.note:
            unavailable.setdefault(s.note, []).append(s.sequence)
    report.notes += [f"{', '.join(seqs)}: {note}" for note, seqs in unavailable.items()]
    if index and index.get("skipped"):
        report.notes.append(f"the stress generator skipped: {'; '.join(map(_skipped_text, index['skipped']))}")
    return report


def _skipped_text(item: Any) -> str:
    """One `skipped` entry of stress.json ({sequence, kind, length?, reason} or a plain name) as text."""
    if not isinstance(item, Mapping):
        return str(item)
    what = f"{item.get('kind', '')}{item.get('length', '') or ''}".strip()
    text = f"{item.get('sequence', '?')} {what}".strip()
    return f"{text} ({item['reason']})" if item.get("reason") else text


def _stress_row(
    name: str,
    entry: Mapping[str, Any],
    m: _Measured,
    plain_of: Mapping[str, _Measured],
    pred_dir: Path,
) -> StressScores:
    kind = str(entry["kind"])
    means = _means(m.rows)
    obj_id = int(entry["obj_id"]) if "obj_id" in entry else None
    target = next((r for r in m.rows if r.obj_id == obj_id), None)
    row: dict[str, Any] = dict(
        sequence=name, kind=kind, group=stress_group(entry), source_sequence=str(entry.get("source_sequence", name)),
        obj_id=obj_id, jf_mean=means["jf"], flicker=means["flicker"], flicker_per_area=means["flicker_per_area"],
        target_j=target.scores.j_mean if target is not None else None,
    )  # fmt: skip
    if kind == OCCLUSION and obj_id is not None and str(entry["source_sequence"]) not in plain_of:
        row["note"] = (
            f"re-detection ratio and FP area unavailable: the plain copy '{entry['source_sequence']}' is not in "
            "the ground truth; build the stress set with its plain copies"
        )
        redetect_j, _, recover = redetection(m.stems, m.j[obj_id], entry["reappear"], None)
        row.update(
            redetect_j=redetect_j, frames_to_recover=recover,
            never_recovered=entry["reappear"] is not None and recover is None,
        )  # fmt: skip
    elif kind == OCCLUSION and obj_id is not None:
        src = plain_of[str(entry["source_sequence"])]
        plain_j = dict(zip(src.stems, src.j[obj_id])) if obj_id in src.j else None
        reappear = entry["reappear"]
        redetect_j, ratio, recover = redetection(m.stems, m.j[obj_id], reappear, plain_j)
        if plain_j is None and reappear is not None:
            row["note"] = (
                f"re-detection ratio unavailable: plain predictions '{pred_dir / src.name}' are missing; "
                "run the tool on the whole stress set including the plain copies"
            )
        fp_mean, fp_max = hidden_fp_area(m.stems, m.pred_area[obj_id], entry["hidden"], src.gt_area[obj_id])
        row.update(
            redetect_j=redetect_j, redetect_ratio=ratio, frames_to_recover=recover,
            never_recovered=reappear is not None and recover is None, fp_area_mean=fp_mean, fp_area_max=fp_max,
        )  # fmt: skip
    elif kind == DISTRACTOR:
        row["distractor_share"] = m.distractor_share
    return StressScores(**row)
