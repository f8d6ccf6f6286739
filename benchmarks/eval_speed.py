"""Speed of the DAVIS evaluation (`maskvos.eval.evaluate_folders`) on real ground truth.

Fake predictions are made from the ground truth of davis2016-train (shifted by a few pixels on even
frames, eroded by a disk on odd ones) and written to a temporary folder; then the evaluation of all
sequences is timed end to end (PNG reading included), and split into reading and scoring. A few
frames are also checked against a brute-force F (all boundary pixel pairs) to show the fast path is exact.

    python benchmarks/eval_speed.py [--gt /work/shared/data/vos/davis2016-train] [--sequences N]

Goal: under 30 s for the 20 sequences (1,286 frames at 854x480) on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from maskvos.eval import evaluate_folders
from maskvos.eval.davis import load_sequence, natural_key, resolve_annotations_dir, score_sequence
from maskvos.eval.metrics import boundary_map, boundary_measure, boundary_radius, dilate_disk
from maskvos.io.masks import read_label_map, write_label_map

DEFAULT_GT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "vos" / "davis2016-train"


def fake_prediction(labels: np.ndarray, index: int) -> np.ndarray:
    """Ground truth shifted by (2, 4) px on even frames, eroded by a radius-3 disk on odd frames."""
    if index % 2 == 0:
        return np.roll(labels, (2, 4), axis=(0, 1))
    eroded = ~dilate_disk(labels == 0, 3)
    return np.where(eroded, labels, 0).astype(np.uint8)


def write_fake_predictions(annotations: Path, out: Path, names: list[str]) -> int:
    frames = 0
    for name in names:
        (out / name).mkdir(parents=True)
        files = sorted((annotations / name).glob("*.png"), key=lambda p: natural_key(p.stem))
        for i, path in enumerate(files):
            write_label_map(out / name / path.name, fake_prediction(read_label_map(path), i))
            frames += 1
    return frames


def brute_force_f(pred: np.ndarray, gt: np.ndarray) -> float:
    """F from all pairwise distances between boundary pixels (no dilation), for the exactness check."""
    pb, gb = np.argwhere(boundary_map(pred)), np.argwhere(boundary_map(gt))
    if len(pb) == 0 or len(gb) == 0:
        return float(len(pb) == len(gb))
    r2 = boundary_radius(*gt.shape) ** 2
    near_p = np.zeros(len(pb), bool)
    near_g = np.zeros(len(gb), bool)
    for start in range(0, len(pb), 512):
        d2 = ((pb[start : start + 512, None, :] - gb[None, :, :]) ** 2).sum(-1) <= r2
        near_p[start : start + 512] = d2.any(axis=1)
        near_g |= d2.any(axis=0)
    precision, recall = near_p.mean(), near_g.mean()
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", type=Path, default=DEFAULT_GT.resolve())
    parser.add_argument("--sequences", type=int, default=None, help="evaluate only the first N sequences")
    args = parser.parse_args()

    annotations = resolve_annotations_dir(args.gt)
    names = sorted(p.name for p in annotations.iterdir() if p.is_dir())[: args.sequences]
    with tempfile.TemporaryDirectory() as tmp:
        pred_dir = Path(tmp) / "pred"
        t0 = time.perf_counter()
        n_frames = write_fake_predictions(annotations, pred_dir, names)
        print(f"wrote {n_frames} fake prediction frames in {time.perf_counter() - t0:.1f} s (not timed below)")

        t0 = time.perf_counter()
        report = evaluate_folders(args.gt, pred_dir, sequences=names)
        total = time.perf_counter() - t0

        read_s = score_s = 0.0
        checked = []
        for name in names:
            t1 = time.perf_counter()
            seq = load_sequence(annotations / name, pred_dir / name)
            t2 = time.perf_counter()
            score_sequence(seq)
            t3 = time.perf_counter()
            read_s += t2 - t1
            score_s += t3 - t2
            mid = len(seq.stems) // 2
            for k in (0, mid):
                for obj_id in seq.obj_ids:
                    fast = boundary_measure(seq.pred[k] == obj_id, seq.gt[k] == obj_id)
                    checked.append(abs(fast - brute_force_f(seq.pred[k] == obj_id, seq.gt[k] == obj_id)))

    evaluated = sum(r.frames for r in report.rows)
    print(report.table())
    print()
    print(f"| stage | seconds | frames/s |  ({len(names)} sequences, {evaluated} evaluated object-frames)")
    print("|---|---:|---:|")
    print(f"| evaluate_folders (end to end) | {total:.2f} | {evaluated / total:.0f} |")
    print(f"| of which reading PNGs | {read_s:.2f} | {evaluated / read_s:.0f} |")
    print(f"| of which J and F | {score_s:.2f} | {evaluated / score_s:.0f} |")
    print(f"goal: < 30 s for the 20 sequences; {'met' if total < 30 else 'NOT met'} ({total:.1f} s)")
    print(f"fast F vs brute-force F on {len(checked)} frames: max |difference| = {max(checked):.2e}")


if __name__ == "__main__":
    main()
