"""DAVIS semi-supervised evaluation of a folder of predicted masks against ground truth.

Layout: `gt_dir/<sequence>/<frame>.png` (DAVIS `Annotations`: palette PNGs with object ids, or
8-bit 0/255 / mode 'LA' single-object masks) and `pred_dir/<sequence>/<frame>.png` the same way.
`gt_dir` may also be a dataset root holding `Annotations/` (or `Annotations/480p/`).

Frames are paired by file stem, never by position, and ordered by a natural sort of the ground-truth
stems (`frame_2` before `frame_10`). The objects of a sequence are the ids present in any of its
ground-truth frames (0 and the void label 255 excluded). A missing prediction file counts as an empty
mask and is counted in the report. The first and last ground-truth frames are left out by default
(the semi-supervised protocol). Scores follow DAVIS 2017: per object J and F mean, recall and decay
(`maskvos.eval.metrics`); the overall J (F) is the mean over all objects of their J (F) means, and
J&F = (J + F) / 2.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maskvos.eval.metrics import DEFAULT_BOUND_TH, EvalError, boundary_measure, region_similarity, statistics
from maskvos.io.files import atomic_path
from maskvos.io.frames import natural_key
from maskvos.io.masks import VOID_LABEL, read_label_map

CSV_FIELDS = (
    "sequence", "object", "frames", "missing_frames",
    "J_mean", "J_recall", "J_decay", "F_mean", "F_recall", "F_decay", "JF_mean",
)  # fmt: skip
OVERALL = "overall"


class _JFMean:
    """J&F of a record with `j_mean` and `f_mean`."""

    @property
    def jf_mean(self) -> float:
        return (self.j_mean + self.f_mean) / 2


@dataclass(frozen=True)
class ObjectScores(_JFMean):
    """Scores of one object in one sequence over its evaluated frames."""

    sequence: str
    obj_id: int
    frames: int
    missing_frames: int
    j_mean: float
    j_recall: float
    j_decay: float
    f_mean: float
    f_recall: float
    f_decay: float


@dataclass(frozen=True)
class EvalSummary(_JFMean):
    """Overall numbers: each is the mean over all objects of that object's value; jf_mean = (J + F) / 2."""

    j_mean: float
    j_recall: float
    j_decay: float
    f_mean: float
    f_recall: float
    f_decay: float
    objects: int


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


@dataclass
class EvalReport:
    """Per-object scores of an evaluation, with per-sequence missing-frame counts.

    `rows` hold one `ObjectScores` per (sequence, object); `missing_frames` maps every evaluated
    sequence (also those without objects) to its count of evaluated frames that had no prediction file.
    """

    rows: list[ObjectScores]
    missing_frames: dict[str, int] = field(default_factory=dict)

    @property
    def sequences(self) -> list[str]:
        """Evaluated sequence names in evaluation order (each once)."""
        return list(dict.fromkeys([*self.missing_frames, *(r.sequence for r in self.rows)]))

    @property
    def summary(self) -> EvalSummary:
        def over(name: str) -> float:
            return _mean([getattr(r, name) for r in self.rows])

        return EvalSummary(
            j_mean=over("j_mean"), j_recall=over("j_recall"), j_decay=over("j_decay"),
            f_mean=over("f_mean"), f_recall=over("f_recall"), f_decay=over("f_decay"),
            objects=len(self.rows),
        )  # fmt: skip

    def table(self) -> str:
        """A Markdown table: one line per sequence (means over its objects), then the overall line."""

        def num(value: float) -> str:
            return "-" if math.isnan(value) else f"{value:.3f}"

        lines = [
            "| sequence | objects | J | F | J&F | missing frames |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for seq in self.sequences:
            rows = [r for r in self.rows if r.sequence == seq]
            j, f = _mean([r.j_mean for r in rows]), _mean([r.f_mean for r in rows])
            missing = self.missing_frames.get(seq, rows[0].missing_frames if rows else 0)
            lines.append(f"| {seq} | {len(rows)} | {num(j)} | {num(f)} | {num((j + f) / 2)} | {missing} |")
        s = self.summary
        total_missing = sum(self.missing_frames.get(seq, 0) for seq in self.sequences)
        lines.append(
            f"| **{OVERALL}** | {s.objects} | {num(s.j_mean)} | {num(s.f_mean)} | {num(s.jf_mean)} | {total_missing} |"
        )
        return "\n".join(lines)

    def write_csv(self, path: str | Path) -> None:
        """Write one row per (sequence, object) and a final `overall` row, atomically (temp file, rename)."""
        path = Path(path)
        s = self.summary
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(CSV_FIELDS)
            for r in self.rows:
                writer.writerow([
                    r.sequence, r.obj_id, r.frames, r.missing_frames,
                    r.j_mean, r.j_recall, r.j_decay, r.f_mean, r.f_recall, r.f_decay, r.jf_mean,
                ])  # fmt: skip
            writer.writerow([
                OVERALL, "", sum(r.frames for r in self.rows), sum(self.missing_frames.values()),
                s.j_mean, s.j_recall, s.j_decay, s.f_mean, s.f_recall, s.f_decay, s.jf_mean,
            ])  # fmt: skip

    @classmethod
    def read_csv(cls, path: str | Path) -> EvalReport:
        """Read a file written by `write_csv` back (the overall row is recomputed, not read)."""
        rows, missing = [], {}
        with open(path, newline="") as fh:
            for rec in csv.DictReader(fh):
                if rec["sequence"] == OVERALL and rec["object"] == "":
                    continue
                row = ObjectScores(
                    sequence=rec["sequence"], obj_id=int(rec["object"]), frames=int(rec["frames"]),
                    missing_frames=int(rec["missing_frames"]),
                    **{f"{m}_{s}": float(rec[f"{m.upper()}_{s}"]) for m in "jf" for s in ("mean", "recall", "decay")},
                )  # fmt: skip
                rows.append(row)
                missing[row.sequence] = row.missing_frames
        return cls(rows=rows, missing_frames=missing)


def sequence_folders(annotations: Path) -> list[str]:
    """The sequence subfolders of a ground-truth folder, in natural order."""
    return sorted((p.name for p in annotations.iterdir() if p.is_dir()), key=natural_key)


def no_sequences_error(annotations: Path) -> EvalError:
    """The error for a ground-truth folder without sequence subfolders."""
    return EvalError(f"Ground-truth folder '{annotations}' has no sequence subfolders; pass the DAVIS Annotations folder.")


def dataset_dirs(root: str | Path) -> tuple[Path, Path] | None:
    """(images, annotations) folders of a DAVIS-layout dataset root (`JPEGImages[/480p]`,
    `Annotations[/480p]`); None when either is missing."""
    root = Path(root)
    found = []
    for name in ("JPEGImages", "Annotations"):
        folder = root / name
        if (folder / "480p").is_dir():
            folder = folder / "480p"
        if not folder.is_dir():
            return None
        found.append(folder)
    return found[0], found[1]


def resolve_annotations_dir(gt_dir: str | Path) -> Path:
    """`gt_dir` itself, or `gt_dir/Annotations[/480p]` when gt_dir is a DAVIS dataset root."""
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise EvalError(
            f"Ground-truth folder '{gt_dir}' does not exist; pass the DAVIS Annotations folder or dataset root."
        )
    annotations = gt_dir / "Annotations"
    if annotations.is_dir():
        return annotations / "480p" if (annotations / "480p").is_dir() else annotations
    return gt_dir


def _mask_files(folder: Path) -> dict[str, Path]:
    """{stem: path} of the PNG files in a folder."""
    return {p.stem: p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file()}


@dataclass(frozen=True)
class SequenceMasks:
    """Label maps of the evaluated frames of one sequence: gt and pred (T, H, W) uint8."""

    name: str
    stems: list[str]
    gt: np.ndarray
    pred: np.ndarray
    missing_frames: int
    obj_ids: list[int]


def load_sequence(gt_seq_dir: Path, pred_seq_dir: Path, skip_first_last: bool = True) -> SequenceMasks:
    """Read one sequence's ground truth and predictions, paired by stem.

    Objects are found over all ground-truth frames, also the skipped first and last ones.
    """
    name = gt_seq_dir.name
    gt_files = _mask_files(gt_seq_dir)
    if not gt_files:
        raise EvalError(f"Ground-truth sequence folder '{gt_seq_dir}' holds no PNG masks; remove it or add its annotations.")
    if not pred_seq_dir.is_dir():
        raise EvalError(
            f"Prediction folder '{pred_seq_dir}' is missing; write the masks of sequence '{name}' there "
            "or leave the sequence out with sequences=."
        )
    stems = sorted(gt_files, key=natural_key)
    gt_all = [read_label_map(gt_files[s]) for s in stems]
    ids = np.unique(np.concatenate([np.unique(g) for g in gt_all]))
    # 255 is DAVIS' void label in 8-bit maps; in 16-bit id maps it is an ordinary object id.
    void_ids = (VOID_LABEL,) if all(g.dtype == np.uint8 for g in gt_all) else ()
    obj_ids = [int(i) for i in ids if i != 0 and i not in void_ids]
    if skip_first_last:
        stems, gt_all = stems[1:-1], gt_all[1:-1]
    if not stems:
        raise EvalError(
            f"Sequence '{name}' has fewer than 3 ground-truth frames; pass skip_first_last=False to evaluate it."
        )
    pred_files = _mask_files(pred_seq_dir)
    preds, missing = [], 0
    for stem, gt in zip(stems, gt_all):
        if stem not in pred_files:
            preds.append(np.zeros_like(gt))
            missing += 1
            continue
        pred = read_label_map(pred_files[stem])
        if pred.shape != gt.shape:
            raise EvalError(
                f"Prediction '{pred_files[stem]}' is {pred.shape[1]}x{pred.shape[0]} but its ground truth is "
                f"{gt.shape[1]}x{gt.shape[0]}; write predictions at the ground-truth size."
            )
        preds.append(pred)
    shapes = {g.shape for g in gt_all}
    if len(shapes) > 1:
        raise EvalError(
            f"Ground-truth masks of sequence '{gt_seq_dir}' differ in size {sorted(shapes)}; give every frame one size."
        )
    return SequenceMasks(name, stems, np.stack(gt_all), np.stack(preds), missing, obj_ids)


def score_sequence(
    seq: SequenceMasks, bound_th: float = DEFAULT_BOUND_TH, ignore_void: bool = True
) -> list[ObjectScores]:
    """J and F statistics of every object of a loaded sequence.

    ignore_void: exclude ground-truth pixels labelled 255 from J and clear them before boundaries
    are taken for F (the DAVIS metric definitions). The DAVIS 2017 script turns 255 into background
    before it builds its void masks, so its void masks are empty; pass False to reproduce that.
    """
    has_void = ignore_void and seq.gt.dtype == np.uint8 and np.any(seq.gt == VOID_LABEL)
    void = (seq.gt == VOID_LABEL) if has_void else None
    rows = []
    for obj_id in seq.obj_ids:
        gt_mask, pred_mask = seq.gt == obj_id, seq.pred == obj_id
        j = region_similarity(pred_mask, gt_mask, void)
        f = boundary_measure(pred_mask, gt_mask, void, bound_th=bound_th)
        j_stats, f_stats = statistics(j), statistics(f)
        rows.append(ObjectScores(seq.name, obj_id, len(seq.stems), seq.missing_frames, *j_stats, *f_stats))
    return rows


def evaluate_folders(
    gt_dir: str | Path,
    pred_dir: str | Path,
    sequences: Sequence[str] | None = None,
    skip_first_last: bool = True,
    bound_th: float = DEFAULT_BOUND_TH,
    ignore_void: bool = True,
    on_sequence: Callable[[str, int], None] | None = None,
) -> EvalReport:
    """Evaluate predicted masks against DAVIS-layout ground truth.

    Arguments:
        gt_dir: `Annotations` folder (`<seq>/<frame>.png`) or a dataset root that holds `Annotations/`.
        pred_dir: predictions, `<seq>/<frame>.png` (or `<seq>/masks/<frame>.png`, as `maskvos segment`
            writes them), palette (object ids) or grey (one object).
        sequences: names to evaluate; default every sequence folder of the ground truth.
        skip_first_last: leave out each sequence's first and last ground-truth frame.
        bound_th: F tolerance, a fraction of the image diagonal (or whole pixels if >= 1).
        ignore_void: exclude ground-truth void pixels (255), see `score_sequence`.
        on_sequence: called after each sequence with (name, frames evaluated), e.g. for progress.

    Returns:
        An `EvalReport`. Raises `EvalError` for a missing folder or a prediction of the wrong size.
    """
    annotations = resolve_annotations_dir(gt_dir)
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise EvalError(
            f"Prediction folder '{pred_dir}' does not exist; pass the folder that holds one subfolder per sequence."
        )
    available = sequence_folders(annotations)
    if sequences is None:
        names = available
        if not names:
            raise no_sequences_error(annotations)
    else:
        names = list(sequences)
        unknown = [n for n in names if n not in available]
        if unknown:
            raise EvalError(
                f"Sequence(s) {unknown} are not in the ground truth '{annotations}'; pick names of its subfolders."
            )
    for name in names:  # fail before any work when a whole sequence of predictions is absent
        if not (pred_dir / name).is_dir():
            raise EvalError(
                f"Prediction folder '{pred_dir / name}' is missing; write the masks of sequence '{name}' there "
                "or leave the sequence out with sequences=."
            )
    report = EvalReport(rows=[])
    for name in names:
        pred_seq = pred_dir / name
        if (pred_seq / "masks").is_dir() and not any(pred_seq.glob("*.png")):
            pred_seq = pred_seq / "masks"  # the layout `maskvos segment --out <pred>/<seq>` writes
        seq = load_sequence(annotations / name, pred_seq, skip_first_last=skip_first_last)
        report.rows.extend(score_sequence(seq, bound_th=bound_th, ignore_void=ignore_void))
        report.missing_frames[name] = seq.missing_frames
        if on_sequence is not None:
            on_sequence(name, len(seq.stems))
    return report
