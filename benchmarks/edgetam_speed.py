"""EdgeTAM's speed on the CPU: maskvos against EdgeTAM's own code (edgetam-dimos, in its own process),
and against maskvos' SAM2.1-tiny at the same 1024 input, same random weights for both EdgeTAMs.

    python benchmarks/edgetam_speed.py [--frames 16] [--repeats 5]

Prints seconds per stage (image encoder; memory encoder + perceiver) and per propagated frame with a
full memory bank (frames 8 on: 1 prompt + 6 recent memories and their pointers), 1 and 3 objects,
2 threads, and the ratios ours / reference and SAM2.1-tiny / EdgeTAM.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from maskvos.checkpoints import load_model
from maskvos.inference.session import VideoSession

from parity_tools import EDGETAM_ORACLE, EDGETAM_ORACLE_DIR, disk_video, edgetam_checkpoint, make_checkpoint


def ours_stages(model, repeats: int) -> dict[str, float]:
    size = model.image_size
    image = torch.randn(1, 3, size, size)

    def median(fn) -> float:
        fn()
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - start)
        return statistics.median(runs)

    with torch.inference_mode():
        feats = model.encode_image(image)
        logits, score = torch.randn(1, 1, size, size), torch.ones(1, 1)
        return {"image encoder": median(lambda: model.encode_image(image)),
                "memory encoder + perceiver": median(lambda: model.encode_memory(feats, logits, score))}


def ours_per_frame(model, frames: Path, masks: np.ndarray, count: int) -> float:
    session = VideoSession(model, frames)
    for obj in range(count):
        session.add_mask(0, obj + 1, masks[obj])
    stamps, last = {}, time.perf_counter()
    for result in session.propagate():
        now = time.perf_counter()
        stamps[result.frame_idx] = now - last
        last = now
    return statistics.median(t for k, t in stamps.items() if k >= 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="edgetam-speed-"))
    frames = work / "frames"
    truth = disk_video(frames, args.frames, size=256, second=True)
    masks = np.stack([truth[0][1], truth[0][2], np.roll(truth[0][1], 60, axis=1)])
    np.save(work / "masks.npy", masks)
    checkpoint = edgetam_checkpoint(work / "edgetam.pt")
    proc = subprocess.run([sys.executable, str(EDGETAM_ORACLE), str(EDGETAM_ORACLE_DIR), "bench", str(checkpoint),
                           str(frames), str(work / "masks.npy"), str(work / "ref.pt"), str(args.repeats)],
                          capture_output=True, text=True, cwd=work)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    ref = torch.load(work / "ref.pt", weights_only=True)
    edgetam = load_model(checkpoint)
    tiny = load_model(make_checkpoint("sam2.1-tiny", work / "tiny.pt"))
    ours, sam2 = ours_stages(edgetam, args.repeats), ours_stages(tiny, args.repeats)
    sam2["memory encoder + perceiver"] = sam2.pop("memory encoder + perceiver")
    for count in (1, 3):
        key = f"per frame, {count} object{'s' if count > 1 else ''}"
        ours[key] = ours_per_frame(edgetam, frames, masks, count)
        sam2[key] = ours_per_frame(tiny, frames, masks, count)
    print(f"EdgeTAM vs its reference and SAM2.1-tiny: 1024 input, CPU, {torch.get_num_threads()} threads, median seconds")
    print("| stage | EdgeTAM (maskvos) | EdgeTAM (reference) | ours / reference | SAM2.1-tiny (maskvos) | SAM2.1-tiny / EdgeTAM |")
    print("|---|---|---|---|---|---|")
    for key in ours:
        print(f"| {key} | {ours[key]:.3f} | {ref[key]:.3f} | {ours[key] / ref[key]:.2f}x | {sam2[key]:.3f} | {sam2[key] / ours[key]:.1f}x |")


if __name__ == "__main__":
    main()
