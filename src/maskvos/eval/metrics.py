"""DAVIS video object segmentation metrics: region similarity J, boundary measure F, statistics.

The definitions are those of the DAVIS 2017 evaluation (`davis2017/metrics.py` and `utils.py` of
davis2017-evaluation), written here as vectorised numpy:

- J is the intersection over union of the predicted and ground-truth masks, void pixels excluded
  from both; when the union is empty (both masks empty) J = 1.
- F is the F-measure of boundary precision and recall. Boundaries are one pixel wide (`boundary_map`,
  the `_seg2bmap` rule); a boundary pixel matches when a boundary pixel of the other mask lies within
  a disk of radius ceil(bound_th * image diagonal) pixels (8 px at 854x480). Masks are cleared on void
  pixels before their boundaries are taken. Both boundaries empty -> F = 1; one empty -> F = 0.
- `statistics` gives the mean, the recall (fraction of frames above 0.5) and the decay (mean of the
  first quarter of the frames minus the mean of the last quarter, with DAVIS's quarter edges).

Masks are boolean arrays shaped (H, W) for one frame or (T, H, W) for T frames; per-frame results
come back as a float or a (T,) float64 array.
"""

from __future__ import annotations

import numpy as np

from maskvos.errors import MaskvosError

DEFAULT_BOUND_TH = 0.008


class EvalError(MaskvosError):
    """Evaluation inputs that do not fit: missing folders, mask sizes that differ, bad settings."""


def _as_bool_pair(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None) -> tuple:
    """Check shapes and convert to bool; void defaults to None (no void pixels)."""
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape or pred.ndim not in (2, 3):
        raise EvalError(
            f"Prediction shape {pred.shape} and ground-truth shape {gt.shape} differ or are not (H, W) or "
            "(T, H, W); pass masks of the same size."
        )
    if void is not None:
        void = np.asarray(void, dtype=bool)
        if void.shape != gt.shape:
            raise EvalError(
                f"Void mask shape {void.shape} differs from the mask shape {gt.shape}; pass one void mask per frame."
            )
    return pred.astype(bool, copy=False), gt.astype(bool, copy=False), void


def region_similarity(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> float | np.ndarray:
    """Region similarity J (Jaccard index) per frame.

    Arguments:
        pred: predicted masks, (H, W) or (T, H, W), bool (non-zero counts as foreground).
        gt: ground-truth masks, same shape.
        void: optional void pixels, same shape; excluded from intersection and union.

    Returns:
        J as a float for one (H, W) frame, else a (T,) float64 array. A frame whose union is empty
        (both masks empty outside void) has J = 1.
    """
    pred, gt, void = _as_bool_pair(pred, gt, void)
    inter = pred & gt
    union = pred | gt
    if void is not None:
        inter &= ~void
        union &= ~void
    inter_n = np.count_nonzero(inter, axis=(-2, -1))
    union_n = np.count_nonzero(union, axis=(-2, -1))
    j = np.where(union_n == 0, 1.0, inter_n / np.maximum(union_n, 1))
    return float(j) if pred.ndim == 2 else j.astype(np.float64)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundaries of masks, the DAVIS `_seg2bmap` rule at the same size.

    A pixel is on the boundary when it differs from its right, lower, or lower-right neighbour
    (neighbours outside the image count as background). In the last row only the right neighbour
    counts, in the last column only the lower one, and the bottom-right pixel is never a boundary.

    Arguments:
        mask: (..., H, W) bool.

    Returns:
        (..., H, W) bool boundary map.
    """
    seg = np.asarray(mask, dtype=bool)
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[..., :, :-1] = seg[..., :, 1:]
    south[..., :-1, :] = seg[..., 1:, :]
    south_east[..., :-1, :-1] = seg[..., 1:, 1:]
    bmap = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    bmap[..., -1, :] = seg[..., -1, :] ^ east[..., -1, :]
    bmap[..., :, -1] = seg[..., :, -1] ^ south[..., :, -1]
    bmap[..., -1, -1] = False
    return bmap


def boundary_radius(height: int, width: int, bound_th: float = DEFAULT_BOUND_TH) -> int:
    """Tolerance radius in pixels: ceil(bound_th * diagonal) for bound_th < 1, else bound_th itself."""
    if bound_th >= 1:
        if bound_th != int(bound_th):
            raise EvalError(
                f"bound_th={bound_th} is neither a fraction below 1 nor a whole number of pixels; pass e.g. 0.008 or 8."
            )
        return int(bound_th)
    if bound_th <= 0:
        raise EvalError(f"bound_th={bound_th} is not positive; pass a fraction of the diagonal such as 0.008.")
    return int(np.ceil(bound_th * np.linalg.norm((height, width))))


def disk_half_widths(radius: int) -> list[int]:
    """Half-width of each row of the disk {x^2 + y^2 <= r^2}: entry dy is max x with x^2 + dy^2 <= r^2."""
    widths = []
    for dy in range(radius + 1):
        x = int(np.sqrt(radius * radius - dy * dy))
        while x * x + dy * dy > radius * radius:
            x -= 1
        while (x + 1) * (x + 1) + dy * dy <= radius * radius:
            x += 1
        widths.append(x)
    return widths


def dilate_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by the disk {x^2 + y^2 <= r^2}; pixels outside the image are background.

    Equal to `cv2.dilate` with `skimage.morphology.disk(radius)`. The disk is a stack of horizontal
    segments, so the dilation is: dilate each row by every segment half-width (growing one pixel at a
    time), then OR the row dilations shifted vertically by dy with half-width w(|dy|).

    Arguments:
        mask: (..., H, W) bool.
        radius: disk radius in pixels, >= 0.

    Returns:
        (..., H, W) bool.
    """
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape[-2:]
    half_widths = disk_half_widths(radius)
    needed = set(half_widths)
    by_width: dict[int, np.ndarray] = {}
    grown = mask.copy()
    for k in range(max(half_widths) + 1):
        if 0 < k < width:
            grown[..., :, k:] |= mask[..., :, :-k]
            grown[..., :, :-k] |= mask[..., :, k:]
        if k in needed:
            by_width[k] = grown.copy() if k < max(needed) else grown
    out = by_width[half_widths[0]].copy()
    for dy in range(1, min(radius, height - 1) + 1):
        rows = by_width[half_widths[dy]]
        out[..., dy:, :] |= rows[..., :-dy, :]
        out[..., :-dy, :] |= rows[..., dy:, :]
    return out


def _box(bmap: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) bounding box of the True pixels of an (H, W) map, or None when empty."""
    rows = np.flatnonzero(bmap.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(bmap.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _f_from_counts(n_pred: int, n_gt: int, pred_match: int, gt_match: int) -> float:
    """F-measure from boundary counts, with the DAVIS rules for empty boundaries."""
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    precision = pred_match / n_pred
    recall = gt_match / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _boundary_f_frame(pred_b: np.ndarray, gt_b: np.ndarray, radius: int) -> float:
    """F for one frame from its two (H, W) boundary maps; dilation only inside their joint box + radius."""
    n_pred = int(np.count_nonzero(pred_b))
    n_gt = int(np.count_nonzero(gt_b))
    if n_pred == 0 or n_gt == 0:
        return _f_from_counts(n_pred, n_gt, 0, 0)
    y0, y1, x0, x1 = _box(pred_b | gt_b)
    height, width = pred_b.shape
    # Every boundary pixel and every pixel its disk can reach lie inside this window, so dilating
    # there gives the same matches as dilating the whole frame (pixels past the image edge do not exist).
    ys = slice(max(y0 - radius, 0), min(y1 + radius, height))
    xs = slice(max(x0 - radius, 0), min(x1 + radius, width))
    pred_w, gt_w = pred_b[ys, xs], gt_b[ys, xs]
    pred_match = int(np.count_nonzero(pred_w & dilate_disk(gt_w, radius)))
    gt_match = int(np.count_nonzero(gt_w & dilate_disk(pred_w, radius)))
    return _f_from_counts(n_pred, n_gt, pred_match, gt_match)


def boundary_measure(
    pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = DEFAULT_BOUND_TH
) -> float | np.ndarray:
    """Boundary measure F per frame (DAVIS `db_eval_boundary`).

    Arguments:
        pred: predicted masks, (H, W) or (T, H, W), bool.
        gt: ground-truth masks, same shape.
        void: optional void pixels, same shape; both masks are cleared there before boundaries are taken.
        bound_th: tolerance as a fraction of the image diagonal (< 1), or a whole number of pixels (>= 1).

    Returns:
        F as a float for one (H, W) frame, else a (T,) float64 array.
    """
    pred, gt, void = _as_bool_pair(pred, gt, void)
    if void is not None:
        pred = pred & ~void
        gt = gt & ~void
    radius = boundary_radius(gt.shape[-2], gt.shape[-1], bound_th)
    pred_b = boundary_map(pred)
    gt_b = boundary_map(gt)
    if pred.ndim == 2:
        return _boundary_f_frame(pred_b, gt_b, radius)
    return np.array([_boundary_f_frame(p, g, radius) for p, g in zip(pred_b, gt_b)], dtype=np.float64)


def decay_bins(n_frames: int) -> list[slice]:
    """The four DAVIS decay bins over n_frames values (neighbouring bins share their edge frame).

    Edges are round(linspace(1, n, 5)) - 1; bin i spans edge[i]..edge[i+1] inclusive. For n = 10 the
    first bin is frames 0-2 and the last frames 7-9.
    """
    edges = (np.round(np.linspace(1, n_frames, 5) + 1e-10) - 1).astype(int)
    return [slice(edges[i], edges[i + 1] + 1) for i in range(4)]


def statistics(values: np.ndarray) -> tuple[float, float, float]:
    """Mean, recall and decay of per-frame values (DAVIS `db_statistics`); means skip NaN values.

    Arguments:
        values: (T,) per-frame J or F.

    Returns:
        (mean, recall, decay): the mean; the fraction of frames with value > 0.5; the mean of the
        first quarter minus the mean of the last quarter (bins from `decay_bins`). NaN for T = 0.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(np.nanmean(values)) if not np.all(np.isnan(values)) else float("nan")
    recall = float(np.mean(values > 0.5))  # as DAVIS: a NaN frame counts as not above 0.5
    bins = decay_bins(values.size)
    first, last = values[bins[0]], values[bins[3]]
    if np.all(np.isnan(first)) or np.all(np.isnan(last)):
        return mean, recall, float("nan")
    return mean, recall, float(np.nanmean(first) - np.nanmean(last))
