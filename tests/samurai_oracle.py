"""Run SAMURAI's own code (the PyPI sdist `absolutely-not-samurai==1.0.0`) on a video, in its own
process: it installs a package named `sam2`, like Meta's, so it lives in its own folder and is put
first on `sys.path` here, never in the test process.

Usage: python samurai_oracle.py ORACLE_DIR CHECKPOINT FRAME_DIR MASK.npy OUT.pt [--size S] [--model t]
        [--samurai-mode 0|1] [--stable-frames N] [--motion-weight W]

The object (id 1) is prompted by MASK on frame 0 and propagated forward, as SAMURAI's demo does.
OUT.pt holds, per frame: the video-resolution mask logits, the stored low-resolution logits, the
object score, the predicted IoU of the chosen candidate (`best_iou_score`), the motion score
(`kf_score`, None before the filter is stable), the index of the chosen multimask candidate and
every candidate's predicted IoU (recorded by wrapping the model's `_forward_sam_heads`; index -1
where the decoder gave one mask), the stored memory and the object pointer.
"""

from __future__ import annotations

import argparse
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("oracle_dir")
    parser.add_argument("checkpoint")
    parser.add_argument("frame_dir")
    parser.add_argument("mask")
    parser.add_argument("out")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--model", default="t", help="t, s, b+ or l (the config's size suffix)")
    parser.add_argument("--samurai-mode", type=int, default=1)
    parser.add_argument("--stable-frames", type=int, default=None, help="override stable_frames_threshold")
    parser.add_argument("--motion-weight", type=float, default=None, help="override kf_score_weight")
    args = parser.parse_args()
    sys.path.insert(0, args.oracle_dir)

    import numpy as np
    import sam2
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    if not sam2.__file__.startswith(args.oracle_dir):
        raise SystemExit(f"imported sam2 from {sam2.__file__}, not from {args.oracle_dir}")
    overrides = [f"++model.samurai_mode={'true' if args.samurai_mode else 'false'}"]
    if args.stable_frames is not None:
        overrides.append(f"++model.stable_frames_threshold={args.stable_frames}")
    if args.motion_weight is not None:
        overrides.append(f"++model.kf_score_weight={args.motion_weight}")
    if args.size != 1024:
        grid = args.size // 16
        overrides += [
            f"++model.image_size={args.size}",
            f"++model.memory_attention.layer.self_attention.feat_sizes=[{grid},{grid}]",
            f"++model.memory_attention.layer.cross_attention.feat_sizes=[{grid},{grid}]",
        ]
    predictor = build_sam2_video_predictor(
        f"configs/samurai/sam2.1_hiera_{args.model}.yaml", args.checkpoint, device="cpu", hydra_overrides_extra=overrides
    )
    chosen: list[tuple[int, list[float]]] = []
    heads = predictor._forward_sam_heads

    def recording_heads(*a, **kw):
        out = heads(*a, **kw)
        low_res_multimasks, ious, low_res_masks = out[0], out[2], out[3]
        if low_res_multimasks.shape[1] == 1:
            chosen.append((-1, ious[0].tolist()))
        else:
            diff = (low_res_multimasks - low_res_masks).abs().flatten(2).amax(-1)[0]
            chosen.append((int(diff.argmin()), ious[0].tolist()))
        return out

    predictor._forward_sam_heads = recording_heads
    mask = np.load(args.mask)
    frames: dict[int, dict] = {}
    with torch.inference_mode():
        state = predictor.init_state(args.frame_dir)
        predictor.add_new_mask(state, 0, 1, mask)
        chosen.clear()  # the prompt frame's pointer decode is no candidate choice
        for frame_idx, _, video_res in predictor.propagate_in_video(state):
            out = state["output_dict"]["cond_frame_outputs"].get(frame_idx)
            is_prompt = out is not None
            if out is None:
                out = state["output_dict"]["non_cond_frame_outputs"][frame_idx]
            kf = out.get("kf_score")
            choice, ious = (None, None) if is_prompt else chosen.pop(0)
            frames[frame_idx] = {
                "video_res_logits": video_res[0:1, 0].float().clone(),
                "low_res_logits": out["pred_masks"].float().clone(),
                "object_score": float(out["object_score_logits"].view(-1)[0]),
                "iou": None if is_prompt else float(out["best_iou_score"].view(-1)[0]),
                "motion": None if kf is None else float(kf.view(-1)[0]),
                "chosen": choice,
                "ious": ious,
                "mem_feats": out["maskmem_features"].float().clone(),
                "obj_ptr": out["obj_ptr"].float().clone(),
            }
    torch.save(frames, args.out)


if __name__ == "__main__":
    main()
