"""Seconds per frame and peak memory of each memory policy against `sam2`, on the CPU.

Speed: the tiny model with random weights from one checkpoint file tracks the first 1 or 3 objects of
a real clip (`davis2017-lowres/schoolgirls`, 432x240, from ../shared/data/vos) from their first-frame
masks, at model inputs 512 and 1024; after `WARM_FRAMES` frames (the memory is full) `--frames` frames
are timed. `sam2long` runs twice: with its defaults (the random model's objects are certain, so the
pathways stay identical and run once) and with every frame uncertain (`uncertainty=100`: the three
pathways branch, the worst case), on the CPU one row at a time (exact rebuilds) and batched
(`memory_batch=8`).

Memory: each policy tracks one object through a 1000-frame synthetic video at input 128 in a fresh
child process; the table gives the memory bank's entries and the process's peak RSS after 100 and
after 1000 frames (flat: the bank does not grow with the video).

    python benchmarks/policy_speed.py --threads 2 --frames 3
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

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from maskvos.checkpoints import load_model  # noqa: E402
from maskvos.inference.config import InferenceConfig  # noqa: E402
from maskvos.inference.policies import SAM2LongPolicy, get_policy  # noqa: E402
from maskvos.inference.session import VideoSession  # noqa: E402
from maskvos.io.masks import label_map_to_masks, read_label_map  # noqa: E402

from parity_tools import make_checkpoint  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "vos" / "davis2017-lowres"
SEQUENCE = "schoolgirls"
WARM_FRAMES = 7


def configs() -> dict[str, InferenceConfig]:
    branching = SAM2LongPolicy(uncertainty=100.0)
    return {
        "sam2": InferenceConfig(memory_policy="sam2"),
        "samurai": InferenceConfig(memory_policy="samurai"),
        "dam4sam": InferenceConfig(memory_policy="dam4sam"),
        "sam2long": InferenceConfig(memory_policy="sam2long"),
        "sam2long branching": InferenceConfig(memory_policy=branching),
        "sam2long branching, batched": InferenceConfig(memory_policy=branching, memory_batch=8),
    }


def seconds_per_frame(model, frames: Path, masks: dict[int, np.ndarray], config: InferenceConfig, n: int) -> tuple[float, dict]:
    session = VideoSession(model, frames, config)
    for obj_id, mask in masks.items():
        session.add_mask(0, obj_id, mask)
    # SAM2Long yields a frame once it is decided, maybe later: time from the moment the first timed
    # frame's features are asked for (its tracking starts) to the end of the pass.
    started: list[float] = []
    features = session.frames.features

    def timed_features(frame_idx, *a, **kw):
        if frame_idx == WARM_FRAMES + 1 and not started:
            started.append(time.perf_counter())
        return features(frame_idx, *a, **kw)

    session.frames.features = timed_features
    for _ in session.propagate(end=WARM_FRAMES + n):
        pass
    elapsed = (time.perf_counter() - started[0]) / n
    return elapsed, dict(session.pathway_stats)


def speed_table(args) -> list[str]:
    frames = DATA / "JPEGImages" / SEQUENCE
    labels = read_label_map(sorted((DATA / "Annotations" / SEQUENCE).glob("*.png"))[0])
    all_masks = label_map_to_masks(labels)
    lines = ["| input | objects | policy | s/frame | vs sam2 | SAM2Long decisions (agreed / forced) |", "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            path = make_checkpoint("sam2.1-tiny", Path(tmp) / f"tiny-{size}.pt", seed=0, obj_score_bias=5.0, image_size=size)
            import dataclasses

            from maskvos.model.config import get_config

            model = load_model(path, config=dataclasses.replace(get_config("sam2.1-tiny"), image_size=size))
            for count in args.objects:
                masks = dict(list(all_masks.items())[:count])
                base = None
                for name, config in configs().items():
                    spf, stats = seconds_per_frame(model, frames, masks, config, args.frames)
                    base = base or spf
                    decided = f"{stats['agreed']} / {stats['forced']}" if name.startswith("sam2long") else ""
                    lines.append(f"| {size} | {count} | {name} | {spf:.2f} | {spf / base:.2f}x | {decided} |")
                    print(lines[-1], flush=True)
    return lines


def memory_child(policy: str, frames: int, out: str) -> None:
    """One policy over a long synthetic video; prints JSON of entries and peak RSS at checkpoints."""
    from parity_tools import disk_video, samurai_checkpoint

    tmp = Path(tempfile.mkdtemp())
    masks = disk_video(tmp / "frames", 40)
    path = samurai_checkpoint(tmp / "ck.pt", tmp / "frames", masks[0], 128)
    import dataclasses

    from maskvos.model.config import get_config

    model = load_model(path, config=dataclasses.replace(get_config("sam2.1-tiny"), image_size=128))
    rng = np.random.default_rng(0)
    video = np.zeros((frames, 128, 128, 3), np.uint8)
    yy, xx = np.mgrid[0:128, 0:128]
    for i in range(frames):  # a disk wandering over a black background
        cx, cy = 64 + 40 * np.sin(i / 25), 64 + 40 * np.cos(i / 31)
        disk = (xx - cx) ** 2 + (yy - cy) ** 2 < 14**2
        video[i][disk] = np.clip([220, 40, 40] + 30 * rng.standard_normal((disk.sum(), 3)), 0, 255)
    chosen = SAM2LongPolicy(uncertainty=100.0) if policy == "sam2long branching" else get_policy(policy)
    session = VideoSession(model, video, InferenceConfig(memory_policy=chosen))
    first = (xx - 64) ** 2 + (yy - 104) ** 2 < 14**2
    session.add_mask(0, 1, first)
    report = {}
    for r in session.propagate():
        if r.frame_idx + 1 in (100, frames):
            report[r.frame_idx + 1] = {
                "entries": session.bank.num_entries(),
                "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
    Path(out).write_text(json.dumps(report))


def memory_table(args) -> list[str]:
    lines = ["| policy | bank entries after 100 / 1000 frames | peak RSS after 100 / 1000 frames (MB) |", "|---|---|---|"]
    for policy in ["sam2", "samurai", "dam4sam", "sam2long", "sam2long branching"]:
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            cmd = [sys.executable, __file__, "--memory-child", policy, "--long-frames", str(args.long_frames), "--out", f.name,
                   "--threads", str(args.threads)]
            subprocess.run(cmd, check=True)
            report = json.loads(Path(f.name).read_text())
        a, b = report["100"], report[str(args.long_frames)]
        lines.append(f"| {policy} | {a['entries']} / {b['entries']} | {a['rss_mb']:.0f} / {b['rss_mb']:.0f} |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--long-frames", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    if args.memory_child:
        with torch.inference_mode():
            memory_child(args.memory_child, args.long_frames, args.out)
        return
    print(f"torch {torch.__version__}, {args.threads} threads, tiny model, {args.frames} timed frames after {WARM_FRAMES}")
    tables = []
    if not args.skip_speed:
        with torch.inference_mode():
            tables.append(speed_table(args))
    if not args.skip_memory:
        tables.append(memory_table(args))
    print()
    for table in tables:
        print("\n".join(table) + "\n")


if __name__ == "__main__":
    main()
