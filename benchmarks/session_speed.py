"""Speed of maskvos' VideoSession versus the reference SAM2VideoPredictor, 1..N objects; GPU memory.

Both load one random-weight checkpoint file (timing does not depend on the weights) and track the
objects from their first-frame masks. Each configuration propagates `--frames` frames after the
memory bank has filled; implementations alternate so that machine drift hits both alike.

CPU (the original table; a real clip from ../shared/data/vos when present, else a synthetic one):

    python benchmarks/session_speed.py --model sam2.1-tiny --objects 1 2 5 --frames 4 --threads 2
    python benchmarks/session_speed.py --device cpu --quick          # seconds: proves the code runs

GPU (issue 16): frames/s of maskvos and of the reference (`vos_optimized=True`, the reference's
compiled predictor, with --reference-compiled where it builds; else its plain predictor) for each
model at 1024, 1/3/10 objects, float32 and bfloat16 (the reference under torch.autocast bfloat16,
as its own benchmark runs), maskvos compiled and not, and maskvos' memory_batch 1 and all; then
maskvos' peak GPU memory over a 1000-frame synthetic video (read lazily, as a stream) against a
100-frame one, which should be equal (memory flat in the video's length):

    python benchmarks/session_speed.py --device cuda --models sam2.1-tiny sam2.1-large \
        --objects 1 3 10 --dtypes float32 bfloat16 --compile off on --memory-batch 1 all --json out.json

Goals (issue 16): at 1 object >= the reference's fps under the same settings; at 10 objects <= 0.5x
its time per frame; peak memory flat in length.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch._dynamo
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from maskvos.checkpoints import load_model  # noqa: E402
from maskvos.inference.config import InferenceConfig  # noqa: E402
from maskvos.inference.session import VideoSession  # noqa: E402
from maskvos.io.masks import label_map_to_masks, read_label_map  # noqa: E402
from maskvos.model.execution import dtype_by_name  # noqa: E402

from parity_tools import make_checkpoint, reference_predictor  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "vos" / "davis2017-lowres"
#: Frames tracked before timing starts: from frame 7 on, the memory bank is full (1 prompted + 6
#: recent frames), which is the steady state of a long video.
WARM_FRAMES = 7
SYNTH_HEIGHT, SYNTH_WIDTH = 480, 854


# ----------------------------------------------------------------------------- videos


def clip_as_int_jpegs(sequence: str, num_frames: int, folder: Path) -> Path:
    """The reference reads only '<int>.jpg' folders: link the clip's frames under such names."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = sorted((DATA / "JPEGImages" / sequence).glob("*.jpg"))[:num_frames]
    for i, src in enumerate(frames):
        (folder / f"{i}.jpg").symlink_to(src)
    return folder


def synthetic_frame(t: int, num_objects: int, height: int = SYNTH_HEIGHT, width: int = SYNTH_WIDTH) -> np.ndarray:
    """Frame t of a synthetic clip: `num_objects` coloured disks on a grid drifting right over a
    textured background."""
    rng = np.random.default_rng(0)
    background = (rng.random((height // 16 + 1, width // 16 + 1, 3)) * 160).repeat(16, 0).repeat(16, 1)
    img = background[:height, :width].astype(np.uint8)
    yy, xx = np.ogrid[:height, :width]
    for k, (cx, cy, r) in enumerate(_disks(num_objects, height, width, t)):
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = ((70 + 53 * k) % 256, (200 - 31 * k) % 256, (40 + 97 * k) % 256)
    return img


def _disks(num_objects: int, height: int, width: int, t: int) -> list[tuple[float, float, float]]:
    cols = int(np.ceil(np.sqrt(num_objects * width / height)))
    rows = int(np.ceil(num_objects / cols))
    r = 0.3 * min(width / cols, height / rows)
    return [
        ((k % cols + 0.5) * width / cols + 2 * t, (k // cols + 0.5) * height / rows, r) for k in range(num_objects)
    ]


def synthetic_masks(num_objects: int, height: int = SYNTH_HEIGHT, width: int = SYNTH_WIDTH) -> dict[int, np.ndarray]:
    yy, xx = np.ogrid[:height, :width]
    return {k + 1: (xx - cx) ** 2 + (yy - cy) ** 2 < r * r for k, (cx, cy, r) in enumerate(_disks(num_objects, height, width, 0))}


def synthetic_jpegs(folder: Path, num_frames: int, num_objects: int, height: int, width: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(num_frames):
        Image.fromarray(synthetic_frame(t, num_objects, height, width)).save(folder / f"{t}.jpg", quality=95)
    return folder


# ----------------------------------------------------------------------------- timing


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def per_frame_seconds(iterator: Iterator, num_frames: int, device: str = "cpu") -> float:
    """Mean seconds per frame over `num_frames` frames once the memory bank is full."""
    for _ in range(1 + WARM_FRAMES):  # the prompt frame, then the frames that fill the memory
        next(iterator)
    _sync(device)
    start = time.perf_counter()
    for _ in range(num_frames):
        next(iterator)
    _sync(device)
    return (time.perf_counter() - start) / num_frames


def run_ours(model, folder, masks: dict[int, np.ndarray], num_frames: int, config: InferenceConfig, device: str = "cpu") -> float:
    session = VideoSession(model, folder, config)
    for obj_id, mask in masks.items():
        session.add_mask(0, obj_id, mask)
    return per_frame_seconds(iter(session.propagate(end=num_frames + WARM_FRAMES)), num_frames, device)


def run_reference(predictor, folder: Path, masks: dict[int, np.ndarray], num_frames: int, device: str = "cpu",
                  dtype: torch.dtype = torch.float32) -> float:
    autocast = torch.autocast(device, dtype=dtype) if dtype != torch.float32 else nullcontext()
    with warnings.catch_warnings(), autocast:
        warnings.simplefilter("ignore")
        state = predictor.init_state(str(folder))
        for obj_id, mask in masks.items():
            predictor.add_new_mask(state, 0, obj_id, mask)
        with torch.inference_mode():
            return per_frame_seconds(
                iter(predictor.propagate_in_video(state, max_frame_num_to_track=num_frames + WARM_FRAMES)), num_frames, device
            )


def build_reference(name: str, ckpt: Path, device: str, image_size: int, compiled: bool):
    """The reference predictor on `device`; with `compiled`, `vos_optimized=True` (None where it does not build)."""
    if not compiled:
        return reference_predictor(name, ckpt, image_size=image_size).to(device)
    from sam2.build_sam import build_sam2_video_predictor

    from parity_tools import REFERENCE_CONFIGS

    try:
        return build_sam2_video_predictor(REFERENCE_CONFIGS[name], str(ckpt), device=device, vos_optimized=True)
    except Exception as exc:  # the reference's compiled predictor needs a GPU build of its own
        print(f"reference vos_optimized did not build ({type(exc).__name__}: {exc}); using its plain predictor", flush=True)
        return None


# ----------------------------------------------------------------------------- the GPU matrix


def gpu_matrix(args: argparse.Namespace, tmp: Path) -> list[dict]:
    """Every (model, dtype, objects) row: maskvos per (compile, memory_batch), the reference per its build."""
    device = args.device
    rows: list[dict] = []
    size = args.resolution
    num_video = args.frames + WARM_FRAMES + 2
    for name in args.models:
        ckpt = make_checkpoint(name, tmp / f"{name}.pt", image_size=size)
        ours = load_model(ckpt, device=device, config=_config_at(name, size))
        refs = {}
        if not args.no_reference:
            refs["plain"] = build_reference(name, ckpt, device, size, compiled=False)
            if args.reference_compiled:
                refs["vos_optimized"] = build_reference(name, ckpt, device, size, compiled=True)
        for i, n in enumerate(args.objects):
            folder = synthetic_jpegs(tmp / f"video-{n}", num_video, n, args.height, args.width)
            masks = synthetic_masks(n, args.height, args.width)
            if i == 0:  # untimed warm-up of each implementation (CUDA context, kernels chosen, caches)
                run_ours(ours, folder, masks, 1, InferenceConfig(), device)
                for ref in refs.values():
                    if ref is not None:
                        run_reference(ref, folder, masks, 1, device)
            for dtype_name in args.dtypes:
                dtype = dtype_by_name(dtype_name)
                row = {"model": name, "objects": n, "dtype": dtype_name, "resolution": size}
                for compiled in args.compile:
                    for batch in args.memory_batch:
                        config = InferenceConfig(compute_dtype=dtype, compile=compiled == "on",
                                                 memory_batch=None if batch == "all" else int(batch))
                        if compiled == "on":  # compiling happens on the first frames: one untimed run first
                            run_ours(ours, folder, masks, 1, config, device)
                        row[f"maskvos compile={compiled} batch={batch}"] = run_ours(ours, folder, masks, args.frames, config, device)
                for kind, ref in refs.items():
                    if ref is None:
                        continue
                    if kind == "vos_optimized":
                        run_reference(ref, folder, masks, 1, device, dtype)
                    row[f"reference {kind}"] = run_reference(ref, folder, masks, args.frames, device, dtype)
                rows.append(row)
                print(json.dumps(row), flush=True)
        del ours, refs
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def print_matrix(rows: list[dict]) -> None:
    """Frames/s per configuration, and each maskvos configuration's time per frame over the reference's."""
    if not rows:
        return
    keys = [k for k in rows[0] if k.startswith(("maskvos", "reference"))]
    ref_key = next((k for k in ("reference vos_optimized", "reference plain") if k in rows[0]), None)
    print("\nframes per second (higher is better)" + (f"; ratio = time per frame / {ref_key}'s" if ref_key else ""))
    print("| model | objects | dtype | " + " | ".join(keys) + " |")
    print("|---|---:|---|" + "---:|" * len(keys))
    for row in rows:
        cells = [f"{1 / row[k]:.1f}" if k in row else "-" for k in keys]
        print(f"| {row['model']} | {row['objects']} | {row['dtype']} | " + " | ".join(cells) + " |")
    if ref_key:
        ours = [k for k in keys if k.startswith("maskvos")]
        print("\n| model | objects | dtype | " + " | ".join(f"{k} / {ref_key}" for k in ours) + " |")
        print("|---|---:|---|" + "---:|" * len(ours))
        for row in rows:
            if ref_key in row:
                cells = [f"{row[k] / row[ref_key]:.2f}" for k in ours]
                print(f"| {row['model']} | {row['objects']} | {row['dtype']} | " + " | ".join(cells) + " |")


def peak_memory(args: argparse.Namespace, tmp: Path) -> list[dict]:
    """maskvos' peak GPU memory tracking a lazily generated video of each length (one object, the first
    model); on the CPU the same run without the memory figures."""
    out: list[dict] = []
    if not args.memory_lengths:
        return out
    name = args.models[0]
    size = args.resolution
    ckpt = make_checkpoint(name, tmp / f"{name}-mem.pt", image_size=size)
    ours = load_model(ckpt, device=args.device, config=_config_at(name, size))
    cuda = args.device == "cuda"
    masks = synthetic_masks(1, args.height, args.width)
    for length in args.memory_lengths:
        frames = (synthetic_frame(t % 50, 1, args.height, args.width) for t in range(length))
        config = InferenceConfig(compute_dtype=dtype_by_name(args.dtypes[-1]))
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        began = time.perf_counter()
        session = VideoSession(ours, frames, config)
        session.add_mask(0, 1, masks[1])
        count = sum(1 for _ in session.propagate())
        _sync(args.device)
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
        row = {"model": name, "frames": count, "dtype": args.dtypes[-1], "peak_mib": peak,
               "fps": count / (time.perf_counter() - began)}
        out.append(row)
        print(json.dumps(row), flush=True)
    print("\n| model | frames | dtype | peak GPU memory (MiB) | frames/s end to end |")
    print("|---|---:|---|---:|---:|")
    for row in out:
        print(f"| {row['model']} | {row['frames']} | {row['dtype']} | {row['peak_mib']:.0f} | {row['fps']:.1f} |")
    if len(out) > 1 and cuda:
        print(f"\npeak memory at {out[-1]['frames']} frames / at {out[0]['frames']} frames: {out[-1]['peak_mib'] / out[0]['peak_mib']:.3f}")
    return out


# ----------------------------------------------------------------------------- the CPU tables


def cpu_tables(args: argparse.Namespace, tmp: Path) -> None:
    torch.set_num_threads(args.threads)
    name = args.models[0]
    num_video = args.frames + WARM_FRAMES + 2
    if (DATA / "JPEGImages" / args.sequence).is_dir() and not args.quick:
        folder = clip_as_int_jpegs(args.sequence, num_video, tmp / "frames")
        labels = read_label_map(sorted((DATA / "Annotations" / args.sequence).glob("*.png"))[0])
        all_masks = label_map_to_masks(labels)
        what = f"{args.sequence} ({labels.shape[1]}x{labels.shape[0]})"
    else:
        most = max(args.objects)
        folder = synthetic_jpegs(tmp / "frames", num_video, most, args.height, args.width)
        all_masks = synthetic_masks(most, args.height, args.width)
        what = f"a synthetic clip ({args.width}x{args.height})"
    size = args.resolution
    ckpt = make_checkpoint(name, tmp / "ckpt.pt", image_size=size)
    ours = load_model(ckpt, config=_config_at(name, size))
    ref = reference_predictor(name, ckpt, image_size=size)
    print(f"{name} at {size}, {args.threads} threads, {what}, seconds per frame over {args.frames} frames once the "
          "memory bank is full\n")
    print("| objects | dtype | maskvos s/frame | reference s/frame | ratio |")
    print("|---:|---|---:|---:|---:|")
    run_ours(ours, folder, {1: all_masks[1]}, 1, InferenceConfig())  # warm-up
    for n in args.objects:
        masks = {k: all_masks[k] for k in sorted(all_masks)[:n]}
        if len(masks) < n:
            raise SystemExit(f"the clip has only {len(all_masks)} objects")
        for dtype_name in args.dtypes:
            dtype = dtype_by_name(dtype_name)
            mine = run_ours(ours, folder, masks, args.frames, InferenceConfig(compute_dtype=dtype))
            theirs = run_reference(ref, folder, masks, args.frames, "cpu", dtype)
            print(f"| {n} | {dtype_name} | {mine:.2f} | {theirs:.2f} | {mine / theirs:.2f} |", flush=True)
    if args.resolutions and size == 1024:
        print("\n| resolution | maskvos s/frame (1 object) | speed-up vs 1024 |")
        print("|---:|---:|---:|")
        times = {r: run_ours(ours, folder, {1: all_masks[1]}, args.frames, InferenceConfig(resolution=r)) for r in args.resolutions}
        base = times.get(1024) or max(times.values())
        for r, t in times.items():
            print(f"| {r} | {t:.2f} | {base / t:.2f}x |")


def _config_at(name: str, size: int):
    import dataclasses

    from maskvos.model.config import get_config

    return dataclasses.replace(get_config(name), image_size=size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="small settings (tiny at 256, 2 frames): proves the code runs")
    parser.add_argument("--model", dest="models", nargs="+", default=None, help="alias of --models")
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--objects", type=int, nargs="+", default=None)
    parser.add_argument("--frames", type=int, default=None, help="tracked frames timed per run")
    parser.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16"], default=None)
    parser.add_argument("--compile", nargs="+", choices=["off", "on"], default=["off"], help="maskvos compiled or not (GPU)")
    parser.add_argument("--memory-batch", nargs="+", default=["1", "all"], help="maskvos memory_batch values (GPU): 1, all")
    parser.add_argument("--reference-compiled", action="store_true", help="also time the reference's vos_optimized build")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--memory-lengths", type=int, nargs="*", default=[100, 1000], help="video lengths of the GPU memory check")
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--height", type=int, default=SYNTH_HEIGHT)
    parser.add_argument("--width", type=int, default=SYNTH_WIDTH)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resolutions", type=int, nargs="*", default=[512, 768, 1024])
    parser.add_argument("--sequence", default="schoolgirls")
    parser.add_argument("--json", help="write every measured row to this file")
    args = parser.parse_args()
    quick = args.quick
    args.models = args.models or (["sam2.1-tiny"] if quick or args.device == "cpu" else ["sam2.1-tiny", "sam2.1-large"])
    args.objects = args.objects or ([1, 2] if quick else [1, 2, 5] if args.device == "cpu" else [1, 3, 10])
    args.frames = args.frames or (2 if quick else 4 if args.device == "cpu" else 10)
    args.dtypes = args.dtypes or (["float32", "bfloat16"] if quick or args.device == "cuda" else ["float32"])
    if quick:
        args.resolution, args.height, args.width, args.resolutions = 256, 96, 128, []
        args.memory_lengths = [12, 24]
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda needs a CUDA GPU; use --device cpu")

    # One process compiles many shapes (object counts, memory_batch values, dtypes): allow them all.
    for knob in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 64)
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="maskvos-bench-"))
    result: dict = {"device": args.device}
    if args.device == "cuda" or quick:  # --device cpu --quick runs the GPU tables' code with small settings
        result["gpu"] = torch.cuda.get_device_name(0) if args.device == "cuda" else "none (cpu)"
        torch.set_num_threads(args.threads)
        print(f"{result['gpu']}, torch {torch.__version__}, input {args.resolution}, synthetic {args.width}x{args.height} "
              f"clip, seconds per frame over {args.frames} frames once the memory bank is full", flush=True)
        result["speed"] = gpu_matrix(args, tmp)
        print_matrix(result["speed"])
        result["memory"] = peak_memory(args, tmp)
    else:
        cpu_tables(args, tmp)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
