"""A constant-velocity Kalman filter on an object's box, as SAMURAI uses it to pick among the
decoder's candidate masks (the model of SORT/DeepSORT trackers).

State (8): box centre x, y, aspect ratio a = w / h, height h, and their velocities. The box is
observed directly (x, y, a, h). Process and observation noise scale with the box height: position
terms with `POSITION_WEIGHT` = 1/20 of it, velocity terms with `VELOCITY_WEIGHT` = 1/160; the
aspect ratio has fixed small noise. Everything is float64 numpy; a state is kept as plain floats so
that a session can save it.

Boxes are (x0, y0, x1, y1) with inclusive pixel bounds, as SAMURAI takes them from a mask (the
first and last rows and columns with foreground; no +1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

POSITION_WEIGHT = 1.0 / 20
VELOCITY_WEIGHT = 1.0 / 160
#: fixed standard deviations of the aspect ratio: at initiation (position, velocity), in the
#: process (position, velocity) and in the observation.
_ASPECT_INIT = (1e-2, 1e-5)
_ASPECT_PROCESS = (1e-2, 1e-5)
_ASPECT_OBSERVED = 1e-1

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class BoxTrack:
    """A filtered box: the state's mean (8,) and covariance (8, 8)."""

    mean: np.ndarray
    covariance: np.ndarray

    def box(self) -> Box:
        """The mean's box as (x0, y0, x1, y1)."""
        return xyah_to_xyxy(self.mean[:4])

    def to_floats(self) -> tuple[float, ...]:
        """72 floats: the mean, then the covariance row by row."""
        return tuple(float(v) for v in (*self.mean, *self.covariance.ravel()))

    @classmethod
    def from_floats(cls, values: Sequence[float]) -> BoxTrack:
        values = np.asarray(values, dtype=np.float64)
        return cls(values[:8].copy(), values[8:72].reshape(8, 8).copy())


def xyxy_to_xyah(box: Sequence[float]) -> np.ndarray:
    """(x0, y0, x1, y1) -> (centre x, centre y, width / height, height); a zero height counts as 1."""
    x0, y0, x1, y1 = (float(v) for v in box)
    h = y1 - y0
    if h == 0:
        h = 1.0
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / h, h])


def xyah_to_xyxy(xyah: Sequence[float]) -> Box:
    xc, yc, a, h = (float(v) for v in xyah)
    w = a * h
    return (xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2)


def box_iou(a: Box, b: Box | None) -> float:
    """IoU of two (x0, y0, x1, y1) boxes (areas as (x1 - x0) * (y1 - y0)); 0 when `b` is None (an
    empty mask) or the union is empty."""
    if b is None:
        return 0.0
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union != 0 else 0.0


def _noise(h: float, position: float, aspect: float, velocity: float | None = None, aspect_velocity: float = 0.0) -> np.ndarray:
    """The diagonal of a covariance: position-like terms scale with the height h."""
    stds = [position * h, position * h, aspect, position * h]
    if velocity is not None:
        stds += [velocity * h, velocity * h, aspect_velocity, velocity * h]
    return np.diag(np.square(stds))


def _transition() -> np.ndarray:
    f = np.eye(8)
    f[:4, 4:] = np.eye(4)  # position += velocity per frame
    return f


_F = _transition()
_H = np.eye(4, 8)


def initiate(box: Sequence[float]) -> BoxTrack:
    """A new track at an observed (x0, y0, x1, y1) box, with zero velocity."""
    z = xyxy_to_xyah(box)
    mean = np.concatenate([z, np.zeros(4)])
    covariance = _noise(z[3], 2 * POSITION_WEIGHT, _ASPECT_INIT[0], 10 * VELOCITY_WEIGHT, _ASPECT_INIT[1])
    return BoxTrack(mean, covariance)


def predict(track: BoxTrack) -> BoxTrack:
    """One frame ahead under constant velocity."""
    q = _noise(track.mean[3], POSITION_WEIGHT, _ASPECT_PROCESS[0], VELOCITY_WEIGHT, _ASPECT_PROCESS[1])
    return BoxTrack(_F @ track.mean, _F @ track.covariance @ _F.T + q)


def update(track: BoxTrack, box: Sequence[float]) -> BoxTrack:
    """Correct a predicted track by an observed (x0, y0, x1, y1) box."""
    z = xyxy_to_xyah(box)
    r = _noise(track.mean[3], POSITION_WEIGHT, _ASPECT_OBSERVED)
    s = _H @ track.covariance @ _H.T + r
    gain = np.linalg.solve(s, _H @ track.covariance).T  # P H^T S^-1 (S and P symmetric)
    mean = track.mean + gain @ (z - _H @ track.mean)
    covariance = track.covariance - gain @ s @ gain.T
    return BoxTrack(mean, covariance)
