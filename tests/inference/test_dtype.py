"""bfloat16 execution (`InferenceConfig(compute_dtype=torch.bfloat16)`) on the CPU: how far it lies
from float32, measured on a tiny model and bounded.

The random-weight tiny model at 128 tracks a moving disk (two objects, a click correction and a
backward pass); each frame's bfloat16 masks are compared with float32's. Measured here (2 cores,
AVX-512 BF16): image features 1.2% off in relative norm, mask logits at most 0.01 apart, mask IoU
0.999 or more on every frame (the printed numbers with -s); the bounds below leave room for other CPUs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maskvos.errors import ConfigError
from maskvos.inference.config import InferenceConfig
from maskvos.inference.session import VideoSession
from maskvos.model.execution import Execution, bfloat16_note, dtype_by_name

from model_tools import tiny_sam2

NUM_FRAMES = 6


def _video() -> tuple[np.ndarray, dict[int, np.ndarray]]:
    rng = np.random.default_rng(1)
    base = (rng.random((96, 128, 3)) * 120).astype(np.uint8)
    yy, xx = np.mgrid[:96, :128]
    frames = []
    for t in range(NUM_FRAMES):
        img = base.copy()
        img[(xx - 36 - 3 * t) ** 2 + (yy - 40) ** 2 < 15**2] = (230, 60, 60)
        img[(xx >= 84 - 2 * t) & (xx < 108 - 2 * t) & (yy >= 56) & (yy < 84)] = (40, 200, 60)
        frames.append(img)
    masks = {1: (xx - 36) ** 2 + (yy - 40) ** 2 < 15**2, 2: (xx >= 84) & (xx < 108) & (yy >= 56) & (yy < 84)}
    return np.stack(frames), masks


def _run(model, config: InferenceConfig) -> tuple[list[torch.Tensor], VideoSession]:
    """Two objects forward, a click correction on object 1, then backward from the last frame."""
    frames, masks = _video()
    session = VideoSession(model, frames, config)
    for obj_id, mask in masks.items():
        session.add_mask(0, obj_id, mask)
    out = [r.mask_logits for r in session.propagate()]
    out.append(session.add_points(4, 1, [[48.0, 40.0], [5.0, 5.0]], [1, 0]).mask_logits)
    out += [r.mask_logits for r in session.propagate(start=NUM_FRAMES - 1, direction="backward")]
    return out, session


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def test_bfloat16_session_deviation_from_float32_is_bounded():
    model = tiny_sam2(128)
    ref, _ = _run(model, InferenceConfig())
    low, session = _run(model, InferenceConfig(compute_dtype=torch.bfloat16))
    assert session.model.execution.compute_dtype == torch.bfloat16
    assert session.frames.features(0).high_res_feats[0].dtype == torch.bfloat16, "the image encoder must run in bfloat16"
    entry = session.bank.objects[1].tracked[NUM_FRAMES - 1]
    assert entry.obj_ptr.dtype == torch.float32 and entry.mem_feats.dtype == torch.bfloat16
    assert len(low) == len(ref) == 2 * NUM_FRAMES + 1
    ious = [_iou(a[i] > 0, b[i] > 0) for a, b in zip(ref, low) for i in range(a.shape[0])]
    logit_diff = max((a - b).abs().max().item() for a, b in zip(ref, low))
    foreground = sum((a > 0).float().mean().item() for a in ref) / len(ref)
    print(f"\nbfloat16 vs float32: IoU min {min(ious):.3f} mean {np.mean(ious):.3f}, max |dlogit| {logit_diff:.2f}, "
          f"foreground {foreground:.2f}")
    assert 0.02 < foreground < 0.98, "masks must be neither empty nor full for the IoU to mean something"
    flipped = sum(((a > 0) != (b > 0)).float().mean().item() for a, b in zip(ref, low)) / len(ref)
    assert logit_diff > 0, "bfloat16 must change something (else autocast did not apply)"
    assert logit_diff < 1.0
    assert flipped < 0.01
    assert min(ious) >= 0.98


def test_bfloat16_image_features_within_a_few_percent():
    model = tiny_sam2(128)
    image = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = model.encode_image(image)
        low = model.for_execution(Execution(torch.bfloat16)).encode_image(image)
    rel = ((low.feats.float() - ref.feats).norm() / ref.feats.norm()).item()
    print(f"\nbfloat16 image features: relative error {rel:.2e}")
    assert low.high_res_feats[0].dtype == torch.bfloat16
    assert 1e-4 < rel < 0.03


def test_dtype_names_and_refusals():
    assert dtype_by_name("bfloat16") is torch.bfloat16
    with pytest.raises(ConfigError, match="use float32 or bfloat16"):
        dtype_by_name("float16")
    with pytest.raises(ConfigError, match=r"^Compute dtype torch.float16 is not supported; use torch.float32 or torch.bfloat16\.$"):
        InferenceConfig(compute_dtype=torch.float16)
    note = bfloat16_note(torch.device("cpu"))
    assert note is None or note.endswith("float32 is faster here.")
