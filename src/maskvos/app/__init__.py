"""The application layer: what every front end (CLI, evaluation runs, later a server and batch runs)
composes, written once: model loading with the offline fall-back and the device choice
(`models`), prompts from files (`prompts`), the run itself, session -> post-processing -> writers
with periodic state saves and resume (`segment`, `state`), progress (`progress`), and the
conversion of existing results into other formats (`export`)."""

from __future__ import annotations

from maskvos.app.export import EXPORT_FORMATS, ExportError, ExportSummary, export_results
from maskvos.app.models import LoadedModel, load_run_model, resolve_device, settings_for
from maskvos.app.progress import FrameProgress, ProgressFactory, terminal_progress
from maskvos.app.prompts import (
    PromptSpec,
    click_prompt,
    first_appearance_prompts,
    prompts_from_folder,
    prompts_from_label_map,
    prompts_from_mask_file,
)
from maskvos.app.segment import SegmentSummary, segment_video
from maskvos.app.state import STATE_VERSION, RunError, SaveSchedule

__all__ = [
    "EXPORT_FORMATS",
    "STATE_VERSION",
    "ExportError",
    "ExportSummary",
    "FrameProgress",
    "LoadedModel",
    "ProgressFactory",
    "PromptSpec",
    "RunError",
    "SaveSchedule",
    "SegmentSummary",
    "click_prompt",
    "export_results",
    "first_appearance_prompts",
    "load_run_model",
    "prompts_from_folder",
    "prompts_from_label_map",
    "prompts_from_mask_file",
    "resolve_device",
    "segment_video",
    "settings_for",
    "terminal_progress",
]
