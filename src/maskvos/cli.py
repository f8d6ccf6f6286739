"""Command-line interface: thin subcommands over the library.

Errors a user can cause are printed as one sentence without a traceback, with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from maskvos.errors import MaskvosError

EXIT_USER_ERROR = 2


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--model", help="published model name, e.g. sam2.1-tiny (downloaded once, then cached)")
    group.add_argument("--checkpoint", help="path of a SAM2/SAM2.1 .pt checkpoint or a maskvos .safetensors file")


def cmd_info(args: argparse.Namespace) -> int:
    """Describe a checkpoint: the configuration it matches and its size."""
    from maskvos.checkpoints import load_model

    model = load_model(args.checkpoint or args.model)
    cfg = model.config
    num_params = sum(p.numel() for p in model.parameters())
    print(f"model:        {cfg.name}")
    print(f"source:       {args.checkpoint or args.model}")
    print(f"parameters:   {num_params:,}")
    print(f"trunk:        Hiera embed_dim={cfg.trunk.embed_dim} stages={list(cfg.trunk.stages)}")
    print(f"input size:   {cfg.image_size}x{cfg.image_size}")
    print(f"memory slots: {cfg.num_maskmem}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskvos", description="Video object segmentation from prompts.")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="describe a model checkpoint")
    _add_model_args(info)
    info.set_defaults(func=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MaskvosError as exc:
        print(f"maskvos: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("maskvos: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
