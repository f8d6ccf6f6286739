"""Parity of the prompt encoder and mask decoder with the reference (sam2==1.1.0).

The reference modules are built as `SAM2Base._build_sam_heads` builds them for the video predictor
(with `build_sam2_video_predictor`'s dynamic-multimask settings), given random non-trivial weights,
and loaded into ours with `strict=True`. Default runs use a 256 x 256 input (16 x 16 embedding);
the `parity` marker adds the native 1024 x 1024 input. Run with `-s` to see the measured differences.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import pytest
import torch

from maskvos.model.mask_decoder import MaskDecoder
from maskvos.model.prompt_encoder import PromptEncoder

from parity_tools import randomize_

pytest.importorskip("sam2", reason="the reference implementation sam2==1.1.0 is not installed")
from sam2.modeling.sam.mask_decoder import MaskDecoder as RefMaskDecoder
from sam2.modeling.sam.prompt_encoder import PromptEncoder as RefPromptEncoder
from sam2.modeling.sam.transformer import TwoWayTransformer as RefTwoWayTransformer

TOL = 1e-4
NUM_OBJECTS = 3
SIZES = [pytest.param(256, id="256"), pytest.param(1024, id="1024", marks=pytest.mark.parity)]
DECODER_OUTPUTS = ("masks", "iou_pred", "sam_tokens", "object_score_logits")


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b|; 0.0 for empty tensors (a prompt with no sparse tokens)."""
    return (a.float() - b.float()).abs().amax().item() if a.numel() else 0.0


def reference_prompt_encoder(image_size: tuple[int, int]) -> RefPromptEncoder:
    grid = (image_size[0] // 16, image_size[1] // 16)
    return RefPromptEncoder(embed_dim=256, image_embedding_size=grid, input_image_size=image_size, mask_in_chans=16)


def reference_mask_decoder() -> RefMaskDecoder:
    return RefMaskDecoder(
        num_multimask_outputs=3,
        transformer=RefTwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
        use_high_res_features=True,
        iou_prediction_use_sigmoid=True,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        use_multimask_token_for_obj_ptr=True,
        dynamic_multimask_via_stability=True,
        dynamic_multimask_stability_delta=0.05,
        dynamic_multimask_stability_thresh=0.98,
    )


@dataclass
class Pair:
    size: int
    ref_prompt: RefPromptEncoder
    ref_decoder: RefMaskDecoder
    prompt: PromptEncoder
    decoder: MaskDecoder
    image: torch.Tensor  # (B, C, h, w)
    high_res: list[torch.Tensor]  # [(B, 32, 4h, 4w), (B, 64, 2h, 2w)], already projected

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.size, self.size)


@functools.cache
def _random_pair(size: int) -> Pair:
    """One reference/ours pair per size, shared by the tests (which restore any mode they change)."""
    ref_prompt, ref_decoder = reference_prompt_encoder((size, size)), reference_mask_decoder()
    randomize_(ref_prompt.state_dict(), seed=3)  # state_dict tensors share storage with the modules
    randomize_(ref_decoder.state_dict(), seed=4)
    prompt, decoder = PromptEncoder(), MaskDecoder()
    prompt.load_state_dict(ref_prompt.state_dict(), strict=True)
    decoder.load_state_dict(ref_decoder.state_dict(), strict=True)
    for module in (ref_prompt, ref_decoder, prompt, decoder):
        module.eval()
    gen = torch.Generator().manual_seed(0)
    grid = size // 16
    image = torch.randn(NUM_OBJECTS, 256, grid, grid, generator=gen)
    high_res = [
        torch.randn(NUM_OBJECTS, 32, 4 * grid, 4 * grid, generator=gen),
        torch.randn(NUM_OBJECTS, 64, 2 * grid, 2 * grid, generator=gen),
    ]
    return Pair(size, ref_prompt, ref_decoder, prompt, decoder, image, high_res)


@pytest.fixture(scope="module", params=SIZES)
def pair(request) -> Pair:
    return _random_pair(request.param)


@pytest.fixture(scope="module")
def small_pair() -> Pair:
    return _random_pair(256)


def _prompts(name: str, size: int) -> dict:
    """Keyword arguments (points, boxes, masks) of a named prompt case, for NUM_OBJECTS objects."""
    gen = torch.Generator().manual_seed(1)
    coords = torch.rand(NUM_OBJECTS, 3, 2, generator=gen) * size
    boxes = torch.sort(torch.rand(NUM_OBJECTS, 2, 2, generator=gen) * size, dim=1).values.reshape(-1, 4)
    mask = 4 * torch.randn(NUM_OBJECTS, 1, size // 4, size // 4, generator=gen)
    # positive, negative and padding points, in different orders per object
    clicks = (coords, torch.tensor([[1, 0, -1], [1, 1, 0], [0, 1, -1]], dtype=torch.int32))
    padding_point = (torch.zeros(NUM_OBJECTS, 1, 2), -torch.ones(NUM_OBJECTS, 1, dtype=torch.int32))
    # the video predictor passes a box as two corner points (labels 2, 3) before the clicks
    box_points = (
        torch.cat([boxes.reshape(-1, 2, 2), coords[:, :1]], dim=1),
        torch.tensor([[2, 3, 1]] * NUM_OBJECTS, dtype=torch.int32),
    )
    cases = {
        "points": dict(points=clicks, boxes=None, masks=None),
        "box_as_points": dict(points=box_points, boxes=None, masks=None),
        "box": dict(points=None, boxes=boxes, masks=None),
        "points_and_box": dict(points=clicks, boxes=boxes, masks=None),
        "mask_only": dict(points=None, boxes=None, masks=mask),
        "padding_point_and_mask": dict(points=padding_point, boxes=None, masks=mask),  # SAM2's mask prompt
        "points_and_mask": dict(points=clicks, boxes=None, masks=mask),
    }
    return cases[name]


PROMPT_CASES = [
    "points",
    "box_as_points",
    "box",
    "points_and_box",
    "mask_only",
    "padding_point_and_mask",
    "points_and_mask",
]


def _run_reference(pair: Pair, prompts: dict, multimask: bool, high_res: list[torch.Tensor] | None = None):
    sparse, dense = pair.ref_prompt(**prompts)
    return pair.ref_decoder(
        image_embeddings=pair.image,
        image_pe=pair.ref_prompt.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
        repeat_image=False,
        high_res_features=pair.high_res if high_res is None else high_res,
    )


def _run_ours(pair: Pair, prompts: dict, multimask: bool, high_res: list[torch.Tensor] | None = None, decoder=None):
    sparse, dense = pair.prompt(**prompts, image_size=pair.image_size)
    decoder = pair.decoder if decoder is None else decoder
    return decoder(
        pair.image,
        pair.prompt.dense_pe(pair.image_size),
        sparse,
        dense,
        multimask,
        pair.high_res if high_res is None else high_res,
    )


def _decoder_diffs(ours: tuple, ref: tuple) -> dict[str, float]:
    diffs = {}
    for name, a, b in zip(DECODER_OUTPUTS, ours, ref):
        assert a.shape == b.shape, f"{name}: shape {tuple(a.shape)} != reference {tuple(b.shape)}"
        diffs[name] = max_abs_diff(a, b)
    return diffs


def _report(tag: str, diffs: dict[str, float]) -> None:
    print(f"\n[{tag}] " + "  ".join(f"{k} {v:.2e}" for k, v in diffs.items()))


def test_state_dict_matches_reference(small_pair: Pair):
    for ours, ref in ((small_pair.prompt, small_pair.ref_prompt), (small_pair.decoder, small_pair.ref_decoder)):
        ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
        assert list(ours_sd) == list(ref_sd)
        assert {k: tuple(v.shape) for k, v in ours_sd.items()} == {k: tuple(v.shape) for k, v in ref_sd.items()}
    assert "pe_layer.positional_encoding_gaussian_matrix" in small_pair.prompt.state_dict()


@pytest.mark.parametrize("case", PROMPT_CASES)
def test_prompt_encoder_matches_reference(pair: Pair, case: str):
    prompts = _prompts(case, pair.size)
    with torch.inference_mode():
        ref_sparse, ref_dense = pair.ref_prompt(**prompts)
        sparse, dense = pair.prompt(**prompts, image_size=pair.image_size)
        dense_pe = pair.prompt.dense_pe(pair.image_size)
        ref_dense_pe = pair.ref_prompt.get_dense_pe()
    assert sparse.shape == ref_sparse.shape
    assert dense.shape == ref_dense.shape and dense_pe.shape == ref_dense_pe.shape
    diffs = {
        "sparse": max_abs_diff(sparse, ref_sparse),
        "dense": max_abs_diff(dense, ref_dense),
        "dense_pe": max_abs_diff(dense_pe, ref_dense_pe),
    }
    _report(f"{pair.size} {case} prompt encoder", diffs)
    assert max(diffs.values()) <= TOL, diffs
    # the prompt is not trivially ignored: the embeddings carry the prompt
    if prompts["points"] is not None or prompts["boxes"] is not None:
        assert sparse.shape[1] > 0 and sparse.abs().max() > 0.1
    if prompts["masks"] is not None:
        assert (dense[0] - dense[1]).abs().max() > 1e-2


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
@pytest.mark.parametrize("case", PROMPT_CASES)
def test_decoder_matches_reference(pair: Pair, case: str, multimask: bool):
    prompts = _prompts(case, pair.size)
    with torch.inference_mode():
        ref = _run_reference(pair, prompts, multimask)
        ours = _run_ours(pair, prompts, multimask)
    num_masks = 3 if multimask else 1
    grid = pair.size // 16
    assert ours[0].shape == (NUM_OBJECTS, num_masks, 4 * grid, 4 * grid)
    assert ours[1].shape == (NUM_OBJECTS, num_masks) and ours[3].shape == (NUM_OBJECTS, 1)
    diffs = _decoder_diffs(ours, ref)
    _report(f"{pair.size} {case} multimask={multimask}", diffs)
    assert max(diffs.values()) <= TOL, diffs
    assert ours[0].std() > 0.1  # masks are not degenerate


def _stability_inputs(pair: Pair, prompts: dict) -> list[torch.Tensor]:
    """High-res features shaped so that object 0's single mask is stable (logits far from 0
    everywhere) and object 1's is not (logits within the +-delta band); object 2 is left as drawn."""
    with torch.inference_mode():
        sparse, dense = pair.ref_prompt(**prompts)
        _, _, mask_tokens, _ = pair.ref_decoder.predict_masks(
            pair.image,
            pair.ref_prompt.get_dense_pe(),
            sparse,
            dense,
            repeat_image=False,
            high_res_features=pair.high_res,
        )
        # the hypernetwork weights of the single-mask token do not depend on the high-res features
        hyper = pair.ref_decoder.output_hypernetworks_mlps[0](mask_tokens[:, 0])  # (B, 32)
    feat_s0 = pair.high_res[0].clone()
    feat_s0[0] += 30 * hyper[0].sign()[:, None, None]  # logits ~ 30 * sum |hyper| > 0
    feat_s0[1] -= 5  # GELU(x - 5) ~ 0: logits near 0
    return [feat_s0, pair.high_res[1]]


def test_dynamic_multimask_via_stability(pair: Pair):
    prompts = _prompts("points", pair.size)
    high_res = _stability_inputs(pair, prompts)
    with torch.inference_mode():
        sparse, dense = pair.ref_prompt(**prompts)
        all_masks, all_iou, _, _ = pair.ref_decoder.predict_masks(
            pair.image, pair.ref_prompt.get_dense_pe(), sparse, dense, repeat_image=False, high_res_features=high_res
        )
        ref_stability = pair.ref_decoder._get_stability_scores(all_masks[:, 0:1]).flatten()
        ref = _run_reference(pair, prompts, multimask=False, high_res=high_res)
        ours = _run_ours(pair, prompts, multimask=False, high_res=high_res)
        our_stability = pair.decoder.stability_scores(all_masks[:, 0:1]).flatten()
    is_stable = (ref_stability >= 0.98).tolist()
    assert is_stable == [True, False, False], ref_stability.tolist()  # both paths are exercised
    assert torch.equal(our_stability, ref_stability)
    diffs = _decoder_diffs(ours, ref)
    _report(f"{pair.size} stability stable/unstable/unstable", diffs)
    assert max(diffs.values()) <= TOL, diffs

    best = all_iou[:, 1:].argmax(-1) + 1
    for row, stable in enumerate(is_stable):
        source = 0 if stable else int(best[row])
        other = int(best[row]) if stable else 0
        # the chosen output is the expected one, and distinguishable from the other candidate
        assert max_abs_diff(ours[0][row, 0], all_masks[row, source]) <= TOL
        assert max_abs_diff(ours[0][row, 0], all_masks[row, other]) > 1e-2
        assert abs(ours[1][row, 0].item() - all_iou[row, source].item()) <= TOL
        # the object pointer token is always the single-mask token
        assert ours[2].shape[1] == 1


def test_training_mode_returns_the_single_mask_token(small_pair: Pair):
    prompts = _prompts("points", small_pair.size)
    high_res = _stability_inputs(small_pair, prompts)
    try:
        small_pair.decoder.train()
        small_pair.ref_decoder.train()
        with torch.no_grad():
            ref = _run_reference(small_pair, prompts, multimask=False, high_res=high_res)
            ours = _run_ours(small_pair, prompts, multimask=False, high_res=high_res)
            small_pair.decoder.eval()
            ours_eval = _run_ours(small_pair, prompts, multimask=False, high_res=high_res)
    finally:
        small_pair.decoder.eval()
        small_pair.ref_decoder.eval()
    assert max(_decoder_diffs(ours, ref).values()) <= TOL
    # rows 1 and 2 are unstable: eval mode falls back to a multimask output, training mode does not
    assert max_abs_diff(ours[0][1], ours_eval[0][1]) > 1e-2
    assert max_abs_diff(ours[0][0], ours_eval[0][0]) == 0.0


def test_high_res_projections_match_reference(small_pair: Pair):
    gen = torch.Generator().manual_seed(5)
    feat_s0, feat_s1 = torch.randn(2, 256, 64, 64, generator=gen), torch.randn(2, 256, 32, 32, generator=gen)
    with torch.inference_mode():
        diff_s0 = max_abs_diff(small_pair.decoder.conv_s0(feat_s0), small_pair.ref_decoder.conv_s0(feat_s0))
        diff_s1 = max_abs_diff(small_pair.decoder.conv_s1(feat_s1), small_pair.ref_decoder.conv_s1(feat_s1))
        assert small_pair.decoder.conv_s0(feat_s0).shape == (2, 32, 64, 64)
    assert diff_s0 <= TOL and diff_s1 <= TOL


@pytest.mark.parametrize("image_size", [(512, 512), (768, 768), (256, 384)], ids=["512", "768", "256x384"])
def test_other_input_sizes_match_a_reference_built_for_them(small_pair: Pair, image_size: tuple[int, int]):
    """One module serves every input size; it equals a reference built for that size."""
    ref_prompt = reference_prompt_encoder(image_size)
    ref_prompt.load_state_dict(small_pair.ref_prompt.state_dict())
    ref_prompt.eval()
    prompts = _prompts("points_and_box", min(image_size))
    prompts["points"][0][:, :, 0] *= image_size[1] / min(image_size)  # spread x over a wide input
    grid = (image_size[0] // 16, image_size[1] // 16)
    prompts["masks"] = torch.randn(NUM_OBJECTS, 1, 4 * grid[0], 4 * grid[1], generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        ref_sparse, ref_dense = ref_prompt(**prompts)
        sparse, dense = small_pair.prompt(**prompts, image_size=image_size)
        dense_pe = small_pair.prompt.dense_pe(image_size)
        ref_dense_pe = ref_prompt.get_dense_pe()
    assert dense_pe.shape == ref_dense_pe.shape == (1, 256, *grid)
    diffs = {
        "sparse": max_abs_diff(sparse, ref_sparse),
        "dense": max_abs_diff(dense, ref_dense),
        "dense_pe": max_abs_diff(dense_pe, ref_dense_pe),
    }
    _report(f"{image_size} prompt encoder", diffs)
    assert max(diffs.values()) <= TOL, diffs
    if image_size[0] != image_size[1]:  # the decoder on a non-square grid
        gen = torch.Generator().manual_seed(6)
        image = torch.randn(NUM_OBJECTS, 256, *grid, generator=gen)
        high_res = [
            torch.randn(NUM_OBJECTS, 32, 4 * grid[0], 4 * grid[1], generator=gen),
            torch.randn(NUM_OBJECTS, 64, 2 * grid[0], 2 * grid[1], generator=gen),
        ]
        with torch.inference_mode():
            ref = small_pair.ref_decoder(
                image_embeddings=image, image_pe=ref_dense_pe, sparse_prompt_embeddings=ref_sparse,
                dense_prompt_embeddings=ref_dense, multimask_output=True, repeat_image=False,
                high_res_features=high_res,
            )
            ours = small_pair.decoder(image, dense_pe, sparse, dense, True, high_res)
        diffs = _decoder_diffs(ours, ref)
        _report(f"{image_size} decoder", diffs)
        assert max(diffs.values()) <= TOL, diffs


def test_dense_pe_follows_a_reloaded_gaussian_matrix(small_pair: Pair):
    prompt = copy.deepcopy(small_pair.prompt)
    before = prompt.dense_pe(small_pair.image_size).clone()
    state = prompt.state_dict()
    state["pe_layer.positional_encoding_gaussian_matrix"] = 2 * state["pe_layer.positional_encoding_gaussian_matrix"]
    prompt.load_state_dict(state)
    after = prompt.dense_pe(small_pair.image_size)
    ref_prompt = reference_prompt_encoder(small_pair.image_size)
    ref_prompt.load_state_dict(state)
    assert max_abs_diff(after, ref_prompt.get_dense_pe()) <= TOL
    assert max_abs_diff(after, before) > 0.1


def test_comparison_detects_a_perturbed_weight(small_pair: Pair):
    """The parity checks are sensitive: a small change to one weight breaks them."""
    prompts = _prompts("points_and_mask", small_pair.size)
    decoder = copy.deepcopy(small_pair.decoder)
    with torch.no_grad():
        decoder.transformer.layers[1].cross_attn_image_to_token.v_proj.weight[0, 0] += 0.05
    with torch.inference_mode():
        ref = _run_reference(small_pair, prompts, multimask=True)
        diffs = _decoder_diffs(_run_ours(small_pair, prompts, multimask=True, decoder=decoder), ref)
    assert diffs["masks"] > TOL, diffs

    prompt = copy.deepcopy(small_pair.prompt)
    with torch.no_grad():
        prompt.point_embeddings[0].weight[0, 0] += 0.05  # negative points only
    with torch.inference_mode():
        sparse, _ = prompt(**prompts, image_size=small_pair.image_size)
        ref_sparse, _ = small_pair.ref_prompt(**prompts)
    assert max_abs_diff(sparse, ref_sparse) > TOL
