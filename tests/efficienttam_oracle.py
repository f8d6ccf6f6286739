"""Run EfficientTAM's own code (the PyPI wheel `efficient-track-anything==1.0`, in ORACLE_DIR) in its own
process: it installs a package named `sam2`, like Meta's, so it lives in its own folder, first on
`sys.path` here, never in the test process.

The wheel ships no configuration files (its YAMLs never made it into the package), so the model is
built here from the wheel's own classes with the values of the published `efficienttam_*.yaml`
(yformer/EfficientTAM): ViT (patch 16, depth 12, window 14 except blocks 2, 5, 8, 11), a one-level
ViTDet neck, SAM2's memory attention with the variant's cross-attention class, SAM2's memory
encoder, and the SAM2Base flags of those files; the video predictor as its builder makes it
(masks from clicks binarised for memory). A correction on a tracked frame becomes a conditioning
frame (`add_all_frames_to_correct_as_cond`), as in maskvos.

Usage:
  python efficienttam_oracle.py ORACLE_DIR VARIANT keys OUT.pt
  python efficienttam_oracle.py ORACLE_DIR VARIANT stages CHECKPOINT INPUTS.pt OUT.pt
  python efficienttam_oracle.py ORACLE_DIR VARIANT video CHECKPOINT FRAME_DIR SCRIPT.json OUT.pt SIZE
  python efficienttam_oracle.py ORACLE_DIR VARIANT bench CHECKPOINT FRAME_DIR MASKS.npy OUT.pt [REPEATS]
VARIANT: s, ti, s_1, s_2, ti_1, ti_2 (the 512 variants are s / ti built at 512). The inputs, scripts
and outputs are those of edgetam_oracle.py; the stage outputs hold the one FPN level.
"""

from __future__ import annotations

import json
import sys


def build(variant: str, image_size: int, video: bool):
    from sam2.modeling.backbones.image_encoder import ImageEncoder, ViTDetNeck
    from sam2.modeling.backbones.vitdet import ViT
    from sam2.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
    from sam2.modeling.memory_encoder import CXBlock, Fuser, MaskDownSampler, MemoryEncoder
    from sam2.modeling.position_encoding import PositionEmbeddingSine
    from sam2.modeling.sam.transformer import EfficientRoPEAttention1, EfficientRoPEAttention2, RoPEAttention
    from sam2.modeling.sam2_base import SAM2Base

    size, _, version = variant.partition("_")
    width, heads = {"s": (384, 6), "ti": (192, 3)}[size]
    cross = {"": RoPEAttention, "1": EfficientRoPEAttention1, "2": EfficientRoPEAttention2}[version]
    grid = image_size // 16
    trunk = ViT(patch_size=16, embed_dim=width, depth=12, num_heads=heads, mlp_ratio=4.0, qkv_bias=True,
                drop_path_rate=0.0, use_rel_pos=False, window_size=14, window_block_indexes=[0, 1, 3, 4, 6, 7, 9, 10])
    neck = ViTDetNeck(position_encoding=PositionEmbeddingSine(num_pos_feats=256, normalize=True, scale=None, temperature=10000),
                      d_model=256, backbone_channel_list=[width], neck_norm="LN")
    layer = MemoryAttentionLayer(
        activation="relu", dim_feedforward=2048, dropout=0.1, pos_enc_at_attn=False, d_model=256,
        pos_enc_at_cross_attn_keys=True, pos_enc_at_cross_attn_queries=False,
        self_attention=RoPEAttention(rope_theta=10000.0, feat_sizes=[grid, grid], embedding_dim=256, num_heads=1,
                                     downsample_rate=1, dropout=0.1),
        cross_attention=cross(rope_theta=10000.0, feat_sizes=[grid, grid], rope_k_repeat=True, embedding_dim=256,
                              num_heads=1, downsample_rate=1, dropout=0.1, kv_in_dim=64))
    memory_encoder = MemoryEncoder(
        out_dim=64, position_encoding=PositionEmbeddingSine(num_pos_feats=64, normalize=True, scale=None, temperature=10000),
        mask_downsampler=MaskDownSampler(kernel_size=3, stride=2, padding=1),
        fuser=Fuser(layer=CXBlock(dim=256, kernel_size=7, padding=3, layer_scale_init_value=1e-6, use_dwconv=True), num_layers=2))
    kwargs = dict(
        image_encoder=ImageEncoder(trunk=trunk, neck=neck, scalp=0),
        memory_attention=MemoryAttention(d_model=256, pos_enc_at_input=True, layer=layer, num_layers=4),
        memory_encoder=memory_encoder, num_maskmem=7, image_size=image_size, sigmoid_scale_for_mem_enc=20.0,
        sigmoid_bias_for_mem_enc=-10.0, use_mask_input_as_output_without_sam=True, directly_add_no_mem_embed=True,
        use_high_res_features_in_sam=False, multimask_output_in_sam=True, iou_prediction_use_sigmoid=True,
        use_obj_ptrs_in_encoder=True, add_tpos_enc_to_obj_ptrs=False, only_obj_ptrs_in_the_past_for_eval=True,
        pred_obj_scores=True, pred_obj_scores_mlp=True, fixed_no_obj_ptr=True, multimask_output_for_tracking=True,
        use_multimask_token_for_obj_ptr=True, multimask_min_pt_num=0, multimask_max_pt_num=1,
        use_mlp_for_obj_ptr_proj=True, compile_image_encoder=False, add_all_frames_to_correct_as_cond=True,
        sam_mask_decoder_extra_args=dict(dynamic_multimask_via_stability=True, dynamic_multimask_stability_delta=0.05,
                                         dynamic_multimask_stability_thresh=0.98))
    if video:
        from sam2.sam2_video_predictor import SAM2VideoPredictor

        return SAM2VideoPredictor(binarize_mask_from_pts_for_mem_enc=True, **kwargs)
    return SAM2Base(**kwargs)


def _load(model, checkpoint: str):
    import torch

    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["model"], strict=True)
    return model.eval()


def keys(variant: str, out_path: str) -> None:
    import torch

    model = build(variant, 1024, video=False)
    torch.save({k: tuple(v.shape) for k, v in model.state_dict().items()}, out_path)


def stages(variant: str, checkpoint: str, inputs_path: str, out_path: str) -> None:
    import torch

    inputs = torch.load(inputs_path, weights_only=True)
    model = _load(build(variant, inputs["image"].shape[-1], video=False), checkpoint)
    with torch.inference_mode():
        backbone = model.forward_image(inputs["image"])
        _, vision_feats, _, feat_sizes = model._prepare_backbone_features(backbone)
        mem, mem_pos = model._encode_new_memory(current_vision_feats=vision_feats, feat_sizes=feat_sizes,
                                                pred_masks_high_res=inputs["mask_logits"], is_mask_from_pts=False)
    torch.save({"fpn": [f.clone() for f in backbone["backbone_fpn"]], "pos": [p.clone() for p in backbone["vision_pos_enc"]],
                "memory": mem.float().clone(), "memory_pos": mem_pos[0].clone()}, out_path)


def video(variant: str, checkpoint: str, frame_dir: str, script_path: str, out_path: str, size: str) -> None:
    import numpy as np
    import torch

    with open(script_path) as handle:
        script = json.load(handle)
    predictor = _load(build(variant, int(size), video=True), checkpoint)
    out: dict[int, list[dict[int, torch.Tensor]]] = {}
    with torch.inference_mode():
        for obj_key, ops in script["objects"].items():
            obj_id = int(obj_key)
            state = predictor.init_state(frame_dir, device="cpu")
            runs = out.setdefault(obj_id, [])
            for op in ops:
                if op["op"] == "mask":
                    predictor.add_new_mask(state, op["frame"], obj_id, np.load(op["file"]))
                elif op["op"] == "points":
                    predictor.add_new_points(state, op["frame"], obj_id, points=np.array(op["points"], np.float32),
                                             labels=np.array(op["labels"], np.int32))
                else:
                    frames = {}
                    for frame_idx, _ids, logits in predictor.propagate_in_video(
                        state, start_frame_idx=op.get("start"), reverse=op.get("reverse", False)
                    ):
                        frames[frame_idx] = logits[0, 0].float().clone()
                    runs.append(frames)
    torch.save(out, out_path)


def bench(variant: str, checkpoint: str, frame_dir: str, masks_path: str, out_path: str, repeats: str = "5") -> None:
    """As edgetam_oracle.py's bench: seconds per stage and per propagated frame with a full memory
    bank, 1 and 3 objects (one inference state each), 2 threads, 1024 input."""
    import statistics
    import time

    import numpy as np
    import torch

    torch.set_num_threads(2)
    predictor = _load(build(variant, 1024, video=True), checkpoint)
    masks = np.load(masks_path)
    image = torch.randn(1, 3, 1024, 1024)
    times: dict[str, float] = {}

    def median(fn) -> float:
        fn()
        runs = []
        for _ in range(int(repeats)):
            start = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - start)
        return statistics.median(runs)

    with torch.inference_mode():
        backbone = predictor.forward_image(image)
        _, feats, _, sizes = predictor._prepare_backbone_features(backbone)
        logits = torch.randn(1, 1, 1024, 1024)
        times["image encoder"] = median(lambda: predictor.forward_image(image))
        times["memory encoder (+ perceiver)"] = median(lambda: predictor._encode_new_memory(feats, sizes, logits, False))
        for count in (1, 3):
            per_frame: dict[int, float] = {}
            for obj in range(count):
                state = predictor.init_state(frame_dir, device="cpu")
                predictor.add_new_mask(state, 0, 1, masks[obj])
                last = time.perf_counter()
                for frame_idx, _ids, _logits in predictor.propagate_in_video(state):
                    now = time.perf_counter()
                    per_frame[frame_idx] = per_frame.get(frame_idx, 0.0) + now - last
                    last = now
            times[f"per frame, {count} object{'s' if count > 1 else ''}"] = statistics.median(
                t for k, t in per_frame.items() if k >= 8)
    torch.save(times, out_path)


def main() -> None:
    oracle_dir, variant, command, *rest = sys.argv[1:]
    sys.path.insert(0, oracle_dir)
    import sam2

    if not sam2.__file__.startswith(oracle_dir):
        raise SystemExit(f"imported sam2 from {sam2.__file__}, not from {oracle_dir}")
    {"keys": keys, "stages": stages, "video": video, "bench": bench}[command](variant, *rest)


if __name__ == "__main__":
    main()
