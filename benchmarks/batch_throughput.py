"""Batch throughput: the same videos through `maskvos batch` in one process, in a process pool and on
Ray (local), end to end as a user runs it (the CLI in a subprocess: start-up, model loading and Ray
included), then the cost of resuming.

    python benchmarks/batch_throughput.py [--dataset ../shared/data/vos/davis2016-train] [--model featmatch]

Prints, per runner: wall seconds, frames/s, the seconds spent inside the videos' runs (from the
batch's ledger), and the overhead per video = (wall x workers - seconds inside videos) / videos, i.e.
what each video costs beyond its own segmentation (start-up, model loading per worker, idle workers
at the end of the batch). Then: a rerun of a finished batch (every video skipped), and a batch
interrupted (SIGINT) half-way and run again: its wall time against the uninterrupted run's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _batch(dataset: Path, out: Path, model: str, extra: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "maskvos", "batch", str(dataset), "--out", str(out), "--model", model,
                    "--quiet", *extra], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def _ledger(out: Path) -> list[dict]:
    path = out / "batch.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "data" / "vos" / "davis2016-train"))
    parser.add_argument("--model", default="featmatch")
    parser.add_argument("--runners", nargs="+", default=["serial", "workers2", "ray", "ray2"])
    args = parser.parse_args()
    dataset = Path(args.dataset)
    runners = {"serial": [], "workers2": ["--workers", "2"], "ray": ["--ray", "local"],
               "ray2": ["--ray", "local", "--workers", "2"]}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        for name in args.runners:
            out = tmp_path / name
            wall = _batch(dataset, out, args.model, runners[name])
            ledger = _ledger(out)
            frames = sum(r["frames"] for r in ledger)
            inside = sum(r["seconds"] for r in ledger)
            workers = 2 if "--workers" in runners[name] else 1  # --ray alone: one CPU actor with every core
            rows.append((name, len(ledger), frames, wall, frames / wall, inside, (wall * workers - inside) / len(ledger)))
            print(f"{name}: {wall:.1f} s", file=sys.stderr, flush=True)
        print(f"{'runner':<10} {'videos':>6} {'frames':>6} {'wall s':>8} {'frames/s':>8} {'in videos s':>11} {'overhead s/video':>16}")
        for name, n, frames, wall, fps, inside, overhead in rows:
            print(f"{name:<10} {n:>6} {frames:>6} {wall:>8.1f} {fps:>8.2f} {inside:>11.1f} {overhead:>16.2f}")
        # resuming: a finished batch run again, then one interrupted half-way
        first = args.runners[0]
        rerun = _batch(dataset, tmp_path / first, args.model, runners[first])
        print(f"\nrerun of the finished '{first}' batch (every video skipped): {rerun:.1f} s")
        out = tmp_path / "interrupted"
        began = time.perf_counter()
        saves = ["--save-every", "10"]  # a video's state every 10 frames, so the interrupted one is half done
        proc = subprocess.Popen([sys.executable, "-m", "maskvos", "batch", str(dataset), "--out", str(out),
                                 "--model", args.model, "--quiet", *runners[first], *saves], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        total = rows[0][1]
        while proc.poll() is None and len(_ledger(out)) < total // 2:
            time.sleep(0.2)
        time.sleep(3.0)  # into the next video, past its first saves
        os.kill(proc.pid, signal.SIGINT)
        proc.wait()
        first_part = time.perf_counter() - began
        done_before = len(_ledger(out))
        second_part = _batch(dataset, out, args.model, [*runners[first], *saves])
        resumed = [r for r in _ledger(out)[done_before:] if r.get("resumed_at") is not None]
        print(f"interrupted after {done_before} of {total} videos ({first_part:.1f} s), run again: {second_part:.1f} s; "
              f"total {first_part + second_part:.1f} s against {rows[0][3]:.1f} s uninterrupted "
              f"({len(resumed)} video resumed from its saved state"
              + (f" at frame {resumed[0]['resumed_at']}" if resumed else "") + ")")


if __name__ == "__main__":
    main()
