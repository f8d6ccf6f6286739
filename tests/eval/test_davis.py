"""Folder evaluation on a tiny synthetic DAVIS layout written to tmp_path."""

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskvos.eval import EvalError, EvalReport, evaluate_folders
from maskvos.eval.davis import natural_key
from maskvos.io.masks import write_label_map

SIZE = (32, 40)  # H, W
# Natural order frame_1, frame_2, frame_3, frame_10, frame_11; a plain string sort would put 10 and 11
# before 2, and pairing by position would then compare different frames.
STEMS_A = ["frame_1", "frame_2", "frame_3", "frame_10", "frame_11"]


def labels_a(index: int) -> np.ndarray:
    """Two objects that move with the frame index, so every frame differs from the others."""
    lab = np.zeros(SIZE, dtype=np.uint8)
    lab[4:12, 2 + 3 * index : 10 + 3 * index] = 1
    lab[18:28, 20:26] = 2
    lab[18 + index : 20 + index, 20:26] = 0
    return lab


def square_b(index: int) -> np.ndarray:
    mask = np.zeros(SIZE, dtype=bool)
    mask[8:24, 4 + 2 * index : 20 + 2 * index] = True
    return mask


def write_grey(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """gt root with Annotations/; seqA palette (2 objects), seqB grey 0/255 (1 object)."""
    gt = tmp_path / "davis" / "Annotations"
    pred = tmp_path / "pred"
    for seq in ("seqA", "seqB"):
        (gt / seq).mkdir(parents=True)
        (pred / seq).mkdir(parents=True)
    for i, stem in enumerate(STEMS_A):
        write_label_map(gt / "seqA" / f"{stem}.png", labels_a(i))
        if stem == "frame_10":
            continue  # missing prediction: counts as empty
        if stem in ("frame_1", "frame_11"):
            write_label_map(pred / "seqA" / f"{stem}.png", np.zeros(SIZE, np.uint8))  # wrong, but excluded
        else:
            write_label_map(pred / "seqA" / f"{stem}.png", labels_a(i))
    for i in range(4):
        stem = f"{i:05d}"
        write_grey(gt / "seqB" / f"{stem}.png", square_b(i))
        half = square_b(i).copy()
        half[:, 12 + 2 * i :] = False  # left half of the square: J = 0.5
        write_grey(pred / "seqB" / f"{stem}.png", half)
    return tmp_path / "davis", pred


def test_natural_order():
    assert sorted(STEMS_A, key=natural_key) == STEMS_A
    assert sorted(STEMS_A) != STEMS_A


def test_scores_missing_frames_and_summary(layout):
    gt_root, pred = layout
    report = evaluate_folders(gt_root, pred)
    rows = {(r.sequence, r.obj_id): r for r in report.rows}
    assert sorted(rows) == [("seqA", 1), ("seqA", 2), ("seqB", 1)]
    assert report.missing_frames == {"seqA": 1, "seqB": 0}
    for obj_id in (1, 2):
        r = rows[("seqA", obj_id)]
        # evaluated frames frame_2, frame_3 (exact) and frame_10 (missing -> empty): J = F = [1, 1, 0]
        assert r.frames == 3
        assert r.j_mean == pytest.approx(2 / 3) and r.f_mean == pytest.approx(2 / 3)
        assert r.j_recall == pytest.approx(2 / 3)
        assert r.j_decay == pytest.approx(1.0) and r.f_decay == pytest.approx(1.0)
    b = rows[("seqB", 1)]
    assert b.frames == 2
    assert b.j_mean == pytest.approx(0.5)
    assert b.j_recall == 0.0  # 0.5 is not above 0.5
    assert 0.0 < b.f_mean < 1.0
    s = report.summary
    assert s.j_mean == pytest.approx((2 / 3 + 2 / 3 + 0.5) / 3)
    assert s.f_mean == pytest.approx((2 / 3 + 2 / 3 + b.f_mean) / 3)
    assert s.jf_mean == pytest.approx((s.j_mean + s.f_mean) / 2)


def test_first_and_last_frames_can_be_included(layout):
    gt_root, pred = layout
    report = evaluate_folders(gt_root, pred, sequences=["seqA"], skip_first_last=False)
    r = report.rows[0]
    assert r.frames == 5
    # frames 1 and 11 were predicted empty, frame 10 missing: J = [0, 1, 1, 0, 0]
    assert r.j_mean == pytest.approx(2 / 5)
    assert [x.sequence for x in report.rows] == ["seqA", "seqA"]


def test_gt_dir_can_be_annotations_or_480p(layout, tmp_path):
    gt_root, pred = layout
    direct = evaluate_folders(gt_root / "Annotations", pred)
    via_root = evaluate_folders(gt_root, pred)
    assert direct.rows == via_root.rows
    res = tmp_path / "root480" / "Annotations" / "480p"
    res.mkdir(parents=True)
    (gt_root / "Annotations" / "seqB").rename(res / "seqB")
    report = evaluate_folders(tmp_path / "root480", pred)
    assert [r.sequence for r in report.rows] == ["seqB"]


def test_table_lists_sequences_and_overall(layout):
    report = evaluate_folders(*layout)
    lines = report.table().splitlines()
    assert lines[0].startswith("| sequence | objects | J | F | J&F | missing frames |")
    assert lines[2] == "| seqA | 2 | 0.667 | 0.667 | 0.667 | 1 |"
    assert lines[3].startswith("| seqB | 1 | 0.500 |") and lines[3].endswith("| 0 |")
    assert lines[4].startswith("| **overall** | 3 | 0.611 |") and lines[4].endswith("| 1 |")


def test_csv_round_trip(layout, tmp_path):
    report = evaluate_folders(*layout)
    out = tmp_path / "results.csv"
    report.write_csv(out)
    assert EvalReport.read_csv(out).rows == report.rows
    with open(out, newline="") as fh:
        records = list(csv.DictReader(fh))
    assert len(records) == 4
    overall = records[-1]
    assert overall["sequence"] == "overall" and overall["missing_frames"] == "1"
    assert float(overall["JF_mean"]) == report.summary.jf_mean
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_size_mismatch_names_the_file(layout):
    gt_root, pred = layout
    write_label_map(pred / "seqA" / "frame_3.png", np.zeros((16, 20), np.uint8))
    with pytest.raises(EvalError, match=r"frame_3\.png.*20x16.*40x32"):
        evaluate_folders(gt_root, pred)


def test_missing_sequence_folder_is_named(layout):
    gt_root, pred = layout
    for f in (pred / "seqB").iterdir():
        f.unlink()
    (pred / "seqB").rmdir()
    with pytest.raises(EvalError, match="seqB"):
        evaluate_folders(gt_root, pred)
    # leaving it out works
    assert {r.sequence for r in evaluate_folders(gt_root, pred, sequences=["seqA"]).rows} == {"seqA"}


def test_unknown_sequence_and_missing_gt_are_errors(layout, tmp_path):
    gt_root, pred = layout
    with pytest.raises(EvalError, match="nope"):
        evaluate_folders(gt_root, pred, sequences=["nope"])
    with pytest.raises(EvalError, match="does not exist"):
        evaluate_folders(tmp_path / "absent", pred)


def test_void_label_is_excluded(tmp_path):
    gt, pred = tmp_path / "gt" / "s", tmp_path / "pred" / "s"
    gt.mkdir(parents=True)
    pred.mkdir(parents=True)
    lab = np.zeros(SIZE, np.uint8)
    lab[8:16, 8:16] = 1
    lab[6:18, 6:18][lab[6:18, 6:18] == 0] = 255  # a void ring around the object
    guess = np.where(lab == 255, 1, lab).astype(np.uint8)  # the prediction also covers the ring
    for i in range(3):
        write_label_map(gt / f"{i}.png", lab)
        write_label_map(pred / f"{i}.png", guess)
    with_void = evaluate_folders(tmp_path / "gt", tmp_path / "pred").rows[0]
    assert with_void.obj_id == 1 and with_void.j_mean == 1.0 and with_void.f_mean == 1.0
    plain = evaluate_folders(tmp_path / "gt", tmp_path / "pred", ignore_void=False).rows[0]
    assert plain.j_mean == pytest.approx(64 / 144)


def test_sequence_without_objects_shows_dashes(tmp_path):
    gt, pred = tmp_path / "gt" / "bg", tmp_path / "pred" / "bg"
    gt.mkdir(parents=True)
    pred.mkdir(parents=True)
    for i in range(3):
        write_label_map(gt / f"{i}.png", np.zeros(SIZE, np.uint8))
    report = evaluate_folders(tmp_path / "gt", tmp_path / "pred")
    assert report.rows == [] and report.missing_frames == {"bg": 1}  # only the evaluated middle frame counts
    assert math.isnan(report.summary.j_mean)
    assert "| bg | 0 | - | - | - | 1 |" in report.table()
