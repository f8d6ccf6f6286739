"""Write a short synthetic clip in the DAVIS layout, for trying maskvos with no network and no data.

    python scripts/make_demo_clip.py demo

creates `demo/JPEGImages/shapes/00000.jpg ...` (40 frames, 480x640: two textured objects moving over
a textured background, one passing behind the other) and `demo/Annotations/shapes/00000.png ...`
(palette PNG ground truth; the first one is the prompt). The clip is `maskvos.app.demo`'s, the one
`maskvos serve` offers as its demo clip.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from maskvos.app.demo import FRAMES, write_demo_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to create (DAVIS layout)")
    args = parser.parse_args()
    images = write_demo_clip(args.out)
    print(f"wrote {FRAMES} frames to {images} and their masks to {args.out / 'Annotations' / images.name}")


if __name__ == "__main__":
    main()
