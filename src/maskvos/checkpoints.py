"""Resolve a model name or checkpoint path, download and cache, and load strictly.

Accepted files:
- Meta's official SAM2 / SAM2.1 checkpoints (`torch.save({"model": state_dict})`, `.pt`);
- a bare state dict saved with torch;
- our own safetensors files (`save_checkpoint`).

Loading is strict. Key names are Meta's; a declarative list of wrapper prefixes (DataParallel,
torch.compile, training wrappers) is stripped first. When a file does not fit the requested
configuration, the error lists missing, unexpected and mis-shaped keys and names the published
configuration the file does fit.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from maskvos.errors import CheckpointDownloadError, CheckpointError
from maskvos.io.files import atomic_path
from maskvos.model.config import MODEL_CONFIGS, ModelConfig, get_config
from maskvos.model.sam2 import SAM2Model

#: Prefixes that training or compilation wrappers put in front of parameter names.
WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.", "model.")

#: Published checkpoints: model name -> (Hugging Face repository, file name).
HUB_FILES: dict[str, tuple[str, str]] = {
    "sam2-tiny": ("facebook/sam2-hiera-tiny", "sam2_hiera_tiny.pt"),
    "sam2-small": ("facebook/sam2-hiera-small", "sam2_hiera_small.pt"),
    "sam2-base-plus": ("facebook/sam2-hiera-base-plus", "sam2_hiera_base_plus.pt"),
    "sam2-large": ("facebook/sam2-hiera-large", "sam2_hiera_large.pt"),
    "sam2.1-tiny": ("facebook/sam2.1-hiera-tiny", "sam2.1_hiera_tiny.pt"),
    "sam2.1-small": ("facebook/sam2.1-hiera-small", "sam2.1_hiera_small.pt"),
    "sam2.1-base-plus": ("facebook/sam2.1-hiera-base-plus", "sam2.1_hiera_base_plus.pt"),
    "sam2.1-large": ("facebook/sam2.1-hiera-large", "sam2.1_hiera_large.pt"),
    # EdgeTAM (Meta): the file its repository and Hugging Face model card publish
    "edgetam": ("facebook/EdgeTAM", "edgetam.pt"),
    # EfficientTAM (yformer/EfficientTAM's download script): one repository, one file per variant
    **{
        f"efficienttam-{size}{suffix}": ("yunyangx/efficient-track-anything", f"efficienttam_{size}{file_suffix}.pt")
        for size in ("s", "ti")
        for suffix, file_suffix in (("", ""), ("-512", "_512x512"), ("-1", "_1"), ("-2", "_2"))
    },
}

#: Environment variable that points downloads at another Hugging Face endpoint (a mirror).
ENDPOINT_ENV = "MASKVOS_HF_ENDPOINT"


@dataclass(frozen=True)
class KeyReport:
    """How a state dict differs from a model's expected keys."""

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mis_shaped: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]  # (key, file shape, model shape)

    @property
    def matches(self) -> bool:
        return not (self.missing or self.unexpected or self.mis_shaped)


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer shapes of a configuration, computed without allocating weights."""
    with torch.device("meta"):
        model = SAM2Model(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def compare_keys(state_dict: dict[str, torch.Tensor], config: ModelConfig) -> KeyReport:
    """Compare a state dict with what `config` expects."""
    expected = expected_shapes(config)
    missing = tuple(sorted(set(expected) - set(state_dict)))
    unexpected = tuple(sorted(set(state_dict) - set(expected)))
    mis_shaped = tuple(
        (k, tuple(state_dict[k].shape), expected[k])
        for k in sorted(set(expected) & set(state_dict))
        if tuple(state_dict[k].shape) != expected[k]
    )
    return KeyReport(missing, unexpected, mis_shaped)


def detect_config(state_dict: dict[str, torch.Tensor], file_name: str | None = None) -> ModelConfig | None:
    """The published configuration whose keys and shapes the state dict matches exactly, if any.

    Variants with the same weights' shapes (EfficientTAM's plain, 512-pixel and two pooled-attention
    variants) are told apart by the file's published name (`efficienttam_s_2.pt`), else the plain one.
    """
    fits = [c for c in MODEL_CONFIGS.values() if compare_keys(state_dict, c).matches]
    if not fits:
        return None
    if file_name is not None:
        stem = Path(file_name).name.split(".")[0].lower().replace("_512x512", "-512").replace("_", "-")
        for config in fits:
            if config.name == stem:
                return config
    return fits[0]


def strip_wrapper_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove prefixes that every key shares and that a wrapper added (see `WRAPPER_PREFIXES`)."""
    changed = True
    while changed and state_dict:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state_dict):
                state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
                changed = True
    return state_dict


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat state dict, turning every failure into a `CheckpointError`."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"Checkpoint file '{path}' does not exist; pass the path of a SAM2 .pt or .safetensors file "
            "or a model name such as sam2.1-tiny."
        )
    if path.is_dir():
        raise CheckpointError(f"Checkpoint '{path}' is a folder; pass the path of a .pt or .safetensors file.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"Checkpoint file '{path}' is empty; download it again.")
    if _is_safetensors(path):
        return _read_safetensors(path)
    return _read_torch(path)


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    # safetensors starts with a little-endian u64 header length followed by '{'
    return len(head) == 9 and head[8:9] == b"{"


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"Checkpoint file '{path}' is not a readable safetensors file ({_short(exc)}); download or export it again."
        ) from None


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04" and magic[:1] != b"\x80":  # neither a zip archive nor a legacy pickle
        raise CheckpointError(
            f"File '{path}' is not a PyTorch or safetensors checkpoint; pass a SAM2 .pt or .safetensors file."
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(
            f"Checkpoint file '{path}' is corrupt, truncated or not a weights-only PyTorch checkpoint "
            f"({_short(exc)}); download it again."
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"Checkpoint file '{path}' holds no model state dict (expected {{'model': state_dict}} or a state dict); "
            "pass an official SAM2 checkpoint."
        )
    return obj


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


def _describe(config: ModelConfig | None) -> str:
    if config is None:
        return "it matches none of the published SAM2/SAM2.1 configurations"
    family, size = config.name.split("-", 1)
    return f"this is a {family.upper()} {size.replace('-', '_')} checkpoint"


def mismatch_message(path: str | os.PathLike[str], config: ModelConfig, report: KeyReport, fits: ModelConfig | None) -> str:
    """One sentence naming the file, the configuration and the fix, followed by the key lists."""
    head = f"Checkpoint '{path}' does not fit model '{config.name}': {_describe(fits)}"
    fix = f"; load it as '{fits.name}'" if fits is not None else "; pass a checkpoint of a supported model"
    lines = [head + fix + "."]

    def listing(title: str, items: list[str]) -> None:
        if items:
            shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
            lines.append(f"  {title} ({len(items)}): " + ", ".join(shown))

    listing("missing keys", list(report.missing))
    listing("unexpected keys", list(report.unexpected))
    listing("mis-shaped keys", [f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in report.mis_shaped])
    return "\n".join(lines)


def resolve_checkpoint(
    name_or_path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
) -> tuple[Path, ModelConfig | None]:
    """A local file for a model name or path, and the configuration its name implies (None for paths).

    A name is downloaded once from Hugging Face into the standard cache (or `cache_dir`) and reused.
    """
    text = str(name_or_path)
    key = text.strip().lower().replace("_", "-").replace("b+", "base-plus")
    if key in HUB_FILES and not Path(text).exists():
        return download_checkpoint(key, cache_dir=cache_dir, endpoint=endpoint), get_config(key)
    return Path(text), None


def cached_checkpoint(name_or_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The local file of a model name or path without any network access: an existing path, a
    published model already in the download cache, else None."""
    text = str(name_or_path)
    if Path(text).exists():
        return Path(text)
    key = text.strip().lower().replace("_", "-").replace("b+", "base-plus")
    if key not in HUB_FILES:
        return None
    from huggingface_hub import try_to_load_from_cache

    repo_id, filename = HUB_FILES[key]
    found = try_to_load_from_cache(repo_id, filename, cache_dir=None if cache_dir is None else str(cache_dir))
    return Path(found) if isinstance(found, str) else None


def download_checkpoint(
    name: str, cache_dir: str | os.PathLike[str] | None = None, endpoint: str | None = None
) -> Path:
    """Download (or find in the cache) the official checkpoint of a published model."""
    from huggingface_hub import hf_hub_download

    repo_id, filename = HUB_FILES[name]
    endpoint = endpoint or os.environ.get(ENDPOINT_ENV) or None
    try:
        local = hf_hub_download(
            repo_id=repo_id,
            filename=filename,
            cache_dir=None if cache_dir is None else str(cache_dir),
            endpoint=endpoint,
        )
    except Exception as exc:  # network errors come in many types; all mean the same to a user
        raise CheckpointDownloadError(
            f"Could not download {filename} for '{name}' from {repo_id} and it is not cached ({_short(exc)}); "
            f"fetch {filename} from huggingface.co/{repo_id} on a machine with network access and pass it "
            "with --checkpoint PATH."
        ) from None
    return Path(local)


def load_model(
    name_or_path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config: ModelConfig | str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> SAM2Model:
    """Load a SAM2 / SAM2.1 model in eval mode.

    Arguments:
        name_or_path: a model name (`sam2.1-tiny`, `sam2.1-small`, `sam2.1-base-plus`, `sam2.1-large`, and the
            `sam2-*` ones) or the path of a checkpoint file.
        device, dtype: where and in which precision the weights live.
        config: the expected configuration (a `ModelConfig` or a name). By default it is the one the name
            implies, or for a path the published configuration the file matches.
        cache_dir: download cache (defaults to the Hugging Face cache).
    Raises:
        CheckpointError: missing, corrupt or mismatching file; CheckpointDownloadError when offline.
    """
    path, implied = resolve_checkpoint(name_or_path, cache_dir=cache_dir)
    state_dict = strip_wrapper_prefixes(read_state_dict(path))
    fits = detect_config(state_dict, path.name)
    wanted = get_config(config) if isinstance(config, str) else (config or implied)
    if wanted is None:
        if fits is None:
            raise CheckpointError(_unknown_message(path, state_dict))
        wanted = fits
    report = compare_keys(state_dict, wanted)
    if not report.matches:
        raise CheckpointError(mismatch_message(path, wanted, report, fits))
    model = SAM2Model(wanted)
    model.load_state_dict(state_dict, strict=True)
    return model.to(device=device, dtype=dtype).eval()


def _unknown_message(path: Path, state_dict: dict[str, torch.Tensor]) -> str:
    # Name the closest configuration and how the file differs from it.
    def distance(cfg: ModelConfig) -> int:
        r = compare_keys(state_dict, cfg)
        return len(r.missing) + len(r.unexpected) + len(r.mis_shaped)

    closest = min(MODEL_CONFIGS.values(), key=distance)
    return mismatch_message(path, closest, compare_keys(state_dict, closest), None)


def save_checkpoint(model: SAM2Model, path: str | os.PathLike[str]) -> Path:
    """Save weights as safetensors (atomically: a temporary file renamed into place)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"maskvos_model": model.config.name})
    return path
