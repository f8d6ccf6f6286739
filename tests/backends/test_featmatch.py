"""The offline `featmatch` backend: Lite0 weights, tracking a synthetic video with an occlusion, the
session interface, and the CLI paths (explicit `--model featmatch` and the offline fall-back)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from maskvos.backends import load_backend, open_session
from maskvos.backends.featmatch import FeatMatchConfig, FeatMatchModel, FeatMatchSession
from maskvos.backends.lite0 import Lite0Features, load_lite0
from maskvos.cli import main
from maskvos.eval.metrics import region_similarity
from maskvos.inference.prompts import PromptError
from maskvos.io.masks import read_label_map, write_label_map

from media_tools import OCCLUSION_SIZE, occlusion_video

H, W = OCCLUSION_SIZE
N = 12


@pytest.fixture(scope="module")
def model() -> FeatMatchModel:
    # The 160x224 test clip at its own size (the default would upscale it to a 480-pixel short side).
    return FeatMatchModel(FeatMatchConfig(scale=1.0))


def test_lite0_weights_load_and_give_imagenet_features():
    trunk = load_lite0()
    assert isinstance(trunk, Lite0Features) and not trunk.training
    image = torch.zeros(1, 3, 64, 96)
    feats = trunk(image)
    assert {s: tuple(f.shape[1:]) for s, f in feats.items()} == {4: (24, 16, 24), 8: (40, 8, 12), 16: (112, 4, 6)}
    # Trained weights: the stride-16 features of a real-looking input are not degenerate.
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((1, 3, 64, 96)).astype(np.float32))
    assert trunk(x)[16].std() > 0.1


def test_onnxruntime_and_torch_give_the_same_keys(model):
    frame = occlusion_video()[0][0]
    torch_model = FeatMatchModel(FeatMatchConfig(scale=1.0), runtime="torch")
    a, b = model.encode(frame), torch_model.encode(frame)
    assert a.shape == b.shape == (152, H // 8, W // 8)
    assert (a - b).abs().max() < 1e-3
    assert torch.allclose(a.norm(dim=0), torch.ones(H // 8, W // 8), atol=1e-4), "keys are unit length"


def test_tracks_through_an_occlusion(model):
    frames, truths = occlusion_video()
    session = open_session(model, frames)
    assert isinstance(session, FeatMatchSession)
    for obj_id, mask in truths[0].items():
        assert np.array_equal(session.add_mask(0, obj_id, mask).masks[0].numpy(), mask)
    scores = {1: [], 2: []}
    for result in session.propagate():
        labels = result.label_map()
        for obj_id in (1, 2):
            scores[obj_id].append(region_similarity(labels == obj_id, truths[result.frame_idx][obj_id]))
        assert not (result.masks[0] & result.masks[1]).any(), "objects must not overlap"
    mean_j = {k: float(np.mean(v[1:])) for k, v in scores.items()}
    # Measured 0.79 / 0.90 (object 1 dips to 0.53 behind object 2, back to 0.83 after); thresholds leave a margin.
    assert mean_j[1] >= 0.6 and mean_j[2] >= 0.8, mean_j
    assert scores[1][-1] >= 0.5, "object 1 was not recovered after the occlusion"


def test_mask_prompts_only_and_resume_state(model):
    frames, truths = occlusion_video()
    session = FeatMatchSession(model, frames)
    with pytest.raises(PromptError, match="mask prompts only"):
        session.add_points(0, 1, [[10, 10]], [1])
    with pytest.raises(PromptError, match="mask prompts only"):
        session.add_box(0, 1, [10, 10, 50, 50])
    session.add_mask(0, 1, truths[0][1])
    full = [r.mask_logits for r in FeatMatchSession.propagate(session)]
    again = FeatMatchSession(model, frames)
    again.add_mask(0, 1, truths[0][1])
    for _ in again.propagate(end=5):
        pass
    resumed = FeatMatchSession(model, frames)
    resumed.load_state_dict(again.state_dict())
    for r in resumed.propagate(start=6):
        assert torch.equal(r.mask_logits, full[r.frame_idx])


def _write_clip(folder, frames):
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:05d}.jpg", quality=95)


def test_cli_featmatch_and_offline_fallback(tmp_path, monkeypatch, capsys):
    frames, truths = occlusion_video()
    clip = tmp_path / "clip"
    _write_clip(clip, frames)
    labels = np.zeros((H, W), np.uint8)
    labels[truths[0][1]] = 1
    labels[truths[0][2]] = 2
    write_label_map(tmp_path / "prompt.png", labels)
    assert main(["segment", str(clip), "--prompt", str(tmp_path / "prompt.png"), "--model", "featmatch",
                 "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert len(list((tmp_path / "out" / "masks").glob("*.png"))) == N
    # No SAM2 checkpoint can be had (the hub is unreachable and nothing is cached): fall back.
    import huggingface_hub.constants

    monkeypatch.setenv("MASKVOS_HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    capsys.readouterr()
    code = main(["segment", str(clip), "--prompt", str(tmp_path / "prompt.png"), "--model", "sam2.1-tiny",
                 "--out", str(tmp_path / "fallback"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "falling back to the offline 'featmatch' backend" in err
    a = read_label_map(tmp_path / "out" / "masks" / "00007.png")
    b = read_label_map(tmp_path / "fallback" / "masks" / "00007.png")
    assert np.array_equal(a, b)
    # Clicks cannot fall back (featmatch takes masks only): the download error is reported instead.
    code = main(["segment", str(clip), "--points", "30,60,1", "--model", "sam2.1-tiny", "--out", str(tmp_path / "x"), "--quiet"])
    assert code == 2 and "--checkpoint PATH" in capsys.readouterr().err


def test_load_backend_names_and_default_working_size():
    default = load_backend("featmatch")
    assert isinstance(default, FeatMatchModel)
    # Frames are encoded with a 480-pixel short side whatever their size (multiples of 16).
    assert default.input_size(240, 432) == (480, 864)
    assert default.input_size(480, 854) == (480, 848)
    assert default.input_size(1080, 1920) == (480, 848)
