"""Run EdgeTAM's own code (the PyPI package `edgetam-dimos==1.0.1`, with `timm==1.0.15`, both in
ORACLE_DIR) in its own process: it installs a package named `sam2`, like Meta's, so it lives in its
own folder, first on `sys.path` here, never in the test process.

Two things the harness changes around the reference, and why:
- its RepViT trunk is built by `timm.create_model(..., pretrained=True)`, which downloads ImageNet
  weights: the call is made with pretrained=False (every trunk weight comes from the checkpoint);
- timm imports torchvision at import time, which this CPU-only environment cannot load (PyPI's
  build needs CUDA libraries): a stand-in module answers those imports (RepViT uses none of it).

Usage:
  python edgetam_oracle.py ORACLE_DIR keys OUT.pt
      OUT: {key: shape} of the reference model's state dict (what its strict loader demands).
  python edgetam_oracle.py ORACLE_DIR stages CHECKPOINT INPUTS.pt OUT.pt
      INPUTS: {"image": (1, 3, S, S) normalised, "mask_logits": (1, 1, S, S), "object_score": (1, 1)};
      OUT: the image encoder's FPN levels and position encodings, the decoder's high-resolution
      projections, and the memory (after the perceiver) with its position encoding.
  python edgetam_oracle.py ORACLE_DIR bench CHECKPOINT FRAME_DIR MASKS.npy OUT.pt [REPEATS]
      OUT: seconds per stage and per propagated frame (1 and 3 objects), 2 threads.
  python edgetam_oracle.py ORACLE_DIR video CHECKPOINT FRAME_DIR SCRIPT.json OUT.pt [--size S]
      SCRIPT: {"objects": {obj_id: [operation, ...]}}, operations {"op": "mask", "frame", "file"
      (.npy)}, {"op": "points", "frame", "points", "labels"}, {"op": "propagate", "start", "reverse"}.
      Each object runs in its own inference state (the reference's batched perceiver fails for more
      than one object, facebookresearch/EdgeTAM issue 15). OUT: {obj_id: [{frame_idx: (H, W) video-
      resolution logits} per propagate]}. A correction on a tracked frame becomes a conditioning
      frame (`add_all_frames_to_correct_as_cond`), as in maskvos.
"""

from __future__ import annotations

import enum
import importlib.abc
import importlib.machinery
import json
import sys


def _torchvision_stand_in() -> None:
    """Answer `import torchvision...` with empty modules (and `torchvision.models` as missing, so
    timm takes its plain feature-extraction path)."""

    class InterpolationMode(enum.Enum):  # the names timm's transforms tables use
        NEAREST = "nearest"
        NEAREST_EXACT = "nearest-exact"
        BILINEAR = "bilinear"
        BICUBIC = "bicubic"
        BOX = "box"
        HAMMING = "hamming"
        LANCZOS = "lanczos"

    names = {"torchvision.transforms": {"InterpolationMode": InterpolationMode},
             "torchvision.transforms.functional": {"InterpolationMode": InterpolationMode}}

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, fullname, path, target=None):
            if fullname != "torchvision" and not fullname.startswith("torchvision."):
                return None
            if fullname.startswith("torchvision.models"):
                return None
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

        def create_module(self, spec):
            return None

        def exec_module(self, module):
            module.__path__ = []
            module.__dict__.update(names.get(module.__name__, {}))

            def placeholder(name: str):
                if name.startswith("__"):
                    raise AttributeError(name)
                return type(name, (), {"__init__": lambda self, *a, **k: None})

            module.__getattr__ = placeholder

    sys.meta_path.insert(0, Finder())


def _import_reference(oracle_dir: str):
    sys.path.insert(0, oracle_dir)
    _torchvision_stand_in()
    import sam2
    import sam2.modeling.backbones.timm as timm_backbone

    if not sam2.__file__.startswith(oracle_dir):
        raise SystemExit(f"imported sam2 from {sam2.__file__}, not from {oracle_dir}")
    create = timm_backbone.create_model

    def without_download(*args, **kwargs):
        kwargs["pretrained"] = False
        return create(*args, **kwargs)

    timm_backbone.create_model = without_download
    return sam2


def _overrides(size: int) -> list[str]:
    if size == 1024:
        return []
    grid = size // 16
    return [f"++model.image_size={size}",
            f"++model.memory_attention.layer.cross_attention.q_sizes=[{grid},{grid}]"]


def keys(out_path: str) -> None:
    import torch
    from sam2.build_sam import build_sam2

    model = build_sam2("configs/edgetam.yaml", None, device="cpu")
    torch.save({k: tuple(v.shape) for k, v in model.state_dict().items()}, out_path)


def stages(checkpoint: str, inputs_path: str, out_path: str) -> None:
    import torch
    from sam2.build_sam import build_sam2

    inputs = torch.load(inputs_path, weights_only=True)
    size = inputs["image"].shape[-1]
    model = build_sam2("configs/edgetam.yaml", checkpoint, device="cpu", hydra_overrides_extra=_overrides(size)).eval()
    with torch.inference_mode():
        backbone = model.forward_image(inputs["image"])
        _, vision_feats, _, feat_sizes = model._prepare_backbone_features(backbone)
        mem, mem_pos = model._encode_new_memory(
            current_vision_feats=vision_feats, feat_sizes=feat_sizes, pred_masks_high_res=inputs["mask_logits"],
            object_score_logits=inputs["object_score"], is_mask_from_pts=False)
    torch.save({"fpn": [f.clone() for f in backbone["backbone_fpn"]],
                "pos": [p.clone() for p in backbone["vision_pos_enc"]],
                "memory": mem.float().clone(), "memory_pos": mem_pos[0].clone()}, out_path)


def video(checkpoint: str, frame_dir: str, script_path: str, out_path: str, size: int) -> None:
    import numpy as np
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    with open(script_path) as handle:
        script = json.load(handle)
    # a correction on a tracked frame becomes a conditioning frame, as in maskvos' VideoSession (the
    # reference's add_all_frames_to_correct_as_cond; the SAM2 parity suite sets it the same way)
    # No hole filling: edgetam-dimos fills holes on the CPU with OpenCV when cv2 happens to be installed
    # (Meta's sam2 needs its CUDA extension for it and skips it on the CPU, as maskvos does; maskvos'
    # own hole filling is the --temporal-smoothing step), so the comparison is of the network alone.
    overrides = [*_overrides(size), "++model.add_all_frames_to_correct_as_cond=true"]
    predictor = build_sam2_video_predictor("configs/edgetam.yaml", checkpoint, device="cpu", hydra_overrides_extra=overrides)
    predictor.fill_hole_area = 0  # its builder appends fill_hole_area=8 after any override of ours
    out: dict[int, list[dict[int, torch.Tensor]]] = {}
    with torch.inference_mode():
        for obj_key, ops in script["objects"].items():
            obj_id = int(obj_key)
            state = predictor.init_state(frame_dir)
            runs = out.setdefault(obj_id, [])
            for op in ops:
                if op["op"] == "mask":
                    predictor.add_new_mask(state, op["frame"], obj_id, np.load(op["file"]))
                elif op["op"] == "points":
                    predictor.add_new_points_or_box(state, op["frame"], obj_id, points=np.array(op["points"], np.float32),
                                                    labels=np.array(op["labels"], np.int32))
                else:
                    frames = {}
                    for frame_idx, _ids, logits in predictor.propagate_in_video(
                        state, start_frame_idx=op.get("start"), reverse=op.get("reverse", False)
                    ):
                        frames[frame_idx] = logits[0, 0].float().clone()
                    runs.append(frames)
    torch.save(out, out_path)


def bench(checkpoint: str, frame_dir: str, masks_path: str, out_path: str, repeats: str = "5") -> None:
    """Seconds per stage (median of `repeats`) and per propagated frame with a full memory bank, for 1
    and 3 objects (3 objects: one inference state each, run one after the other; the reference's
    batched perceiver cannot take more than one)."""
    import statistics
    import time

    import numpy as np
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    torch.set_num_threads(2)
    predictor = build_sam2_video_predictor("configs/edgetam.yaml", checkpoint, device="cpu")
    masks = np.load(masks_path)  # (objects, H, W)
    size = predictor.image_size
    image = torch.randn(1, 3, size, size)
    times: dict[str, float] = {}
    with torch.inference_mode():
        backbone = predictor.forward_image(image)
        _, feats, _, sizes = predictor._prepare_backbone_features(backbone)
        logits = torch.randn(1, 1, size, size)
        score = torch.ones(1, 1)

        def median(fn) -> float:
            fn()
            runs = []
            for _ in range(int(repeats)):
                start = time.perf_counter()
                fn()
                runs.append(time.perf_counter() - start)
            return statistics.median(runs)

        times["image encoder"] = median(lambda: predictor.forward_image(image))
        times["memory encoder (+ perceiver)"] = median(lambda: predictor._encode_new_memory(feats, sizes, logits, score, False))
        for count in (1, 3):
            per_frame: dict[int, float] = {}
            for obj in range(count):
                state = predictor.init_state(frame_dir)
                predictor.add_new_mask(state, 0, 1, masks[obj])
                last = time.perf_counter()
                for frame_idx, _ids, _logits in predictor.propagate_in_video(state):
                    now = time.perf_counter()
                    per_frame[frame_idx] = per_frame.get(frame_idx, 0.0) + now - last
                    last = now
            full = [t for k, t in per_frame.items() if k >= 8]  # 1 prompt + 6 recent memories by then
            times[f"per frame, {count} object{'s' if count > 1 else ''}"] = statistics.median(full)
    torch.save(times, out_path)


def main() -> None:
    oracle_dir, command, *rest = sys.argv[1:]
    _import_reference(oracle_dir)
    if command == "bench":
        bench(*rest)
    elif command == "keys":
        keys(*rest)
    elif command == "stages":
        stages(*rest)
    else:
        size = 1024
        if "--size" in rest:
            i = rest.index("--size")
            size = int(rest[i + 1])
            rest = rest[:i] + rest[i + 2 :]
        video(*rest, size=size)


if __name__ == "__main__":
    main()
