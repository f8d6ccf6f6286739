"""`maskvos finetune`: losses, adapters (full and LoRA), frozen parts, exact resume, refusals."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from maskvos.adapters import AdapterError, apply_adapter, base_fingerprint, in_parts, inject_lora, read_adapter
from maskvos.checkpoints import load_model, save_checkpoint
from maskvos.io.masks import read_label_map
from maskvos.train.clips import sample_clip
from maskvos.train.data import TrainDataError, read_dataset, split_validation
from maskvos.train.features import FeatureCache
from maskvos.train.losses import dice_loss, focal_loss
from maskvos.train.rollout import clip_losses
from maskvos.train.synthetic import DomainSpec, render_clip, write_synthetic_domain
from maskvos.train.trainer import FinetuneError, FinetuneSettings, finetune, lr_at

from model_tools import tiny_sam2

RES = 128
SPEC = DomainSpec(size=(96, 80), frames=6)


@pytest.fixture(scope="module")
def domain(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("domain")
    write_synthetic_domain(root, 3, seed=0, spec=SPEC)
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_checkpoint(tiny_sam2(), tmp_path_factory.mktemp("base") / "tiny.safetensors")


def _settings(domain: Path, base: Path, out: Path, **kw) -> FinetuneSettings:
    defaults = dict(resolution=RES, steps=4, frames_per_clip=3, val="clip002", val_every=2, device="cpu", max_objects=2)
    defaults.update(kw)
    return FinetuneSettings(data=domain, base=str(base), out=out, **defaults)


def test_synthetic_domain_is_deterministic_and_annotated(tmp_path):
    frames_a, labels_a = render_clip(3, SPEC)
    frames_b, _labels_b = render_clip(3, SPEC)
    assert all(np.array_equal(a, b) for a, b in zip(frames_a, frames_b))
    assert len(frames_a) == 6 and frames_a[0].shape == (80, 96, 3)
    assert any(lab.any() for lab in labels_a)
    names = write_synthetic_domain(tmp_path, 1, seed=3, spec=SPEC)
    written = read_label_map(tmp_path / "Annotations" / names[0] / "00000.png")
    _frames, labels = render_clip(3 * 100_003, SPEC)
    assert np.array_equal(written, labels[0])


def test_focal_and_dice_losses_take_known_values():
    logits = torch.tensor([[2.0, -1.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0]])
    p = torch.sigmoid(logits)
    # by hand: alpha_t * (1 - p_t)^2 * CE per pixel, averaged
    p_t = torch.tensor([p[0, 0], 1 - p[0, 1], p[0, 2]])
    alpha_t = torch.tensor([0.25, 0.75, 0.25])
    expected = (alpha_t * (1 - p_t) ** 2 * -torch.log(p_t)).mean()
    assert torch.allclose(focal_loss(logits, targets)[0], expected, atol=1e-6)
    inter = p[0, 0] + p[0, 2]
    assert torch.allclose(dice_loss(logits, targets)[0], 1 - (2 * inter + 1) / (p.sum() + 2 + 1), atol=1e-6)
    perfect = torch.tensor([[30.0, -30.0, 30.0]])
    assert focal_loss(perfect, targets)[0] < 1e-10 and dice_loss(perfect, targets)[0] < 1e-6


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    assert lr_at(0, 100, 1.0) == pytest.approx(0.2)
    assert lr_at(4, 100, 1.0) == pytest.approx(1.0)
    assert lr_at(99, 100, 1.0) == pytest.approx(0.1, abs=1e-3)


def test_validation_split_by_names_fraction_and_time(domain):
    seqs = read_dataset(domain)
    train, val = split_validation(seqs, "clip001")
    assert [s.name for s in val] == ["clip001"] and len(train) == 2
    train, val = split_validation(seqs, "0.3", seed=0)
    assert len(val) == 1 and len(train) == 2
    head, tail = split_validation(seqs[:1], "0.3")
    assert len(head[0]) + len(tail[0]) == 6 and tail[0].start == len(head[0])
    with pytest.raises(TrainDataError, match="not in the dataset"):
        split_validation(seqs, "nope")


def test_gradients_reach_only_the_trained_parts(domain):
    model = tiny_sam2(RES)
    parts = ("prompt_encoder", "mask_decoder")
    model.requires_grad_(False)
    for name, param in model.named_parameters():
        param.requires_grad_(in_parts(name, parts))
    seqs = read_dataset(domain)
    cache = FeatureCache(model, domain / "cache", RES, base_fingerprint(model), torch.device("cpu"))
    cache.prepare(seqs)
    clip = sample_clip(np.random.default_rng(0), seqs, 3, RES)
    loss = torch.stack([x.total for x in clip_losses(model, cache, clip, RES)]).mean()
    loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad and all(in_parts(n, parts) for n in with_grad)
    assert not any(n.startswith(("image_encoder.", "memory_attention.", "sam_mask_decoder.conv_s")) for n in with_grad)


def test_full_finetune_changes_only_its_parts_and_round_trips(domain, base, tmp_path):
    out = tmp_path / "full.safetensors"
    result = finetune(_settings(domain, base, out, lr=1e-3))
    assert result.steps_done == 4 and result.val_before is not None and result.val_best is not None
    tensors, info = read_adapter(out)
    assert info.kind == "full" and info.parts == ("prompt_encoder", "mask_decoder")
    assert all(k.startswith("full.") and in_parts(k[5:], info.parts) for k in tensors)
    original = load_model(base)
    tuned = load_model(base)
    apply_adapter(tuned, out)
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(v, original.state_dict()[k])]
    assert changed and all(in_parts(k, info.parts) for k in changed)
    # frozen parts bit-identical, the image encoder first
    for key, value in original.state_dict().items():
        if not in_parts(key, info.parts):
            assert torch.equal(tuned.state_dict()[key], value), key
    # the adapter holds the trained parts only: far smaller than the checkpoint
    assert out.stat().st_size < 0.25 * base.stat().st_size
    history = (out.with_name("full.finetune") / "history.csv").read_text().splitlines()
    assert history[0].startswith("step,loss") and len(history) == 5


def test_lora_adapter_merges_into_the_weights(domain, base, tmp_path):
    out = tmp_path / "lora.safetensors"
    finetune(_settings(domain, base, out, lora_rank=2, steps=2, val="0"))
    tensors, info = read_adapter(out)
    assert info.kind == "lora" and info.rank == 2
    assert tensors and all(k.startswith("lora.") for k in tensors)
    assert any(t.abs().sum() > 0 for k, t in tensors.items() if k.endswith(".B"))  # trained away from B = 0
    # the merged model equals the model with LoRA modules wrapped around the base layers
    wrapped = load_model(base)
    inject_lora(wrapped, info.parts, info.rank, info.alpha)
    with torch.no_grad():
        for key, value in tensors.items():
            module = wrapped.get_submodule(key[5:-2])
            (module.lora_a if key.endswith(".A") else module.lora_b).copy_(value)
    merged = load_model(base)
    apply_adapter(merged, out)
    layer = "sam_mask_decoder.transformer.layers.0.self_attn.q_proj"
    x = torch.randn(5, merged.get_submodule(layer).in_features)
    with torch.no_grad():
        assert torch.allclose(wrapped.get_submodule(layer)(x), merged.get_submodule(layer)(x), atol=1e-5)


def test_resume_continues_exactly(domain, base, tmp_path):
    straight = tmp_path / "straight.safetensors"
    finetune(_settings(domain, base, straight, val="0"))
    resumed = tmp_path / "resumed.safetensors"
    settings = _settings(domain, base, resumed, val="0")

    def interrupt(message: str) -> None:
        if message.startswith("step 2/"):
            raise KeyboardInterrupt

    with pytest.raises(FinetuneError, match="--resume"):
        finetune(settings, notify=interrupt)
    with pytest.raises(FinetuneError, match="already holds"):
        finetune(settings)
    with pytest.raises(FinetuneError, match="other settings"):
        finetune(_settings(domain, base, resumed, val="0", lr=5e-3), resume=True)
    finetune(settings, resume=True)
    a, _ = read_adapter(straight)
    b, _ = read_adapter(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_adapter_on_another_base_is_refused_in_one_sentence(domain, base, tmp_path):
    out = tmp_path / "a.safetensors"
    finetune(_settings(domain, base, out, steps=1, val="0"))
    other = copy.deepcopy(load_model(base))
    with torch.no_grad():
        next(other.image_encoder.parameters()).add_(1e-3)
    with pytest.raises(AdapterError) as err:
        apply_adapter(other, out)
    message = str(err.value)
    assert "another base model" in message and message.count(". ") == 0 and message.endswith(".")
    with pytest.raises(AdapterError, match="not a maskvos adapter"):
        apply_adapter(load_model(base), base)


def test_featmatch_is_refused(domain, tmp_path):
    with pytest.raises(FinetuneError, match="SAM2-family"):
        finetune(FinetuneSettings(data=domain, base="featmatch", out=tmp_path / "x.safetensors", steps=1, val="0"))
