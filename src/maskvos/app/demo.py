"""The demo clip: a short synthetic video with ground truth, for trying maskvos with no data and no
network (`scripts/make_demo_clip.py`, and the clip `maskvos serve` always offers).

40 frames, 480x640: two textured objects over a textured background, object 1 moving right and
passing behind object 2, which stays put. Written in the DAVIS layout: `JPEGImages/shapes/00000.jpg
...` and palette-PNG ground truth `Annotations/shapes/00000.png ...` (the first one is the prompt).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from maskvos.io.files import atomic_path
from maskvos.io.masks import write_label_map

HEIGHT, WIDTH, FRAMES = 480, 640, 40
#: The sequence name of the clip in its DAVIS layout.
SEQUENCE = "shapes"


def render(t: int, rng_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frame t (H, W, 3) uint8 and its label map (H, W) uint8."""
    rng = np.random.default_rng(rng_seed)
    background = (rng.random((HEIGHT // 16, WIDTH // 16, 3)) * 120 + 60).repeat(16, 0).repeat(16, 1)
    texture1 = np.kron(rng.random((8, 8, 3)) > 0.5, np.ones((12, 12, 1))) * np.array([200, 50, 40]) + 30
    texture2 = np.kron(rng.random((10, 6, 3)) > 0.5, np.ones((14, 14, 1))) * np.array([40, 70, 210]) + 20
    img = background.copy()
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    y1, x1 = 170 + int(40 * np.sin(t / 6)), 30 + 13 * t  # object 1 moves right, bobbing...
    img[y1 : y1 + 96, x1 : x1 + 96] = texture1[:96, :96]  # x1 + 96 stays inside the frame for 40 frames
    labels[y1 : y1 + 96, x1 : x1 + 96] = 1
    y2, x2 = 130, 300  # ...behind object 2, which stays put
    img[y2 : y2 + 140, x2 : x2 + 84] = texture2
    labels[y2 : y2 + 140, x2 : x2 + 84] = 2
    return img.clip(0, 255).astype(np.uint8), labels


def write_demo_clip(out: str | Path) -> Path:
    """Write the clip under `out` in the DAVIS layout (files already complete are kept); returns
    its frame folder `out/JPEGImages/shapes`."""
    out = Path(out)
    images = out / "JPEGImages" / SEQUENCE
    annotations = out / "Annotations" / SEQUENCE
    images.mkdir(parents=True, exist_ok=True)
    annotations.mkdir(parents=True, exist_ok=True)
    for t in range(FRAMES):
        jpg, png = images / f"{t:05d}.jpg", annotations / f"{t:05d}.png"
        if jpg.is_file() and png.is_file():
            continue
        img, labels = render(t)
        with atomic_path(jpg) as tmp:
            Image.fromarray(img).save(tmp, format="JPEG", quality=92)
        write_label_map(png, labels)
    return images
