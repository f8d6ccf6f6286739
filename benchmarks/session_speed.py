"""Seconds per frame of maskvos' VideoSession versus the reference SAM2VideoPredictor, 1..N objects.

Both load one random-weight checkpoint file (timing does not depend on the weights) and track the
objects of a real multi-object clip from their first-frame masks. Each configuration propagates
`--frames` frames after the prompt frame; implementations alternate so that machine drift hits both
alike. A second table gives maskvos' own speed-up at smaller model inputs (one object).

    python benchmarks/session_speed.py --model sam2.1-tiny --objects 1 2 5 --frames 4 --threads 2

The clip is `davis2017-lowres/schoolgirls` (7 objects, 432x240) from ../shared/data/vos.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from maskvos.checkpoints import load_model  # noqa: E402
from maskvos.inference.config import InferenceConfig  # noqa: E402
from maskvos.inference.session import VideoSession  # noqa: E402
from maskvos.io.masks import label_map_to_masks, read_label_map  # noqa: E402

from parity_tools import make_checkpoint, reference_predictor  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "vos" / "davis2017-lowres"


def clip_as_int_jpegs(sequence: str, num_frames: int, folder: Path) -> Path:
    """The reference reads only '<int>.jpg' folders: link the clip's frames under such names."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = sorted((DATA / "JPEGImages" / sequence).glob("*.jpg"))[:num_frames]
    for i, src in enumerate(frames):
        (folder / f"{i}.jpg").symlink_to(src)
    return folder


#: Frames tracked before timing starts: from frame 7 on, the memory bank is full (1 prompted + 6
#: recent frames), which is the steady state of a long video.
WARM_FRAMES = 7


def per_frame_seconds(iterator, num_frames: int) -> float:
    """Mean seconds per frame over `num_frames` frames once the memory bank is full."""
    for _ in range(1 + WARM_FRAMES):  # the prompt frame, then the frames that fill the memory
        next(iterator)
    start = time.perf_counter()
    for _ in range(num_frames):
        next(iterator)
    return (time.perf_counter() - start) / num_frames


def run_ours(model, folder: Path, masks: dict[int, np.ndarray], num_frames: int, resolution: int | None = None) -> float:
    session = VideoSession(model, folder, InferenceConfig(resolution=resolution))
    for obj_id, mask in masks.items():
        session.add_mask(0, obj_id, mask)
    return per_frame_seconds(iter(session.propagate(end=num_frames + WARM_FRAMES)), num_frames)


def run_reference(predictor, folder: Path, masks: dict[int, np.ndarray], num_frames: int) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = predictor.init_state(str(folder))
        for obj_id, mask in masks.items():
            predictor.add_new_mask(state, 0, obj_id, mask)
        with torch.inference_mode():
            return per_frame_seconds(
                iter(predictor.propagate_in_video(state, max_frame_num_to_track=num_frames + WARM_FRAMES)), num_frames
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sam2.1-tiny")
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 2, 5])
    parser.add_argument("--frames", type=int, default=4, help="tracked frames timed per run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resolutions", type=int, nargs="*", default=[512, 768, 1024])
    parser.add_argument("--sequence", default="schoolgirls")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    tmp = Path(tempfile.mkdtemp(prefix="maskvos-bench-"))
    folder = clip_as_int_jpegs(args.sequence, args.frames + WARM_FRAMES + 2, tmp / "frames")
    labels = read_label_map(sorted((DATA / "Annotations" / args.sequence).glob("*.png"))[0])
    all_masks = label_map_to_masks(labels)
    ckpt = make_checkpoint(args.model, tmp / "ckpt.pt")
    ours = load_model(ckpt)
    ref = reference_predictor(args.model, ckpt)
    print(f"{args.model} at 1024, {args.threads} threads, {args.sequence} ({labels.shape[1]}x{labels.shape[0]}), "
          f"seconds per frame over {args.frames} frames once the memory bank is full\n")
    print("| objects | maskvos s/frame | reference s/frame | ratio |")
    print("|---:|---:|---:|---:|")
    run_ours(ours, folder, {1: all_masks[1]}, 1, resolution=256)  # warm-up
    for n in args.objects:
        masks = {k: all_masks[k] for k in sorted(all_masks)[:n]}
        if len(masks) < n:
            raise SystemExit(f"{args.sequence} has only {len(all_masks)} objects")
        mine = run_ours(ours, folder, masks, args.frames)
        theirs = run_reference(ref, folder, masks, args.frames)
        print(f"| {n} | {mine:.2f} | {theirs:.2f} | {mine / theirs:.2f} |", flush=True)
    if args.resolutions:
        print("\n| resolution | maskvos s/frame (1 object) | speed-up vs 1024 |")
        print("|---:|---:|---:|")
        times = {r: run_ours(ours, folder, {1: all_masks[1]}, args.frames, r) for r in args.resolutions}
        base = times.get(1024) or max(times.values())
        for r, t in times.items():
            print(f"| {r} | {t:.2f} | {base / t:.2f}x |")


if __name__ == "__main__":
    main()
