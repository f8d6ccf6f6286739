"""Write the synthetic video domain of `maskvos.train.synthetic` (DAVIS layout) for trying `maskvos finetune`.

    python scripts/make_synthetic_domain.py domain/ --clips 20 --frames 24
    python scripts/make_synthetic_domain.py heldout/ --clips 6 --seed 7        # clips never seen in training
    python scripts/make_synthetic_domain.py domain/ --random-checkpoint base.safetensors

`--random-checkpoint` also writes a SAM2.1-tiny checkpoint with seeded random weights: a base that knows
no domain at all, for showing what fine-tuning does where no trained checkpoint can be downloaded.
"""

from __future__ import annotations

import argparse

import torch

from maskvos.checkpoints import save_checkpoint
from maskvos.model.config import get_config
from maskvos.model.sam2 import SAM2Model
from maskvos.train.synthetic import DomainSpec, write_synthetic_domain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="dataset folder to write (JPEGImages/, Annotations/)")
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random-checkpoint", metavar="PATH", help="also write a random-weight SAM2.1-tiny checkpoint")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    names = write_synthetic_domain(args.out, args.clips, seed=args.seed, spec=DomainSpec(size=(width, height), frames=args.frames))
    print(f"wrote {len(names)} clips of {args.frames} frames to {args.out}")
    if args.random_checkpoint:
        torch.manual_seed(args.seed)
        save_checkpoint(SAM2Model(get_config("sam2.1-tiny")), args.random_checkpoint)
        print(f"wrote a random-weight sam2.1-tiny checkpoint to {args.random_checkpoint}")


if __name__ == "__main__":
    main()
