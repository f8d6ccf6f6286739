"""`maskvos batch`: manifests, results equal to `maskvos segment` video by video on every runner (this
process, a process pool, Ray in local mode), a bad row failing alone, resume after an interrupted
batch and after a killed worker, and the refusal of a folder holding another batch."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maskvos.app import SaveSchedule, load_run_model, prompts_from_mask_file, segment_video
from maskvos.app.state import STATE_DIR
from maskvos.batch import BatchError, BatchSettings, ManifestError, ModelSpec, read_manifest, run_batch
from maskvos.batch.runners import threads_per_worker
from maskvos.cli import main
from maskvos.io.frames import open_source
from maskvos.io.masks import read_label_map, write_label_map

H, W = 72, 96


def _video(folder: Path, n: int, seed: int) -> Path:
    """A textured background with a red square moving right; frames as PNG (lossless)."""
    rng = np.random.default_rng(seed)
    background = (rng.random((H, W, 3)) * 200).astype(np.uint8)
    folder.mkdir(parents=True)
    for i in range(n):
        frame = background.copy()
        x = 8 + (i * 2) % (W - 40)
        frame[20:44, x : x + 24] = [230, 30, 30]
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    return folder


def _prompt(path: Path) -> Path:
    labels = np.zeros((H, W), np.uint8)
    labels[20:44, 8:32] = 1
    write_label_map(path, labels)
    return path


@pytest.fixture(scope="module")
def featmatch():
    return load_run_model("featmatch", "cpu", needs=frozenset({"mask"}), allow_fallback=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for name, n, seed in (("alpha", 10, 1), ("beta", 8, 2), ("gamma", 9, 3)):
        _video(root / name, n, seed)
    _prompt(root / "prompt.png")
    return root


def _manifest(data: Path, path: Path, names=("alpha", "beta", "gamma"), extra: str = "") -> Path:
    lines = ["source,prompt,frame,points,box,obj_id,out"]
    lines += [f"{data / n},{data / 'prompt.png'},,,,," for n in names]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def _labels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: read_label_map(p) for p in sorted((folder / "masks").glob("*.png"))}


def _segment_each(data: Path, featmatch, folder: Path, threads: int) -> dict[str, dict[str, np.ndarray]]:
    """Each video run alone by `segment_video`, as `maskvos segment` runs it, on `threads` threads
    (sums of floats depend on how they are split among threads: a pixel can differ between 1 and 2)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = {}
        for name in ("alpha", "beta", "gamma"):
            source = open_source(data / name)
            segment_video(featmatch.model, source, prompts_from_mask_file(data / "prompt.png", source, 0, None),
                          folder / name, model_name=featmatch.name)
            out[name] = _labels(folder / name)
        return out
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(data: Path, featmatch, tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    """`maskvos segment` of each video with this process's threads."""
    return _segment_each(data, featmatch, tmp_path_factory.mktemp("ref"), torch.get_num_threads())


def _assert_equal_to_reference(out: Path, reference, names=("alpha", "beta", "gamma")) -> None:
    for name in names:
        got = _labels(out / name)
        assert list(got) == list(reference[name]), name
        for frame, labels in reference[name].items():
            assert np.array_equal(got[frame], labels), f"{name}/{frame}"


# --- manifests -----------------------------------------------------------------------------------


def test_csv_manifest_rows(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "source,prompt,frame,points,box,obj_id,out\n"
        "clips/a.mp4,masks/a.png,3,,,2,\n"
        "clips/b.mp4,,0,\"10,20,1;30,40,0\",\"5,6,50,60\",,results/bee\n"
        "clips/c.mp4,m.png,x,,,,\n"
        "clips/d.mp4,,,,\"9,9,1,1\",,\n"
        "clips/e.mp4,,,,,,\n"
        ",m.png,,,,,\n"
        "other/a.mp4,masks/a2.png,,,,,\n"
    )
    items = read_manifest(manifest)
    assert [i.name for i in items[:2]] == ["a", "bee"]
    a, b, c, d, e, f, g = items
    assert a.source == str(tmp_path / "clips/a.mp4") and a.prompt == str(tmp_path / "masks/a.png")
    assert (a.frame, a.obj_id, a.problem) == (3, 2, None)
    assert b.points == ((10.0, 20.0, 1), (30.0, 40.0, 0)) and b.box == (5.0, 6.0, 50.0, 60.0)
    assert b.out_dir(Path("/x")) == tmp_path / "results/bee"
    assert c.problem == "Manifest row 4 has frame 'x', not a whole number."
    assert "corners are not ordered" in d.problem
    assert e.problem == "Manifest row 6 has no prompt; give a prompt mask, points or a box."
    assert f.problem == "Manifest row 7 has no source; name a video file or a frame folder."
    assert g.problem == "Manifest row 8 names the video 'a' like row 2; give it an 'out' folder of its own."
    assert a.out_dir(tmp_path / "batch") == tmp_path / "batch" / "a"


def test_jsonl_manifest_and_bad_lines(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    rows = [{"source": "/v/a.mp4", "points": [[1, 2, 1], [3, 4, 0]], "frame": 2}, "not json", [1, 2],
            {"source": "/v/b", "box": [1, 2, 30, 40], "obj_id": 7}]
    manifest.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    a, bad, arr, b = read_manifest(manifest)
    assert a.points == ((1.0, 2.0, 1), (3.0, 4.0, 0)) and a.frame == 2 and a.problem is None
    assert bad.problem.startswith("Manifest row 2 is not valid JSON")
    assert arr.problem == "Manifest row 3 is not a JSON object; write one object per line."
    assert b.box == (1.0, 2.0, 30.0, 40.0) and b.obj_id == 7 and b.name == "b"


def test_dataset_folder_manifest(tmp_path: Path) -> None:
    for seq in ("bear", "cows"):
        (tmp_path / "JPEGImages" / seq).mkdir(parents=True)
    (tmp_path / "Annotations" / "bear").mkdir(parents=True)
    bear, cows = read_manifest(tmp_path)
    assert bear.first_appearance and bear.prompt == str(tmp_path / "Annotations" / "bear") and bear.problem is None
    assert cows.problem == "Sequence 'cows' has no Annotations/cows/ folder; add its first-frame mask."


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist; pass a CSV or JSON Lines file or a DAVIS-layout dataset folder."),
        ("", "is empty; give one video per row"),
        ("video,mask\na.mp4,a.png\n", "has no 'source' column in its header"),
        ("source,prompt\n", "has no video rows"),
    ],
)
def test_unreadable_manifests(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "m.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_manifest(path)


# --- runs ------------------------------------------------------------------------------------------


def test_serial_batch_equals_segment_and_bad_rows_fail_alone(data, featmatch, reference, tmp_path: Path) -> None:
    extra = f"{data / 'missing'},{data / 'prompt.png'},,,,,\n{data / 'alpha'},,,\"5,5,1\",,,pointy\n"
    items = read_manifest(_manifest(data, tmp_path / "m.csv", extra=extra))
    lines: list[str] = []
    summary = run_batch(items, tmp_path / "out", featmatch, ModelSpec("featmatch"), emit=lines.append)
    _assert_equal_to_reference(tmp_path / "out", reference)
    by_name = {o.name: o for o in summary.outcomes}
    assert [o.name for o in summary.outcomes] == ["alpha", "beta", "gamma", "missing", "pointy"]
    assert [by_name[n].frames for n in ("alpha", "beta", "gamma")] == [10, 8, 9]
    assert not by_name["missing"].ok and "does not exist" in by_name["missing"].reason
    assert by_name["pointy"].reason.startswith("Video 'pointy' (row 6) is prompted with points")
    assert len(lines) == 5 and lines[0].startswith("[1/5] alpha: 10 frames in") and "ETA" in lines[0]
    table = summary.table()
    assert "3 of 5 video(s) segmented" in table and "failed missing: Video source" in table
    ledger = [json.loads(line) for line in (tmp_path / "out" / "batch.jsonl").read_text().splitlines()]
    assert [(r["name"], r["ok"]) for r in ledger] == [("alpha", True), ("beta", True), ("gamma", True),
                                                      ("missing", False), ("pointy", False)]


def test_process_pool_equals_segment(data, featmatch, tmp_path: Path) -> None:
    # each of the 2 processes uses the machine's cores / 2 threads: compare with segment on as many
    reference = _segment_each(data, featmatch, tmp_path / "ref", threads_per_worker(2))
    items = read_manifest(_manifest(data, tmp_path / "m.csv"))
    summary = run_batch(items, tmp_path / "out", featmatch, ModelSpec("featmatch", "cpu"), workers=2)
    assert summary.runner == "2 processes" and all(o.ok for o in summary.outcomes)
    assert len({o.worker for o in summary.outcomes}) >= 1 and all(o.worker.startswith("pid ") for o in summary.outcomes)
    assert os.getpid() not in {int(o.worker.split()[1]) for o in summary.outcomes}
    _assert_equal_to_reference(tmp_path / "out", reference)


def test_ray_local_equals_segment(data, featmatch, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="ray is installed by scripts/install.sh")
    # one CPU actor holding every core Ray sees (this machine's): segment on as many threads
    reference = _segment_each(data, featmatch, tmp_path / "ref", os.cpu_count() or 1)
    items = read_manifest(_manifest(data, tmp_path / "m.csv", extra=f"{data / 'missing'},{data / 'prompt.png'},,,,,\n"))
    summary = run_batch(items, tmp_path / "out", featmatch, ModelSpec("featmatch", "cpu"), ray="local")
    assert summary.runner == "Ray local"
    assert [o.ok for o in summary.outcomes] == [True, True, True, False]
    assert all(o.worker.startswith("ray actor pid") for o in summary.outcomes[:3])
    assert "does not exist" in summary.outcomes[3].reason
    _assert_equal_to_reference(tmp_path / "out", reference)


def test_interrupted_batch_skips_finished_and_resumes_half_done(data, featmatch, reference, tmp_path: Path) -> None:
    items = read_manifest(_manifest(data, tmp_path / "m.csv"))
    out = tmp_path / "out"
    settings = BatchSettings(save=SaveSchedule(every_frames=3))

    def stop_after_first(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # interrupted once alpha has ended
        run_batch(items, out, featmatch, ModelSpec("featmatch"), settings, emit=stop_after_first)
    alpha_files = {p: p.stat().st_mtime_ns for p in (out / "alpha" / "masks").glob("*.png")}
    assert len(alpha_files) == 10
    # beta is half done: its own run was interrupted after 5 frames (state saved every 3)
    source = open_source(data / "beta")

    class StopAt:
        def __init__(self, total):
            self.n = 0

        def update(self, n=1):
            self.n += n
            if self.n == 5:
                raise KeyboardInterrupt

        def close(self):
            pass

    with pytest.raises(KeyboardInterrupt):
        segment_video(featmatch.model, source, prompts_from_mask_file(data / "prompt.png", source, 0, None),
                      out / "beta", model_name=featmatch.name, save=settings.save, progress=StopAt,
                      resume_hint="x")
    assert (out / "beta" / STATE_DIR / "state.pt").is_file()
    summary = run_batch(items, out, featmatch, ModelSpec("featmatch"), settings)
    assert summary.skipped == ["alpha"]
    assert [o.name for o in summary.outcomes] == ["beta", "gamma"]
    beta = summary.outcomes[0]
    assert beta.resumed_at == 3 and beta.frames == 5  # continued from the save after frame 2: frames 3..7
    assert {p: p.stat().st_mtime_ns for p in (out / "alpha" / "masks").glob("*.png")} == alpha_files
    _assert_equal_to_reference(out, reference)
    assert "finished before" in summary.table()


def test_killed_pool_worker_is_replaced_and_its_video_resumed(data, featmatch, tmp_path: Path) -> None:
    long = _video(tmp_path / "long", 60, 9)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"source,prompt\n{long},{data / 'prompt.png'}\n{data / 'beta'},{data / 'prompt.png'}\n")
    out = tmp_path / "out"
    settings = BatchSettings(save=SaveSchedule(every_frames=2))
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(
        summary=run_batch(read_manifest(manifest), out, featmatch, ModelSpec("featmatch", "cpu"), settings, workers=2)))
    worker.start()
    state = out / "long" / STATE_DIR / "state.pt"
    deadline = time.time() + 120
    while not state.is_file() and time.time() < deadline:
        time.sleep(0.02)
    assert state.is_file(), "the long video never saved a state"
    for child in multiprocessing.active_children():  # kill the pool's processes mid-video
        os.kill(child.pid, signal.SIGKILL)
    worker.join(300)
    summary = result["summary"]
    by_name = {o.name: o for o in summary.outcomes}
    assert by_name["long"].ok and by_name["long"].resumed_at is not None and by_name["long"].resumed_at > 0
    assert by_name["beta"].ok
    assert len(list((out / "long" / "masks").glob("*.png"))) == 60


def test_folder_of_another_batch_is_refused(data, featmatch, tmp_path: Path) -> None:
    items = read_manifest(_manifest(data, tmp_path / "m.csv", names=("beta",)))
    run_batch(items, tmp_path / "out", featmatch, ModelSpec("featmatch"))
    with pytest.raises(BatchError, match=r"holds a batch run with other settings \(formats differs\); use another --out"):
        run_batch(items, tmp_path / "out", featmatch, ModelSpec("featmatch"), BatchSettings(formats=("png", "rle")))


def test_cli_batch(data, tmp_path: Path, capsys) -> None:
    manifest = _manifest(data, tmp_path / "m.csv", names=("beta",), extra=f"{data / 'missing'},{data / 'prompt.png'},,,,,\n")
    code = main(["batch", str(manifest), "--out", str(tmp_path / "out"), "--model", "featmatch", "--format", "png,rle"])
    captured = capsys.readouterr()
    assert code == 1  # a video failed
    assert "1 of 2 video(s) segmented" in captured.out and "[2/2] missing: FAILED" in captured.err
    assert len(list((tmp_path / "out" / "beta" / "rle").glob("*.json"))) == 8
    code = main(["batch", str(manifest), "--out", str(tmp_path / "out"), "--model", "featmatch", "--format", "png,rle"])
    captured = capsys.readouterr()
    assert "1 of 2 video(s) finished before" in captured.err and re.search(r"\nbeta +finished before", captured.out)
    assert main(["batch", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o"), "--model", "featmatch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maskvos: error: Manifest") and "Traceback" not in err
