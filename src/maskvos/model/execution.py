"""How a model's per-frame steps execute: the compute dtype (autocast) and compiled modules.

An `Execution` says how; `execution_variant` gives a model that runs that way and shares the
original's weights (nothing is copied, and the original is left as it is, so sessions with other
settings can use it meanwhile). The default execution (float32, not compiled) is the model itself.

- `compute_dtype=torch.bfloat16` runs the step functions under `torch.autocast(device, bfloat16)`,
  as Meta's video predictor is run on a GPU (its demos and benchmark enter
  `torch.autocast("cuda", dtype=torch.bfloat16)` around the whole predictor). Mask logits, object
  scores, predicted IoUs and object pointers come out in float32.
- `compile_backend` (e.g. "inductor") compiles the forward of the image encoder, the memory
  attention, the prompt encoder and mask decoder, and the memory encoder, each with
  `dynamic=False`. Their shapes do not change from frame to frame: the image is always the model
  input size, and memory attention gets a memory padded to a fixed layout (`static_count` frames
  and pointers, the padding masked out), so the number of memories a frame attends to, which grows
  while the bank fills, does not recompile. A new layout is compiled only when more prompted frames
  than the layout holds are attended to (its size then doubles) or the number of objects per call
  changes.

Shapes: B objects, M memory tokens, D = mem_dim.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
from dataclasses import dataclass

import torch
from torch import nn

from maskvos.errors import ConfigError

#: The submodules whose forward is compiled (the per-frame steps).
COMPILED_MODULES = ("image_encoder", "memory_attention", "sam_prompt_encoder", "sam_mask_decoder", "memory_encoder")
#: Compute dtypes a session can run in.
COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
#: The object pointers a fixed memory layout holds at least (SAM2's 16).
STATIC_POINTERS = 16


@dataclass(frozen=True)
class Execution:
    """How the step functions run.

    Attributes:
        compute_dtype: float32, or bfloat16 for autocast.
        compile_backend: a `torch.compile` backend ("inductor"; "aot_eager" traces without code
            generation), or None for eager execution.
    """

    compute_dtype: torch.dtype = torch.float32
    compile_backend: str | None = None

    @property
    def is_default(self) -> bool:
        return self.compute_dtype == torch.float32 and self.compile_backend is None

    @property
    def static_memory(self) -> bool:
        """Whether memory attention gets a memory padded to a fixed layout (compiled runs)."""
        return self.compile_backend is not None

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager:
        """The autocast context of this execution on a device type ("cpu", "cuda")."""
        if self.compute_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.compute_dtype)


DEFAULT_EXECUTION = Execution()


def dtype_by_name(name: str) -> torch.dtype:
    """`COMPUTE_DTYPES[name]`, refused in one sentence when unknown."""
    try:
        return COMPUTE_DTYPES[name]
    except KeyError:
        raise ConfigError(f"Compute dtype '{name}' is unknown; use {' or '.join(COMPUTE_DTYPES)}.") from None


def bfloat16_note(device: torch.device) -> str | None:
    """A sentence saying that bfloat16 will be slow on `device`, or None where it runs natively."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return None
        return "this GPU has no native bfloat16 support, so --dtype bfloat16 will be slow; float32 is faster here."
    has_bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if has_bf16:
        return None
    return "this CPU has no native bfloat16 instructions, so --dtype bfloat16 will be slow; float32 is faster here."


def check_compile(device: torch.device, backend: str = "inductor") -> None:
    """Refuse, in one sentence, to compile where `torch.compile` cannot work."""
    if backend != "inductor":
        return
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        raise ConfigError("--compile needs torch.compile, which this Python and PyTorch do not support; drop --compile.")
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise ConfigError("--compile on a GPU needs Triton, which is not installed; pip install triton or drop --compile.")
    elif not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
        raise ConfigError("--compile on the CPU needs a C++ compiler (g++ or clang++), and none was found; install one or drop --compile.")


def static_count(count: int, base: int) -> int:
    """The padded size of `count` items: `base`, or `base` doubled until it holds them."""
    size = max(base, 1)
    while size < count:
        size *= 2
    return size


def pad_memory(
    memory: torch.Tensor,
    memory_pos: torch.Tensor,
    key_scales: torch.Tensor | None,
    num_frames: int,
    tokens_per_frame: int,
    num_pointers: int,
    tokens_per_pointer: int,
    frames_base: int,
    pointers_base: int = STATIC_POINTERS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, int]:
    """A memory padded to the fixed layout of `static_count` frames and pointers.

    Arguments:
        memory, memory_pos: (B, M, D) tokens of `num_frames` frames, then `num_pointers` pointers.
        key_scales: (B, M) factors on the keys, or None.
        frames_base, pointers_base: the smallest layout (e.g. num_maskmem frames, 16 pointers).
    Returns:
        the padded memory, its position encoding, its key scales (padding 1; None stays None), the
        (B, M') bool mask of real tokens, and the number of pointer tokens in the padded layout.
    """
    b = memory.shape[0]
    spatial = num_frames * tokens_per_frame
    extra_frames = (static_count(num_frames, frames_base) - num_frames) * tokens_per_frame
    extra_ptrs = (static_count(num_pointers, pointers_base) - num_pointers) * tokens_per_pointer

    def padded(x: torch.Tensor, fill: float) -> torch.Tensor:
        x = x.expand(b, *x.shape[1:])
        pad_frames = x.new_full((b, extra_frames, *x.shape[2:]), fill)
        pad_ptrs = x.new_full((b, extra_ptrs, *x.shape[2:]), fill)
        return torch.cat([x[:, :spatial], pad_frames, x[:, spatial:], pad_ptrs], dim=1)

    mask = padded(torch.ones(b, memory.shape[1], dtype=torch.bool, device=memory.device), False)
    scales = None if key_scales is None else padded(key_scales, 1.0)
    num_ptr_tokens = (memory.shape[1] - spatial) + extra_ptrs
    return padded(memory, 0.0), padded(memory_pos, 0.0), scales, mask, num_ptr_tokens


def execution_variant(model: nn.Module, execution: Execution) -> nn.Module:
    """`model` running as `execution` says, sharing its weights (one variant per model and execution,
    so compiled code is reused by every session on the model). The default execution is `model`.

    The variant is a shallow copy whose `execution` attribute is set and whose `COMPILED_MODULES`
    are shallow copies with a compiled forward; parameters and buffers are the original's.
    """
    base = model.__dict__.get("execution_base", model)
    if execution.is_default:
        return base
    variants = base.__dict__.setdefault("_execution_variants", {})
    variant = variants.get(execution)
    if variant is None:
        variant = copy.copy(base)
        # plain attributes, not submodules: the variant's state_dict is the original's
        variant.__dict__.update(_modules=dict(base._modules), execution=execution, execution_base=base)
        del variant.__dict__["_execution_variants"]
        if execution.compile_backend is not None:
            for name in COMPILED_MODULES:
                module = base._modules.get(name)
                if module is None:
                    continue
                twin = copy.copy(module)
                twin.forward = torch.compile(module.forward, backend=execution.compile_backend, dynamic=False)
                variant._modules[name] = twin
        variants[execution] = variant
    return variant
