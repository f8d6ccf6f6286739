"""Command-line interface: thin subcommands over the library.

Errors a user can cause are printed as one sentence without a traceback, with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from maskvos.errors import MaskvosError

EXIT_USER_ERROR = 2


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--model", help="published model name, e.g. sam2.1-tiny (downloaded once, then cached), "
                       "or 'featmatch' (offline feature matching, mask prompts only)")
    group.add_argument("--checkpoint", help="path of a SAM2/SAM2.1 .pt checkpoint or a maskvos .safetensors file")


def _add_adapter_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--adapter", metavar="FILE",
                        help="a maskvos finetune adapter (.safetensors), folded into the weights of the model it was "
                        "trained from (SAM2 models; another base is refused)")


def cmd_info(args: argparse.Namespace) -> int:
    """Describe a checkpoint: the configuration it matches and its size."""
    from maskvos.checkpoints import load_model

    model = load_model(args.checkpoint or args.model)
    cfg = model.config
    num_params = sum(p.numel() for p in model.parameters())
    from maskvos.model.config import RepViTConfig, ViTConfig

    print(f"model:        {cfg.name}")
    print(f"family:       {cfg.family}")
    print(f"source:       {args.checkpoint or args.model}")
    print(f"parameters:   {num_params:,}")
    if isinstance(cfg.trunk, RepViTConfig):
        print(f"trunk:        RepViT widths={list(cfg.trunk.embed_dims)} depths={list(cfg.trunk.depths)}")
    elif isinstance(cfg.trunk, ViTConfig):
        print(f"trunk:        ViT width={cfg.trunk.embed_dim} heads={cfg.trunk.num_heads} depth={cfg.trunk.depth}")
    else:
        print(f"trunk:        Hiera embed_dim={cfg.trunk.embed_dim} stages={list(cfg.trunk.stages)}")
    if cfg.perceiver is not None:
        side = cfg.perceiver.windows_per_side
        print(f"memories:     compressed to {cfg.perceiver.num_latents + side * side} tokens per frame (spatial perceiver)")
    if cfg.memory_pooling:
        print(f"memories:     keys and values pooled 2x2 in cross-attention (efficient attention, version {cfg.memory_pooling})")
    print(f"input size:   {cfg.image_size}x{cfg.image_size}")
    print(f"memory slots: {cfg.num_maskmem}")
    return 0


def _numbers(text: str, count: int, what: str, example: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise argparse.ArgumentTypeError(f"'{text}' is not {what}; write it like {example}")
    return values


def _point(text: str) -> tuple[float, float, int]:
    x, y, label = _numbers(text, 3, "x,y,label", "120,80,1 (label 1 object, 0 background)")
    if label not in (0, 1):
        raise argparse.ArgumentTypeError(f"point '{text}' has label {label:g}; use 1 (object) or 0 (background)")
    return x, y, int(label)


def _box(text: str) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = _numbers(text, 4, "x0,y0,x1,y1", "40,30,200,180")
    return x0, y0, x1, y1


def _format_list(text: str, allowed: Sequence[str], refusal: str) -> list[str]:
    names = [f.strip() for f in text.split(",") if f.strip()]
    for name in names:
        if name not in allowed:
            raise argparse.ArgumentTypeError(f"format '{name}' {refusal}; use any of {','.join(allowed)}")
    return names


def _formats(text: str) -> list[str]:
    from maskvos.io.writers import FORMATS

    return _format_list(text, FORMATS, "is unknown")


def _lengths(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of occlusion lengths; write it like 5,15,40")
    return values


def _add_tracking_args(parser: argparse.ArgumentParser) -> None:
    """Memory policy and temporal smoothing, shared by segment and eval-run."""
    from maskvos.inference.policies import POLICY_NAMES

    parser.add_argument("--memory-policy", choices=POLICY_NAMES, default=None,
                        help="how masks and memories are chosen: sam2 (every frame; the reference's rule), "
                        "confident (only frames the model is sure of, so occluders and lost objects stay out), "
                        "samurai (SAMURAI: a Kalman filter on each object's box picks among the decoder's masks; "
                        "confident frames fill memory), sam2long (SAM2Long: 3 hypotheses per object, each with its "
                        "own memory, the most likely kept; see --pathway-lag), dam4sam (DAM4SAM: a recent memory "
                        "every 5th frame without empty masks, and a memory of frames that tell the object from "
                        "look-alikes); samurai, sam2long and dam4sam need a SAM2 model; default sam2")
    parser.add_argument("--pathway-lag", type=int, default=None, metavar="N",
                        help="with --memory-policy sam2long: a frame the hypotheses still disagree on N frames "
                        "later is decided by the most likely one (masks come at most N frames late; default 16)")
    parser.add_argument("--temporal-smoothing", nargs="?", const="on", default="off", metavar="SPEC",
                        help="temporal consistency after tracking: presence hysteresis, 3-frame logit median, "
                        "small-hole filling ('on', or settings such as k=3,window=3,holes=0.0001); default off")


def _add_adapt_args(parser: argparse.ArgumentParser) -> None:
    """featmatch's test-time adaptation, for segment and eval-run."""
    parser.add_argument("--adapt", action="store_true",
                        help="featmatch only: fit a small per-video head on the prompt frame(s) and fuse it with the "
                        "matching (test-time adaptation; off by default: it lowered J&F on davis2016-train and on "
                        "the occlusion stress set, see the README)")
    parser.add_argument("--adapt-steps", type=int, default=200, metavar="N", help="featmatch --adapt: Adam steps of the fit (default 200)")


def _add_execution_args(parser: argparse.ArgumentParser) -> None:
    """Compute dtype and compiled steps, shared by segment, eval-run, batch and serve."""
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="compute dtype of the SAM2 network: float32 (default; equal to the reference) or "
                        "bfloat16 (autocast, as the reference runs on a GPU: faster there, masks within a few "
                        "pixels of float32's)")
    parser.add_argument("--compile", action="store_true",
                        help="compile the per-frame steps with torch.compile (shapes kept static, so only the "
                        "first frames are slow); SAM2 models only")


def _execution_settings(args: argparse.Namespace) -> dict:
    from maskvos.model.execution import dtype_by_name

    return {"compute_dtype": dtype_by_name(args.dtype), "compile": bool(args.compile)}


def _tracking_config(args: argparse.Namespace, **settings) -> tuple:
    """The InferenceConfig the options ask for, and a maker of the post-processors they ask for
    (fresh steps for each video; a bad --temporal-smoothing is refused here, before any work)."""
    from maskvos.errors import ConfigError
    from maskvos.inference.config import InferenceConfig
    from maskvos.inference.temporal import parse_temporal_spec

    if args.memory_policy is not None:
        settings["memory_policy"] = args.memory_policy
    if args.pathway_lag is not None:
        from maskvos.inference.policies import SAM2LongPolicy

        if args.memory_policy != "sam2long":
            raise ConfigError("--pathway-lag applies to --memory-policy sam2long only; add that or drop --pathway-lag.")
        settings["memory_policy"] = SAM2LongPolicy(lag=args.pathway_lag)
    spec = args.temporal_smoothing
    parse_temporal_spec(spec)
    return InferenceConfig(**settings, **_execution_settings(args)), lambda: parse_temporal_spec(spec)


def _apply_adapt(args: argparse.Namespace, loaded) -> None:
    """--adapt: switch featmatch's test-time adaptation on for the sessions of this run."""
    import dataclasses

    from maskvos.backends.featmatch import FeatMatchModel
    from maskvos.errors import ConfigError

    if not getattr(args, "adapt", False):
        return
    if not isinstance(loaded.model, FeatMatchModel):
        raise ConfigError("--adapt applies to the featmatch backend only; add --model featmatch or drop --adapt.")
    if args.adapt_steps < 1:
        raise ConfigError(f"--adapt-steps {args.adapt_steps} is not supported; use 1 or more.")
    loaded.model.config = dataclasses.replace(loaded.model.config, adapt=True, adapt_steps=args.adapt_steps)


def _note(message: str) -> None:
    print(f"maskvos: note: {message}", file=sys.stderr)


def cmd_segment(args: argparse.Namespace) -> int:
    """Segment every frame of a video from prompts and write the masks."""
    from maskvos.app import (
        PromptSpec,
        click_prompt,
        load_run_model,
        prompts_from_mask_file,
        segment_video,
        settings_for,
        terminal_progress,
    )
    from maskvos.errors import ConfigError
    from maskvos.io.frames import open_source

    if args.prompt is None and not args.points and args.box is None:
        raise ConfigError("No prompt was given; pass --prompt MASK.png, --points x,y,label or --box x0,y0,x1,y1.")
    config, postprocessors = _tracking_config(args, resolution=args.resolution, overlap=args.overlap)
    source = open_source(args.source)
    prompts: list[PromptSpec] = []
    if args.prompt is not None:
        prompts += prompts_from_mask_file(args.prompt, source, args.frame, args.obj_id)
    if args.points or args.box is not None:
        prompts.append(click_prompt(args.frame, args.obj_id, args.points or (), args.box))
    needs = frozenset().union(*(p.prompt_types for p in prompts))
    loaded = load_run_model(args.checkpoint or args.model, args.device, needs=needs,
                            allow_fallback=args.checkpoint is None, notify=_note, adapter=args.adapter)
    _apply_adapt(args, loaded)
    summary = segment_video(
        loaded.model,
        source,
        prompts,
        args.out,
        formats=args.format,
        config=settings_for(loaded, config, notify=_note),
        direction=args.direction,
        resume=args.resume,
        model_name=loaded.name,
        progress=None if args.quiet else terminal_progress("segmenting"),
        fps=args.fps,
        postprocessors=postprocessors(),
    )
    print("\n".join(summary.lines()))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Score predicted masks against DAVIS-layout ground truth."""
    from maskvos.eval import evaluate_folders

    if args.stability:
        from maskvos.eval.stability import stability_report

        report = stability_report(args.gt, args.pred, sequences=args.sequences, skip_first_last=not args.all_frames)
    else:
        report = evaluate_folders(args.gt, args.pred, sequences=args.sequences, skip_first_last=not args.all_frames)
    print(report.table())
    if args.out:
        report.write_csv(args.out)
        print(f"per-object results: {args.out}")
    return 0


def cmd_eval_run(args: argparse.Namespace) -> int:
    """Segment every sequence of a dataset from its annotations, then evaluate."""
    from maskvos.app import load_run_model
    from maskvos.app.models import check_execution
    from maskvos.eval.run import run_dataset

    loaded = load_run_model(args.checkpoint or args.model, args.device, needs=frozenset({"mask"}), allow_fallback=False,
                            notify=_note, adapter=args.adapter)
    _apply_adapt(args, loaded)
    config, postprocessors = _tracking_config(args, resolution=args.resolution)
    check_execution(loaded.backend, loaded.device, config, notify=_note)

    def progress(seq: str, frames: int, seconds: float) -> None:
        rate = frames / seconds if seconds > 0 and frames else 0.0
        done = "already complete" if frames == 0 else f"{frames} frames, {rate:.2f} frames/s"
        print(f"{seq}: {done}", file=sys.stderr, flush=True)

    run = run_dataset(args.dataset, loaded.model, args.out, args.sequences, config, model_name=loaded.name,
                      on_sequence=progress, postprocessors=postprocessors)
    if args.stability:
        from maskvos.eval.stability import stability_report

        print(stability_report(args.dataset, args.out, sequences=args.sequences).table())
    else:
        print(run.report.table())
    print(f"\n{run.frames} frames segmented in {run.seconds:.1f} s: {run.fps:.2f} frames/s end to end")
    csv = Path(args.out) / "results.csv"
    run.report.write_csv(csv)
    print(f"per-object results: {csv}")
    return 0


def _add_eval_parsers(sub) -> None:
    ev = sub.add_parser("eval", help="J&F of predicted masks against ground truth (DAVIS layout)")
    ev.add_argument("--gt", required=True, help="ground truth: Annotations/ (or a dataset root holding it), <seq>/<frame>.png")
    ev.add_argument("--pred", required=True, help="predictions in the same layout, paired by file name")
    ev.add_argument("--out", help="write per-object results as CSV")
    ev.add_argument("--sequences", nargs="+", help="only these sequences")
    ev.add_argument("--all-frames", action="store_true", help="score the first and last frame too (DAVIS skips them)")
    ev.add_argument("--stability", action="store_true",
                    help="also flicker per object and, on a stress set (maskvos stress), re-detection after "
                    "occlusion, false positives while hidden and the share taken by the distractor")
    ev.set_defaults(func=cmd_eval)
    er = sub.add_parser("eval-run", help="segment a DAVIS-layout dataset from its annotations and evaluate")
    er.add_argument("dataset", help="dataset root with JPEGImages/<seq>/ and Annotations/<seq>/")
    _add_model_args(er)
    _add_adapter_arg(er)
    er.add_argument("--out", required=True, help="predictions folder (<seq>/<frame>.png) and results.csv")
    er.add_argument("--sequences", nargs="+", help="only these sequences")
    er.add_argument("--resolution", type=int, help="SAM2 model input size (default 1024)")
    er.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    _add_execution_args(er)
    _add_tracking_args(er)
    _add_adapt_args(er)
    er.add_argument("--stability", action="store_true", help="report flicker and, on a stress set, the stress measures")
    er.set_defaults(func=cmd_eval_run)
    st = sub.add_parser("stress", help="write occlusion and distractor stress sets of a DAVIS-layout dataset",
                        description="Write a new DAVIS-layout dataset: for each sequence its plain copy, occlusion "
                        "sets (a textured occluder hides the object for L frames) and a distractor set (a moving "
                        "copy of the object). Run any tool on it, then maskvos eval --stability.")
    st.add_argument("dataset", help="dataset root with JPEGImages/<seq>/ and Annotations/<seq>/")
    st.add_argument("--out", required=True, help="new (or empty) folder for the stress dataset")
    st.add_argument("--occlusion", type=_lengths, default=[5, 15, 40], metavar="L,L,...",
                    help="occlusion lengths in frames (default 5,15,40)")
    st.add_argument("--no-occlusion", action="store_true", help="write no occlusion sets")
    st.add_argument("--distractor", action="store_true", help="also write a distractor set per sequence")
    st.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    st.add_argument("--sequences", nargs="+", help="only these sequences")
    st.set_defaults(func=cmd_stress)


def cmd_stress(args: argparse.Namespace) -> int:
    """Write stress sets of a dataset."""
    from maskvos.eval.stress import build_stress_sets

    def progress(name: str, done: int, total: int) -> None:
        print(f"[{done}/{total}] {name}", file=sys.stderr, flush=True)

    manifest = build_stress_sets(args.dataset, args.out, occlusion=[] if args.no_occlusion else args.occlusion,
                                 distractor=args.distractor, seed=args.seed, sequences=args.sequences,
                                 progress=progress)
    kinds: dict[str, int] = {}
    for seq in manifest.sequences.values():
        kinds[seq.kind] = kinds.get(seq.kind, 0) + 1
    print(f"stress set in {args.out}: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
    for item in manifest.skipped:
        print(f"  skipped {item.sequence} ({item.kind}{'' if item.length is None else f' L={item.length}'}): {item.reason}")
    print(f"next: maskvos eval-run {args.out} --model featmatch --out PRED --stability")
    return 0


def _add_segment_parser(sub) -> None:
    seg = sub.add_parser(
        "segment",
        help="segment objects through a video from a mask, clicks or a box",
        description="Track prompted objects through every frame of a video and write their masks.",
    )
    seg.add_argument("source", help="video file (mp4, mov, avi, mkv, webm) or folder of frame images")
    seg.add_argument("--prompt", help="mask PNG of the prompt frame (palette PNG: one object per id) or a folder "
                     "of mask PNGs named like their frames (each one a prompt)")
    seg.add_argument("--frame", type=int, default=0, help="frame index of --prompt PNG, --points and --box (default 0)")
    seg.add_argument("--points", type=_point, nargs="+", metavar="X,Y,LABEL",
                     help="clicks in pixels; label 1 marks the object, 0 the background")
    seg.add_argument("--box", type=_box, metavar="X0,Y0,X1,Y1", help="box around the object, in pixels")
    seg.add_argument("--obj-id", type=int, help="object id of --points/--box (default 1) or of a one-object mask")
    _add_model_args(seg)
    _add_adapter_arg(seg)
    seg.add_argument("--out", required=True, help="output folder")
    seg.add_argument("--format", type=_formats, default=["png"],
                     help="comma-separated outputs: png (palette label maps), objects (per-object PNGs), "
                     "rle (COCO RLE JSON), overlay (MP4 preview), coco-video (YouTube-VIS instances JSON), mots, "
                     "youtube-vos, cvat-xml (CVAT for video 1.1), label-studio (brush predictions); default png")
    seg.add_argument("--resolution", type=int, help="model input size: 1024 (native, default), 768 or 512 (faster)")
    seg.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu")
    _add_execution_args(seg)
    seg.add_argument("--direction", choices=["forward", "backward", "both"], default="forward",
                     help="forward from the first prompt (default), backward from the last, or both from the first")
    seg.add_argument("--overlap", choices=["score", "order"], default="score",
                     help="who wins a pixel claimed by two objects: the higher score (default) or the later id")
    _add_tracking_args(seg)
    _add_adapt_args(seg)
    seg.add_argument("--resume", action="store_true", help="continue an interrupted run in the same --out folder")
    seg.add_argument("--fps", type=float, default=24.0, help="frame rate of the overlay preview (default 24)")
    seg.add_argument("--quiet", action="store_true", help="no progress display")
    seg.set_defaults(func=cmd_segment)


def cmd_batch(args: argparse.Namespace) -> int:
    """Segment every video of a manifest, each into its own folder, resumably."""
    from maskvos.app import SaveSchedule, load_run_model
    from maskvos.app.models import check_execution
    from maskvos.batch import BatchSettings, ModelSpec, read_manifest, run_batch

    items = read_manifest(args.manifest)
    config, _ = _tracking_config(args, resolution=args.resolution, overlap=args.overlap)
    spec = ModelSpec(args.checkpoint or args.model, args.device, allow_fallback=args.checkpoint is None and args.adapter is None,
                     adapter=args.adapter)
    loaded = load_run_model(spec.source, args.device, needs=frozenset(), allow_fallback=spec.allow_fallback,
                            notify=_note, adapter=spec.adapter)
    if not loaded.fell_back:
        check_execution(loaded.backend, loaded.device, config, notify=_note)
    settings = BatchSettings(formats=tuple(args.format), config=config, temporal=args.temporal_smoothing,
                             direction=args.direction, fps=args.fps, save=SaveSchedule(every_frames=args.save_every))

    def emit(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    print(f"batch: {len(items)} video(s) from {args.manifest} with {loaded.name} into {args.out}", file=sys.stderr, flush=True)
    summary = run_batch(items, args.out, loaded, spec, settings, workers=args.workers, ray=args.ray,
                        emit=None if args.quiet else emit)
    print(summary.table())
    return 1 if summary.failures else 0


def _add_batch_parser(sub) -> None:
    ba = sub.add_parser(
        "batch",
        help="segment many videos from a manifest (process pool or Ray), resumably",
        description="Segment every video of a manifest into OUT/<video name>/ (the layout of maskvos segment "
        "--out). The manifest is a CSV (header: source,prompt,frame,points,box,obj_id,out) or JSON Lines file, "
        "one video per row, or a DAVIS-layout dataset folder (each sequence prompted by its annotations). "
        "Run it again with the same OUT to continue an interrupted batch: finished videos are skipped, half-done "
        "ones continue from their saved state. A bad row fails that video alone, with its reason.",
    )
    ba.add_argument("manifest", help="CSV or JSON Lines manifest, or a DAVIS-layout dataset folder")
    ba.add_argument("--out", required=True, help="batch folder: OUT/<video>/ per video, batch.jsonl (finished videos)")
    _add_model_args(ba)
    _add_adapter_arg(ba)
    ba.add_argument("--workers", type=int, default=1,
                    help="local processes, each holding the model (default 1: this process); with --ray, Ray actors "
                    "(default one per GPU of the cluster, else 1)")
    ba.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS|local",
                    help="run one Ray task per video on actors that load the model once: 'local' starts Ray on this "
                    "machine, an address (ray://host:10001 or host:6379) joins a cluster whose nodes see the same files")
    ba.add_argument("--format", type=_formats, default=["png"], help="outputs of each video, as for maskvos segment")
    ba.add_argument("--resolution", type=int, help="SAM2 model input size (default 1024)")
    ba.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    _add_execution_args(ba)
    ba.add_argument("--direction", choices=["forward", "backward", "both"], default="forward",
                    help="as for maskvos segment (default forward)")
    ba.add_argument("--overlap", choices=["score", "order"], default="score", help="as for maskvos segment")
    _add_tracking_args(ba)
    ba.add_argument("--fps", type=float, default=24.0, help="frame rate of overlay previews (default 24)")
    ba.add_argument("--save-every", type=int, default=50, metavar="FRAMES",
                    help="save each video's state this often, for resuming (default 50 frames, or 30 s)")
    ba.add_argument("--quiet", action="store_true", help="no progress lines, only the summary table")
    ba.set_defaults(func=cmd_batch)


def cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tune the light parts of a SAM2 model on annotated videos; write an adapter."""
    from maskvos.adapters import parse_parts
    from maskvos.train import FinetuneSettings, finetune

    settings = FinetuneSettings(
        data=Path(args.data), base=args.checkpoint or args.model, out=Path(args.out), parts=parse_parts(args.train),
        lora_rank=args.lora, lora_alpha=args.lora_alpha, frames_per_clip=args.frames_per_clip, steps=args.steps,
        lr=args.lr, max_objects=args.max_objects, resolution=args.resolution, val=args.val, val_every=args.val_every,
        patience=args.patience, seed=args.seed, save_seconds=args.save_minutes * 60, device=args.device,
        work_dir=Path(args.work) if args.work else None, cache_dir=Path(args.cache) if args.cache else None,
    )

    def say(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    result = finetune(settings, resume=args.resume, notify=say)
    before = "n/a" if result.val_before is None else f"{result.val_before:.3f}"
    best = "n/a" if result.val_best is None else f"{result.val_best:.3f} (step {result.best_step})"
    print(f"adapter:               {result.adapter} ({result.adapter_bytes / 2**20:.1f} MiB)")
    print(f"steps:                 {result.steps_done}{' (stopped early)' if result.stopped_early else ''}")
    print(f"validation J&F:        {before} before, {best} best")
    print(f"seconds per step:      {result.seconds_per_step:.3f}")
    print(f"loss curve:            {settings.work / 'history.csv'}")
    print(f"use it:                maskvos segment VIDEO --prompt MASK.png --{'checkpoint' if args.checkpoint else 'model'} "
          f"{settings.base} --adapter {result.adapter} --out DIR")
    return 0


def _add_finetune_parser(sub) -> None:
    from maskvos.adapters import DEFAULT_PARTS, PARTS

    ft = sub.add_parser(
        "finetune",
        help="adapt a SAM2 model to a domain from a few annotated videos; writes an adapter",
        description="Train the prompt encoder and mask decoder (optionally memory attention and the memory "
        "encoder) of a SAM2-family model on DAVIS-layout videos, with the image encoder frozen and its features "
        "cached once; clips of a few frames, the first prompted by its mask, a box or a click, the rest tracked "
        "through memory, with SAM2's losses. Writes a small safetensors adapter for --adapter (segment, eval-run, "
        "batch, serve). Interrupt any time and continue with --resume.",
    )
    ft.add_argument("data", help="DAVIS-layout dataset: JPEGImages/<seq>/ and Annotations/<seq>/ (every frame annotated)")
    _add_model_args(ft)
    ft.add_argument("--out", required=True, help="adapter file to write (.safetensors); the run's state goes beside it in OUT.finetune/")
    ft.add_argument("--train", default=",".join(DEFAULT_PARTS),
                    help=f"comma-separated parts to train, from {', '.join(PARTS)} (default {','.join(DEFAULT_PARTS)})")
    ft.add_argument("--lora", type=int, default=0, metavar="RANK",
                    help="train rank-RANK LoRA factors of the parts' linear layers instead of all their weights (default 0: full)")
    ft.add_argument("--lora-alpha", type=float, default=None, help="LoRA scale numerator (default: the rank)")
    ft.add_argument("--frames-per-clip", type=int, default=8, help="frames per training clip (default 8, as SAM2)")
    ft.add_argument("--steps", type=int, default=1000, help="optimiser steps (default 1000)")
    ft.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-4; 1e-3 with --lora)")
    ft.add_argument("--max-objects", type=int, default=3, help="objects per clip (default 3)")
    ft.add_argument("--resolution", type=int, help="model input size (default: the checkpoint's, 1024; 512 or 256 train faster)")
    ft.add_argument("--val", default=None, metavar="NAMES|FRACTION",
                    help="held-out sequences (comma-separated names) or a fraction of them (default 0.2; a single "
                    "sequence holds out its last frames; 0 validates nothing)")
    ft.add_argument("--val-every", type=int, default=None, metavar="STEPS", help="steps between validations (default: a tenth of the run)")
    ft.add_argument("--patience", type=int, default=5, help="stop after this many validations without a better J&F (default 5; 0 never)")
    ft.add_argument("--seed", type=int, default=0, help="of clip sampling and the validation split (default 0)")
    ft.add_argument("--save-minutes", type=float, default=5.0, help="save the run's state this often (default 5)")
    ft.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    ft.add_argument("--work", help="folder of the run's state, history and validation (default OUT.finetune/ beside the adapter)")
    ft.add_argument("--cache", help="folder of cached image features (default WORK/features)")
    ft.add_argument("--resume", action="store_true", help="continue an interrupted run (same options required)")
    ft.add_argument("--quiet", action="store_true", help="no progress lines")
    ft.set_defaults(func=cmd_finetune)


def cmd_export(args: argparse.Namespace) -> int:
    """Convert existing results (label maps) into the formats annotation tools and benchmarks read."""
    from maskvos.app import export_results
    from maskvos.io.writers import ObjectCategories

    categories = ObjectCategories.parse(args.category) if args.category else None
    summary = export_results(args.pred_dir, args.format, args.out, categories=categories, video_name=args.video_name,
                             image_prefix=args.image_prefix, image_suffix=args.image_suffix)
    print("\n".join(summary.lines()))
    return 0


def _export_formats(text: str) -> list[str]:
    from maskvos.app import EXPORT_FORMATS

    return _format_list(text, EXPORT_FORMATS, "cannot be exported")


def _add_export_parser(sub) -> None:
    ex = sub.add_parser(
        "export",
        help="convert results (label maps) to COCO video, MOTS, YouTube-VOS, CVAT XML or Label Studio",
        description="Convert existing results into other formats: PRED_DIR is a maskvos segment --out folder "
        "(masks/*.png), a folder of label-map PNGs, a DAVIS-layout predictions folder (<seq>/<frame>.png, as "
        "eval-run writes) or a maskvos batch folder (<video>/masks/). One video goes into OUT, several into "
        "OUT/<video>/.",
    )
    ex.add_argument("pred_dir", help="results folder holding label-map PNGs")
    ex.add_argument("--format", type=_export_formats, required=True,
                    help="comma-separated: coco-video (YouTube-VIS/OVIS instances JSON), mots (16-bit PNG "
                    "class*1000+id, and txt), youtube-vos (Annotations/ + meta.json), cvat-xml (CVAT for video 1.1, "
                    "masks in CVAT's RLE), label-studio (brush predictions JSON), png, objects, rle")
    ex.add_argument("--out", required=True, help="output folder")
    ex.add_argument("--category", nargs="+", metavar="OBJ=NAME[:ID]",
                    help="category of an object, e.g. 1=person 2=car:3 (default: every object 'object', id 1)")
    ex.add_argument("--video-name", help="the video's name in the files (default: the folder's name)")
    ex.add_argument("--image-prefix", default="", help="prefix of the image paths written (e.g. the tool's data folder)")
    ex.add_argument("--image-suffix", default=".jpg", help="extension of the frames' image files (default .jpg)")
    ex.set_defaults(func=cmd_export)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the session API and the web page."""
    from maskvos.serve import ServeSettings, build_pool, serve
    from maskvos.serve.server import check_root, configure_logging

    names: list[str] = []
    if args.integrations:
        from maskvos.integrations import check_names

        names = check_names([n.strip() for n in args.integrations.split(",") if n.strip()])
    root = check_root(args.root)
    configure_logging()
    if args.model or args.checkpoint:
        print(f"maskvos serve: loading {args.checkpoint or args.model} ...", file=sys.stderr, flush=True)
    config = _serve_config(args)
    pool = build_pool(args.model, args.checkpoint, args.device, config, _note, adapter=args.adapter)
    settings = ServeSettings(root=root, max_sessions=args.max_sessions, idle_s=args.idle_timeout,
                             max_upload_mb=args.max_upload_mb, integrations=tuple(names))
    if names:
        from maskvos.integrations import create_app_with

        serve(args.host, args.port, pool, settings, announce=lambda line: print(line, flush=True),
              app_factory=create_app_with)
    else:
        serve(args.host, args.port, pool, settings, announce=lambda line: print(line, flush=True))
    return 0


def cmd_serve_integration(args: argparse.Namespace) -> int:
    """Serve one tool adapter alone, at the root of its address."""
    from maskvos.integrations import check_servable, serve_integration
    from maskvos.serve import ServeSettings, build_pool
    from maskvos.serve.server import check_root, configure_logging

    name = args.name
    check_servable(name)  # before the model is loaded
    root = check_root(args.root)
    configure_logging()
    if args.model or args.checkpoint:
        print(f"maskvos serve-integration: loading {args.checkpoint or args.model} ...", file=sys.stderr, flush=True)
    pool = build_pool(args.model, args.checkpoint, args.device, _serve_config(args), _note, adapter=args.adapter)
    settings = ServeSettings(root=root, max_sessions=args.max_sessions, idle_s=args.idle_timeout,
                             max_upload_mb=args.max_upload_mb)
    serve_integration(name, args.host, args.port, pool, settings, announce=lambda line: print(line, flush=True))
    return 0


def _serve_config(args: argparse.Namespace):
    """The sessions' InferenceConfig of serve: --resolution, --dtype, --compile (refused before the model
    loads where they cannot apply: featmatch, or torch.compile unable to work on the device)."""
    import torch

    from maskvos.app.models import check_execution
    from maskvos.backends import BACKENDS, backend_for
    from maskvos.inference.config import InferenceConfig

    config = InferenceConfig(resolution=args.resolution, **_execution_settings(args))
    source = args.checkpoint or args.model
    backend = backend_for(source) if source else BACKENDS["sam2"]
    device = args.device or ("cuda" if torch.cuda.is_available() and "cuda" in backend.devices else "cpu")
    check_execution(backend, torch.device(device), config, notify=_note)
    return config


def _add_server_args(sv: argparse.ArgumentParser) -> None:
    """Model, address, root and limits: shared by serve and serve-integration."""
    group = sv.add_mutually_exclusive_group()
    group.add_argument("--model", help="published model name, e.g. sam2.1-tiny (downloaded once; featmatch if it "
                       "cannot be), or featmatch; default: sam2.1-tiny if cached, else featmatch")
    group.add_argument("--checkpoint", help="path of a SAM2/SAM2.1 .pt checkpoint or a maskvos .safetensors file")
    _add_adapter_arg(sv)
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    sv.add_argument("--root", default=".", help="folder whose videos and frame folders may be opened (default: here)")
    sv.add_argument("--resolution", type=int, help="SAM2 model input size (default 1024; 512 is faster)")
    sv.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    _add_execution_args(sv)
    sv.add_argument("--max-sessions", type=int, default=8, help="sessions open at once (default 8)")
    sv.add_argument("--idle-timeout", type=float, default=1800.0, metavar="SECONDS",
                    help="close a session after this long without a request (default 1800)")
    sv.add_argument("--max-upload-mb", type=int, default=4096, help="largest upload accepted, in MiB (default 4096)")


def _add_serve_parser(sub) -> None:
    sv = sub.add_parser("serve", help="the interactive web page and the session HTTP API",
                        description="Serve a web page (and its HTTP API) to open a video, paint, click or box "
                        "objects, propagate, correct and export. Binds 127.0.0.1 unless --host says otherwise.")
    _add_server_args(sv)
    sv.add_argument("--integrations", metavar="NAMES",
                    help="also serve tool adapters under /integrations/<name>: comma-separated from cvat, "
                    "label-studio, x-anylabeling")
    sv.set_defaults(func=cmd_serve)
    si = sub.add_parser("serve-integration", help="serve one annotation-tool adapter alone (label-studio, x-anylabeling)",
                        description="Serve one tool adapter at the root of its address: give the printed URL to "
                        "the tool as its ML backend (Label Studio) or remote server (X-AnyLabeling). CVAT's "
                        "adapter is a cvat-cli function module instead (see the README).")
    si.add_argument("name", help="label-studio or x-anylabeling")
    _add_server_args(si)
    si.set_defaults(func=cmd_serve_integration)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskvos", description="Video object segmentation from prompts.")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="describe a model checkpoint")
    _add_model_args(info)
    info.set_defaults(func=cmd_info)
    _add_segment_parser(sub)
    _add_batch_parser(sub)
    _add_export_parser(sub)
    _add_finetune_parser(sub)
    _add_eval_parsers(sub)
    _add_serve_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MaskvosError as exc:
        print(f"maskvos: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        command = getattr(args, "command", "")
        hint = {"segment": "; run the same command with --resume to continue",
                "batch": "; run the same command again to continue (finished videos are skipped)",
                "finetune": "; run the same command with --resume to continue"}.get(command, "")
        print(f"maskvos: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
