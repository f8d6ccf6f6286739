"""J, F and statistics on hand-made masks with known answers, and against a literal per-pixel transcription
of the DAVIS definitions on random masks."""

import math

import numpy as np
import pytest

from maskvos.eval.metrics import (
    EvalError,
    boundary_map,
    boundary_measure,
    boundary_radius,
    decay_bins,
    dilate_disk,
    region_similarity,
    statistics,
)


def square(size: int, y0: int, x0: int, side: int, shape: tuple[int, int] | None = None) -> np.ndarray:
    mask = np.zeros(shape or (size, size), dtype=bool)
    mask[y0 : y0 + side, x0 : x0 + side] = True
    return mask


def half_plane(cols: int, shape: tuple[int, int] = (100, 100)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[:, :cols] = True
    return mask


# ---- a slow, literal transcription of the definitions (per pixel), to check the fast code against ----


def literal_boundary(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    out = np.zeros_like(mask)
    for y in range(h):
        for x in range(w):
            east = mask[y, x + 1] if x + 1 < w else False
            south = mask[y + 1, x] if y + 1 < h else False
            south_east = mask[y + 1, x + 1] if (y + 1 < h and x + 1 < w) else False
            if y == h - 1 and x == w - 1:
                out[y, x] = False
            elif y == h - 1:
                out[y, x] = mask[y, x] != east
            elif x == w - 1:
                out[y, x] = mask[y, x] != south
            else:
                out[y, x] = mask[y, x] != east or mask[y, x] != south or mask[y, x] != south_east
    return out


def literal_f(pred: np.ndarray, gt: np.ndarray, radius: int) -> float:
    pb, gb = literal_boundary(pred), literal_boundary(gt)
    p_pts, g_pts = np.argwhere(pb), np.argwhere(gb)
    if len(p_pts) == 0 and len(g_pts) == 0:
        return 1.0
    if len(p_pts) == 0 or len(g_pts) == 0:
        return 0.0
    d2 = ((p_pts[:, None, :] - g_pts[None, :, :]) ** 2).sum(-1)
    precision = np.mean(d2.min(axis=1) <= radius * radius)
    recall = np.mean(d2.min(axis=0) <= radius * radius)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


# ---- J ----


def test_j_two_squares_known_iou():
    gt = square(40, 10, 10, 10)
    pred = square(40, 10, 15, 10)  # overlap 10x5 = 50, union 150
    assert region_similarity(pred, gt) == pytest.approx(1 / 3)
    assert region_similarity(square(40, 10, 10, 20), gt) == pytest.approx(100 / 400)


def test_j_per_frame_for_a_stack():
    gt = np.stack([square(40, 10, 10, 10), square(40, 10, 10, 10)])
    pred = np.stack([square(40, 10, 10, 10), square(40, 10, 15, 10)])
    j = region_similarity(pred, gt)
    assert j.shape == (2,)
    np.testing.assert_allclose(j, [1.0, 1 / 3])


def test_j_empty_cases():
    empty = np.zeros((20, 20), dtype=bool)
    full = square(20, 2, 2, 5)
    assert region_similarity(empty, full) == 0.0
    assert region_similarity(full, empty) == 0.0
    assert region_similarity(empty, empty) == 1.0


def test_j_ignores_void_pixels():
    gt = square(40, 10, 10, 10)
    pred = square(40, 8, 8, 14)  # covers gt plus a 2-pixel ring
    void = pred & ~gt
    assert region_similarity(pred, gt) == pytest.approx(100 / 196)
    assert region_similarity(pred, gt, void) == 1.0
    # void over the whole union: nothing left to compare, so J = 1 as for two empty masks
    assert region_similarity(pred, gt, pred | gt) == 1.0


def test_shape_mismatch_is_an_eval_error():
    with pytest.raises(EvalError, match="same size"):
        region_similarity(np.zeros((4, 5), bool), np.zeros((5, 4), bool))


# ---- F ----


def test_radius_follows_the_diagonal():
    assert boundary_radius(480, 854) == 8  # ceil(0.008 * 979.6)
    assert boundary_radius(100, 100) == 2  # ceil(1.13)
    assert boundary_radius(100, 100, bound_th=5) == 5
    with pytest.raises(EvalError):
        boundary_radius(100, 100, bound_th=2.5)


def test_boundary_map_of_a_square_is_its_half_pixel_shifted_ring():
    b = boundary_map(square(12, 3, 3, 4))
    expected = np.zeros((12, 12), dtype=bool)
    expected[2, 2:7] = expected[2:7, 2] = True  # outside, above and left of the square
    expected[6, 3:7] = expected[3:7, 6] = True  # inside, on its bottom row and right column
    np.testing.assert_array_equal(b, expected)
    # a full frame has no boundary: the image edge is not one
    assert not boundary_map(np.ones((5, 7), dtype=bool)).any()


def test_f_identical_masks_is_one():
    gt = square(60, 10, 20, 25)
    assert boundary_measure(gt, gt) == 1.0


def test_f_shift_within_and_beyond_the_tolerance():
    gt = half_plane(50)  # boundary: column 49; radius 2 at 100x100
    assert boundary_measure(half_plane(52), gt) == 1.0
    assert boundary_measure(half_plane(48), gt) == 1.0
    assert boundary_measure(half_plane(53), gt) == 0.0
    assert boundary_measure(half_plane(53), gt, bound_th=3) == 1.0


def test_f_partial_match_known_value():
    gt = half_plane(50)  # boundary column 49, rows 0-99: 100 pixels
    pred = np.zeros_like(gt)
    pred[50:, :50] = True  # boundary: column 49 rows 50-99 and row 49 columns 0-49: 100 pixels
    # 50 + 3 pixels of each boundary are within 2 px of the other: precision = recall = 0.53
    assert boundary_measure(pred, gt) == pytest.approx(0.53)


def test_f_empty_cases():
    empty = np.zeros((30, 30), dtype=bool)
    obj = square(30, 5, 5, 10)
    assert boundary_measure(empty, obj) == 0.0
    assert boundary_measure(obj, empty) == 0.0
    assert boundary_measure(empty, empty) == 1.0


def test_f_void_pixels_are_cleared_before_boundaries():
    gt = square(60, 20, 20, 10)
    pred = square(60, 10, 10, 30)  # much larger: its boundary is 10 px away
    void = pred & ~gt
    assert boundary_measure(pred, gt) == 0.0
    assert boundary_measure(pred, gt, void) == 1.0


def test_f_stack_gives_per_frame_values():
    gt = np.stack([half_plane(50), half_plane(50), np.zeros((100, 100), bool)])
    pred = np.stack([half_plane(51), half_plane(60), np.zeros((100, 100), bool)])
    np.testing.assert_array_equal(boundary_measure(pred, gt), [1.0, 0.0, 1.0])


def test_dilation_equals_the_disk_definition():
    rng = np.random.default_rng(0)
    for _ in range(30):
        h, w = rng.integers(1, 30, size=2)
        radius = int(rng.integers(0, 10))
        mask = rng.random((h, w)) < 0.05
        pts = np.argwhere(mask)
        yy, xx = np.mgrid[:h, :w]
        expected = np.zeros((h, w), dtype=bool)
        for y, x in pts:
            expected |= (yy - y) ** 2 + (xx - x) ** 2 <= radius * radius
        np.testing.assert_array_equal(dilate_disk(mask, radius), expected)


def test_f_equals_the_literal_definition_on_random_blobs():
    rng = np.random.default_rng(1)
    for _ in range(12):
        h, w = int(rng.integers(20, 40)), int(rng.integers(20, 40))
        yy, xx = np.mgrid[:h, :w]

        def blob(h: int = h, w: int = w, yy: np.ndarray = yy, xx: np.ndarray = xx) -> np.ndarray:
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(3, 12)
            noise = rng.random((h, w)) < 0.03
            return ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) ^ noise

        pred, gt = blob(), blob()
        np.testing.assert_array_equal(boundary_map(pred), literal_boundary(pred))
        radius = boundary_radius(h, w)
        assert boundary_measure(pred, gt) == pytest.approx(literal_f(pred, gt, radius), abs=1e-12)
        assert boundary_measure(pred, gt, bound_th=4) == pytest.approx(literal_f(pred, gt, 4), abs=1e-12)


# ---- statistics ----


def test_statistics_mean_recall_decay():
    mean, recall, decay = statistics([1.0, 1.0, 0.0, 0.0])
    assert (mean, recall, decay) == (0.5, 0.5, 1.0)
    # recall counts values strictly above 0.5
    assert statistics([0.5, 0.6, 0.4, 0.9])[1] == 0.5


def test_decay_uses_davis_quarter_edges():
    values = np.arange(10) / 10
    # DAVIS bins for 10 frames: 0-2, 2-5, 5-7, 7-9 (neighbouring bins share a frame)
    assert [(s.start, s.stop) for s in decay_bins(10)] == [(0, 3), (2, 6), (5, 8), (7, 10)]
    _, _, decay = statistics(values)
    assert decay == pytest.approx(0.1 - 0.8)
    # a constant sequence does not decay; one frame gives 0
    assert statistics(np.full(7, 0.3))[2] == pytest.approx(0.0)
    assert statistics([0.7]) == (0.7, 1.0, 0.0)


def test_statistics_three_frames_and_empty():
    mean, recall, decay = statistics([1.0, 1.0, 0.0])
    assert mean == pytest.approx(2 / 3)
    assert recall == pytest.approx(2 / 3)
    assert decay == 1.0  # bins: frames 0-1 and frame 2
    assert all(math.isnan(v) for v in statistics([]))
