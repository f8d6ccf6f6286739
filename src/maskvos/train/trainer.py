"""`maskvos finetune`: train the light parts of a SAM2-family model on a few annotated videos and keep
the result as an adapter.

The image encoder stays frozen and its features are cached once (`features.py`); each step samples a
clip (`clips.py`), runs it through the model with memory (`rollout.py`) and takes SAM2's losses
(`losses.py`) on the chosen parts, fully or through LoRA factors (`maskvos.adapters`). Validation
segments the held-out sequences with the ordinary video session (base + current adapter) and scores
J&F; the adapter file always holds the best validated tensors. The run's state (trained tensors,
optimiser, random generators, history) is saved every few minutes and on Ctrl-C, and `resume`
continues it exactly.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from maskvos.adapters import (
    DEFAULT_PARTS,
    AdapterInfo,
    adapter_tensors,
    base_fingerprint,
    fold_tensors,
    in_parts,
    inject_lora,
    save_adapter,
)
from maskvos.errors import MaskvosError
from maskvos.eval.run import run_dataset
from maskvos.inference.config import InferenceConfig
from maskvos.io.files import atomic_path
from maskvos.model.sam2 import SAM2Model
from maskvos.train.clips import sample_clip
from maskvos.train.data import TrainSequence, read_dataset, split_validation
from maskvos.train.features import FeatureCache
from maskvos.train.rollout import clip_losses

STATE_VERSION = 1
#: Gradient-norm clip of SAM2's training.
GRAD_CLIP = 0.1


class FinetuneError(MaskvosError):
    """A fine-tuning run that cannot start or continue as asked."""


@dataclass(frozen=True)
class FinetuneSettings:
    """What `finetune` trains and how.

    Attributes:
        data: DAVIS-layout dataset root.
        base: the model name or checkpoint path to start from.
        out: the adapter file to write (safetensors).
        parts: trained parts (see `maskvos.adapters.PARTS`).
        lora_rank: 0 trains the parts' parameters fully; r > 0 trains rank-r factors of their linear layers.
        lora_alpha: LoRA scale numerator (default: the rank, a scale of 1).
        frames_per_clip: frames per training clip (the first prompted).
        steps: optimiser steps.
        lr: peak learning rate (default 1e-4 full, 1e-3 LoRA), after a 5 % linear warm-up, cosine to 10 %.
        weight_decay: AdamW's.
        max_objects: objects per clip.
        resolution: model input side (default: the checkpoint's native size).
        val: validation split (see `split_validation`).
        val_every: steps between validations (default: a tenth of the run, at least 10).
        patience: stop after this many validations without a better J&F (0: never).
        seed: of clip sampling and the validation split.
        save_seconds: the run's state is saved this often.
        device: "cpu" or "cuda" (default: CUDA when available).
        work_dir: state, history and validation outputs (default: `<out without suffix>.finetune/`).
        cache_dir: cached features (default: `<work_dir>/features`).
    """

    data: Path
    base: str
    out: Path
    parts: tuple[str, ...] = DEFAULT_PARTS
    lora_rank: int = 0
    lora_alpha: float | None = None
    frames_per_clip: int = 8
    steps: int = 1000
    lr: float | None = None
    weight_decay: float = 0.01
    max_objects: int = 3
    resolution: int | None = None
    val: str | None = None
    val_every: int | None = None
    patience: int = 5
    seed: int = 0
    save_seconds: float = 300.0
    device: str | None = None
    work_dir: Path | None = None
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.frames_per_clip < 2:
            raise FinetuneError(f"--frames-per-clip {self.frames_per_clip} is too few; use 2 or more (SAM2 trains on 8).")
        if self.steps < 1:
            raise FinetuneError(f"--steps {self.steps} is not supported; use 1 or more.")
        if self.lora_rank < 0:
            raise FinetuneError(f"--lora {self.lora_rank} is not supported; use 0 (full fine-tuning) or a rank of 1 or more.")
        if self.max_objects < 1:
            raise FinetuneError("max_objects must be at least 1.")

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else (1e-3 if self.lora_rank else 1e-4)

    @property
    def work(self) -> Path:
        return self.work_dir or self.out.with_name(self.out.stem + ".finetune")

    def signature(self) -> dict[str, object]:
        """Everything that changes the result (a resumed run must match it)."""
        keep = ("parts", "lora_rank", "lora_alpha", "frames_per_clip", "steps", "lr", "weight_decay", "max_objects", "resolution", "val", "seed")
        sig = {k: getattr(self, k) for k in keep}
        sig["parts"] = list(self.parts)
        sig["data"] = str(Path(self.data).resolve())
        return sig


@dataclass
class FinetuneResult:
    """What a run did."""

    adapter: Path
    steps_done: int
    val_before: float | None
    val_best: float | None
    best_step: int
    seconds_per_step: float
    stopped_early: bool
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def adapter_bytes(self) -> int:
        return self.adapter.stat().st_size


def lr_at(step: int, steps: int, peak: float) -> float:
    """Linear warm-up over the first 5 % of steps, then cosine decay to 10 % of the peak."""
    warm = max(1, round(0.05 * steps))
    if step < warm:
        return peak * (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


class _Run:
    """The mutable state of one fine-tuning run (what the state file holds)."""

    def __init__(self, settings: FinetuneSettings, model: SAM2Model, fingerprint: str) -> None:
        self.settings = settings
        self.model = model
        self.fingerprint = fingerprint
        self.step = 0
        self.rng = np.random.default_rng(settings.seed)
        self.history: list[dict[str, float]] = []
        self.val_before: float | None = None
        self.best_jf: float | None = None
        self.best_step = 0
        self.best_tensors: dict[str, torch.Tensor] | None = None
        self.bad_validations = 0
        self.train_seconds = 0.0
        self.trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.optimizer = torch.optim.AdamW(self.trainable.values(), lr=settings.peak_lr, weight_decay=settings.weight_decay)

    def state(self) -> dict:
        return {
            "version": STATE_VERSION,
            "signature": self.settings.signature(),
            "fingerprint": self.fingerprint,
            "step": self.step,
            "trainable": {n: p.detach().cpu().clone() for n, p in self.trainable.items()},
            "optimizer": self.optimizer.state_dict(),
            "rng": self.rng.bit_generator.state,
            "history": self.history,
            "val_before": self.val_before,
            "best_jf": self.best_jf,
            "best_step": self.best_step,
            "best_tensors": self.best_tensors,
            "bad_validations": self.bad_validations,
            "train_seconds": self.train_seconds,
        }

    def load(self, state: dict, path: Path) -> None:
        if state.get("version") != STATE_VERSION or state.get("signature") != self.settings.signature():
            raise FinetuneError(
                f"The run state in {path} was made with other settings; run with the same options to resume, "
                "or delete the folder (or pass another --out) to start afresh."
            )
        if state.get("fingerprint") != self.fingerprint:
            raise FinetuneError(f"The run state in {path} was trained from another base model; pass the same --model/--checkpoint.")
        with torch.no_grad():
            for name, value in state["trainable"].items():
                self.trainable[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
        self.rng.bit_generator.state = state["rng"]
        self.history = state["history"]
        self.val_before = state["val_before"]
        self.best_jf = state["best_jf"]
        self.best_step = state["best_step"]
        self.best_tensors = state["best_tensors"]
        self.bad_validations = state["bad_validations"]
        self.train_seconds = state["train_seconds"]


def _load_base(settings: FinetuneSettings) -> tuple[SAM2Model, torch.device]:
    from maskvos.backends import backend_for  # the registry knows which names are SAM2 checkpoints

    backend = backend_for(settings.base)
    if backend.name != "sam2":
        raise FinetuneError(
            f"maskvos finetune trains SAM2-family models, not the {backend.name} backend; pass --model sam2.1-tiny "
            "(or another SAM2 name) or --checkpoint FILE."
        )
    device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FinetuneError("--device cuda was asked for but this machine has no usable CUDA GPU; use --device cpu.")
    model = backend.load(settings.base, device)
    return model, device


def _validation_set(val: list[TrainSequence], work: Path) -> Path:
    """A DAVIS-layout folder of links to the validation frames and annotations (held-out tails included)."""
    root = work / "valdata"
    if root.exists():
        shutil.rmtree(root)
    for seq in val:
        for sub, files in (("JPEGImages", seq.frames), ("Annotations", seq.annotations)):
            folder = root / sub / seq.name
            folder.mkdir(parents=True, exist_ok=True)
            for path in files:
                link = folder / path.name
                try:
                    os.symlink(path.resolve(), link)
                except OSError:
                    shutil.copyfile(path, link)
    return root


def _adapter_info(settings: FinetuneSettings, model: SAM2Model, fingerprint: str, run: _Run, resolution: int) -> AdapterInfo:
    return AdapterInfo(
        kind="lora" if settings.lora_rank else "full",
        base_fingerprint=fingerprint,
        base_name=settings.base,
        base_config=model.config.name,
        parts=settings.parts,
        rank=settings.lora_rank,
        alpha=float(settings.lora_alpha if settings.lora_alpha is not None else settings.lora_rank),
        extra={
            "resolution": resolution,
            "steps": run.step,
            "best_step": run.best_step,
            "val_jf_before": run.val_before,
            "val_jf": run.best_jf,
            "frames_per_clip": settings.frames_per_clip,
            "data": Path(settings.data).name,
        },
    )


def finetune(settings: FinetuneSettings, resume: bool = False, notify: Callable[[str], None] | None = None) -> FinetuneResult:
    """Run (or continue) a fine-tuning run; returns what it did. See `FinetuneSettings`."""
    say = notify or (lambda _msg: None)
    sequences = read_dataset(settings.data)
    train, val = split_validation(sequences, settings.val, settings.seed)
    model, device = _load_base(settings)
    resolution = settings.resolution or model.image_size
    InferenceConfig(resolution=resolution)  # the same resolution check as segmenting
    model.check_resolution(resolution)
    fingerprint = base_fingerprint(model)
    pristine = copy.deepcopy(model)
    model.requires_grad_(False)
    if settings.lora_rank:
        inject_lora(model, settings.parts, settings.lora_rank, settings.lora_alpha)
    else:
        for name, param in model.named_parameters():
            param.requires_grad_(in_parts(name, settings.parts))
    run = _Run(settings, model, fingerprint)
    if not run.trainable:
        raise FinetuneError(f"The parts {','.join(settings.parts)} hold nothing to train in {model.config.name}; pick others with --train.")
    work = settings.work
    state_path = work / "state.pt"
    if state_path.exists() and not resume:
        raise FinetuneError(f"{work} already holds a fine-tuning run; pass --resume to continue it, or delete the folder to start afresh.")
    if resume and not state_path.exists():
        raise FinetuneError(f"There is no run to resume in {work}; run without --resume to start one.")
    work.mkdir(parents=True, exist_ok=True)
    if resume:
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise FinetuneError(f"The run state {state_path} cannot be read ({type(exc).__name__}); delete {work} to start afresh.") from None
        run.load(state, state_path)
        say(f"resuming at step {run.step}/{settings.steps}")
    cache = FeatureCache(model, settings.cache_dir or work / "features", resolution, fingerprint, device)
    cache.prepare(train, notify=say)
    val_root = _validation_set(val, work) if val else None

    def validate() -> float | None:
        if val_root is None:
            return None
        tensors = adapter_tensors(model, settings.parts)
        val_model = copy.deepcopy(pristine)
        fold_tensors(val_model, tensors, _adapter_info(settings, model, fingerprint, run, resolution))
        out = work / "val" / f"step-{run.step}"
        if out.exists():
            shutil.rmtree(out)
        result = run_dataset(val_root, val_model, out, config=InferenceConfig(resolution=resolution), model_name=settings.base)
        shutil.rmtree(out, ignore_errors=True)
        return float(result.report.summary.jf_mean)

    def save_state() -> None:
        with atomic_path(state_path) as tmp:
            torch.save(run.state(), tmp)
        _write_history(work / "history.csv", run.history)

    def write_adapter() -> None:
        tensors = run.best_tensors if run.best_tensors is not None else adapter_tensors(model, settings.parts)
        save_adapter(settings.out, tensors, _adapter_info(settings, model, fingerprint, run, resolution))

    val_every = settings.val_every or max(10, settings.steps // 10)
    if run.step == 0 and val_root is not None:
        run.val_before = validate()
        say(f"validation J&F before training: {run.val_before:.3f} ({len(val)} held-out sequences)")
    stopped_early = False
    last_save = last_log = time.monotonic()
    log_every = max(1, settings.steps // 50)
    try:
        while run.step < settings.steps:
            started = time.perf_counter()
            clip = sample_clip(run.rng, train, settings.frames_per_clip, resolution, settings.max_objects)
            losses = clip_losses(model, cache, clip, resolution)
            loss = torch.stack([x.total for x in losses]).mean()
            lr = lr_at(run.step, settings.steps, settings.peak_lr)
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(run.trainable.values()), GRAD_CLIP)
            run.optimizer.step()
            run.step += 1
            elapsed = time.perf_counter() - started
            run.train_seconds += elapsed
            row = {
                "step": run.step,
                "loss": float(loss.detach()),
                "focal": float(np.mean([x.focal for x in losses])),
                "dice": float(np.mean([x.dice for x in losses])),
                "iou": float(np.mean([x.iou for x in losses])),
                "score": float(np.mean([x.score for x in losses])),
                "lr": lr,
                "seconds": elapsed,
                "val_jf": float("nan"),
            }
            run.history.append(row)
            now = time.monotonic()
            if run.step % log_every == 0 or run.step == settings.steps or now - last_log > 15:
                per_step = run.train_seconds / max(1, len(run.history))
                eta = per_step * (settings.steps - run.step)
                recent = [r["loss"] for r in run.history[-log_every:]]
                say(
                    f"step {run.step}/{settings.steps}  loss {np.mean(recent):.4f}  lr {lr:.2e}  "
                    f"{per_step:.2f} s/step  ETA {_clock(eta)}"
                )
                last_log = now
            if val_root is not None and (run.step % val_every == 0 or run.step == settings.steps):
                jf = validate()
                row["val_jf"] = jf
                if run.best_jf is None or jf > run.best_jf + 1e-4:
                    run.best_jf, run.best_step, run.bad_validations = jf, run.step, 0
                    run.best_tensors = {k: v.clone() for k, v in adapter_tensors(model, settings.parts).items()}
                    write_adapter()
                else:
                    run.bad_validations += 1
                say(f"validation J&F {jf:.3f} at step {run.step} (best {run.best_jf:.3f} at step {run.best_step})")
                if settings.patience and run.bad_validations >= settings.patience:
                    say(f"stopping early: no better validation J&F in {run.bad_validations} validations")
                    stopped_early = True
                    break
            if time.monotonic() - last_save > settings.save_seconds:
                save_state()
                last_save = time.monotonic()
    except KeyboardInterrupt:
        save_state()
        raise FinetuneError(f"Interrupted at step {run.step}; the run is saved in {work}: run the same command with --resume to continue.") from None
    save_state()
    write_adapter()
    return FinetuneResult(
        adapter=settings.out,
        steps_done=run.step,
        val_before=run.val_before,
        val_best=run.best_jf,
        best_step=run.best_step,
        seconds_per_step=run.train_seconds / max(1, len(run.history)),
        stopped_early=stopped_early,
        history=run.history,
    )


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    if not history:
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"

