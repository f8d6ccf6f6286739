"""Compiled per-frame steps (`InferenceConfig(compile=True)`) on the CPU: equal outputs, no recompiles.

The default run compiles with the "eager" backend: TorchDynamo captures the five compiled modules
(`maskvos.model.execution.COMPILED_MODULES`) with `dynamic=False` and guards their shapes exactly as
under inductor, so a recompile shows here too, and the padded, masked memory layout is exercised; the
captured graphs then run eagerly (seconds, not minutes). `MASKVOS_SLOW_TESTS=1` adds the same check
with inductor's generated C++ code (about two minutes on 2 cores, cold); the CUDA version is in
tests/model/test_gpu.py.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from maskvos.errors import ConfigError
from maskvos.inference.config import InferenceConfig
from maskvos.inference.session import VideoSession
from maskvos.model.execution import Execution, pad_memory, static_count

from model_tools import tiny_sam2

NUM_FRAMES = 9  # past the 7 memory slots, so the bank fills and then slides


def _video(num_frames: int = NUM_FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """A textured frame with a bright disk moving right, and the disk's mask on frame 0."""
    rng = np.random.default_rng(0)
    base = (rng.random((96, 128, 3)) * 120).astype(np.uint8)
    yy, xx = np.mgrid[:96, :128]
    frames = []
    for t in range(num_frames):
        img = base.copy()
        img[(xx - 40 - 3 * t) ** 2 + (yy - 48) ** 2 < 16**2] = (230, 60, 60)
        frames.append(img)
    return np.stack(frames), (xx - 40) ** 2 + (yy - 48) ** 2 < 16**2


def _compiled_frames() -> int:
    """How many Python frames TorchDynamo has compiled so far (each new graph or recompile adds one)."""
    return int(counters["frames"]["total"])


def _logits(session: VideoSession, mask: np.ndarray, on_frame=None) -> torch.Tensor:
    session.add_mask(0, 1, mask)
    out = []
    for result in session.propagate():
        out.append(result.mask_logits)
        if on_frame is not None:
            on_frame(result.frame_idx)
    return torch.stack(out)


def _check_compiled_session(backend: str, tol: float) -> None:
    torch._dynamo.reset()
    model = tiny_sam2(128)
    frames, mask = _video()
    expected = _logits(VideoSession(model, frames), mask)
    compiled_model = model.for_execution(Execution(torch.float32, backend))
    session = VideoSession(compiled_model, frames, InferenceConfig(compile=True))
    assert session.model is compiled_model and session.model.execution.compile_backend == backend
    compiled_after: dict[int, int] = {}
    actual = _logits(session, mask, on_frame=lambda t: compiled_after.setdefault(t, _compiled_frames()))
    diff = (actual - expected).abs().max().item()
    print(f"\n[{backend}] compiled vs eager max |dlogit| {diff:.2e}; compiled frames after each frame {compiled_after}")
    assert diff <= tol
    assert torch.equal(actual > 0, expected > 0)
    # Frame 1 is the first tracked frame (memory attention compiles there); from frame 2 on the memory
    # grows to the full bank of 7 frames and then slides, and nothing compiles again.
    assert compiled_after[1] > 0
    assert compiled_after[NUM_FRAMES - 1] == compiled_after[1], "a frame after warm-up recompiled"
    # A second session on the same model reuses the compiled code (and any recompile would raise).
    before = _compiled_frames()
    with torch._dynamo.config.patch(error_on_recompile=True):
        again = _logits(VideoSession(compiled_model, frames, InferenceConfig(compile=True)), mask)
    assert _compiled_frames() == before
    assert torch.equal(again, actual)


def test_compiled_session_equals_eager_without_recompiles():
    _check_compiled_session("eager", tol=1e-4)


@pytest.mark.skipif(not os.environ.get("MASKVOS_SLOW_TESTS"), reason="slow (inductor's C++ build, ~2 min); set MASKVOS_SLOW_TESTS=1")
def test_inductor_compiled_session_on_cpu():
    _check_compiled_session("inductor", tol=1e-3)


def test_padded_memory_layout_masks_its_padding():
    """3 frames of 4 tokens and 2 pointers of 2 tokens padded to 7 frames and 16 pointers."""
    b, d = 2, 3
    memory = torch.arange(b * 16 * d, dtype=torch.float32).view(b, 16, d)
    pos = -memory
    scales = torch.rand(b, 16)
    padded, padded_pos, padded_scales, mask, num_ptr = pad_memory(memory, pos, scales, 3, 4, 2, 2, frames_base=7)
    assert padded.shape == (b, 7 * 4 + 16 * 2, d) and num_ptr == 32
    assert torch.equal(padded[mask].view(b, 16, d), memory)
    assert torch.equal(padded_pos[mask].view(b, 16, d), pos)
    assert torch.equal(padded_scales[mask].view(b, 16), scales)
    assert mask[:, :12].all() and not mask[:, 12:28].any() and mask[:, 28:32].all() and not mask[:, 32:].any()
    assert (padded[~mask] == 0).all() and (padded_scales[~mask] == 1).all()
    assert [static_count(n, 7) for n in (1, 7, 8, 14, 15)] == [7, 7, 14, 14, 28]


def test_masked_padding_leaves_memory_attention_unchanged():
    """The model's memory attention with a padded memory gives the unpadded result (to rounding)."""
    model = tiny_sam2(128)
    attention = model.memory_attention
    gen = torch.Generator().manual_seed(0)
    b, hw, frames, ptrs = 2, 64, 3, 5
    curr, curr_pos = torch.randn(b, hw, 256, generator=gen), torch.randn(b, hw, 256, generator=gen)
    memory = torch.randn(b, frames * hw + 4 * ptrs, 64, generator=gen)
    memory_pos = torch.randn_like(memory)
    with torch.inference_mode():
        expected = attention(curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens=4 * ptrs, feat_size=(8, 8))
        padded, padded_pos, _, mask, num_ptr = pad_memory(memory, memory_pos, None, frames, hw, ptrs, 4, frames_base=7)
        actual = attention(curr, curr_pos, padded, padded_pos, num_obj_ptr_tokens=num_ptr, feat_size=(8, 8), memory_mask=mask)
        unmasked = attention(curr, curr_pos, padded, padded_pos, num_obj_ptr_tokens=num_ptr, feat_size=(8, 8))
    assert (actual - expected).abs().max().item() <= 1e-5
    assert (unmasked - expected).abs().max().item() > 1e-2, "padding attended to must change the result"


def test_compile_where_it_cannot_work_is_refused_in_one_sentence(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(ConfigError) as err:
        VideoSession(tiny_sam2(128), np.zeros((2, 64, 64, 3), np.uint8), InferenceConfig(compile=True))
    message = str(err.value)
    assert "C++ compiler" in message and message.count(". ") == 0 and message.endswith(".")


def test_default_execution_is_the_model_itself():
    model = tiny_sam2(128)
    session = VideoSession(model, np.zeros((2, 64, 64, 3), np.uint8))
    assert session.model is model
    variant = model.for_execution(Execution(torch.bfloat16))
    assert variant is model.for_execution(Execution(torch.bfloat16)), "one variant per execution"
    assert variant.for_execution(Execution()) is model
    assert variant.state_dict().keys() == model.state_dict().keys()
    assert all(a is b for a, b in zip(variant.parameters(), model.parameters())), "weights are shared"
