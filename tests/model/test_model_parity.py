"""Stage-by-stage parity of the whole network with the reference, both loaded from one checkpoint file.

Stages: image encoder (every FPN level and position encoding), prompt encoder + mask decoder + object
pointer for point, box, mask and point+mask prompts with multimask on and off, the mask-as-output path,
and the memory encoder. The `parity` marker adds the native 1024 input for tiny and base_plus.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from maskvos.checkpoints import load_model
from maskvos.model.config import get_config

from parity_tools import make_checkpoint, max_abs_diff, reference_predictor

CASES = [
    pytest.param(("sam2.1-tiny", 256), id="tiny-256"),
    pytest.param(("sam2.1-tiny", 1024), id="tiny-1024", marks=pytest.mark.parity),
    pytest.param(("sam2.1-base-plus", 1024), id="base_plus-1024", marks=pytest.mark.parity),
]
TOL = 1e-3


def _report(case: str, stage: str, diff: float) -> float:
    """Print the measured difference (visible with -s) and return it for the assertion."""
    print(f"\n[{case}] {stage}: max |diff| {diff:.2e}")
    return diff


@pytest.fixture(scope="module", params=CASES)
def pair(request, tmp_path_factory):
    name, size = request.param
    # A raised object-score bias makes objects "present", so decoder masks are not the constant
    # no-object logits (the absent path is compared in the video tests and the mask-as-output test).
    path = make_checkpoint(name, tmp_path_factory.mktemp("ck") / "ck.pt", seed=1, obj_score_bias=50.0, image_size=size)
    ours = load_model(path, config=dataclasses.replace(get_config(name), image_size=size))
    ref = reference_predictor(name, path, image_size=size)
    torch.manual_seed(0)
    image = torch.randn(1, 3, size, size)
    with torch.inference_mode():
        ref_backbone = ref.forward_image(image)
        ours_feats = ours.encode_image(image)
    return name, size, ours, ref, image, ref_backbone, ours_feats


def test_image_encoder(pair):
    name, size, ours, ref, image, ref_backbone, ours_feats = pair
    with torch.inference_mode():
        fpn, pos = ours.image_encoder(image)
        ref_raw = ref.image_encoder(image)
    assert len(fpn) == len(ref_raw["backbone_fpn"]) == 3
    case = f"{name}@{size}"
    for level in range(3):
        assert fpn[level].shape == ref_raw["backbone_fpn"][level].shape
        assert _report(case, f"FPN level {level}", max_abs_diff(fpn[level], ref_raw["backbone_fpn"][level])) <= TOL
        assert _report(case, f"pos enc level {level}", max_abs_diff(pos[level], ref_raw["vision_pos_enc"][level])) <= 1e-5
    # the decoder's high-resolution projections, applied once per image
    for mine, theirs in zip(ours_feats.high_res_feats, ref_backbone["backbone_fpn"][:2]):
        assert max_abs_diff(mine, theirs) <= TOL
    assert fpn[2].std() > 0.1, "features are degenerate"


def _ref_inputs(ref, ref_backbone, batch):
    _, vision_feats, _, feat_sizes = ref._prepare_backbone_features(ref_backbone)
    high_res = [
        x.permute(1, 2, 0).view(1, x.size(2), *s).expand(batch, -1, -1, -1)
        for x, s in zip(vision_feats[:-1], feat_sizes[:-1])
    ]
    h, w = feat_sizes[-1]
    pix = vision_feats[-1].permute(1, 2, 0).view(1, -1, h, w).expand(batch, -1, -1, -1)
    return pix, high_res


def _prompts(size: int):
    g = torch.Generator().manual_seed(3)
    points = (torch.rand(2, 3, 2, generator=g) * size, torch.tensor([[1, 0, -1], [1, 1, 0]], dtype=torch.int32))
    one_point = (torch.rand(2, 1, 2, generator=g) * size, torch.ones(2, 1, dtype=torch.int32))
    box = (torch.tensor([[[0.2, 0.3], [0.6, 0.7]], [[0.1, 0.1], [0.9, 0.5]]]) * size, torch.tensor([[2, 3], [2, 3]], dtype=torch.int32))
    mask = torch.randn(2, 1, size // 4, size // 4, generator=g) * 5
    return {
        "points": (points, None),
        "one point": (one_point, None),
        "box": (box, None),
        "mask": (None, mask),
        "points+mask": (points, mask),
    }


@pytest.mark.parametrize("multimask", [False, True])
@pytest.mark.parametrize("prompt", ["points", "one point", "box", "mask", "points+mask"])
def test_decoder_heads(pair, prompt, multimask):
    name, size, ours, ref, _, ref_backbone, ours_feats = pair
    points, mask = _prompts(size)[prompt]
    pix, high_res = _ref_inputs(ref, ref_backbone, 2)
    pix = pix + torch.randn_like(pix) * 0.5  # stands in for memory conditioning
    point_inputs = None if points is None else {"point_coords": points[0], "point_labels": points[1]}
    with torch.inference_mode():
        r = ref._forward_sam_heads(pix, point_inputs, mask, high_res, multimask)
        feats = ours_feats.expand(2)
        o = ours._decode(feats, pix, points, mask, multimask)
    ref_multi, _, ref_ious, ref_low, _, ref_ptr, ref_score = r
    case = f"{name}@{size} {prompt} multimask={multimask}"
    _report(case, "decoder (masks, IoU, score, pointer)", max(
        max_abs_diff(o.multimask_logits, ref_multi), max_abs_diff(o.iou_scores, ref_ious),
        max_abs_diff(o.object_score_logits, ref_score), max_abs_diff(o.obj_ptr, ref_ptr)))
    assert ((ref_low > 0).float().mean() - 0.5).abs() < 0.499, "trivial mask"
    assert max_abs_diff(o.multimask_logits, ref_multi) <= TOL
    assert max_abs_diff(o.low_res_logits, ref_low) <= TOL
    assert ((o.low_res_logits > 0) == (ref_low > 0)).float().mean() >= 0.999
    assert max_abs_diff(o.iou_scores, ref_ious) <= TOL
    assert max_abs_diff(o.object_score_logits, ref_score) <= TOL
    assert max_abs_diff(o.obj_ptr, ref_ptr) <= TOL
    assert o.multimask_logits.shape[1] == (3 if multimask else 1)


@pytest.mark.parametrize("present", [True, False])
def test_mask_as_output_and_memory_encoder(pair, present):
    name, size, ours, ref, _, ref_backbone, ours_feats = pair
    pix, high_res = _ref_inputs(ref, ref_backbone, 2)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    mask = ((xx - size / 3) ** 2 + (yy - size / 2) ** 2 < (size / 5) ** 2).float()[None, None].repeat(2, 1, 1, 1)
    if not present:
        mask[1] = 0
    with torch.inference_mode():
        r = ref._use_mask_as_output(pix, high_res, mask)
        o = ours.track_frame(ours_feats.expand(2), mask_input=mask)
        _, ref_vision, _, ref_sizes = ref._prepare_backbone_features(ref_backbone)
        ref_vision = [x.expand(-1, 2, -1) for x in ref_vision]
        ref_mem, ref_pos = ref._encode_new_memory(ref_vision, ref_sizes, r[4], r[6], is_mask_from_pts=False)
        mem, pos = ours.encode_memory(ours_feats.expand(2), o.high_res_logits, o.object_score_logits)
    assert max_abs_diff(o.low_res_logits, r[3]) <= TOL
    assert max_abs_diff(o.high_res_logits, r[4]) <= TOL
    assert max_abs_diff(o.obj_ptr, r[5]) <= TOL
    assert torch.equal(o.object_score_logits, r[6])
    assert _report(f"{name}@{size} present={present}", "memory encoder", max_abs_diff(mem, ref_mem)) <= TOL
    assert max_abs_diff(pos, ref_pos[-1]) <= 1e-5
    assert torch.equal(o.object_score_logits[:, 0] > 0, torch.tensor([True, present]))


def test_single_mask_falls_back_to_best_multimask_when_unstable(pair):
    """The stability fall-back (the video predictor's dynamic multimask) on stable and unstable rows."""
    _, _, ours, ref, *_ = pair
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(4, 4, 32, 32, generator=g) * 4
    logits[0, 0] = 8.0  # row 0: a confident single mask -> stable, kept
    logits[1, 0] = 0.01  # row 1: logits near zero -> unstable, replaced
    ious = torch.rand(4, 4, generator=g)
    mine = ours.sam_mask_decoder._single_or_best_multimask(logits, ious)
    theirs = ref.sam_mask_decoder._dynamic_multimask_via_stability(logits, ious)
    assert torch.equal(mine[0], theirs[0]) and torch.equal(mine[1], theirs[1])
    assert torch.equal(mine[0][0, 0], logits[0, 0])
    best = int(torch.argmax(ious[1, 1:])) + 1
    assert torch.equal(mine[0][1, 0], logits[1, best])
