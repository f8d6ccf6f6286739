"""Write a short synthetic clip in the DAVIS layout, for trying maskvos with no network and no data.

    python scripts/make_demo_clip.py demo

creates `demo/JPEGImages/shapes/00000.jpg ...` (40 frames, 480x640: two textured objects moving over
a textured background, one passing behind the other) and `demo/Annotations/shapes/00000.png ...`
(palette PNG ground truth; the first one is the prompt).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from maskvos.io.masks import write_label_map

HEIGHT, WIDTH, FRAMES = 480, 640, 40


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to create (DAVIS layout)")
    args = parser.parse_args()
    images = args.out / "JPEGImages" / "shapes"
    annotations = args.out / "Annotations" / "shapes"
    images.mkdir(parents=True, exist_ok=True)
    annotations.mkdir(parents=True, exist_ok=True)
    for t in range(FRAMES):
        img, labels = render(t)
        Image.fromarray(img).save(images / f"{t:05d}.jpg", quality=92)
        write_label_map(annotations / f"{t:05d}.png", labels)
    print(f"wrote {FRAMES} frames to {images} and their masks to {annotations}")


if __name__ == "__main__":
    main()
