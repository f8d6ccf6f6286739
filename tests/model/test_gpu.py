"""GPU checks (marker `gpu`; deselected by default, skipped where no CUDA device exists).

float32 parity on CUDA with the reference (sam2==1.1.0, also on CUDA, same checkpoint file): image
features, memory attention, and a whole session (two objects, a click correction, a backward pass).
TF32 is turned off for these, so both sides compute in true float32. Then bfloat16's deviation from
float32 (maskvos' and the reference's own, both measured and printed), and a compiled session
(inductor) that recompiles nothing after its first tracked frame. Run them with
`python -m pytest -m gpu tests/model/test_gpu.py -s` (scripts/gpu_check.sh does).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from maskvos.checkpoints import load_model
from maskvos.inference.config import InferenceConfig
from maskvos.inference.session import VideoSession
from maskvos.model.config import get_config
from maskvos.model.sam2 import SAM2Model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

NUM_FRAMES = 8
SIZE = 512  # the session checks (the reference calibrates its checkpoint on the CPU: kept cheap)
TOL = 1e-3


@pytest.fixture(autouse=True)
def _no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _parity():
    return pytest.importorskip("parity_tools", reason="the reference implementation sam2==1.1.0 is not installed")


def test_cuda_matches_cpu():
    torch.manual_seed(0)
    cpu = SAM2Model(dataclasses.replace(get_config("sam2.1-tiny"), image_size=512)).eval()
    gpu = SAM2Model(cpu.config).eval()
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.cuda()
    image = torch.randn(1, 3, 512, 512)
    mask = torch.zeros(1, 1, 512, 512)
    mask[..., 100:300, 150:350] = 1
    with torch.inference_mode():
        a = cpu.track_frame(cpu.encode_image(image), mask_input=mask)
        b = gpu.track_frame(gpu.encode_image(image.cuda()), mask_input=mask.cuda())
    assert (a.obj_ptr - b.obj_ptr.cpu()).abs().max() < 1e-3


@pytest.fixture(scope="module")
def pair_1024(tmp_path_factory):
    """maskvos and the reference, tiny at 1024, on CUDA, from one random checkpoint file."""
    tools = _parity()
    path = tools.make_checkpoint("sam2.1-tiny", tmp_path_factory.mktemp("ck") / "ck.pt", seed=1, obj_score_bias=50.0)
    ours = load_model(path, device="cuda")
    ref = tools.reference_predictor("sam2.1-tiny", path).cuda()
    return ours, ref, tools


def test_image_features_match_reference_on_cuda(pair_1024):
    ours, ref, tools = pair_1024
    image = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0)).cuda()
    with torch.inference_mode():
        fpn, pos = ours.image_encoder(image)
        raw = ref.image_encoder(image)
    for level in range(3):
        diff = tools.max_abs_diff(fpn[level], raw["backbone_fpn"][level])
        print(f"\n[cuda tiny@1024] FPN level {level}: max |diff| {diff:.2e}")
        assert diff <= TOL
        assert tools.max_abs_diff(pos[level], raw["vision_pos_enc"][level]) <= 1e-5


def test_memory_attention_matches_reference_on_cuda(pair_1024):
    """A full bank at 1024: 64x64 grid, 7 memory frames, 16 pointers of 4 tokens, 2 objects."""
    ours, ref, tools = pair_1024
    gen = torch.Generator().manual_seed(5)
    b, hw, mem = 2, 64 * 64, 7 * 64 * 64 + 64
    curr, curr_pos = (torch.randn(b, hw, 256, generator=gen).cuda() for _ in range(2))
    memory, memory_pos = (torch.randn(b, mem, 64, generator=gen).cuda() for _ in range(2))
    with torch.inference_mode():
        expected = ref.memory_attention(
            curr=curr.transpose(0, 1), memory=memory.transpose(0, 1), curr_pos=curr_pos.transpose(0, 1),
            memory_pos=memory_pos.transpose(0, 1), num_obj_ptr_tokens=64,
        ).transpose(0, 1)
        actual = ours.memory_attention(curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens=64, feat_size=(64, 64))
    diff = tools.max_abs_diff(actual, expected)
    print(f"\n[cuda tiny@1024] memory attention: max |diff| {diff:.2e}")
    assert diff <= 1e-4


@pytest.fixture(scope="module")
def video_setup(tmp_path_factory):
    """A calibrated tiny checkpoint at SIZE (object scores straddle 0), the video, both models on CUDA."""
    tools = _parity()
    folder = tmp_path_factory.mktemp("video") / "frames"
    tools.synthetic_video(folder, NUM_FRAMES)
    path = tools.calibrated_checkpoint("sam2.1-tiny", tmp_path_factory.mktemp("ck") / "ck.pt", folder, tools.synthetic_masks(0), SIZE)
    ours = load_model(path, device="cuda", config=dataclasses.replace(get_config("sam2.1-tiny"), image_size=SIZE))
    return tools, folder, path, ours


def _session_script(session):
    """Two objects forward from frame 0, a click correction on frame 4, then backward from the last frame.
    Yields ("frame" | "correction", frame_idx, logits (B, H, W)) for maskvos."""
    tools = pytest.importorskip("parity_tools")
    masks = tools.synthetic_masks(0)
    for obj_id, mask in masks.items():
        session.add_mask(0, obj_id, mask)
    for r in session.propagate():
        yield "frame", r.frame_idx, r.mask_logits
    k = NUM_FRAMES // 2
    ys, xs = tools.synthetic_masks(k)[1].nonzero()
    point, labels = [[float(xs.mean()), float(ys.mean())], [5.0, 5.0]], [1, 0]
    yield "correction", k, session.add_points(k, 1, point, labels).mask_logits
    for r in session.propagate(start=NUM_FRAMES - 1, direction="backward"):
        yield "frame", r.frame_idx, r.mask_logits


def _reference_script(ref, folder: Path, dtype: torch.dtype = torch.float32):
    """The same script on the reference; yields what `_session_script` does (logits at video size)."""
    tools = pytest.importorskip("parity_tools")
    autocast = torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32)
    with autocast:
        state = ref.init_state(str(folder))
        for obj_id, mask in tools.synthetic_masks(0).items():
            ref.add_new_mask(state, 0, obj_id, mask)
        with torch.inference_mode():
            for t, _, logits in ref.propagate_in_video(state):
                yield "frame", t, logits[:, 0].float().cpu()
        k = NUM_FRAMES // 2
        ys, xs = tools.synthetic_masks(k)[1].nonzero()
        point, labels = [[float(xs.mean()), float(ys.mean())], [5.0, 5.0]], [1, 0]
        _, _, logits = ref.add_new_points_or_box(state, k, 1, points=point, labels=labels)
        yield "correction", k, logits[0:1, 0].float().cpu()
        with torch.inference_mode():
            for t, _, logits in ref.propagate_in_video(state, start_frame_idx=NUM_FRAMES - 1, reverse=True):
                yield "frame", t, logits[:, 0].float().cpu()


def test_session_matches_reference_on_cuda(video_setup):
    """Two objects, a correction and a backward pass: every non-prompt frame within the parity tolerance."""
    tools, folder, path, ours = video_setup
    ref = tools.reference_predictor("sam2.1-tiny", path, image_size=SIZE, corrections_as_prompts=True).cuda()
    session = VideoSession(ours, folder)
    worst, compared = 0.0, 0
    for (kind, t, mine), (kind_ref, t_ref, theirs) in zip(_session_script(session), _reference_script(ref, folder), strict=True):
        assert (kind, t) == (kind_ref, t_ref)
        if kind == "frame" and t == 0:
            continue  # the prompt frame: the user's masks come back as given (the reference approximates them)
        worst = max(worst, tools.assert_masks_match(mine, theirs, f"cuda session {kind} {t}"))
        compared += 1
    print(f"\n[cuda tiny@{SIZE}] session max |dlogit| {worst:.2e} over {compared} frames")
    assert compared == 2 * NUM_FRAMES - 1


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def _ious(a_frames, b_frames) -> list[float]:
    return [_iou(a[i] > 0, b[i] > 0) for (_, _, a), (_, _, b) in zip(a_frames, b_frames) for i in range(a.shape[0])]


def test_bfloat16_deviation_on_cuda(video_setup):
    """maskvos' bfloat16 masks against its float32 ones, beside the reference's own bfloat16 deviation."""
    tools, folder, path, ours = video_setup
    f32 = list(_session_script(VideoSession(ours, folder)))
    bf16 = list(_session_script(VideoSession(ours, folder, InferenceConfig(compute_dtype=torch.bfloat16))))
    ours_ious = _ious(f32, bf16)
    ref = tools.reference_predictor("sam2.1-tiny", path, image_size=SIZE, corrections_as_prompts=True).cuda()
    ref_ious = _ious(list(_reference_script(ref, folder)), list(_reference_script(ref, folder, torch.bfloat16)))
    diff = max(tools.max_abs_diff(a, b) for (_, _, a), (_, _, b) in zip(f32, bf16))
    print(f"\n[cuda tiny@{SIZE}] bfloat16 vs float32 mask IoU: maskvos min {min(ours_ious):.3f} mean {np.mean(ours_ious):.3f}, "
          f"reference min {min(ref_ious):.3f} mean {np.mean(ref_ious):.3f}; maskvos max |dlogit| {diff:.2f}")
    assert diff > 0, "bfloat16 must change something (else autocast did not apply)"
    assert min(ours_ious) >= 0.9
    assert np.mean(ours_ious) >= np.mean(ref_ious) - 0.02, "maskvos' bfloat16 must be about as close to float32 as the reference's"


def test_compiled_session_on_cuda_recompiles_nothing_after_warm_up(video_setup):
    """Inductor-compiled steps, two objects in one batch: equal to eager (to rounding), and no frame after
    the first tracked one compiles anything (nor does a second session on the same model)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    tools, folder, _, ours = video_setup
    torch._dynamo.reset()
    eager = list(_session_script(VideoSession(ours, folder)))
    session = VideoSession(ours, folder, InferenceConfig(compile=True))
    compiled_after: dict[tuple[str, int], int] = {}
    compiled = []
    for kind, t, logits in _session_script(session):
        compiled.append((kind, t, logits))
        compiled_after[(kind, t)] = int(counters["frames"]["total"])
    steady = [n for (kind, t), n in compiled_after.items() if kind == "frame" and t >= 2]
    print(f"\n[cuda tiny@{SIZE}] compiled frames after each step: {list(compiled_after.values())}")
    assert compiled_after[("frame", 1)] > 0
    assert max(steady[: NUM_FRAMES - 2]) == compiled_after[("frame", 1)], "a forward frame after warm-up recompiled"
    for (_, t, a), (_, _, b) in zip(eager, compiled):
        tools.assert_masks_match(b, a, f"compiled frame {t}", tol=1e-2)
    before = int(counters["frames"]["total"])
    with torch._dynamo.config.patch(error_on_recompile=True):
        again = list(_session_script(VideoSession(ours, folder, InferenceConfig(compile=True))))
    assert int(counters["frames"]["total"]) == before
    assert all(torch.equal(a, b) for (_, _, a), (_, _, b) in zip(again, compiled))
