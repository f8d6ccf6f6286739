"""One video of a batch, as a worker runs it: prompts from the item, `segment_video` into the video's
folder (resuming a half-done run from its saved state), and an outcome that says what happened.

Everything here is plain data that pickles, so the same job runs in this process, in a process pool
or on a Ray actor; the model is loaded once per worker (`load_worker_model`) and kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from maskvos.app import (
    LoadedModel,
    PromptSpec,
    SaveSchedule,
    click_prompt,
    first_appearance_prompts,
    load_run_model,
    prompts_from_mask_file,
    segment_video,
    settings_for,
)
from maskvos.app.state import STATE_DIR
from maskvos.batch.manifest import BatchItem
from maskvos.errors import MaskvosError
from maskvos.inference.config import InferenceConfig
from maskvos.inference.temporal import parse_temporal_spec
from maskvos.io.frames import open_source


@dataclass(frozen=True)
class ModelSpec:
    """The model every worker loads: a published name or a checkpoint path, on a device."""

    source: str
    device: str | None = None
    #: With a published name that cannot be downloaded, run featmatch instead (mask prompts only).
    allow_fallback: bool = False
    #: A `maskvos finetune` adapter folded into the model (SAM2 models only).
    adapter: str | None = None


@dataclass(frozen=True)
class BatchSettings:
    """What every video of a batch is run with (the options of `maskvos segment`)."""

    formats: tuple[str, ...] = ("png",)
    config: InferenceConfig = field(default_factory=InferenceConfig)
    temporal: str = "off"
    direction: str = "forward"
    fps: float = 24.0
    save: SaveSchedule = field(default_factory=SaveSchedule)

    def signature(self, model_name: str) -> dict[str, object]:
        """What must be equal for a batch folder's finished videos to count as done."""
        return {
            "model": model_name,
            "settings": repr(self.config),
            "temporal": self.temporal,
            "formats": sorted(self.formats),
            "direction": self.direction,
        }


@dataclass
class VideoOutcome:
    """What happened to one video."""

    name: str
    row: str
    ok: bool
    out: str
    frames: int = 0
    num_frames: int | None = None
    seconds: float = 0.0
    objects: int = 0
    reason: str = ""
    resumed_at: int | None = None
    worker: str = ""

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, record: dict) -> VideoOutcome:
        return cls(**{k: record[k] for k in cls.__dataclass_fields__ if k in record})


def load_worker_model(spec: ModelSpec) -> LoadedModel:
    """The worker's model (loaded once, kept for every video it runs)."""
    return load_run_model(spec.source, spec.device, needs=frozenset(), allow_fallback=spec.allow_fallback, adapter=spec.adapter)


def run_item(loaded: LoadedModel, item: BatchItem, batch_out: Path, settings: BatchSettings, worker: str = "") -> VideoOutcome:
    """Segment one video into its folder; a user error fails this video only, with its sentence.

    A video whose folder holds a saved state (an interrupted run) continues from it."""
    out = item.out_dir(batch_out)
    began = time.perf_counter()
    outcome = VideoOutcome(name=item.name, row=item.row, ok=False, out=str(out), worker=worker)
    if item.problem:
        outcome.reason = item.problem
        return outcome
    try:
        source = open_source(item.source)
        prompts = _prompts(item, source)
        needs = frozenset().union(*(p.prompt_types for p in prompts))
        missing = needs - loaded.backend.prompt_types
        if missing:
            raise MaskvosError(
                f"Video '{item.name}' ({item.row}) is prompted with {', '.join(sorted(missing))}, which the "
                f"'{loaded.name}' model does not take; give it a mask prompt or run a SAM2 model."
            )
        resume = (out / STATE_DIR / "state.pt").is_file()
        summary = segment_video(
            loaded.model,
            source,
            prompts,
            out,
            formats=settings.formats,
            config=settings_for(loaded, settings.config),
            direction=settings.direction,
            resume=resume,
            model_name=loaded.name,
            fps=settings.fps,
            save=settings.save,
            postprocessors=parse_temporal_spec(settings.temporal),
            resume_hint=f"delete '{out}' to run this video afresh",
        )
    except MaskvosError as exc:
        outcome.reason = str(exc)
        outcome.seconds = time.perf_counter() - began
        return outcome
    except (OSError, ValueError, RuntimeError) as exc:  # an unreadable file, a broken frame: this video only
        outcome.reason = f"Video '{item.name}' ({item.row}) failed: {type(exc).__name__}: {exc}".rstrip(".") + "."
        outcome.seconds = time.perf_counter() - began
        return outcome
    outcome.ok = True
    outcome.frames = summary.frames_written
    outcome.num_frames = summary.num_frames
    outcome.seconds = summary.seconds
    outcome.objects = len(summary.obj_ids)
    outcome.resumed_at = summary.resumed_at
    return outcome


def _prompts(item: BatchItem, source) -> list[PromptSpec]:
    if item.first_appearance:
        assert item.prompt is not None
        prompts = first_appearance_prompts(Path(item.prompt), source)
        if not prompts:
            raise MaskvosError(f"Annotations '{item.prompt}' hold no object; add the first-frame mask of {item.name}.")
        return prompts
    prompts: list[PromptSpec] = []
    if item.prompt is not None:
        prompts += prompts_from_mask_file(item.prompt, source, item.frame, item.obj_id)
    if item.points or item.box is not None:
        prompts.append(click_prompt(item.frame, item.obj_id, item.points, item.box))
    return prompts
