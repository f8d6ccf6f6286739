"""Choosing the device and loading the model of a run, with the offline fall-back."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from maskvos.backends import BACKENDS, BackendSpec, SessionModel, backend_for
from maskvos.backends.registry import CLI_OPTIONS
from maskvos.errors import CheckpointDownloadError, ConfigError
from maskvos.inference.config import InferenceConfig
from maskvos.model.execution import bfloat16_note, check_compile

DEVICES = ("cpu", "cuda")
#: Command-line spellings of the execution settings (the registry names the others).
EXECUTION_OPTIONS = {"compute_dtype": "--dtype", "compile": "--compile"}
#: The backend used when a named checkpoint cannot be downloaded.
FALLBACK_BACKEND = "featmatch"


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for sessions.

    Attributes:
        model: the loaded model.
        name: what the user asked for (a name or a path), or the fall-back's name.
        backend: the backend it belongs to.
        device: where it runs.
        fell_back: True when the model asked for could not be had and the fall-back runs instead.
    """

    model: SessionModel
    name: str
    backend: BackendSpec
    device: torch.device
    fell_back: bool = False


def resolve_device(requested: str | None, backend: BackendSpec) -> torch.device:
    """The device a run uses: `requested` ("cpu" or "cuda") if the machine and the backend have it;
    None picks CUDA where available and the backend supports it, else the CPU."""
    if requested is not None and requested not in DEVICES:
        raise ConfigError(f"Device '{requested}' is unknown; use cpu or cuda.")
    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        raise ConfigError("--device cuda was asked for but this machine has no usable CUDA GPU; use --device cpu.")
    if requested is None:
        requested = "cuda" if has_cuda and "cuda" in backend.devices else "cpu"
    if requested not in backend.devices:
        raise ConfigError(
            f"The {backend.name} backend runs on {' or '.join(backend.devices)} only; drop --device {requested} "
            "(it then runs there) or pick a SAM2 model."
        )
    return torch.device(requested)


def load_run_model(
    name_or_path: str | os.PathLike[str],
    device: str | None = None,
    needs: frozenset[str] = frozenset(),
    allow_fallback: bool = True,
    notify: Callable[[str], None] | None = None,
    adapter: str | os.PathLike[str] | None = None,
) -> LoadedModel:
    """Load a model by name or path on the chosen device.

    Arguments:
        needs: prompt types the run uses ("mask", "points", "box"); a backend lacking one is refused.
        allow_fallback: when a named checkpoint cannot be downloaded (offline, not cached) and the
            run needs only mask prompts, run `featmatch` instead and say so through `notify`.
        adapter: a `maskvos finetune` adapter folded into the model's weights (SAM2 models only; no
            fall-back then: the adapter belongs to the model asked for). The loaded model's `name`
            then names the adapter too, so a run resumed without it (or with another) is refused.
    """
    name = os.fspath(name_or_path)
    backend = backend_for(name)
    _check_prompts(backend, needs)
    dev = resolve_device(device, backend)
    if adapter is not None and backend.name != "sam2":
        raise ConfigError(
            f"--adapter applies to SAM2-family models (it holds fine-tuned SAM2 tensors), not to the {backend.name} "
            "backend; pass the --model/--checkpoint the adapter was trained from."
        )
    try:
        model = backend.load(name, dev)
        if adapter is None:
            return LoadedModel(model, name, backend, dev)
        from maskvos.adapters import apply_adapter

        info = apply_adapter(model, adapter)
        trained_at = info.extra.get("resolution")
        if notify and trained_at:
            notify(f"adapter {os.fspath(adapter)}: {info.kind} fine-tuning of {','.join(info.parts)} at {trained_at} px")
        return LoadedModel(model, f"{name}+adapter:{os.path.abspath(adapter)}", backend, dev)
    except CheckpointDownloadError as exc:
        fallback = BACKENDS[FALLBACK_BACKEND]
        if adapter is not None or not allow_fallback or not needs <= fallback.prompt_types or os.path.exists(name):
            raise
        if notify:
            notify(str(exc))
            notify(f"falling back to the offline '{fallback.name}' backend (no download needed).")
        fb_device = resolve_device(None, fallback)
        return LoadedModel(fallback.load(fallback.name, fb_device), fallback.name, fallback, fb_device, fell_back=True)


def _check_prompts(backend: BackendSpec, needs: frozenset[str]) -> None:
    missing = sorted(needs - backend.prompt_types)
    if missing:
        kinds = " and ".join(k if k != "points" else "clicks" for k in missing)
        raise ConfigError(
            f"The {backend.name} backend takes {', '.join(sorted(backend.prompt_types))} prompts only, not {kinds}; "
            "give a mask (--prompt MASK.png) or use a SAM2 model."
        )


def settings_for(loaded: LoadedModel, config: InferenceConfig, notify: Callable[[str], None] | None = None) -> InferenceConfig:
    """`config` for the loaded model. After a fall-back, settings the fall-back does not honour were
    meant for the model asked for: they go back to their defaults, and `notify` says which. Otherwise
    `config` as it is (the backend refuses what it does not honour when the session opens)."""
    if not loaded.fell_back:
        check_execution(loaded.backend, loaded.device, config, notify)
        return config
    default = InferenceConfig()
    dropped = {name: getattr(default, name) for name in loaded.backend.unsupported(config)}
    if dropped and notify:
        names = ", ".join({**CLI_OPTIONS, **EXECUTION_OPTIONS}.get(k, k) for k in dropped)
        verb, pronoun = ("applies", "it") if len(dropped) == 1 else ("apply", "them")
        notify(f"{names} {verb} to SAM2 models only; {loaded.backend.name} runs without {pronoun}.")
    return dataclasses.replace(config, **dropped)


def check_execution(
    backend: BackendSpec, device: torch.device, config: InferenceConfig, notify: Callable[[str], None] | None = None
) -> None:
    """Refuse, in one sentence, `--dtype bfloat16` or `--compile` where they cannot apply (a backend
    without them; `torch.compile` unable to work on `device`); say through `notify` when bfloat16
    will be slow on `device`."""
    asked = [EXECUTION_OPTIONS[k] for k in backend.unsupported(config) if k in EXECUTION_OPTIONS]
    if asked:
        raise ConfigError(
            f"The {backend.name} backend runs in float32 without compiling, so {' and '.join(asked)} "
            f"{'does' if len(asked) == 1 else 'do'} not apply; drop {'it' if len(asked) == 1 else 'them'} or use a SAM2 model."
        )
    if config.compile:
        check_compile(device)
    if config.compute_dtype == torch.bfloat16 and notify:
        note = bfloat16_note(device)
        if note:
            notify(note)
