"""Temporal smoothing on `featmatch`: flicker and J&F of post-processing chains, from cached results.

Two steps, so that a post-processor is measured in seconds instead of a 4-minute featmatch run:

    python benchmarks/temporal_smoothing.py cache [--dataset DIR] [--cache DIR] [--memory-policy sam2]
    python benchmarks/temporal_smoothing.py eval  [--dataset DIR] [--cache DIR] [--specs off on ...]

`cache` segments every sequence of a DAVIS-layout dataset with featmatch (`maskvos.eval.run.run_dataset`,
predictions under <cache>/pred) and saves, per sequence and pass, exactly what the post-processing
chain receives (each `FrameResult`'s logits as float16, masks, object scores, prompt flags) to
<cache>/<seq>.pt. `eval` replays those results through `parse_temporal_spec(SPEC)` followed by the
run's `OverlapResolver` (the chain `segment_video` builds), and measures the label maps with
`maskvos.eval.stability` (J, F, J&F, flicker as `maskvos eval --stability`), one row per spec. The
"off" row reproduces the cached run's own predictions (checked against <cache>/pred).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from maskvos.eval.davis import SequenceMasks, load_sequence, resolve_annotations_dir
from maskvos.eval.stability import measure_masks
from maskvos.inference.api import FrameResult
from maskvos.inference.postprocess import OverlapResolver, PostChain, PostProcessor
from maskvos.inference.temporal import parse_temporal_spec

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vos"


class _Recorder(PostProcessor):
    """Passes results on unchanged and keeps a copy of each, by pass."""

    def __init__(self) -> None:
        self.passes: list[list[dict]] = [[]]

    def process(self, result: FrameResult) -> list[FrameResult]:
        self.passes[-1].append({
            "frame_idx": result.frame_idx, "obj_ids": list(result.obj_ids),
            "mask_logits": result.mask_logits.to(torch.float16), "masks": result.masks.clone(),
            "object_scores": result.object_scores.clone(), "is_prompt": list(result.is_prompt),
            "overlap": result.overlap,
        })  # fmt: skip
        return [result]

    def flush(self) -> list[FrameResult]:
        if self.passes[-1]:
            self.passes.append([])
        return []


def cache(args: argparse.Namespace) -> None:
    from maskvos.backends.featmatch import FeatMatchModel
    from maskvos.eval.run import run_dataset
    from maskvos.inference.config import InferenceConfig

    out = Path(args.cache)
    out.mkdir(parents=True, exist_ok=True)
    recorder = _Recorder()

    def on_sequence(name: str, frames: int, seconds: float) -> None:
        passes = [p for p in recorder.passes if p]
        torch.save({"passes": passes, "seconds": seconds, "frames": frames}, out / f"{name}.pt")
        recorder.passes[:] = [[]]
        print(f"  {name}: {frames} frames in {seconds:.1f} s ({frames / seconds:.2f} frames/s)", flush=True)

    run = run_dataset(args.dataset, FeatMatchModel(), out / "pred", sequences=args.sequences,
                      config=InferenceConfig(memory_policy=args.memory_policy),
                      on_sequence=on_sequence, postprocessors=lambda: [recorder])
    print(f"J&F {run.report.summary.jf_mean:.4f}; {run.frames} frames, {run.fps:.2f} frames/s")


def _result(rec: dict) -> FrameResult:
    logits = rec["mask_logits"].float()
    return FrameResult(rec["frame_idx"], rec["obj_ids"], logits, rec["masks"], rec["object_scores"],
                       rec["overlap"], rec["is_prompt"])


def replay(passes: list[list[dict]], steps: list[PostProcessor], shape: tuple[int, int]) -> tuple[dict[int, np.ndarray], float]:
    """{frame_idx: (H, W) label map} from the cached passes through `steps` + the overlap rule, and the
    seconds the chain took."""
    labels: dict[int, np.ndarray] = {}
    seconds = 0.0
    for records in passes:
        chain = PostChain([*steps, OverlapResolver(records[0]["overlap"])])
        results = [_result(r) for r in records]
        start = time.perf_counter()
        out = [o for r in results for o in chain.process(r)] + chain.flush()
        seconds += time.perf_counter() - start
        assert [o.frame_idx for o in out] == [r.frame_idx for r in results]
        for o in out:
            labels.setdefault(o.frame_idx, o.labels)
    return labels, seconds


def evaluate(args: argparse.Namespace) -> None:
    root = Path(args.cache)
    annotations = resolve_annotations_dir(args.dataset)
    names = sorted(p.stem for p in root.glob("*.pt"))
    if args.sequences:
        names = [n for n in names if n in args.sequences]
    gts = {n: load_sequence(annotations / n, root / "pred" / n, skip_first_last=False) for n in names}
    print("| spec | J&F | J | F | flicker % | flicker / area | chain ms/frame |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for spec in args.specs:
        rows, per_seq, chain_s, frames = [], {}, 0.0, 0
        for name in names:
            cached = torch.load(root / f"{name}.pt", weights_only=False)
            seq = gts[name]
            labels, seconds = replay(cached["passes"], parse_temporal_spec(spec), seq.gt.shape[1:])
            chain_s += seconds
            frames += len(labels)
            stems_idx = range(len(seq.stems))  # frames are the images in natural order, as the stems
            pred = np.stack([labels.get(t, np.zeros_like(seq.gt[0])).astype(seq.gt.dtype) for t in stems_idx])
            if spec == "off" and args.check:
                assert np.array_equal(pred, seq.pred), f"{name}: the replay differs from the run's predictions"
            seq_rows = measure_masks(SequenceMasks(name, seq.stems, seq.gt, pred, 0, seq.obj_ids))
            rows += seq_rows
            per_seq[name] = (np.mean([r.scores.jf_mean for r in seq_rows]), np.mean([r.flicker.share for r in seq_rows]))
        jf = np.mean([r.scores.jf_mean for r in rows])
        j = np.mean([r.scores.j_mean for r in rows])
        f = np.mean([r.scores.f_mean for r in rows])
        flick = np.nanmean([r.flicker.share for r in rows])
        per_area = np.nanmean([r.flicker.per_area for r in rows if not math.isnan(r.flicker.per_area)])
        print(f"| {spec} | {jf:.4f} | {j:.4f} | {f:.4f} | {100 * flick:.3f} | {per_area:.4f} | "
              f"{1000 * chain_s / max(frames, 1):.1f} |", flush=True)
        if args.per_sequence:
            for name, (sjf, sfl) in per_seq.items():
                print(f"|   {name} | {sjf:.4f} | | | {100 * sfl:.3f} | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("cache", "eval"))
    parser.add_argument("--dataset", default=str(DATA / "davis2016-train"))
    parser.add_argument("--cache", default="/work/notes/flicker_cache/plain")
    parser.add_argument("--memory-policy", default="sam2")
    parser.add_argument("--sequences", nargs="*")
    parser.add_argument("--specs", nargs="+", default=["off", "on"])
    parser.add_argument("--per-sequence", action="store_true")
    parser.add_argument("--check", action="store_true", help="assert the 'off' replay equals the cached run's PNGs")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache(args) if args.step == "cache" else evaluate(args)


if __name__ == "__main__":
    main()
