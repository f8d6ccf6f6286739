"""A batch: every video of a manifest segmented into its own folder, resumably, on the runner asked.

`run_batch` loads the model once here (so a bad checkpoint or an offline download fails the batch
before any video, and the offline fall-back is decided once), skips the videos the folder's ledger
has as finished, runs the others (continuing half-done ones from their saved states), records each
outcome as it arrives and reports progress over the whole batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from maskvos.app import LoadedModel
from maskvos.batch.jobs import BatchSettings, ModelSpec, VideoOutcome
from maskvos.batch.ledger import BatchError, BatchLedger
from maskvos.batch.manifest import BatchItem
from maskvos.batch.runners import Job, run_pool, run_ray, run_serial
from maskvos.io.writers import prepare_output_dir, resolve_formats


@dataclass
class BatchSummary:
    """What a batch run did: this run's outcomes, and the videos skipped as already finished."""

    outcomes: list[VideoOutcome]
    skipped: list[str]
    seconds: float
    runner: str
    out_dir: Path
    earlier: dict[str, VideoOutcome] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return sum(o.frames for o in self.outcomes)

    @property
    def failures(self) -> list[VideoOutcome]:
        return [o for o in self.outcomes if not o.ok]

    def table(self) -> str:
        """The summary table: one row per video (this run's, then the skipped ones), and a total."""
        rows = [("video", "status", "frames", "seconds", "frames/s", "objects")]
        for o in self.outcomes:
            status = "done" if o.ok else "FAILED"
            if o.ok and o.resumed_at is not None:
                status = f"resumed at {o.resumed_at}"
            rate = f"{o.frames / o.seconds:.2f}" if o.ok and o.seconds > 0 and o.frames else ""
            rows.append((o.name, status, str(o.frames), f"{o.seconds:.1f}", rate, str(o.objects) if o.ok else ""))
        for name in self.skipped:
            before = self.earlier.get(name)
            rows.append((name, "finished before", str(before.frames) if before else "", "", "", str(before.objects) if before else ""))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        done = sum(o.ok for o in self.outcomes)
        lines.append(
            f"{done} of {len(self.outcomes)} video(s) segmented ({len(self.skipped)} finished before), {self.frames} frames "
            f"in {self.seconds:.1f} s: {rate:.2f} frames/s ({self.runner})"
        )
        for o in self.failures:
            lines.append(f"  failed {o.name}: {o.reason}")
        return "\n".join(lines)


class BatchProgress:
    """Progress over the whole batch: one line per video as it ends, with the batch's videos done,
    frames per second and time left (from the seconds per video so far)."""

    def __init__(self, total: int, emit: Callable[[str], None]) -> None:
        self.total, self.emit = total, emit
        self.done = 0
        self.frames = 0
        self.began = time.perf_counter()

    def video(self, outcome: VideoOutcome) -> None:
        self.done += 1
        self.frames += outcome.frames
        elapsed = time.perf_counter() - self.began
        rate = self.frames / elapsed if elapsed > 0 else 0.0
        left = elapsed / self.done * (self.total - self.done)
        if outcome.ok:
            fps = f" ({outcome.frames / outcome.seconds:.2f} frames/s)" if outcome.seconds > 0 and outcome.frames else ""
            resumed = f", resumed at frame {outcome.resumed_at}" if outcome.resumed_at is not None else ""
            what = f"{outcome.frames} frames in {outcome.seconds:.1f} s{fps}, {outcome.objects} object(s){resumed}"
        else:
            what = f"FAILED: {outcome.reason}"
        width = len(str(self.total))
        self.emit(
            f"[{self.done:>{width}}/{self.total}] {outcome.name}: {what} | batch {rate:.2f} frames/s, "
            f"ETA {_clock(left)}"
        )


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def run_batch(
    items: Sequence[BatchItem],
    out_dir: str | Path,
    loaded: LoadedModel,
    model: ModelSpec,
    settings: BatchSettings | None = None,
    workers: int = 1,
    ray: str | None = None,
    emit: Callable[[str], None] | None = None,
) -> BatchSummary:
    """Segment every unfinished video of `items` into `out_dir/<name>/` (or its row's `out`).

    Arguments:
        loaded: the model, loaded here (the serial runner uses it; pool processes and Ray actors load
            `model` themselves, by the name `loaded` resolved to, so a fall-back is decided once).
        workers: processes (without `ray`; 1 runs in this process) or Ray actors (default: one per GPU).
        ray: None for no Ray, "local" to start Ray on this machine, or a cluster address.
        emit: where progress lines go (None: nowhere).
    """
    settings = settings or BatchSettings()
    resolve_formats(settings.formats)
    if workers < 1:
        raise BatchError(f"--workers {workers} is not a number of workers; use 1 or more.")
    out = prepare_output_dir(Path(out_dir).absolute())
    began = time.perf_counter()
    ledger = BatchLedger(out, settings.signature(loaded.name))
    todo = [item for item in items if not ledger.is_finished(item.name)]
    skipped = [item.name for item in items if ledger.is_finished(item.name)]
    jobs = [Job(item, out, settings) for item in todo]
    resolved = ModelSpec(loaded.name if loaded.fell_back else model.source, model.device, allow_fallback=False)
    if ray is not None:
        runner, outcomes = f"Ray {ray}", run_ray(resolved, jobs, ray, workers if workers > 1 else None)
    elif workers > 1 and len(jobs) > 1:
        runner, outcomes = f"{workers} processes", run_pool(resolved, jobs, workers)
    else:
        runner, outcomes = "1 process", run_serial(loaded, jobs)
    progress = BatchProgress(len(jobs), emit) if emit else None
    if emit and skipped:
        emit(f"{len(skipped)} of {len(items)} video(s) finished before in '{out}'; running the other {len(jobs)}")
    results: list[VideoOutcome] = []
    for outcome in outcomes:
        ledger.record(outcome)
        results.append(outcome)
        if progress:
            progress.video(outcome)
    order = {item.name: i for i, item in enumerate(items)}
    results.sort(key=lambda o: order.get(o.name, len(order)))
    return BatchSummary(results, skipped, time.perf_counter() - began, runner, out,
                        earlier={n: ledger.outcomes[n] for n in skipped})
