"""Peak resident memory of maskvos versus the reference on a 100- and a 1000-frame 480p video.

Each measurement runs in a fresh child process (peak RSS = `ru_maxrss` of that process): tiny model,
random weights from one checkpoint file, model input 512, one object prompted by a mask on frame 0,
every frame propagated. The video is the DAVIS 2016 train frames (854x480) of ../shared/data/vos, one
sequence after another, linked as `<int>.jpg` (the only layout the reference reads).

The reference loads every frame up front and keeps every output, so its memory grows with the video;
its 1000-frame run is capped at `--reference-cap` propagated frames (all 1000 frames are still loaded)
and the table says so.

    python benchmarks/memory.py --threads 2
    python benchmarks/memory.py --model edgetam --ours-only      # maskvos alone, EdgeTAM or EfficientTAM
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "vos" / "davis2016-train"
RESOLUTION = 512


def build_video(folder: Path, num_frames: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frames = sorted((DATA / "JPEGImages").glob("*/*.jpg"))
    if len(frames) < num_frames:
        raise SystemExit(f"only {len(frames)} frames in {DATA}")
    for i, src in enumerate(frames[:num_frames]):
        (folder / f"{i}.jpg").symlink_to(src)
    return folder


def first_mask():
    import numpy as np
    from PIL import Image

    path = sorted((DATA / "Annotations").glob("*/*.png"))[0]
    return np.asarray(Image.open(path).convert("L")) > 0


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT / "tests"))
    mask = first_mask()
    start = time.perf_counter()
    frames_done = 0
    if args.child == "ours":
        from maskvos.checkpoints import load_model
        from maskvos.inference.config import InferenceConfig
        from maskvos.inference.session import VideoSession

        session = VideoSession(load_model(args.checkpoint), args.video, InferenceConfig(resolution=RESOLUTION))
        session.add_mask(0, 1, mask)
        for _ in session.propagate():
            frames_done += 1
        extra = {"entries": session.bank.num_entries()}
    else:
        from parity_tools import reference_predictor

        predictor = reference_predictor("sam2.1-tiny", args.checkpoint, image_size=RESOLUTION)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = predictor.init_state(args.video)
            predictor.add_new_mask(state, 0, 1, mask)
            limit = args.cap - 1 if args.cap else None
            with torch.inference_mode():
                for _ in predictor.propagate_in_video(state, max_frame_num_to_track=limit):
                    frames_done += 1
        extra = {}
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mib": peak_mib, "frames": frames_done, "seconds": time.perf_counter() - start, **extra}))


def measure(kind: str, video: Path, checkpoint: Path, threads: int, cap: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--video", str(video), "--checkpoint", str(checkpoint),
           "--threads", str(threads), "--cap", str(cap)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", choices=["ours", "reference"])
    parser.add_argument("--video")
    parser.add_argument("--checkpoint")
    parser.add_argument("--cap", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lengths", type=int, nargs=2, default=[100, 1000])
    parser.add_argument("--reference-cap", type=int, default=150, help="frames the reference propagates on the long video")
    parser.add_argument("--model", default="sam2.1-tiny", help="sam2.1-tiny (default), edgetam or an efficienttam-* name")
    parser.add_argument("--ours-only", action="store_true", help="measure maskvos only (the only choice for other models)")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from parity_tools import edgetam_checkpoint, efficienttam_checkpoint, make_checkpoint

    tmp = Path(tempfile.mkdtemp(prefix="maskvos-mem-"))
    if args.model == "edgetam":
        checkpoint = edgetam_checkpoint(tmp / "edgetam.pt")
    elif args.model.startswith("efficienttam"):
        checkpoint = efficienttam_checkpoint(tmp / f"{args.model.replace('-', '_')}.pt", args.model)
    else:
        checkpoint = make_checkpoint(args.model, tmp / "tiny.pt")
    kinds = ("ours",) if args.ours_only or args.model != "sam2.1-tiny" else ("ours", "reference")
    short, long = args.lengths
    videos = {n: build_video(tmp / f"v{n}", n) for n in (short, long)}
    print(f"{args.model}, input {RESOLUTION}, 854x480 frames, one object, {args.threads} threads\n")
    print("| implementation | frames in video | frames propagated | peak RSS (MiB) | seconds |")
    print("|---|---:|---:|---:|---:|")
    rows = {}
    for kind in kinds:
        for n in (short, long):
            cap = args.reference_cap if kind == "reference" and n == long else 0
            r = measure(kind, videos[n], checkpoint, args.threads, cap)
            rows[kind, n] = r
            name = "maskvos" if kind == "ours" else "reference"
            note = f" (capped at {cap})" if cap else ""
            print(f"| {name} | {n} | {r['frames']}{note} | {r['peak_mib']:.0f} | {r['seconds']:.0f} |", flush=True)
    ours_ratio = rows["ours", long]["peak_mib"] / rows["ours", short]["peak_mib"]
    if "reference" in kinds:
        ref_ratio = rows["reference", long]["peak_mib"] / rows["reference", short]["peak_mib"]
        print(f"\npeak RSS ratio {long}/{short} frames: maskvos {ours_ratio:.2f}, reference {ref_ratio:.2f}"
              f" (reference capped at {args.reference_cap} propagated frames, so its true ratio is higher)")
    else:
        print(f"\npeak RSS ratio {long}/{short} frames: maskvos {ours_ratio:.2f}")
    print(f"maskvos memory entries stored at the end of the {long}-frame run: {rows['ours', long]['entries']}")


if __name__ == "__main__":
    main()
