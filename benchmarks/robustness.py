"""Robustness of the offline `featmatch` backend: every memory policy (with and without temporal
smoothing) on the plain, occlusion and distractor sets of a stress dataset.

Builds the stress sets of a DAVIS-layout dataset once (`maskvos.eval.stress`, kept in --stress so a
rerun reuses them), segments the chosen kinds of sequence with each configuration
(`maskvos.eval.run.run_dataset`: decode, features, propagation, post-processing, PNG writing;
predictions kept under --out so an interrupted benchmark resumes), measures them
(`maskvos.eval.stability`) and prints one table: configuration x set -> J&F, re-detection J ratio,
frames to recover, false-positive area while hidden, distractor share, flicker, frames per second.

    python benchmarks/robustness.py [--dataset ../shared/data/vos/davis2016-train]
        [--stress /tmp/stress-davis2016] [--out /tmp/robustness] [--kinds plain occ5 occ15 occ40 distractor]
        [--configs sam2 confident confident+smooth] [--threads 2]

A configuration is a policy name, optionally with "+smooth" (`--temporal-smoothing on`).
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict
from pathlib import Path

import torch

from maskvos.backends.featmatch import FeatMatchModel
from maskvos.eval.run import run_dataset
from maskvos.eval.stability import stability_report, stress_group
from maskvos.eval.stress import build_stress_sets, read_manifest
from maskvos.inference.config import InferenceConfig
from maskvos.inference.temporal import temporal_chain

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vos"
KINDS = ("plain", "occ5", "occ15", "occ40", "distractor")


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(DATA / "davis2016-train"))
    parser.add_argument("--stress", default="/tmp/stress-davis2016", help="stress dataset folder (built if absent)")
    parser.add_argument("--out", default="/tmp/robustness", help="predictions, <out>/<config>/<seq>/")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--configs", nargs="+", default=["sam2", "confident", "sam2+smooth", "confident+smooth"])
    parser.add_argument("--sequences", nargs="*", help="only these source sequences")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    stress = Path(args.stress)
    manifest = read_manifest(stress)
    if manifest is None:
        print(f"building stress sets of {args.dataset} in {stress} ...", flush=True)
        manifest = build_stress_sets(args.dataset, stress, occlusion=(5, 15, 40), distractor=True, seed=args.seed)
    groups: dict[str, list[str]] = defaultdict(list)
    for name, seq in manifest.sequences.items():
        if args.sequences and seq.source_sequence not in args.sequences:
            continue
        group = stress_group({"kind": seq.kind, "length": seq.length})
        groups[group].append(name)
    # Re-detection needs the plain runs: they are segmented whenever an occlusion set is asked for.
    wanted = set(args.kinds) | ({"plain"} if any(k.startswith("occ") for k in args.kinds) else set())
    names = sorted(n for g in wanted for n in groups.get(g, []))
    model = FeatMatchModel()
    print(f"featmatch {model.config}; runtime {model.runtime}; matching in {model.match_dtype}; "
          f"ATen CPU capability {torch.backends.cpu.get_cpu_capability()}; {args.threads} threads", flush=True)
    rows = []
    for config_name in args.configs:
        policy, _, extra = config_name.partition("+")
        smooth = extra == "smooth"
        out = Path(args.out) / config_name
        speed: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])

        def on_sequence(name: str, frames: int, seconds: float, speed=speed, config_name=config_name) -> None:
            group = stress_group({"kind": manifest.sequences[name].kind, "length": manifest.sequences[name].length})
            speed[group][0] += frames
            speed[group][1] += seconds
            print(f"  {config_name} {name}: {frames} frames in {seconds:.1f} s", flush=True)

        start = time.perf_counter()
        run_dataset(stress, model, out, sequences=names, config=InferenceConfig(memory_policy=policy),
                    on_sequence=on_sequence, postprocessors=(lambda: temporal_chain()) if smooth else ())
        print(f"{config_name}: segmented in {time.perf_counter() - start:.0f} s", flush=True)
        summary = stability_report(stress, out, sequences=names).summary()
        for group in [g for g in KINDS if g in args.kinds]:
            s = summary.get(group)
            if s is None:
                continue
            frames, seconds = speed[group]
            rows.append((config_name, group, s, frames / seconds if seconds and frames else float("nan")))
    print("\n| configuration | set | J&F | re-detection J ratio | frames to recover (never) | FP area hidden | "
          "distractor share | flicker % | flicker / area | frames/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for config_name, group, s, fps in rows:
        never = int(s.get("never_recovered", 0) or 0) if not math.isnan(s.get("never_recovered", float("nan"))) else 0
        recover = f"{_fmt(s.get('frames_to_recover'), 1)} ({never})" if group.startswith("occ") else "-"
        print(f"| {config_name} | {group} | {_fmt(s.get('jf'))} | {_fmt(s.get('redetect_ratio'))} | {recover} | "
              f"{_fmt(s.get('fp_area'))} | {_fmt(s.get('distractor_share'))} | {_fmt(100 * s.get('flicker', float('nan')), 3)} | "
              f"{_fmt(s.get('flicker_per_area'), 4)} | {_fmt(fps, 2)} |")


if __name__ == "__main__":
    main()
