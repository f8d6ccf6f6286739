"""Domain adapters: the tensors `maskvos finetune` changed, stored apart from the base checkpoint.

An adapter is a safetensors file holding either the new values of the fine-tuned parameters
(`full.<parameter name>`) or low-rank factors of their linear layers (`lora.<module name>.A` (r, in)
and `.B` (out, r), applied as W + B @ A * alpha / r), plus metadata naming the base checkpoint by a
fingerprint of its weights. `apply_adapter` folds an adapter into a loaded model (LoRA merged into the
weights, so inference costs nothing more) and refuses one made for another base in one sentence.

The trainable parts and the parameters each covers (the rest, the image encoder first, stays frozen):

- `prompt_encoder`: `sam_prompt_encoder.*` and `mask_downsample` (the mask prompt's own path);
- `mask_decoder`: `sam_mask_decoder.*` except `conv_s0` / `conv_s1` (they project the image encoder's
  high-resolution features and are cached with them), `obj_ptr_proj`, `no_obj_ptr`;
- `memory_attention`: `memory_attention.*`, `maskmem_tpos_enc`, `obj_ptr_tpos_proj`, `no_mem_embed`,
  `no_mem_pos_enc`;
- `memory_encoder`: `memory_encoder.*`, `no_obj_embed_spatial`, `spatial_perceiver.*`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from maskvos.errors import MaskvosError
from maskvos.io.files import atomic_path

ADAPTER_FORMAT = "maskvos-adapter-1"

#: part name -> parameter-name prefixes it covers.
PARTS: dict[str, tuple[str, ...]] = {
    "prompt_encoder": ("sam_prompt_encoder.", "mask_downsample."),
    "mask_decoder": ("sam_mask_decoder.", "obj_ptr_proj.", "no_obj_ptr"),
    "memory_attention": ("memory_attention.", "maskmem_tpos_enc", "obj_ptr_tpos_proj.", "no_mem_embed", "no_mem_pos_enc"),
    "memory_encoder": ("memory_encoder.", "no_obj_embed_spatial", "spatial_perceiver."),
}
#: Never trained: computed once with the frozen image features and cached beside them.
FROZEN_WITH_FEATURES = ("sam_mask_decoder.conv_s0.", "sam_mask_decoder.conv_s1.")
DEFAULT_PARTS = ("prompt_encoder", "mask_decoder")


class AdapterError(MaskvosError):
    """An adapter file that cannot be read, or that belongs to another base model."""


def parse_parts(spec: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """`"prompt_encoder,mask_decoder"` -> a tuple of known part names (in `PARTS` order)."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [n.replace("-", "_") for n in names if n]
    unknown = [n for n in names if n not in PARTS]
    if unknown or not names:
        raise AdapterError(
            f"Trainable part '{','.join(unknown) or spec}' is unknown; use a comma-separated list of {', '.join(PARTS)}."
        )
    return tuple(p for p in PARTS if p in names)


def in_parts(name: str, parts: tuple[str, ...]) -> bool:
    """Whether parameter (or module) `name` belongs to one of `parts`."""
    if name.startswith(FROZEN_WITH_FEATURES) or name + "." in FROZEN_WITH_FEATURES:
        return False
    return any(name == p.rstrip(".") or name.startswith(p) for part in parts for p in PARTS[part])


def base_fingerprint(model: nn.Module) -> str:
    """SHA-256 over every tensor of the model's state dict (names, dtypes, shapes, values in float32):
    the identity of a base checkpoint, the same whether it was loaded by name or from a file."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        tensor = value.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{key}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


class LoRAPart(nn.Module):
    """A frozen `nn.Linear` plus a trainable low-rank update: y = base(x) + (x A^T B^T) * alpha / r.

    B starts at zero, so the wrapped layer starts equal to the base.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.rank, self.alpha = rank, alpha
        generator = torch.Generator().manual_seed(base.in_features * 7919 + base.out_features)
        bound = 1.0 / base.in_features**0.5
        a = (torch.rand(rank, base.in_features, generator=generator) * 2 - 1) * bound
        self.lora_a = nn.Parameter(a.to(base.weight))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype, device=base.weight.device))

    def delta(self) -> torch.Tensor:
        """(out, in) the update to the base weight."""
        return (self.lora_b @ self.lora_a) * (self.alpha / self.rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * (self.alpha / self.rank)


def inject_lora(model: nn.Module, parts: tuple[str, ...], rank: int, alpha: float | None = None) -> list[str]:
    """Wrap every `nn.Linear` of `parts` in a `LoRAPart` (in place). Returns the wrapped modules' names."""
    if rank < 1:
        raise AdapterError(f"LoRA rank {rank} is not supported; use 1 or more (8 is a common choice).")
    alpha = float(alpha if alpha is not None else rank)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and in_parts(n, parts)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRAPart(getattr(parent, child), rank, alpha))
    return names


@dataclass
class AdapterInfo:
    """What an adapter file says about itself.

    Attributes:
        kind: "full" (new parameter values) or "lora" (low-rank factors).
        base_fingerprint: `base_fingerprint` of the model it was trained from.
        base_name: the model name or checkpoint path training started from (a hint for users).
        base_config: that model's configuration name.
        parts: the trained parts.
        rank, alpha: LoRA settings (0 for full fine-tuning).
        extra: anything else training recorded (steps, resolution, validation J&F ...).
    """

    kind: str
    base_fingerprint: str
    base_name: str
    base_config: str
    parts: tuple[str, ...]
    rank: int = 0
    alpha: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    def metadata(self) -> dict[str, str]:
        return {
            "format": ADAPTER_FORMAT,
            "kind": self.kind,
            "base_fingerprint": self.base_fingerprint,
            "base_name": self.base_name,
            "base_config": self.base_config,
            "parts": ",".join(self.parts),
            "rank": str(self.rank),
            "alpha": repr(self.alpha),
            "extra": json.dumps(self.extra, sort_keys=True),
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, str], path: Path) -> AdapterInfo:
        if meta.get("format") != ADAPTER_FORMAT:
            raise AdapterError(f"{path} is not a maskvos adapter (no '{ADAPTER_FORMAT}' metadata); pass a file written by maskvos finetune.")
        try:
            return cls(
                kind=meta["kind"],
                base_fingerprint=meta["base_fingerprint"],
                base_name=meta.get("base_name", ""),
                base_config=meta.get("base_config", ""),
                parts=tuple(p for p in meta.get("parts", "").split(",") if p),
                rank=int(meta.get("rank", "0")),
                alpha=float(meta.get("alpha", "0")),
                extra=json.loads(meta.get("extra", "{}")),
            )
        except (KeyError, ValueError) as exc:
            raise AdapterError(f"{path} has damaged adapter metadata ({exc}); train it again with maskvos finetune.") from None


def adapter_tensors(model: nn.Module, parts: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The tensors an adapter stores for a model being trained: LoRA factors where the model has
    `LoRAPart`s, else the current values of every parameter of `parts`."""
    loras = {n: m for n, m in model.named_modules() if isinstance(m, LoRAPart)}
    if loras:
        out = {}
        for name, mod in loras.items():
            out[f"lora.{name}.A"] = mod.lora_a.detach().cpu().contiguous()
            out[f"lora.{name}.B"] = mod.lora_b.detach().cpu().contiguous()
        return out
    return {f"full.{n}": p.detach().cpu().contiguous() for n, p in model.named_parameters() if in_parts(n, parts)}


def save_adapter(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], info: AdapterInfo) -> Path:
    """Write an adapter atomically (a temporary file renamed into place)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=info.metadata())
    return path


def read_adapter(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], AdapterInfo]:
    """The tensors and description of an adapter file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise AdapterError(f"Adapter {path} does not exist; pass the file written by maskvos finetune --out.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except (SafetensorError, OSError, ValueError) as exc:
        raise AdapterError(f"Adapter {path} cannot be read ({str(exc).splitlines()[0]}); pass a file written by maskvos finetune.") from None
    return tensors, AdapterInfo.from_metadata(meta, path)


def apply_adapter(model: nn.Module, path: str | os.PathLike[str], fingerprint: str | None = None) -> AdapterInfo:
    """Fold the adapter at `path` into `model` (in place; LoRA updates are merged into the weights).

    Arguments:
        fingerprint: the model's `base_fingerprint`, when already known.
    Raises:
        AdapterError: unreadable file, another base model, or tensors that do not fit the model.
    """
    tensors, info = read_adapter(path)
    have = fingerprint or base_fingerprint(model)
    if have != info.base_fingerprint:
        config = getattr(getattr(model, "config", None), "name", type(model).__name__)
        raise AdapterError(
            f"Adapter {path} was trained on another base model ({info.base_config} from '{info.base_name}', "
            f"weights {info.base_fingerprint[:12]}), not on the loaded {config} (weights {have[:12]}); "
            f"load it with --model/--checkpoint '{info.base_name}'."
        )
    fold_tensors(model, tensors, info, path)
    return info


def fold_tensors(model: nn.Module, tensors: dict[str, torch.Tensor], info: AdapterInfo, path: str | os.PathLike[str] = "the adapter") -> None:
    """Fold an adapter's tensors into `model`'s parameters (in place; LoRA factors merged)."""
    params = dict(model.named_parameters())
    updates: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        kind, _, rest = key.partition(".")
        if kind == "full":
            target = rest
            new = value
        elif kind == "lora" and rest.endswith(".A"):
            module = rest[: -len(".A")]
            target = module + ".weight"
            b = tensors.get(f"lora.{module}.B")
            if b is None or target not in params:
                raise AdapterError(f"Adapter {path} has LoRA factors for '{module}', which the model lacks; it belongs to another model.")
            new = params[target].detach().float().cpu() + (b.float() @ value.float()) * (info.alpha / info.rank)
        elif kind == "lora" and rest.endswith(".B"):
            continue
        else:
            raise AdapterError(f"Adapter {path} holds an unknown tensor '{key}'; train it again with maskvos finetune.")
        if target not in params or tuple(params[target].shape) != tuple(new.shape):
            raise AdapterError(f"Adapter {path} does not fit the loaded model at '{target}'; it belongs to another model.")
        updates[target] = new
    with torch.no_grad():
        for target, new in updates.items():
            params[target].copy_(new.to(params[target]))
