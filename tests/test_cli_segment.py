"""`maskvos segment`: every output format read back, resume after an interruption, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from maskvos.app import SaveSchedule, prompts_from_mask_file, segment_video
from maskvos.checkpoints import save_checkpoint
from maskvos.cli import main
from maskvos.inference.config import InferenceConfig
from maskvos.inference.session import VideoSession
from maskvos.io.frames import open_source
from maskvos.io.masks import read_label_map, write_label_map
from maskvos.io.writers import decode_rle

from media_tools import write_video
from model_tools import tiny_sam2

H, W, N = 48, 64, 14


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_checkpoint(tiny_sam2(), tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clip") / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(N):
        img = (rng.random((H, W, 3)) * 255).astype(np.uint8)
        img[10:30, 5 + 2 * i : 25 + 2 * i] = [230, 30, 30]
        Image.fromarray(img).save(folder / f"img_{i}.jpg")  # natural order: img_2 before img_10
    return folder


@pytest.fixture(scope="module")
def prompt(tmp_path_factory) -> Path:
    labels = np.zeros((H, W), np.uint8)
    labels[10:30, 5:25] = 1
    labels[35:45, 40:60] = 2
    path = tmp_path_factory.mktemp("prompt") / "first.png"
    write_label_map(path, labels)
    return path


def _segment(video, prompt, checkpoint, out, *extra) -> int:
    return main(["segment", str(video), "--prompt", str(prompt), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--resolution", "64", "--quiet", *extra])


def test_every_format_matches_the_python_api(video, prompt, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert _segment(video, prompt, checkpoint, out, "--format", "png,objects,rle,overlay") == 0
    summary = capsys.readouterr().out
    assert f"segmented {N} frames of 2 object(s)" in summary
    from maskvos.checkpoints import load_model

    session = VideoSession(load_model(checkpoint), video, InferenceConfig(resolution=64))
    prompt_labels = read_label_map(prompt)
    for obj_id in (1, 2):
        session.add_mask(0, obj_id, prompt_labels == obj_id)
    stems = [f"img_{i}" for i in range(N)]
    for result, stem in zip(session.propagate(), stems, strict=True):
        labels = read_label_map(out / "masks" / f"{stem}.png")
        assert np.array_equal(labels, result.label_map())
        record = json.loads((out / "rle" / f"{stem}.json").read_text())
        for i, obj_id in enumerate(result.obj_ids):
            mask = result.masks[i].numpy()
            assert np.array_equal(decode_rle(record["objects"][str(obj_id)]), mask)
            png = np.asarray(Image.open(out / "objects" / str(obj_id) / f"{stem}.png"))
            assert np.array_equal(png > 0, mask)
    assert np.array_equal(read_label_map(out / "masks" / "img_0.png"), prompt_labels), "the prompt comes back as given"
    with av.open(str(out / "overlay.mp4")) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == N and decoded[0].shape == (H, W, 3)
    assert not list(out.rglob("*.part*")), "temporary files were left behind"


def test_points_and_box_prompts_on_a_video_file(tmp_path, checkpoint, capsys):
    clip = tmp_path / "clip.mp4"
    write_video(clip, 6)
    out = tmp_path / "out"
    code = main(["segment", str(clip), "--points", "20,20,1", "40,30,0", "--box", "10,10,40,40", "--obj-id", "4",
                 "--frame", "2", "--direction", "both", "--checkpoint", str(checkpoint), "--out", str(out),
                 "--resolution", "64", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.stem for p in (out / "masks").iterdir()) == [f"{i:05d}" for i in range(6)]
    assert set(np.unique(read_label_map(out / "masks" / "00002.png"))) <= {0, 4}


class _InterruptAfter:
    """A progress display that stops the run (as Ctrl-C would) once `frames` frames were written."""

    def __init__(self, frames: int) -> None:
        self.frames, self.done = frames, 0

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.done == self.frames:
            raise KeyboardInterrupt

    def close(self) -> None:
        pass


def test_resume_after_an_interruption_gives_the_uninterrupted_result(video, prompt, checkpoint, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    assert _segment(video, prompt, checkpoint, reference, "--format", "png,rle") == 0
    from maskvos.checkpoints import load_model

    out = tmp_path / "out"
    model = load_model(checkpoint)
    source = open_source(video)
    prompts = prompts_from_mask_file(prompt, source, 0, None)
    with pytest.raises(KeyboardInterrupt):
        segment_video(model, source, prompts, out, formats=["png", "rle"], config=InferenceConfig(resolution=64),
                      model_name=str(checkpoint), save=SaveSchedule(every_frames=4), progress=lambda total: _InterruptAfter(10))
    assert not (out / "masks" / "img_10.png").exists()
    assert not list(out.rglob("*.part*")), "temporary files were left behind"
    starts = []
    real_run_passes = VideoSession.run_passes

    def spy(self, passes):
        starts.append(passes[0].start)
        return real_run_passes(self, passes)

    monkeypatch.setattr(VideoSession, "run_passes", spy)
    assert _segment(video, prompt, checkpoint, out, "--format", "png,rle", "--resume") == 0
    assert starts == [8], "the run should resume after the last saved frame (7), not start over"
    for i in range(N):
        a = read_label_map(reference / "masks" / f"img_{i}.png")
        b = read_label_map(out / "masks" / f"img_{i}.png")
        assert np.array_equal(a, b), f"frame {i} differs after resuming"
        assert (reference / "rle" / f"img_{i}.json").read_text() == (out / "rle" / f"img_{i}.json").read_text()


def test_resume_refuses_a_run_with_other_settings(video, prompt, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert _segment(video, prompt, checkpoint, out) == 0
    capsys.readouterr()
    assert _segment(video, prompt, checkpoint, out, "--resume", "--direction", "both") == 2
    assert "holds a run with other settings" in capsys.readouterr().err


def _bad_inputs(tmp_path: Path, video: Path, prompt: Path):
    corrupt = tmp_path / "broken.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    empty = tmp_path / "empty"
    empty.mkdir()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(mixed / "0.jpg")
    (mixed / "notes.txt").write_text("hello")
    small = tmp_path / "small.png"
    write_label_map(small, np.ones((10, 10), np.uint8))
    blank = tmp_path / "blank.png"
    write_label_map(blank, np.zeros((H, W), np.uint8))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    p = str(prompt)
    return [
        (["segment", str(corrupt), "--prompt", p], "cannot be decoded"),
        (["segment", str(empty), "--prompt", p], "holds no images"),
        (["segment", str(mixed), "--prompt", p], "not images (notes.txt)"),
        (["segment", str(video), "--prompt", str(small)], "is 10x10 but the video is 64x48"),
        (["segment", str(video), "--prompt", str(blank)], "is empty"),
        (["segment", str(video), "--prompt", p, "--frame", "99"], "outside the video"),
        (["segment", str(video), "--points", "500,5,1"], "outside the 64x48 frame"),
        (["segment", str(video), "--prompt", p, "--out-override", str(blocker / "sub")], "is not writable"),
        (["segment", str(video)], "No prompt was given"),
    ]


def test_bad_input_gives_one_sentence_and_writes_nothing(video, prompt, checkpoint, tmp_path, capsys):
    for argv, message in _bad_inputs(tmp_path, video, prompt):
        out = tmp_path / "never"
        if "--out-override" in argv:
            i = argv.index("--out-override")
            out = Path(argv[i + 1])
            argv = argv[:i] + argv[i + 2 :]
        code = main([*argv, "--checkpoint", str(checkpoint), "--out", str(out), "--resolution", "64", "--quiet"])
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert message in err, (message, err)
        assert err.startswith("maskvos: error: ") and err.count("\n") == 1 and "Traceback" not in err
        assert not (tmp_path / "never").exists(), f"{argv}: an output folder was created"


@pytest.mark.parametrize("policy", ["samurai", "sam2long", "dam4sam"])
def test_memory_policies_resume_from_the_cli_as_uninterrupted(policy, video, prompt, checkpoint, tmp_path):
    """Each policy that carries state from frame to frame (a filter, pathway trees, area history)
    resumes an interrupted run with the uninterrupted masks."""
    reference = tmp_path / "reference"
    extra = ["--memory-policy", policy, "--format", "png"] + (["--pathway-lag", "3"] if policy == "sam2long" else [])
    assert _segment(video, prompt, checkpoint, reference, *extra) == 0
    from maskvos.checkpoints import load_model
    from maskvos.inference.policies import SAM2LongPolicy

    chosen = SAM2LongPolicy(lag=3) if policy == "sam2long" else policy
    out = tmp_path / "out"
    source = open_source(video)
    with pytest.raises(KeyboardInterrupt):
        segment_video(load_model(checkpoint), source, prompts_from_mask_file(prompt, source, 0, None), out, formats=["png"],
                      config=InferenceConfig(resolution=64, memory_policy=chosen), model_name=str(checkpoint),
                      save=SaveSchedule(every_frames=4), progress=lambda total: _InterruptAfter(10))
    assert _segment(video, prompt, checkpoint, out, *extra, "--resume") == 0
    for i in range(N):
        a = read_label_map(reference / "masks" / f"img_{i}.png")
        assert np.array_equal(a, read_label_map(out / "masks" / f"img_{i}.png")), f"frame {i} differs after resuming"


def test_pathway_lag_needs_the_sam2long_policy(video, prompt, checkpoint, tmp_path, capsys):
    assert _segment(video, prompt, checkpoint, tmp_path / "out", "--pathway-lag", "4") == 2
    err = capsys.readouterr().err
    assert err == "maskvos: error: --pathway-lag applies to --memory-policy sam2long only; add that or drop --pathway-lag.\n"
