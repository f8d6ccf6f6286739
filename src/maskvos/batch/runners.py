"""Where the videos of a batch run: in this process, in a pool of processes, or on Ray actors.

Each worker loads the model once and runs one video at a time (`run_item`); outcomes come back as
videos end, in any order. A worker that dies (killed, out of memory) takes its video with it: the
video is given to a fresh worker, which continues it from its saved state, at most `MAX_ATTEMPTS`
times in all.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from maskvos.app import LoadedModel
from maskvos.batch.jobs import BatchSettings, ModelSpec, VideoOutcome, load_worker_model, run_item
from maskvos.batch.ledger import BatchError
from maskvos.batch.manifest import BatchItem

#: A video whose worker died this many times fails (it is likely what kills the worker).
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Job:
    item: BatchItem
    batch_out: Path
    settings: BatchSettings


def _failed(job: Job, reason: str) -> VideoOutcome:
    """The outcome of a video that ended without one of its own (its worker died or raised)."""
    return VideoOutcome(name=job.item.name, row=job.item.row, ok=False, out=str(job.item.out_dir(job.batch_out)),
                        reason=reason)


def _raised(job: Job, exc: BaseException) -> VideoOutcome:
    return _failed(job, f"Video '{job.item.name}' ({job.item.row}) failed: {type(exc).__name__}: {exc}".rstrip(".") + ".")


def _died(job: Job, what: str) -> VideoOutcome:
    return _failed(job, f"Video '{job.item.name}' ({job.item.row}) stopped its worker {MAX_ATTEMPTS} times ({what}); "
                        "check it on its own with maskvos segment (too long for the memory?).")


def run_serial(loaded: LoadedModel, jobs: Sequence[Job]) -> Iterator[VideoOutcome]:
    """Every video in this process, one after another, with the model already loaded."""
    for job in jobs:
        yield run_item(loaded, job.item, job.batch_out, job.settings, worker="main")


# --- a local process pool ------------------------------------------------------------------------

#: The pool worker's model, loaded by `_pool_init` once per process.
_POOL_MODEL: LoadedModel | None = None


def _pool_init(spec: ModelSpec, threads: int) -> None:
    global _POOL_MODEL
    import torch

    torch.set_num_threads(threads)
    _POOL_MODEL = load_worker_model(spec)


def _pool_run(job: Job) -> VideoOutcome:
    assert _POOL_MODEL is not None, "pool worker used before its initializer ran"
    return run_item(_POOL_MODEL, job.item, job.batch_out, job.settings, worker=f"pid {os.getpid()}")


def threads_per_worker(workers: int) -> int:
    """This machine's cores shared among `workers` workers (at least one each)."""
    return max(1, (os.cpu_count() or 1) // workers)


def run_pool(spec: ModelSpec, jobs: Sequence[Job], workers: int) -> Iterator[VideoOutcome]:
    """The videos on `workers` processes (spawned: each loads the model once and uses
    cores / workers threads). A pool broken by a dead worker is replaced; its unfinished videos run
    again, from their saved states."""
    attempts = {id(job): 0 for job in jobs}
    pending = list(jobs)
    context = multiprocessing.get_context("spawn")
    while pending:
        pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_pool_init,
                                      initargs=(spec, threads_per_worker(workers)))
        broken: list[Job] = []
        try:
            futures = {pool.submit(_pool_run, job): job for job in pending}
            for future in cf.as_completed(futures):
                job = futures[future]
                try:
                    outcome = future.result()
                except BrokenProcessPool:
                    broken.append(job)
                    continue
                except Exception as exc:  # anything run_item did not turn into an outcome: this video only
                    outcome = _raised(job, exc)
                yield outcome
        finally:
            pool.shutdown(wait=not broken, cancel_futures=True)
        pending = []
        for job in broken:
            attempts[id(job)] += 1
            if attempts[id(job)] >= MAX_ATTEMPTS:
                yield _died(job, "a pool process ended unexpectedly")
            else:
                pending.append(job)


# --- Ray ----------------------------------------------------------------------------------------


class _RayWorker:
    """A Ray actor holding one model (wrapped by `ray.remote` in `run_ray`)."""

    def __init__(self, spec: ModelSpec, threads: int) -> None:
        _pool_init(spec, threads)
        self.name = f"ray actor pid {os.getpid()}"

    def run(self, job: Job) -> VideoOutcome:
        assert _POOL_MODEL is not None
        return run_item(_POOL_MODEL, job.item, job.batch_out, job.settings, worker=self.name)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise BatchError("--ray needs the 'ray' package; install it with pip install 'maskvos[ray]'.") from None
    return ray


def ray_plan(address: str, workers: int | None, spec: ModelSpec) -> tuple[int, dict[str, float], ModelSpec]:
    """Connect to Ray ("local": start one on this machine) and choose the actors: one per GPU of the
    cluster where it has GPUs (unless the device asked is "cpu"), else `workers` (default 1) CPU
    actors. Returns (actors, resources of each, the spec the actors load)."""
    ray = _import_ray()
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        try:
            if address == "local":
                os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private instance for this batch only
                ray.init(**kwargs)
            else:
                ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise BatchError(f"Cannot reach the Ray cluster at '{address}' ({exc}); check the address (ray status) or use --ray local.") from None
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = max(1, int(resources.get("CPU", 1)))
    if gpus and spec.device != "cpu":
        count = workers or gpus
        return count, {"num_gpus": 1, "num_cpus": max(1, cpus // count)}, ModelSpec(spec.source, "cuda", spec.allow_fallback)
    count = workers or 1
    return count, {"num_cpus": max(1, cpus // count)}, ModelSpec(spec.source, spec.device or "cpu", spec.allow_fallback)


def run_ray(spec: ModelSpec, jobs: Sequence[Job], address: str, workers: int | None) -> Iterator[VideoOutcome]:
    """One Ray task per video on actors that each load the model once. The files (videos, prompts,
    the output folder) must be at the same paths on every node (a shared file system)."""
    ray = _import_ray()
    started = not ray.is_initialized()
    count, resources, actor_spec = ray_plan(address, workers, spec)
    actor_cls = ray.remote(**resources)(_RayWorker)
    threads = max(1, int(resources["num_cpus"]))
    idle = [actor_cls.remote(actor_spec, threads) for _ in range(min(count, len(jobs)))]
    queue = list(jobs)
    attempts = {id(job): 0 for job in jobs}
    running: dict[object, tuple[object, Job]] = {}
    try:
        while queue or running:
            while queue and idle:
                actor, job = idle.pop(), queue.pop(0)
                running[actor.run.remote(job)] = (actor, job)
            done, _ = ray.wait(list(running), num_returns=1)
            actor, job = running.pop(done[0])
            try:
                outcome = ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:  # raised inside the task: this video only
                idle.append(actor)
                yield _raised(job, exc.cause if getattr(exc, "cause", None) is not None else exc)
                continue
            except ray.exceptions.RayActorError:
                attempts[id(job)] += 1
                idle.append(actor_cls.remote(actor_spec, threads))  # a fresh actor in the dead one's place
                if attempts[id(job)] >= MAX_ATTEMPTS:
                    yield _died(job, "its Ray actor died")
                else:
                    queue.insert(0, job)
                continue
            idle.append(actor)
            yield outcome
    finally:
        for ref in running:
            ray.cancel(ref, force=True)
        for actor in idle + [a for a, _ in running.values()]:
            ray.kill(actor)
        if started:
            ray.shutdown()
