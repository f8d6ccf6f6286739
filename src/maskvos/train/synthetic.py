"""A synthetic video domain for trying `maskvos finetune` on a CPU in minutes.

Each clip shows one to three textured shapes (ellipses and polygons, striped or dotted) drifting,
turning and growing over a textured background of the same colours, so that colour alone does not
tell them apart: a model has to learn the domain's textures and shapes. Later shapes pass in front of
earlier ones (partial occlusion). Written in the DAVIS layout (`JPEGImages/<clip>/00000.jpg`,
`Annotations/<clip>/00000.png` palette label maps), so every maskvos command and other tools read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from maskvos.io.files import atomic_path
from maskvos.io.masks import write_label_map


@dataclass(frozen=True)
class DomainSpec:
    """Look and motion of the synthetic domain.

    Attributes:
        size: (width, height) of the frames.
        frames: frames per clip.
        max_objects: shapes per clip (1..max_objects).
        speed: largest per-frame displacement in pixels.
    """

    size: tuple[int, int] = (320, 240)
    frames: int = 24
    max_objects: int = 2
    speed: float = 6.0


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """(H, W) values in 0..1: random values on a coarse grid, bilinearly upsampled."""
    gh, gw = height // cell + 2, width // cell + 2
    grid = rng.random((gh, gw)).astype(np.float32)
    img = Image.fromarray((grid * 255).astype(np.uint8)).resize((gw * cell, gh * cell), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32)[:height, :width] / 255.0


def _palette(rng: np.random.Generator) -> np.ndarray:
    """(2, 3) two colours of the domain (a warm, tissue-like pair with some variation)."""
    base = np.array([[0.75, 0.35, 0.35], [0.95, 0.75, 0.6]], dtype=np.float32)
    return np.clip(base + rng.normal(0, 0.05, size=(2, 3)), 0, 1).astype(np.float32)


def _background(rng: np.random.Generator, height: int, width: int, colours: np.ndarray) -> np.ndarray:
    """(H, W, 3) blobby background: coarse and fine noise mixing the two colours."""
    t = 0.65 * _smooth_noise(rng, height, width, 24) + 0.35 * _smooth_noise(rng, height, width, 6)
    return colours[0] * (1 - t[..., None]) + colours[1] * t[..., None]


def _texture(rng: np.random.Generator, height: int, width: int, colours: np.ndarray, kind: str) -> np.ndarray:
    """(H, W, 3) an object's texture: stripes or dots in the domain's colours."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "stripes":
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(6, 12)
        t = 0.5 + 0.5 * np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
    else:
        period = rng.uniform(7, 11)
        t = ((np.sin(xx * 2 * math.pi / period) * np.sin(yy * 2 * math.pi / period)) > 0.3).astype(np.float32)
    t = 0.15 + 0.7 * t
    return colours[1] * (1 - t[..., None]) + colours[0] * t[..., None]


@dataclass
class _Shape:
    kind: str  # "ellipse" or "polygon"
    radius: float
    aspect: float
    vertices: np.ndarray  # (K,) radii factors of a polygon's vertices
    x: float
    y: float
    vx: float
    vy: float
    angle: float
    spin: float
    growth: float
    texture: np.ndarray

    def outline(self, t: int) -> list[tuple[float, float]]:
        scale = 1.0 + self.growth * math.sin(t / 6.0)
        r = self.radius * scale
        k = len(self.vertices)
        pts = []
        for i in range(k):
            a = self.angle + 2 * math.pi * i / k
            rr = r * self.vertices[i]
            pts.append((self.x + rr * math.cos(a), self.y + rr * self.aspect * math.sin(a)))
        return pts

    def step(self, width: int, height: int) -> None:
        self.x += self.vx
        self.y += self.vy
        if not self.radius < self.x < width - self.radius:
            self.vx = -self.vx
        if not self.radius < self.y < height - self.radius:
            self.vy = -self.vy
        self.angle += self.spin


def _shape(rng: np.random.Generator, spec: DomainSpec, colours: np.ndarray) -> _Shape:
    width, height = spec.size
    radius = rng.uniform(0.09, 0.17) * min(width, height) * 1.4
    kind = "ellipse" if rng.random() < 0.5 else "polygon"
    k = 48 if kind == "ellipse" else int(rng.integers(5, 9))
    vertices = np.ones(k) if kind == "ellipse" else rng.uniform(0.6, 1.0, size=k)
    speed = rng.uniform(0.3, 1.0) * spec.speed
    heading = rng.uniform(0, 2 * math.pi)
    return _Shape(
        kind=kind,
        radius=radius,
        aspect=rng.uniform(0.6, 1.0),
        vertices=vertices,
        x=rng.uniform(radius, width - radius),
        y=rng.uniform(radius, height - radius),
        vx=speed * math.cos(heading),
        vy=speed * math.sin(heading),
        angle=rng.uniform(0, 2 * math.pi),
        spin=rng.uniform(-0.06, 0.06),
        growth=rng.uniform(0.0, 0.15),
        texture=_texture(rng, height, width, colours, "stripes" if rng.random() < 0.5 else "dots"),
    )


def render_clip(seed: int, spec: DomainSpec = DomainSpec()) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One clip: frames (H, W, 3) uint8 and label maps (H, W) uint8 (0 background, 1.. objects)."""
    rng = np.random.default_rng(seed)
    width, height = spec.size
    colours = _palette(rng)
    background = _background(rng, height, width, colours)
    shapes = [_shape(rng, spec, colours) for _ in range(int(rng.integers(1, spec.max_objects + 1)))]
    drift = rng.normal(0, 0.004, size=3).astype(np.float32)  # slow illumination change
    frames, labels = [], []
    for t in range(spec.frames):
        image = background.copy()
        label = np.zeros((height, width), np.uint8)
        for obj_id, shape in enumerate(shapes, start=1):
            canvas = Image.new("L", (width, height), 0)
            ImageDraw.Draw(canvas).polygon(shape.outline(t), fill=255)
            inside = np.asarray(canvas) > 127
            image[inside] = shape.texture[inside]
            label[inside] = obj_id
        image = np.clip(image + drift * t + rng.normal(0, 0.02, size=image.shape), 0, 1)
        frames.append((image * 255).astype(np.uint8))
        labels.append(label)
        for shape in shapes:
            shape.step(width, height)
    return frames, labels


def write_synthetic_domain(out: str | Path, clips: int, seed: int = 0, spec: DomainSpec = DomainSpec(), prefix: str = "clip") -> list[str]:
    """Write `clips` clips in the DAVIS layout under `out`. Returns the clip names."""
    out = Path(out)
    names = []
    for i in range(clips):
        name = f"{prefix}{i:03d}"
        frames, labels = render_clip(seed * 100_003 + i, spec)
        img_dir, ann_dir = out / "JPEGImages" / name, out / "Annotations" / name
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        for t, (frame, label) in enumerate(zip(frames, labels)):
            with atomic_path(img_dir / f"{t:05d}.jpg") as tmp:
                Image.fromarray(frame).save(tmp, format="JPEG", quality=95)
            write_label_map(ann_dir / f"{t:05d}.png", label)
        names.append(name)
    return names
