"""featmatch test-time adaptation: J&F, frames per second and fit time with and without the head.

Builds (or reuses) the stress sets of a DAVIS-layout dataset (`maskvos.eval.stress`, kept in
--stress), segments the chosen kinds of sequence with `featmatch` for each head weight
(`maskvos.eval.run.run_dataset`: decode, features, fit, propagation, PNG writing; predictions kept
under --out so a rerun resumes and only re-measures), measures them (`maskvos.eval.stability`) and
prints one table: weight x set -> J&F, false-positive area while the object is hidden,
share of the prediction on the distractor, frames/s, fit seconds per video. Weight 0 is
adaptation off (`FeatMatchConfig(adapt=False)`, today's featmatch).

    python benchmarks/featmatch_adapt.py [--dataset ../shared/data/vos/davis2016-train]
        [--stress /tmp/stress-davis2016] [--out /tmp/featmatch-adapt] [--kinds plain occ40 distractor]
        [--weights 0 0.5] [--steps 200] [--sequences bus hockey] [--threads 2]

Frames per second come only from sequences segmented in this run (a resumed sequence has none), and
include the fit (which runs at the first tracked frame).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections import defaultdict
from pathlib import Path

import torch

from maskvos.backends import featmatch_adapt
from maskvos.backends.featmatch import FeatMatchConfig, FeatMatchModel
from maskvos.eval.run import run_dataset
from maskvos.eval.stability import stability_report, stress_group
from maskvos.eval.stress import build_stress_sets, read_manifest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vos"
KINDS = ("plain", "occ5", "occ15", "occ40", "distractor")

#: (wall, CPU) seconds of every fit of this process (the benchmark times `fit_head` from outside);
#: CPU seconds (all threads) stay meaningful on a loaded machine, where wall seconds do not.
FITS: list[tuple[float, float]] = []


def _timed_fit(fit):
    def timed(*args, **kwargs):
        start, cpu = time.perf_counter(), time.process_time()
        head = fit(*args, **kwargs)
        FITS.append((time.perf_counter() - start, time.process_time() - cpu))
        return head

    return timed


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(DATA / "davis2016-train"))
    parser.add_argument("--stress", default="/tmp/stress-davis2016", help="stress dataset folder (built if absent)")
    parser.add_argument("--out", default="/tmp/featmatch-adapt", help="predictions, <out>/<config>/<seq>/")
    parser.add_argument("--kinds", nargs="+", default=["plain", "occ40"], choices=KINDS)
    parser.add_argument("--weights", nargs="+", type=float, default=[0.0, 0.5], help="head weights (0: adaptation off)")
    parser.add_argument("--steps", type=int, default=FeatMatchConfig.adapt_steps)
    parser.add_argument("--sequences", nargs="*", help="only these source sequences")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    featmatch_adapt.fit_head = _timed_fit(featmatch_adapt.fit_head)

    stress = Path(args.stress)
    manifest = read_manifest(stress)
    if manifest is None:
        print(f"building stress sets of {args.dataset} in {stress} ...", flush=True)
        lengths = tuple(int(k[3:]) for k in args.kinds if k.startswith("occ"))
        manifest = build_stress_sets(args.dataset, stress, occlusion=lengths, distractor="distractor" in args.kinds, seed=args.seed)
    groups: dict[str, list[str]] = defaultdict(list)
    for name, seq in manifest.sequences.items():
        if not args.sequences or seq.source_sequence in args.sequences:
            groups[stress_group({"kind": seq.kind, "length": seq.length})].append(name)
    # Only the asked kinds are segmented (two processes may share --out, one kind each); the plain
    # predictions already under --out are measured too (re-detection on an occlusion set needs them).
    names = sorted(n for g in args.kinds for n in groups.get(g, []))
    rows = []
    for weight in args.weights:
        config = dataclasses.replace(FeatMatchConfig(), adapt=weight > 0, adapt_weight=weight, adapt_steps=args.steps)
        label = "off" if weight == 0 else f"w={weight:g},steps={args.steps}"
        model = FeatMatchModel(config)
        print(f"featmatch {config}; runtime {model.runtime}; matching in {model.match_dtype}; {args.threads} threads", flush=True)
        out = Path(args.out) / ("off" if weight == 0 else f"w{weight:g}-s{args.steps}")
        speed: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0, 0.0])

        def on_sequence(name: str, frames: int, seconds: float, speed=speed, label=label) -> None:
            seq = manifest.sequences[name]
            entry = speed[stress_group({"kind": seq.kind, "length": seq.length})]
            fit, fit_cpu = sum(f[0] for f in FITS), sum(f[1] for f in FITS)
            FITS.clear()
            if frames:  # a sequence found complete was not segmented in this run
                entry[0] += frames
                entry[1] += seconds
                entry[2] += fit
                entry[3] += 1
                entry[4] += fit_cpu
            print(f"  {label} {name}: {frames} frames in {seconds:.1f} s (fit {fit:.1f} s, {fit_cpu:.1f} CPU s)", flush=True)

        start = time.perf_counter()
        run_dataset(stress, model, out, sequences=names, on_sequence=on_sequence)
        print(f"{label}: segmented in {time.perf_counter() - start:.0f} s", flush=True)
        plain = [n for n in groups.get("plain", []) if n not in names and (out / n).is_dir()]
        summary = stability_report(stress, out, sequences=sorted(names + plain)).summary()
        for group in [g for g in KINDS if g in args.kinds]:
            s = summary.get(group)
            if s is None:
                continue
            frames, seconds, fit, videos, fit_cpu = speed[group]
            fps = frames / seconds if seconds and frames else float("nan")
            per_video = (fit / videos, fit_cpu / videos) if videos and weight > 0 else (float("nan"), float("nan"))
            rows.append((label, group, len(groups[group]), s, fps, per_video))
    print("\n| adaptation | set | J&F | FP area hidden | distractor share | frames/s | fit per video: wall s (CPU s) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, group, count, s, fps, (fit, fit_cpu) in rows:
        print(f"| {label} | {group} ({count}) | {_fmt(s.get('jf'))} | {_fmt(s.get('fp_area'))} | "
              f"{_fmt(s.get('distractor_share'))} | {_fmt(fps, 2)} | {_fmt(fit, 1)} ({_fmt(fit_cpu, 1)}) |")


if __name__ == "__main__":
    main()
