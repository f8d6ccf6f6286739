"""Masks as the polygons and rectangles annotation tools draw: the outer boundary of each part of a
mask traced along pixel edges, then simplified (Ramer-Douglas-Peucker with a tolerance relative to
the boundary's length, as the tools' "mask fineness" setting means it).

Vertices are pixel corners: (x, y) with (0, 0) the top-left corner of the frame's top-left pixel,
so a polygon traced with no simplification covers exactly the mask's pixel centres (holes filled).
"""

from __future__ import annotations

import numpy as np

#: Parts of a mask smaller than this share of its largest part are dropped (specks).
MIN_PART_SHARE = 0.01


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """(x0, y0, x1, y1) pixel-corner bounds of an (H, W) bool mask, or None when it is empty."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def mask_polygons(
    mask: np.ndarray, epsilon_factor: float = 0.001, min_part_share: float = MIN_PART_SHARE
) -> list[list[list[float]]]:
    """Closed polygons ([[x, y], ...], first point repeated last) of the outer boundaries of an
    (H, W) bool mask, largest first; parts under `min_part_share` of the largest are dropped.
    Each is simplified with tolerance `epsilon_factor` x its boundary length (0: exact)."""
    loops = [loop for loop in _boundary_loops(np.asarray(mask, bool)) if _signed_area(loop) > 0]
    if not loops:
        return []
    areas = [_signed_area(loop) for loop in loops]
    order = sorted(range(len(loops)), key=lambda i: -areas[i])
    keep = [i for i in order if areas[i] >= min_part_share * areas[order[0]]]
    polygons = []
    for i in keep:
        loop = _drop_collinear(loops[i])
        perimeter = float(np.abs(np.diff(np.vstack([loop, loop[:1]]), axis=0)).sum())
        simple = _simplify_closed(loop, max(epsilon_factor, 0.0) * perimeter)
        if len(simple) >= 3:
            points = simple.tolist()
            polygons.append([[float(x), float(y)] for x, y in [*points, points[0]]])
    return polygons


def _boundary_loops(mask: np.ndarray) -> list[np.ndarray]:
    """Every closed loop of pixel edges between the mask and the background, each (P, 2) corners,
    oriented with the mask on the right in image coordinates (y down): outer boundaries have a
    positive shoelace area there, holes a negative one. Diagonally touching pixels join one loop."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1]
    starts, ends = [], []
    for r, c, (x0, y0, x1, y1) in (
        (*np.nonzero(inner & ~padded[:-2, 1:-1]), (0, 0, 1, 0)),  # top edge, going +x
        (*np.nonzero(inner & ~padded[1:-1, 2:]), (1, 0, 1, 1)),  # right edge, going +y
        (*np.nonzero(inner & ~padded[2:, 1:-1]), (1, 1, 0, 1)),  # bottom edge, going -x
        (*np.nonzero(inner & ~padded[1:-1, :-2]), (0, 1, 0, 0)),  # left edge, going -y
    ):
        starts.append(np.stack([c + x0, r + y0], 1))
        ends.append(np.stack([c + x1, r + y1], 1))
    start, end = np.concatenate(starts), np.concatenate(ends)
    outgoing: dict[tuple[int, int], list[int]] = {}
    for i, (x, y) in enumerate(start.tolist()):
        outgoing.setdefault((x, y), []).append(i)
    used = np.zeros(len(start), bool)
    loops = []
    for first in range(len(start)):
        if used[first]:
            continue
        loop, edge = [], first
        while not used[edge]:
            used[edge] = True
            loop.append(start[edge])
            here = (int(end[edge][0]), int(end[edge][1]))
            options = [e for e in outgoing[here] if not used[e]]
            if not options:
                break
            edge = options[0] if len(options) == 1 else _left_turn(end[edge] - start[edge], options, start, end)
        loops.append(np.array(loop))
    return loops


def _left_turn(direction: np.ndarray, options: list[int], start: np.ndarray, end: np.ndarray) -> int:
    """At a corner where two mask pixels touch diagonally, the edge turning away from the current
    pixel (left, with the mask on the right), so the two pixels stay in one loop."""
    dx, dy = int(direction[0]), int(direction[1])
    for e in options:
        ex, ey = (end[e] - start[e]).tolist()
        if (ex, ey) == (dy, -dx):  # the left of (dx, dy) in y-down coordinates
            return e
    return options[0]


def _signed_area(loop: np.ndarray) -> float:
    x, y = loop[:, 0].astype(float), loop[:, 1].astype(float)
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _drop_collinear(loop: np.ndarray) -> np.ndarray:
    """The loop's corners only (vertices where its direction changes)."""
    before = loop - np.roll(loop, 1, axis=0)
    after = np.roll(loop, -1, axis=0) - loop
    turns = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0] != 0
    return loop[turns] if turns.sum() >= 3 else loop


def _simplify_closed(loop: np.ndarray, epsilon: float) -> np.ndarray:
    """Ramer-Douglas-Peucker on a closed loop: split at its first vertex and the vertex farthest
    from it, simplify both halves."""
    if epsilon <= 0 or len(loop) <= 4:
        return loop
    far = int(np.argmax(((loop - loop[0]) ** 2).sum(1)))
    first = _simplify_open(loop[: far + 1], epsilon)
    second = _simplify_open(np.vstack([loop[far:], loop[:1]]), epsilon)
    return np.vstack([first[:-1], second[:-1]])


def _simplify_open(points: np.ndarray, epsilon: float) -> np.ndarray:
    keep = np.zeros(len(points), bool)
    keep[[0, -1]] = True
    stack = [(0, len(points) - 1)]
    pts = points.astype(float)
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        seg = pts[b] - pts[a]
        rel = pts[a + 1 : b] - pts[a]
        length = float(np.hypot(*seg))
        if length == 0:
            dist = np.hypot(rel[:, 0], rel[:, 1])
        else:
            dist = np.abs(seg[0] * rel[:, 1] - seg[1] * rel[:, 0]) / length
        k = int(np.argmax(dist))
        if dist[k] > epsilon:
            keep[a + 1 + k] = True
            stack += [(a, a + 1 + k), (a + 1 + k, b)]
    return points[keep]
