"""EfficientTAM against its reference code (the `efficient-track-anything==1.0` wheel, run in its own
process by tests/efficienttam_oracle.py, which builds the model from the wheel's classes: the wheel
ships no configuration files): keys and shapes, the image encoder (ViT + one-level neck) and the
memory encoder stage by stage, then whole videos with two objects, a late object, a click correction
and backward propagation, for the plain variant and both efficient cross-attentions (2x2-pooled
memories). Random weights saved once and loaded by both; objects present, masks about 20 % of the
frame. A perturbed weight is detected. The default run covers 512-pixel inputs and the S size with
the second pooled attention; the full set (`-m parity`) every attention variant, Ti, and the stages at
1024."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from maskvos.checkpoints import detect_config, load_model, read_state_dict, strip_wrapper_prefixes
from maskvos.inference.config import InferenceConfig
from maskvos.inference.session import VideoSession
from maskvos.model.config import get_config

from parity_tools import EFFICIENTTAM_ORACLE_DIR, disk_video, efficienttam_checkpoint, run_efficienttam_oracle

pytestmark = pytest.mark.skipif(
    not (EFFICIENTTAM_ORACLE_DIR / "sam2").is_dir(),
    reason="EfficientTAM's reference is not installed (scripts/install.sh puts it in .oracles/efficienttam)",
)
NUM_FRAMES = 8
#: Largest |difference| accepted (float32 CPU runs of the same operations differ by about 1e-5).
TOLERANCE = 1e-4
#: maskvos name -> the reference's variant
VARIANTS = {"efficienttam-s": "s", "efficienttam-ti": "ti", "efficienttam-s-1": "s_1", "efficienttam-s-2": "s_2",
            "efficienttam-ti-1": "ti_1", "efficienttam-ti-2": "ti_2"}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("efficienttam")


@pytest.fixture(scope="module")
def video(work):
    return work / "frames", disk_video(work / "frames", NUM_FRAMES, size=128, second=True)


def _checkpoint(work: Path, name: str) -> Path:
    path = work / f"{name}.pt"
    return path if path.exists() else efficienttam_checkpoint(path, name)


@pytest.mark.parametrize("name", ["efficienttam-s", pytest.param("efficienttam-ti", marks=pytest.mark.parity)])
def test_keys_and_shapes_are_the_references(work, name):
    run_efficienttam_oracle(VARIANTS[name], "keys", str(work / f"keys-{name}.pt"))
    reference = torch.load(work / f"keys-{name}.pt", weights_only=True)
    state = strip_wrapper_prefixes(read_state_dict(_checkpoint(work, name)))
    assert {k: tuple(v.shape) for k, v in state.items()} == reference
    assert detect_config(state).family == "efficienttam"


def _compare_stages(model, inputs, ref) -> dict[str, float]:
    with torch.inference_mode():
        fpn, pos = model.image_encoder(inputs["image"])
        memory, memory_pos = model.encode_memory(model.encode_image(inputs["image"]), inputs["mask_logits"], inputs["object_score"])
    return {"features": (fpn[0] - ref["fpn"][0]).abs().max().item(), "pos": (pos[0] - ref["pos"][0]).abs().max().item(),
            "memory": (memory - ref["memory"]).abs().max().item(), "memory_pos": (memory_pos - ref["memory_pos"]).abs().max().item()}


@pytest.mark.parametrize(("name", "size"), [("efficienttam-s", 512), pytest.param("efficienttam-ti", 512, marks=pytest.mark.parity),
                                            pytest.param("efficienttam-s", 1024, marks=pytest.mark.parity)])
def test_stages_equal_the_reference(work, name, size):
    checkpoint = _checkpoint(work, name)
    gen = torch.Generator().manual_seed(7)
    inputs = {"image": torch.randn(1, 3, size, size, generator=gen),
              "mask_logits": 6 * torch.randn(1, 1, size, size, generator=gen), "object_score": torch.tensor([[2.5]])}
    torch.save(inputs, work / f"inputs-{size}.pt")
    run_efficienttam_oracle(VARIANTS[name], "stages", str(checkpoint), str(work / f"inputs-{size}.pt"), str(work / f"stages-{name}-{size}.pt"))
    ref = torch.load(work / f"stages-{name}-{size}.pt", weights_only=True)
    assert len(ref["fpn"]) == 1 and min(ref["fpn"][0].abs().max().item(), ref["memory"].abs().max().item()) > 0.5
    model = load_model(checkpoint, config=get_config(name))
    diffs = _compare_stages(model, inputs, ref)
    assert max(diffs.values()) < TOLERANCE, diffs
    for key in ("image_encoder.trunk.blocks.4.attn.qkv.weight", "image_encoder.trunk.pos_embed", "image_encoder.neck.convs.0.conv_3x3.weight"):
        broken = load_model(checkpoint, config=get_config(name))
        broken.state_dict()[key].view(-1)[2000] += 0.5  # (past pos_embed's unused class slot)
        assert max(_compare_stages(broken, inputs, ref).values()) > TOLERANCE, key


def _script(work: Path, masks) -> dict:
    np.save(work / "m1.npy", masks[0][1])
    np.save(work / "m2.npy", masks[3][2])
    return {"objects": {
        "1": [{"op": "mask", "frame": 0, "file": str(work / "m1.npy")}, {"op": "propagate", "start": 0},
              {"op": "propagate", "start": 3}, {"op": "points", "frame": 5, "points": [[50, 55]], "labels": [1]},
              {"op": "propagate", "start": 5}, {"op": "propagate", "start": 6, "reverse": True}],
        "2": [{"op": "mask", "frame": 3, "file": str(work / "m2.npy")}, {"op": "propagate", "start": 3},
              {"op": "propagate", "start": 5}, {"op": "propagate", "start": 6, "reverse": True}],
    }}


VIDEO_CASES = [("efficienttam-s-2", 512)] + [
    pytest.param(name, size, marks=pytest.mark.parity)
    for name, size in [("efficienttam-s", 512), ("efficienttam-s-1", 512), ("efficienttam-ti-2", 512)]
]
# Whole videos at 1024 are not in the set: with these random weights every mask there is empty (the
# logits still agreed within TOLERANCE when it was run), which would test nothing; 1024 is covered
# stage by stage.


@pytest.mark.parametrize(("name", "size"), VIDEO_CASES)
def test_videos_equal_the_reference(work, video, name, size):
    """Object 1 from a mask on frame 0; object 2 added on frame 3; a click corrects object 1 on frame
    5; then backward from frame 6. Every tracked frame's logits equal the reference's (frames
    prompted with a mask give that mask exactly, as maskvos' contract says)."""
    frames, masks = video
    checkpoint = _checkpoint(work, name)
    (work / "script.json").write_text(json.dumps(_script(work, masks)))
    out = work / f"video-{name}-{size}.pt"
    run_efficienttam_oracle(VARIANTS[name], "video", str(checkpoint), str(frames), str(work / "script.json"), str(out), str(size))
    ref = torch.load(out, weights_only=True)
    session = VideoSession(load_model(checkpoint, config=get_config(name)), frames, InferenceConfig(resolution=size))

    def run(**kw):
        return {r.frame_idx: dict(zip(r.obj_ids, r.mask_logits)) for r in session.propagate(**kw)}

    session.add_mask(0, 1, masks[0][1])
    p1 = run()
    session.add_mask(3, 2, masks[3][2])
    p2 = run()
    session.add_points(5, 1, [[50, 55]], [1])
    p3 = run()
    p4 = run(start=6, direction="backward")
    ours = {1: [p1, p2, p3, p4], 2: [p2, p3, p4]}
    prompted = {1: {0}, 2: {3}}
    worst, compared, foreground = 0.0, 0, []
    for obj_id, runs in ours.items():
        assert len(runs) == len(ref[obj_id])
        for mine, theirs in zip(runs, ref[obj_id]):
            assert sorted(mine) == sorted(theirs)
            for frame_idx, logits in theirs.items():
                got = mine[frame_idx][obj_id]
                flipped = ((got > 0) != (logits > 0)) & (logits.abs() > TOLERANCE)  # a sign within noise of 0 may flip
                assert not flipped.any(), (obj_id, frame_idx)
                if frame_idx not in prompted[obj_id]:
                    worst = max(worst, (got - logits).abs().max().item())
                    compared += 1
                    foreground.append(float((logits > 0).float().mean()))
    assert compared >= 30 and worst < TOLERANCE, worst
    assert 0.01 < np.mean(foreground) < 0.6  # non-trivial masks (a disk is 3.7 % of the frame)
