"""The application layer: passes and resume, the post-processing chain, saved states that cannot be
used, device choice, settings a backend does not honour, prompts from files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from maskvos.app import (
    LoadedModel,
    SaveSchedule,
    prompts_from_mask_file,
    resolve_device,
    segment_video,
    settings_for,
)
from maskvos.app.state import STATE_DIR
from maskvos.backends import BACKENDS, open_session
from maskvos.backends.featmatch import FeatMatchConfig, FeatMatchModel
from maskvos.checkpoints import save_checkpoint
from maskvos.cli import main
from maskvos.errors import ConfigError
from maskvos.inference.api import Pass, SessionError, plan_passes
from maskvos.inference.config import InferenceConfig
from maskvos.inference.postprocess import PostChain, PostProcessor
from maskvos.inference.session import VideoSession
from maskvos.io.frames import open_source
from maskvos.io.masks import MaskFileError, read_label_map, write_label_map
from maskvos.io.writers import OutputError
from maskvos.model.sam2 import SAM2Model

from media_tools import occlusion_video
from model_tools import tiny_sam2

H, W, N = 48, 64, 12


@pytest.fixture(scope="module")
def model() -> SAM2Model:
    return tiny_sam2()


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    rng = np.random.default_rng(1)
    video = (rng.random((N, H, W, 3)) * 255).astype(np.uint8)
    for i in range(N):
        video[i, 10:30, 5 + 2 * i : 25 + 2 * i] = [230, 30, 30]
    return video


def _prompt_file(tmp_path: Path) -> Path:
    labels = np.zeros((H, W), np.uint8)
    labels[10:30, 5:25] = 1
    labels[35:45, 40:60] = 2
    path = tmp_path / "prompt.png"
    write_label_map(path, labels)
    return path


# --------------------------------------------------------------------------- passes


def test_plan_passes_and_resuming_a_pass():
    assert plan_passes("forward", 3, None, 10) == [Pass(3, 9, False)]
    assert plan_passes("backward", 3, None, 10) == [Pass(3, 0, True)]
    both = plan_passes("both", 3, None, 10)
    assert both == [Pass(3, 9, False), Pass(3, 0, True, skip_start=True)]
    assert [p.length(10) for p in both] == [7, 3]
    assert plan_passes("forward", 3, None, None) == [Pass(3, None, False)] and Pass(3, None, False).length(None) is None
    assert both[0].resumed_at(5) == Pass(5, 9, False) and both[0].resumed_at(10) is None
    assert both[1].resumed_at(3) == both[1] and both[1].resumed_at(2) == Pass(2, 0, True)
    assert both[1].resumed_at(-1) is None
    with pytest.raises(SessionError, match="comes before start frame"):
        plan_passes("forward", 5, 2, 10)


def test_changing_prompts_while_a_propagation_is_open_is_refused(model, clip):
    session = VideoSession(model, clip)
    mask = np.zeros((H, W), bool)
    mask[10:30, 5:25] = True
    session.add_mask(0, 1, mask)
    results = session.propagate()
    first = next(results)
    assert first.frame_idx == 0 and first.is_prompt == [True]
    assert next(results).is_prompt == [False]
    for change in (lambda: session.add_mask(3, 2, mask), lambda: session.add_points(3, 1, [[10, 10]]),
                   lambda: session.remove_object(1)):
        with pytest.raises(SessionError, match="still open"):
            change()
    with pytest.raises(SessionError, match="still open"):
        next(session.propagate(start=4))
    results.close()
    # Once closed, a correction is accepted and the next propagation starts there.
    session.add_points(4, 1, [[15, 20]], [1])
    assert next(session.propagate()).frame_idx == 4


def test_featmatch_refuses_prompt_changes_while_open():
    frames, truths = occlusion_video(4)
    session = open_session(FeatMatchModel(FeatMatchConfig(scale=1.0)), frames)
    session.add_mask(0, 1, truths[0][1])
    results = session.propagate()
    next(results)
    with pytest.raises(SessionError, match="still open"):
        session.add_mask(1, 2, truths[1][2])
    results.close()
    session.add_mask(1, 2, truths[1][2])


# --------------------------------------------------------------------------- the post-processing chain


class _Window(PostProcessor):
    """Holds two frames back, then hands each out with its masks ANDed with the next frame's
    (a real temporal rule with look-ahead); prompted objects are left alone; state is saved."""

    max_delay = 2

    def __init__(self) -> None:
        self.held: list = []

    def __repr__(self) -> str:
        return "_Window()"

    def process(self, result):
        self.held.append(result)
        if len(self.held) <= self.max_delay:
            return []
        return [self._emit()]

    def flush(self):
        out = []
        while self.held:
            out.append(self._emit())
        return out

    def _emit(self):
        head = self.held.pop(0)
        if not self.held:
            return head
        masks = head.masks.clone()
        for i, is_prompt in enumerate(head.is_prompt):
            if not is_prompt:
                masks[i] &= self.held[0].masks[i]
        return dataclasses.replace(head, masks=masks, labels=None)

    def state_dict(self):
        return {"held": [dataclasses.asdict(r) for r in self.held]}

    def load_state_dict(self, state):
        from maskvos.inference.api import FrameResult

        self.held = [FrameResult(**r) for r in state["held"]]


def test_chain_keeps_order_flushes_and_resumes_exactly(model, clip, tmp_path):
    prompt = _prompt_file(tmp_path)
    source = open_source(clip)
    prompts = prompts_from_mask_file(prompt, source, 0, None)
    config = InferenceConfig(resolution=64)
    whole = segment_video(model, clip, prompts, tmp_path / "whole", config=config, direction="both",
                          postprocessors=[_Window()], model_name="m")
    assert whole.frames_written == N

    class Stop:
        done = 0

        def update(self, n=1):
            Stop.done += n
            if Stop.done == 7:
                raise KeyboardInterrupt

        def close(self):
            pass

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        segment_video(model, clip, prompts, out, config=config, direction="both", postprocessors=[_Window()],
                      model_name="m", save=SaveSchedule(every_frames=3), progress=lambda total: Stop())
    resumed = segment_video(model, clip, prompts, out, config=config, direction="both", postprocessors=[_Window()],
                            model_name="m", resume=True)
    assert resumed.resumed_at is not None and resumed.frames_written < N
    for i in range(N):
        a = read_label_map(tmp_path / "whole" / "masks" / f"{i:05d}.png")
        assert np.array_equal(a, read_label_map(out / "masks" / f"{i:05d}.png")), f"frame {i}"
    # The window did change something (so the equality above says something about its state).
    plain = segment_video(model, clip, prompts, tmp_path / "plain", config=config, direction="both", model_name="m")
    assert plain.frames_written == N
    differs = [not np.array_equal(read_label_map(tmp_path / "plain" / "masks" / f"{i:05d}.png"),
                                  read_label_map(tmp_path / "whole" / "masks" / f"{i:05d}.png")) for i in range(N)]
    assert any(differs)
    assert not differs[0], "the prompt frame is never altered"


def test_chain_with_no_step_is_identity(model, clip):
    session = VideoSession(model, clip, InferenceConfig(resolution=64))
    mask = np.zeros((H, W), bool)
    mask[10:30, 5:25] = True
    session.add_mask(0, 1, mask)
    chain = PostChain()
    result = next(session.propagate())
    assert chain.process(result) == [result] and chain.flush() == []


# --------------------------------------------------------------------------- saved states


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory) -> Path:
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def _segment(clip_dir, prompt, checkpoint, out, *extra):
    return main(["segment", str(clip_dir), "--prompt", str(prompt), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--resolution", "64", "--quiet", *extra])


@pytest.fixture()
def clip_dir(clip, tmp_path) -> Path:
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(clip):
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    return folder


@pytest.mark.parametrize("damage", ["truncated", "garbage", "older"])
def test_resume_over_an_unusable_state_is_one_sentence(damage, clip_dir, checkpoint, tmp_path, capsys):
    prompt = _prompt_file(tmp_path)
    out = tmp_path / "out"
    assert _segment(clip_dir, prompt, checkpoint, out) == 0
    state = out / STATE_DIR / "state.pt"
    if damage == "truncated":
        state.write_bytes(state.read_bytes()[:200])
    elif damage == "garbage":
        state.write_bytes(b"not a state at all")
    else:
        saved = torch.load(state, weights_only=True)
        saved["version"] = 1
        torch.save(saved, state)
    capsys.readouterr()
    assert _segment(clip_dir, prompt, checkpoint, out, "--resume") == 2
    err = capsys.readouterr().err
    assert err.startswith("maskvos: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert str(state) in err and "without --resume" in err
    # Starting afresh works.
    assert _segment(clip_dir, prompt, checkpoint, out) == 0


def test_eval_run_over_a_corrupt_state_and_without_cuda(tmp_path, capsys, monkeypatch):
    from PIL import Image

    frames, truths = occlusion_video(4)
    root = tmp_path / "data"
    (root / "JPEGImages" / "seq").mkdir(parents=True)
    (root / "Annotations" / "seq").mkdir(parents=True)
    for t in range(4):
        Image.fromarray(frames[t]).save(root / "JPEGImages" / "seq" / f"{t:05d}.jpg", quality=95)
        write_label_map(root / "Annotations" / "seq" / f"{t:05d}.png", truths[t][1].astype(np.uint8))
    out = tmp_path / "pred"
    (out / "seq" / STATE_DIR).mkdir(parents=True)
    (out / "seq" / STATE_DIR / "state.pt").write_bytes(b"\x00" * 10)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["eval-run", str(root), "--model", "featmatch", "--out", str(out), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "no usable CUDA GPU" in err and err.count("\n") == 1 and "Traceback" not in err
    assert main(["eval-run", str(root), "--model", "featmatch", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is corrupt or truncated" in err and "afresh" in err and err.count("\n") == 1 and "Traceback" not in err


# --------------------------------------------------------------------------- devices and settings


def test_featmatch_on_a_cuda_machine_runs_on_the_cpu(monkeypatch, tmp_path, capsys):
    """Before: the CLI picked cuda and featmatch failed with a device-mismatch traceback."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None, BACKENDS["featmatch"]) == torch.device("cpu")
    assert resolve_device(None, BACKENDS["sam2"]) == torch.device("cuda")
    with pytest.raises(ConfigError, match="runs on cpu only") as err:
        resolve_device("cuda", BACKENDS["featmatch"])
    assert str(err.value).count(". ") == 0
    frames, truths = occlusion_video(4)
    from PIL import Image

    folder = tmp_path / "clip"
    folder.mkdir()
    for t in range(4):
        Image.fromarray(frames[t]).save(folder / f"{t:05d}.jpg", quality=95)
    write_label_map(tmp_path / "p.png", truths[0][1].astype(np.uint8))
    code = main(["segment", str(folder), "--prompt", str(tmp_path / "p.png"), "--model", "featmatch",
                 "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert len(list((tmp_path / "out" / "masks").glob("*.png"))) == 4


def test_a_setting_featmatch_does_not_honour_is_refused_not_ignored(tmp_path, capsys):
    frames, truths = occlusion_video(4)
    featmatch = FeatMatchModel(FeatMatchConfig(scale=1.0))
    for config in (InferenceConfig(resolution=512), InferenceConfig(memory_stride=2), InferenceConfig(keep_all_memories=True)):
        with pytest.raises(ConfigError, match="featmatch backend does not use") as err:
            open_session(featmatch, frames, config)
        assert "\n" not in str(err.value)
    # Honoured: the overlap rule, the feature cache.
    session = open_session(featmatch, frames, InferenceConfig(overlap="order", feature_cache=2))
    session.add_mask(0, 1, truths[0][1])
    assert session.config.overlap == "order" and session.frames.cache_size == 2
    assert next(session.propagate()).overlap == "order"
    # The CLI says it in one sentence.
    from PIL import Image

    folder = tmp_path / "clip"
    folder.mkdir()
    for t in range(4):
        Image.fromarray(frames[t]).save(folder / f"{t:05d}.jpg")
    write_label_map(tmp_path / "p.png", truths[0][1].astype(np.uint8))
    code = main(["segment", str(folder), "--prompt", str(tmp_path / "p.png"), "--model", "featmatch",
                 "--resolution", "512", "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "does not use --resolution" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_after_a_fallback_sam2_settings_are_dropped_with_a_note():
    notes = []
    fell_back = LoadedModel(object(), "featmatch", BACKENDS["featmatch"], torch.device("cpu"), fell_back=True)  # type: ignore[arg-type]
    config = settings_for(fell_back, InferenceConfig(resolution=512, overlap="order"), notes.append)
    assert config == InferenceConfig(overlap="order")
    assert notes == ["--resolution applies to SAM2 models only; featmatch runs without it."]
    asked = dataclasses.replace(fell_back, fell_back=False)
    assert settings_for(asked, InferenceConfig(resolution=512), notes.append) == InferenceConfig(resolution=512)


# --------------------------------------------------------------------------- prompts from files


def test_void_label_prompt_says_what_happened(tmp_path, clip):
    labels = np.zeros((H, W), np.uint8)
    labels[5:20, 5:20] = 255
    write_label_map(tmp_path / "void.png", labels)
    with pytest.raises(MaskFileError, match="void") as err:
        prompts_from_mask_file(tmp_path / "void.png", open_source(clip), 0, None)
    assert "16-bit" in str(err.value) and "empty" not in str(err.value)


def test_more_than_254_objects_from_a_16_bit_id_map(tmp_path, clip):
    labels = np.zeros((H, W), np.uint16)
    labels[0:10, 0:10] = 7
    labels[20:30, 20:30] = 300
    labels[40:48, 50:60] = 1000
    write_label_map(tmp_path / "ids.png", labels)
    specs = prompts_from_mask_file(tmp_path / "ids.png", open_source(clip), 2, None)
    assert sorted(s.obj_id for s in specs) == [7, 300, 1000]
    assert all(s.frame_idx == 2 for s in specs)
    by_id = {s.obj_id: s.mask for s in specs}
    assert np.array_equal(by_id[300], labels == 300)


def test_unknown_output_format_is_refused_before_anything_is_written(model, clip, tmp_path):
    specs = prompts_from_mask_file(_prompt_file(tmp_path), open_source(clip), 0, None)
    with pytest.raises(OutputError, match="Output format 'gif' is unknown"):
        segment_video(model, clip, specs, tmp_path / "out", formats=["gif"])
    assert not (tmp_path / "out").exists()


def test_progress_on_a_terminal_and_in_a_log():
    import io

    from maskvos.app import terminal_progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty = Terminal()
    bar = terminal_progress("segmenting", tty)(10)
    for _ in range(10):
        bar.update()
    bar.close()
    assert "10/10" in tty.getvalue() and "frames/s" in tty.getvalue()
    log = io.StringIO()
    bar = terminal_progress("segmenting", log)(10)
    for _ in range(10):
        bar.update()
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and lines and lines[-1].startswith("segmenting") and "10/10" in lines[-1]
    assert len(lines) <= 3, "off a terminal only a line now and then, and at the end"


@pytest.mark.parametrize(("direction", "prompt_frame"), [("forward", 0), ("both", 6)])
def test_resume_with_frames_held_by_the_chain_at_any_point(model, clip, tmp_path, direction, prompt_frame):
    """Interrupted after every possible number of written frames (pass boundaries and the final flush
    included, where the chain still held frames when the state was saved), the resumed run writes
    exactly the uninterrupted run's files."""
    source = open_source(clip)
    prompts = prompts_from_mask_file(_prompt_file(tmp_path), source, prompt_frame, None)
    config = InferenceConfig(resolution=64)
    args = dict(config=config, direction=direction, model_name="m")
    segment_video(model, clip, prompts, tmp_path / "whole", postprocessors=[_Window()], **args)
    expected = {i: read_label_map(tmp_path / "whole" / "masks" / f"{i:05d}.png") for i in range(N)}

    class Stop:
        def __init__(self, after):
            self.after, self.done = after, 0

        def update(self, n=1):
            self.done += n
            if self.done == self.after:
                raise KeyboardInterrupt

        def close(self):
            pass

    for after in range(1, N):
        out = tmp_path / f"stopped-{after}"
        with pytest.raises(KeyboardInterrupt):
            segment_video(model, clip, prompts, out, postprocessors=[_Window()], save=SaveSchedule(every_frames=2),
                          progress=lambda total, after=after: Stop(after), **args)
        segment_video(model, clip, prompts, out, postprocessors=[_Window()], resume=True, **args)
        for i in range(N):
            got = read_label_map(out / "masks" / f"{i:05d}.png")
            assert np.array_equal(got, expected[i]), f"stopped after {after} frames: frame {i} differs"
