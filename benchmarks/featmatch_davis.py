"""J&F and end-to-end speed of the offline `featmatch` backend on DAVIS-layout data.

Runs `maskvos.eval.run_dataset` (decode, features, propagation, PNG writing, then the DAVIS
evaluation) on each dataset and prints the per-sequence table, the overall J&F and frames per
second. Predictions go to a temporary folder unless --out is given (then a rerun resumes).

    python benchmarks/featmatch_davis.py [--datasets ../shared/data/vos/davis2016-train ...]
        [--sequences bus hockey] [--threads 2] [--set recent_frames=2 key_dims=None ...]

`--set` overrides FeatMatchConfig fields (Python literals), for ablations; the settings before this
issue's changes were: recent_frames=2 prompt_margin=None prompt_background_stride=1 key_dims=None
precision="float32".

Issue-4 targets on davis2016-train (20 sequences, 2 threads): J&F >= 0.78 at >= 4 frames/s.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from maskvos.backends.featmatch import FeatMatchConfig, FeatMatchModel
from maskvos.eval.run import run_dataset

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vos"


def runtime_report(model: FeatMatchModel) -> str:
    """What runs the work: matching dtype and kernels, ATen's CPU capability, oneDNN's and MKL's
    instruction-set caps (environment), ONNX Runtime's version and providers."""
    import os

    import maskvos.backends.featmatch_kernels as kernels

    env = {v: os.environ[v] for v in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS") if v in os.environ}
    lines = [
        f"matching: {model.match_dtype}; window and prompt top-k by {kernels._GROUPS} group maxima, "
        f"affinities in chunks of {kernels.CHUNK_ELEMENTS} elements",
        f"torch {torch.__version__}: ATen CPU capability {torch.backends.cpu.get_cpu_capability()}; "
        f"oneDNN bf16 usable {torch.ops.mkldnn._is_mkldnn_bf16_supported()}; caps from environment {env or 'none'}",
    ]
    try:
        import onnxruntime as ort

        lines.append(
            f"onnxruntime {ort.__version__}: providers {ort.get_available_providers()} "
            "(no switch caps its instruction set: MLAS picks AVX-512 where the CPU has it)"
        )
    except ImportError:
        lines.append("onnxruntime: not installed (Lite0 runs in PyTorch)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=[str(DATA / "davis2016-train"), str(DATA / "davis2017-lowres")])
    parser.add_argument("--sequences", nargs="*", help="only these sequences (of every dataset)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="keep predictions here (<out>/<dataset>/<seq>/); default: a temporary folder")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="FeatMatchConfig overrides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fields = {f.name for f in dataclasses.fields(FeatMatchConfig)}
    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in fields:
            parser.error(f"--set {item}: FeatMatchConfig has no field {name!r} (fields: {', '.join(sorted(fields))})")
        overrides[name] = ast.literal_eval(value)
    config = dataclasses.replace(FeatMatchConfig(), **overrides)
    model = FeatMatchModel(config)
    print(f"featmatch {config}; {args.threads} threads; runtime {model.runtime}; matching in {model.match_dtype}")
    print(runtime_report(model))
    with tempfile.TemporaryDirectory() as tmp:
        out_root = Path(args.out) if args.out else Path(tmp)
        for dataset in args.datasets:
            dataset = Path(dataset)
            start = time.perf_counter()
            run = run_dataset(dataset, model, out_root / dataset.name, sequences=args.sequences, model_name="featmatch")
            print(f"\n## {dataset.name}\n")
            print(run.report.table())
            print(
                f"\n{dataset.name}: J&F {run.report.summary.jf_mean:.3f} over {len(run.report.sequences)} sequences; "
                f"{run.frames} frames at {run.fps:.2f} frames/s end to end (wall {time.perf_counter() - start:.0f} s with evaluation)"
            )


if __name__ == "__main__":
    main()
