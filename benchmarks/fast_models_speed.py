"""The fast models' speed on the CPU: maskvos' EdgeTAM and EfficientTAM against their own code
(edgetam-dimos and efficient-track-anything, each in its own process), and against maskvos'
SAM2.1-tiny at the same 1024 input; the same random weights for a model and its reference.

    python benchmarks/fast_models_speed.py [--models edgetam efficienttam-s efficienttam-ti-2] [--frames 12] [--repeats 3]

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
from maskvos.model.config import get_config

from parity_tools import (
    EDGETAM_ORACLE,
    EDGETAM_ORACLE_DIR,
    EFFICIENTTAM_ORACLE,
    EFFICIENTTAM_ORACLE_DIR,
    disk_video,
    edgetam_checkpoint,
    efficienttam_checkpoint,
    make_checkpoint,
)


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
                "memory encoder (+ perceiver)": median(lambda: model.encode_memory(feats, logits, score))}


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


def reference_times(name: str, checkpoint: Path, frames: Path, work: Path, repeats: int) -> dict[str, float]:
    if name == "edgetam":
        command = [str(EDGETAM_ORACLE), str(EDGETAM_ORACLE_DIR), "bench"]
    else:
        variant = name.removeprefix("efficienttam-").replace("-", "_")
        command = [str(EFFICIENTTAM_ORACLE), str(EFFICIENTTAM_ORACLE_DIR), variant, "bench"]
    out = work / f"ref-{name}.pt"
    proc = subprocess.run([sys.executable, *command, str(checkpoint), str(frames), str(work / "masks.npy"), str(out), str(repeats)],
                          capture_output=True, text=True, cwd=work)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return torch.load(out, weights_only=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["edgetam", "efficienttam-s", "efficienttam-ti-2"])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="fast-models-speed-"))
    frames = work / "frames"
    truth = disk_video(frames, args.frames, size=256, second=True)
    masks = np.stack([truth[0][1], truth[0][2], np.roll(truth[0][1], 60, axis=1)])
    np.save(work / "masks.npy", masks)
    tiny = load_model(make_checkpoint("sam2.1-tiny", work / "tiny.pt"))
    sam2 = ours_stages(tiny, args.repeats)
    for count in (1, 3):
        sam2[f"per frame, {count} object{'s' if count > 1 else ''}"] = ours_per_frame(tiny, frames, masks, count)
    print(f"1024 input, CPU, {torch.get_num_threads()} threads, median seconds; SAM2.1-tiny (maskvos): "
          + ", ".join(f"{k} {v:.3f}" for k, v in sam2.items()))
    print("| model | stage | maskvos | reference | maskvos / reference | SAM2.1-tiny / this model (maskvos) |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        if name == "edgetam":
            checkpoint = edgetam_checkpoint(work / "edgetam.pt")
        else:
            checkpoint = efficienttam_checkpoint(work / f"{name}.pt", name)
        ref = reference_times(name, checkpoint, frames, work, args.repeats)
        model = load_model(checkpoint, config=get_config(name))
        ours = ours_stages(model, args.repeats)
        for count in (1, 3):
            ours[f"per frame, {count} object{'s' if count > 1 else ''}"] = ours_per_frame(model, frames, masks, count)
        for key in ours:
            print(f"| {name} | {key} | {ours[key]:.3f} | {ref[key]:.3f} | {ours[key] / ref[key]:.2f}x | {sam2[key] / ours[key]:.1f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
