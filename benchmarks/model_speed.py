"""Speed of our network versus the reference (sam2==1.1.0), same weights, same inputs, one process.

Prints seconds per stage and per propagated frame (one object) with the ratio ours/reference.

    python benchmarks/model_speed.py --model sam2.1-tiny --size 1024 --threads 2

Stages: image encoder; memory attention with a full memory bank (1 prompted + 6 recent frames and
16 object pointers); prompt encoder + mask decoder; memory encoder. "Per frame" runs whole
propagation steps (image encoder, memory attention, decoder, memory encoder) in each implementation's
own video loop: the reference's SAM2VideoPredictor and our step functions in the minimal loop used by
the parity tests. Timings are the median of `--repeats` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from maskvos.checkpoints import load_model
from maskvos.model.config import get_config
from maskvos.model.sam2 import MemoryContext, MemoryFrame, ObjectPointer

from parity_tools import (
    MiniLoop,
    make_checkpoint,
    reference_predictor,
    synthetic_masks,
    synthetic_video,
)


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed_pair(ours: Callable[[], object], ref: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median seconds of each, measured alternately so that machine drift hits both alike."""
    ours()
    ref()
    pairs = [(_time(ours), _time(ref)) for _ in range(repeats)]
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def stage_timings(ours, ref, size: int, repeats: int) -> list[tuple[str, float, float]]:
    torch.manual_seed(0)
    image = torch.randn(1, 3, size, size)
    rows = []
    with torch.inference_mode():
        rows.append(("image encoder", *timed_pair(lambda: ours.encode_image(image), lambda: ref.forward_image(image), repeats)))
        feats = ours.encode_image(image)
        backbone = ref.forward_image(image)
        _, vision, vision_pos, sizes = ref._prepare_backbone_features(backbone)
        h, w = sizes[-1]
        num_frames = 100
        frame_idx = 50
        mem = torch.randn(1, 64, h, w).to(torch.bfloat16)
        _, mem_pos = ours.encode_memory(feats, torch.zeros(1, 1, size, size), torch.ones(1, 1))
        ptr = torch.randn(1, 256)
        # ours: 1 prompted frame + 6 recent frames, 16 pointers
        ctx = MemoryContext(
            frames=[MemoryFrame(mem, mem_pos, 0)] + [MemoryFrame(mem, mem_pos, t) for t in range(1, 7)],
            pointers=[ObjectPointer(ptr, 10)] + [ObjectPointer(ptr, d) for d in range(1, 16)],
            max_ptr_distance=15,
        )
        entry = {"maskmem_features": mem, "maskmem_pos_enc": [mem_pos], "obj_ptr": ptr}
        output_dict = {
            "cond_frame_outputs": {frame_idx - 10: entry},
            "non_cond_frame_outputs": dict.fromkeys(range(frame_idx - 15, frame_idx), entry),
        }

        def ref_mem_attn():
            return ref._prepare_memory_conditioned_features(
                frame_idx, False, vision[-1:], vision_pos[-1:], sizes[-1:], output_dict, num_frames
            )

        rows.append(("memory attention (full bank)", *timed_pair(lambda: ours.condition_on_memory(feats, ctx), ref_mem_attn, repeats)))
        pix = ours.condition_on_memory(feats, ctx)
        high_res = [x.permute(1, 2, 0).view(1, x.size(2), *s) for x, s in zip(vision[:-1], sizes[:-1])]
        rows.append(("prompt encoder + decoder", *timed_pair(lambda: ours._decode(feats, pix, None, None, True), lambda: ref._forward_sam_heads(pix, None, None, high_res, True), repeats)))
        logits = torch.randn(1, 1, size, size)
        score = torch.ones(1, 1)
        rows.append(("memory encoder", *timed_pair(lambda: ours.encode_memory(feats, logits, score), lambda: ref._encode_new_memory(vision, sizes, logits, score, False), repeats)))
    return rows


def per_frame_timings(ours, ref, folder: Path, num_frames: int) -> tuple[float, float]:
    """Both video loops advanced in lockstep, one frame each in turn; median over frames 2 onwards."""
    mask = synthetic_masks(0)[1]
    loop = MiniLoop(ours, folder, num_frames)
    loop.add_mask(0, 1, mask)
    state = ref.init_state(str(folder))
    ref.add_new_mask(state, 0, 1, mask)
    ours_iter, ref_iter = loop.propagate(), ref.propagate_in_video(state)
    ours_t, ref_t = [], []
    for _ in range(num_frames):
        ours_t.append(_time(lambda: next(ours_iter)))
        ref_t.append(_time(lambda: next(ref_iter)))
    return statistics.median(ours_t[2:]), statistics.median(ref_t[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sam2.1-tiny")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=10, help="video length for the per-frame timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        ckpt = make_checkpoint(args.model, tmp_path / "ck.pt", image_size=args.size)
        ours = load_model(ckpt, config=dataclasses.replace(get_config(args.model), image_size=args.size))
        ref = reference_predictor(args.model, ckpt, image_size=args.size)
        rows = stage_timings(ours, ref, args.size, args.repeats)
        synthetic_video(tmp_path / "frames", args.frames)
        rows.append(("per propagated frame (1 object)", *per_frame_timings(ours, ref, tmp_path / "frames", args.frames)))
    print(f"\n{args.model} at {args.size}x{args.size}, CPU, {args.threads} threads (seconds, median)\n")
    print("| stage | maskvos | reference | ratio |")
    print("|---|---:|---:|---:|")
    for name, mine, theirs in rows:
        print(f"| {name} | {mine:.3f} | {theirs:.3f} | {mine / theirs:.2f} |")


if __name__ == "__main__":
    main()
