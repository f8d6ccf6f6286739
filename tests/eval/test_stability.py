"""Flicker and stress measures on synthetic masks written as PNGs, each against values worked out by hand."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskvos.eval import EvalError, evaluate_folders
from maskvos.eval.stability import (
    Flicker,
    distractor_share,
    flicker_counts,
    measure_masks,
    read_stress_index,
    stability_report,
)
from maskvos.io.masks import write_label_map

H, W = 20, 30
PIXELS = H * W


def stem(i: int) -> str:
    return f"{i:05d}"


def box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def labels(*objects: np.ndarray, void: np.ndarray | None = None) -> np.ndarray:
    """A label map: object k+1 where objects[k] is True (later ones on top), 255 on void."""
    lab = np.zeros((H, W), np.uint8)
    for k, mask in enumerate(objects):
        lab[mask] = k + 1
    if void is not None:
        lab[void] = 255
    return lab


def write_seq(folder: Path, frames: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, lab in frames.items():
        write_label_map(folder / f"{name}.png", lab)


def write_grey(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)


def only(report, seq, obj_id=1):
    return next(r for r in report.rows if r.sequence == seq and r.obj_id == obj_id)


# ------------------------------------------------------------------------------------------
# flicker


def test_perfect_prediction_of_a_moving_object_has_no_flicker(tmp_path):
    frames = {stem(t): labels(box(5, 10, 2 + 3 * t, 7 + 3 * t)) for t in range(6)}
    write_seq(tmp_path / "gt" / "move", frames)
    write_seq(tmp_path / "pred" / "move", frames)
    report = stability_report(tmp_path / "gt", tmp_path / "pred")
    f = only(report, "move").flicker
    # evaluated frames 1..4 (first and last left out, as for J&F): 3 pairs of the whole frame
    assert f.pairs == 3 and f.changed == 0 and f.stable > 0
    assert f.share == 0.0 and f.per_area == 0.0
    assert only(report, "move").scores.j_mean == 1.0
    assert report.stress == [] and list(report.summary()) == ["overall"]


@pytest.fixture
def toggling(tmp_path):
    """A still object 1 (5x5 = 25 px) and a still object 2 predicted exactly; the prediction of
    object 1 adds a 2x2 block (k = 4 px) on odd frames; frame 0 of the prediction is not written."""
    obj1, obj2, block = box(2, 7, 2, 7), box(12, 16, 20, 25), box(14, 16, 5, 7)
    gt = {stem(t): labels(obj1, obj2) for t in range(6)}
    pred = {stem(t): labels(obj1 | (block if t % 2 else False), obj2) for t in range(1, 6)}
    write_seq(tmp_path / "gt" / "Annotations" / "still", gt)
    write_seq(tmp_path / "pred" / "still", pred)
    return tmp_path / "gt", tmp_path / "pred"


def test_toggling_block_gives_the_expected_share_and_per_area(toggling):
    report = stability_report(*toggling)
    f = only(report, "still").flicker
    # pairs (1,2) (2,3) (3,4): each toggles the 4 px block; every one of the 600 px is stable
    assert (f.pairs, f.changed, f.stable) == (3, 12, 3 * PIXELS)
    assert f.share == pytest.approx(4 / PIXELS)  # 1/150
    assert f.mean_gt_area == 25
    assert f.per_area == pytest.approx(4 / 25)
    assert only(report, "still", 2).flicker.share == 0.0
    means = report.sequence_means("still")
    assert means["flicker"] == pytest.approx((4 / PIXELS + 0) / 2)
    assert means["flicker_per_area"] == pytest.approx((4 / 25 + 0) / 2)
    line = report.table().splitlines()[2]
    assert line.startswith("| still | 2 |") and f"| {100 * 2 / PIXELS:.3f} | 0.080 | 0 |" in line


def test_measure_masks_on_arrays_equals_the_report_from_files(toggling):
    # The toggling sequence held in memory (frame 0 of the prediction written as the empty mask that
    # the report reads for a missing file): the same rows, and the same known flicker 12 / (3 * 600).
    from maskvos.eval.davis import load_sequence

    gt_dir, pred_dir = toggling
    seq = load_sequence(gt_dir / "Annotations" / "still", pred_dir / "still", skip_first_last=False)
    rows = measure_masks(seq)
    report = stability_report(*toggling)
    assert [(r.scores.j_mean, r.scores.f_mean, r.flicker) for r in rows] == [
        (r.scores.j_mean, r.scores.f_mean, r.flicker) for r in report.rows
    ]
    assert (rows[0].flicker.changed, rows[0].flicker.stable) == (12, 3 * PIXELS)
    everything = measure_masks(seq, skip_first_last=False)[0].flicker
    assert (everything.pairs, everything.changed) == (5, 29 + 4 * 4)


def test_first_frame_counts_only_when_not_skipped(toggling):
    # The missing prediction of frame 0 (an empty mask) is left out by default, as J&F leaves it out.
    f = only(stability_report(*toggling, skip_first_last=False), "still").flicker
    # pair (0,1): the 25 object pixels appear and the block turns on (29); pairs (1,2)..(4,5): 4 each
    assert (f.pairs, f.changed, f.stable) == (5, 29 + 4 * 4, 5 * PIXELS)
    assert f.share == pytest.approx(45 / (5 * PIXELS))
    assert f.per_area == pytest.approx(45 / 5 / 25)


def test_pixels_where_the_gt_changes_are_not_counted(tmp_path):
    # gt: object plus a 3x4 block on odd frames; prediction: the block on even frames (anti-phase),
    # and a 2x3 stray block toggling elsewhere on odd frames.
    obj, gblock, stray = box(2, 8, 2, 8), box(2, 5, 8, 12), box(15, 17, 20, 23)
    gt = {stem(t): labels(obj | (gblock if t % 2 else False)) for t in range(7)}
    pred = {stem(t): labels(obj | (gblock if t % 2 == 0 else False) | (stray if t % 2 else False)) for t in range(7)}
    write_seq(tmp_path / "gt" / "s", gt)
    write_seq(tmp_path / "pred" / "s", pred)
    f = only(stability_report(tmp_path / "gt", tmp_path / "pred"), "s").flicker
    # frames 1..5, 4 pairs; the 12 block pixels change in gt every pair: never stable
    assert (f.pairs, f.changed, f.stable) == (4, 4 * 6, 4 * (PIXELS - 12))
    assert f.share == pytest.approx(6 / (PIXELS - 12))
    # mean gt area over frames 1..5 (odd frames 1, 3, 5 hold the block): 36 + 12 * 3/5
    assert f.mean_gt_area == pytest.approx(36 + 12 * 3 / 5)
    assert f.per_area == pytest.approx(6 / (36 + 7.2))


def test_void_is_excluded(tmp_path):
    obj, void, inside, outside = box(2, 7, 2, 7), box(10, 20, 0, 10), box(12, 14, 2, 4), box(2, 4, 20, 23)
    gt = {stem(t): labels(obj, void=void) for t in range(6)}
    # the prediction toggles 4 px inside the void and 6 px outside it; frame 3's gt has 5 more void px
    extra_void = box(0, 1, 25, 30)
    gt[stem(3)] = labels(obj, void=void | extra_void)
    pred = {stem(t): labels(obj | (inside | outside if t % 2 else False)) for t in range(6)}
    write_seq(tmp_path / "gt" / "v", gt)
    write_seq(tmp_path / "pred" / "v", pred)
    f = only(stability_report(tmp_path / "gt", tmp_path / "pred"), "v").flicker
    # pairs (1,2) (2,3) (3,4): 100 void px never stable, the 5 extra ones not in the 2 pairs with frame 3
    assert f.changed == 3 * 6
    assert f.stable == 3 * (PIXELS - 100) - 2 * 5
    counts = flicker_counts(np.zeros((3, 2, 2), bool), np.array([[[1, 0], [0, 0]], [[0, 0], [0, 0]], [[1, 0], [0, 0]]]))
    assert [c.tolist() for c in counts] == [[1, 1], [4, 4]]
    # with ignore_void=False the void is background: its 4 toggled pixels count too
    f_all = only(stability_report(tmp_path / "gt", tmp_path / "pred", ignore_void=False), "v").flicker
    assert (f_all.changed, f_all.stable) == (3 * 10, 3 * PIXELS)


def test_flicker_nan_cases():
    assert math.isnan(Flicker(pairs=0, changed=0, stable=0, mean_gt_area=0.0).share)
    assert math.isnan(Flicker(pairs=3, changed=2, stable=10, mean_gt_area=0.0).per_area)


# ------------------------------------------------------------------------------------------
# a hand-made stress set

T = 20
OBJ = box(2, 6, 2, 7)  # 4x5 = 20 px
GHOST_SMALL, GHOST_BIG = box(10, 12, 20, 25), box(10, 14, 20, 25)  # 10 and 20 px
DISTRACTOR = box(12, 16, 22, 27)  # 20 px, away from the object
HALF = box(2, 6, 2, 5)  # 4x3 = 12 px of the object's 20: J = 0.6
EMPTY = np.zeros((H, W), bool)


def stress_index(**extra):
    hidden5 = [stem(t) for t in range(4, 9)]
    hidden15 = [stem(t) for t in range(2, 17)]
    sequences = {
        "cat": {"kind": "plain", "source_sequence": "cat"},
        "cat_occ5": {
            "kind": "occlusion", "source_sequence": "cat", "length": 5, "obj_id": 1,
            "hidden": hidden5, "covered": hidden5, "reappear": stem(9),
            "occluder_from": {"sequence": "dog", "frame": "00003", "box": [0, 0, 10, 10]},
        },
        "cat_occ5b": {
            "kind": "occlusion", "source_sequence": "cat", "length": 5, "obj_id": 1,
            "hidden": hidden5, "covered": hidden5, "reappear": stem(9),
        },
        "cat_occ15": {
            "kind": "occlusion", "source_sequence": "cat", "length": 15, "obj_id": 1,
            "hidden": hidden15, "covered": hidden15, "reappear": stem(17),
        },
        "cat_dis": {
            "kind": "distractor", "source_sequence": "cat", "obj_id": 1, "copy_from": "00003",
            "pasted": [stem(t) for t in range(5, 10)], "masks": "Distractors/cat_dis",
        },
    }  # fmt: skip
    return {"version": 1, "source": "synthetic", "seed": 0, "occlusion": [5, 15], "distractor": True,
            "slide": 5, "sequences": sequences, "skipped": [], **extra}  # fmt: skip


@pytest.fixture
def stress_set(tmp_path):
    root, pred = tmp_path / "stress", tmp_path / "pred"
    ann = root / "Annotations"
    plain = {stem(t): labels(OBJ) for t in range(T)}
    write_seq(ann / "cat", plain)
    # plain run: perfect except frame 10, where it finds 12 of the 20 px (J = 0.6)
    write_seq(pred / "cat", {**plain, stem(10): labels(HALF)})
    for name, hidden in (("cat_occ5", range(4, 9)), ("cat_occ5b", range(4, 9)), ("cat_occ15", range(2, 17))):
        write_seq(ann / name, {stem(t): labels(EMPTY if t in hidden else OBJ) for t in range(T)})
    # occ5: empty on the reappear frame 9 and on 10 (recover = 2); a ghost while hidden: 10 px on 4..7, 20 px on 8
    occ5 = {stem(t): labels(OBJ) for t in range(T)}
    for t in range(4, 8):
        occ5[stem(t)] = labels(GHOST_SMALL)
    occ5[stem(8)] = labels(GHOST_BIG)
    occ5[stem(9)] = occ5[stem(10)] = labels()
    write_seq(pred / "cat_occ5", occ5)
    # occ5b: perfect (edited gt: empty while hidden)
    write_seq(pred / "cat_occ5b", {stem(t): labels(EMPTY if t in range(4, 9) else OBJ) for t in range(T)})
    # occ15: nothing ever predicted after the first frames: never recovers
    write_seq(pred / "cat_occ15", {stem(t): labels(OBJ if t < 2 else EMPTY) for t in range(T)})
    # distractor: gt unchanged; prediction also covers the whole distractor on frames 5 and 6
    write_seq(ann / "cat_dis", plain)
    for t in range(5, 10):
        write_grey(root / "Distractors" / "cat_dis" / f"{stem(t)}.png", DISTRACTOR)
    write_seq(pred / "cat_dis", {stem(t): labels(OBJ | (DISTRACTOR if t in (5, 6) else False)) for t in range(T)})
    (root / "stress.json").write_text(json.dumps(stress_index()))
    return root, pred


def test_occlusion_measures(stress_set):
    report = stability_report(*stress_set)
    rows = {s.sequence: s for s in report.stress}
    assert list(rows) == ["cat", "cat_dis", "cat_occ5", "cat_occ5b", "cat_occ15"]
    plain_window = (9 + 0.6) / 10  # plain J over frames 9..18
    occ5 = rows["cat_occ5"]
    assert occ5.group == "occ5" and occ5.obj_id == 1
    assert occ5.redetect_j == pytest.approx(8 / 10)
    assert occ5.redetect_ratio == pytest.approx(0.8 / plain_window)
    assert occ5.frames_to_recover == 2 and not occ5.never_recovered
    # plain gt area 20 on every frame; ghosts 10, 10, 10, 10, 20 px
    assert occ5.fp_area_mean == pytest.approx((4 * 10 + 20) / 5 / 20)
    assert occ5.fp_area_max == pytest.approx(1.0)
    occ5b = rows["cat_occ5b"]
    assert occ5b.redetect_ratio == pytest.approx(1 / plain_window)
    assert occ5b.frames_to_recover == 0 and occ5b.fp_area_mean == 0.0 and occ5b.fp_area_max == 0.0
    assert occ5b.jf_mean == 1.0 and occ5b.flicker == 0.0
    occ15 = rows["cat_occ15"]
    assert occ15.frames_to_recover is None and occ15.never_recovered
    assert occ15.redetect_j == 0.0 and occ15.redetect_ratio == 0.0  # window 17..19, plain J 1 there
    assert occ15.fp_area_mean == 0.0
    assert rows["cat"].redetect_ratio is None and rows["cat"].kind == "plain"
    assert report.notes == []


def test_distractor_share(stress_set):
    report = stability_report(*stress_set)
    dis = next(s for s in report.stress if s.sequence == "cat_dis")
    # pasted 5..9: 20 object px each, + 20 distractor px on frames 5 and 6
    assert dis.distractor_share == pytest.approx(40 / (5 * 20 + 40))
    # target J over frames 1..18: 0.5 on frames 5 and 6, else 1
    assert dis.target_j == pytest.approx((16 + 2 * 0.5) / 18)
    assert distractor_share(np.zeros((2, 3, 3), bool), np.ones((2, 3, 3), bool)) is None


def test_jf_matches_evaluate_folders(stress_set):
    report = stability_report(*stress_set)
    assert [r.scores for r in report.rows] == evaluate_folders(*stress_set).rows
    assert report.missing_frames == dict.fromkeys(report.sequences, 0)


def test_aggregate_per_group(stress_set):
    report = stability_report(*stress_set, workers=2)
    summary = report.summary()
    assert list(summary) == ["overall", "plain", "occ5", "occ15", "distractor"]
    plain_window = (9 + 0.6) / 10
    occ5 = summary["occ5"]
    assert occ5["sequences"] == 2.0
    assert occ5["redetect_ratio"] == pytest.approx((0.8 + 1.0) / 2 / plain_window)
    assert occ5["frames_to_recover"] == pytest.approx(1.0) and occ5["never_recovered"] == 0.0
    assert occ5["fp_area"] == pytest.approx(0.3) and occ5["fp_area_max"] == pytest.approx(1.0)
    assert math.isnan(occ5["distractor_share"])
    occ15 = summary["occ15"]
    assert math.isnan(occ15["frames_to_recover"]) and occ15["never_recovered"] == 1.0
    assert summary["distractor"]["distractor_share"] == pytest.approx(2 / 7)
    assert math.isnan(summary["plain"]["redetect_ratio"]) and math.isnan(summary["plain"]["never_recovered"])
    # plain: frame 10 (12 of 20 px) changes 8 px in pairs (9,10) and (10,11); 17 pairs of 600 stable px
    assert summary["plain"]["flicker"] == pytest.approx(16 / (17 * PIXELS))
    assert summary["plain"]["flicker_per_area"] == pytest.approx(16 / 17 / 20)
    assert all(isinstance(v, float) for group in summary.values() for v in group.values())
    table = report.table()
    assert "| occ5 | 2 |" in table and "| 1.00 (0 never) |" in table and "| 0.300 | 1.000 |" in table
    assert "| occ15 | 1 |" in table and "(1 never)" in table
    assert "| cat_occ15 | occ15 | 1 |" in table and "| never |" in table


def test_missing_plain_predictions(stress_set, tmp_path):
    root, pred = stress_set
    # left out and absent: the other measures, and a note instead of the ratio
    for f in (pred / "cat").iterdir():
        f.unlink()
    (pred / "cat").rmdir()
    report = stability_report(root, pred, sequences=["cat_occ5"])
    occ5 = report.stress[0]
    assert occ5.redetect_ratio is None and occ5.redetect_j == pytest.approx(0.8)
    assert occ5.frames_to_recover == 2 and occ5.fp_area_mean == pytest.approx(0.6)
    assert len(report.notes) == 1 and str(pred / "cat") in report.notes[0] and "whole stress set" in report.notes[0]
    assert str(pred / "cat") in report.table()
    # a whole-set run names the plain copy's folder and the fix
    with pytest.raises(EvalError, match=r"plain copy 'cat'.*whole stress set"):
        stability_report(root, pred)


def test_left_out_plain_copy_is_read_when_present(stress_set):
    root, pred = stress_set
    report = stability_report(root / "Annotations", pred, sequences=["cat_occ5"])  # stress.json found above
    assert report.sequences == ["cat_occ5"]
    assert report.stress[0].redetect_ratio == pytest.approx(0.8 / 0.96)


def test_csv_and_index_errors(stress_set, tmp_path):
    root, pred = stress_set
    report = stability_report(root, pred)
    out = tmp_path / "stability.csv"
    report.write_csv(out)
    with open(out, newline="") as fh:
        records = list(csv.DictReader(fh))
    sections = [r["section"] for r in records]
    assert sections.count("object") == 5 and sections.count("stress") == 5 and sections.count("group") == 4
    occ5 = next(r for r in records if r["section"] == "stress" and r["sequence"] == "cat_occ5")
    assert occ5["frames_to_recover"] == "2" and float(occ5["fp_area_max"]) == 1.0
    assert next(r for r in records if r["sequence"] == "cat_occ15")["frames_to_recover"] == ""
    assert not list(tmp_path.glob("*.part"))
    # a parsed index may be given; stress=False ignores the file
    assert stability_report(root, pred, stress=stress_index()).table() == report.table()
    seen = []
    by_annotations = stability_report(
        root / "Annotations", pred, stress=stress_index(), workers=1, on_sequence=lambda *a: seen.append(a)
    )
    assert by_annotations.table() == report.table()  # Distractors/ found next to Annotations/
    assert seen == [(name, T - 2) for name in report.sequences]
    assert stability_report(root, pred, stress=False).stress == []
    (root / "stress.json").write_text(json.dumps(stress_index(version=2)))
    with pytest.raises(EvalError, match="version 2"):
        read_stress_index(root)
    bad = stress_index()
    del bad["sequences"]["cat_occ5"]["reappear"]
    with pytest.raises(EvalError, match=r"cat_occ5.*reappear"):
        stability_report(root, pred, stress=bad)


def test_set_without_plain_copies(stress_set):
    root, pred = stress_set
    index = stress_index(skipped=[{"sequence": "cat", "kind": "occlusion", "length": 40, "reason": "too short"}])
    del index["sequences"]["cat"]
    for folder in (root / "Annotations" / "cat", pred / "cat"):
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    report = stability_report(root, pred, stress=index)
    occ5 = next(s for s in report.stress if s.sequence == "cat_occ5")
    assert occ5.redetect_ratio is None and occ5.fp_area_mean is None
    assert occ5.frames_to_recover == 2 and occ5.redetect_j == pytest.approx(0.8)
    assert "cat_occ5, cat_occ5b, cat_occ15: re-detection ratio and FP area unavailable" in report.table()
    assert "- the stress generator skipped: cat occlusion40 (too short)" in report.table()


def test_cropped_measures_equal_full_frame_ones(tmp_path):
    # Objects touching every image edge, void, empty and missing frames, stray predicted pixels:
    # J and F equal evaluate_folders exactly, flicker equals flicker_counts on the full frames.
    rng = np.random.default_rng(3)
    gts, preds = [], []
    for t in range(8):
        a = box(0, 6 + t, max(0, 24 - 3 * t), W) if t != 4 else EMPTY  # top right edge, absent on frame 4
        b = box(H - 5, H, 0, 4 + t)  # bottom left edge
        void = box(8, 10, 8, 8 + t)
        gt = labels(a, b, void=void)
        pred = labels(a ^ (rng.random((H, W)) < 0.03), b & (rng.random((H, W)) < 0.9))
        gts.append(gt)
        preds.append(pred)
    write_seq(tmp_path / "gt" / "edges", {stem(t): g for t, g in enumerate(gts)})
    write_seq(tmp_path / "pred" / "edges", {stem(t): p for t, p in enumerate(preds) if t != 5})
    preds[5] = np.zeros((H, W), np.uint8)
    gt_all, pred_all = np.stack(gts), np.stack(preds)
    for kwargs in ({}, {"skip_first_last": False}, {"bound_th": 2}, {"ignore_void": False}):
        report = stability_report(tmp_path / "gt", tmp_path / "pred", **kwargs)
        reference = evaluate_folders(tmp_path / "gt", tmp_path / "pred", **kwargs)
        assert [r.scores for r in report.rows] == reference.rows
        lo, hi = (0, 8) if kwargs.get("skip_first_last") is False else (1, 7)
        void = gt_all[lo:hi] == 255 if kwargs.get("ignore_void", True) else None
        for obj_id in (1, 2):
            changed, stable = flicker_counts(gt_all[lo:hi] == obj_id, pred_all[lo:hi] == obj_id, void)
            f = only(report, "edges", obj_id).flicker
            assert (f.changed, f.stable, f.pairs) == (changed.sum(), stable.sum(), hi - lo - 1)
            assert f.changed > 0


def test_redetection_ratio_needs_an_unoccluded_run_that_tracked_the_object():
    """A ratio to the unoccluded run's J is given only where that run tracked the object (mean J >=
    RECOVER_J over the window): where it had lost it too, a J near 0 would blow the ratio up."""
    from maskvos.eval.stability import RECOVER_J, redetection

    stems = [f"{i:05d}" for i in range(20)]
    j = [0.0] * 5 + [0.8] * 15
    tracked = dict.fromkeys(stems, 0.9)
    lost = dict.fromkeys(stems, 0.05)
    assert redetection(stems, j, "00005", tracked)[1] == pytest.approx(0.8 / 0.9)
    assert redetection(stems, j, "00005", lost)[1] is None
    edge = dict.fromkeys(stems, RECOVER_J)
    assert redetection(stems, j, "00005", edge)[1] == pytest.approx(0.8 / RECOVER_J)
