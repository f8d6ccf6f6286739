"""The serve API over real HTTP on loopback: every endpoint, every bad request, results equal to
`maskvos segment` and to the library session, cancellation within a frame, busy and full servers,
idle time-outs, and exports read back by pycocotools."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskvos.app.demo import render
from maskvos.backends import open_session
from maskvos.checkpoints import save_checkpoint
from maskvos.cli import main
from maskvos.inference.config import InferenceConfig
from maskvos.io.frames import open_source
from maskvos.io.masks import read_label_map, write_label_map
from maskvos.io.writers import decode_rle, encode_rle

from media_tools import write_video
from model_tools import tiny_sam2
from serve_tools import (
    assert_one_sentence,
    checkpoint_pool,
    featmatch_pool,
    frame_folder,
    propagate_lines,
    running,
    square_mask,
)

N = 12


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_checkpoint(tiny_sam2(), tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("root")
    frame_folder(root / "clips" / "square", N)
    frame_folder(root / "long", 120, seed=1)
    write_video(root / "clips" / "numbers.mp4", 8)
    (root / ".hidden").mkdir()
    write_video(root / ".hidden" / "secret.mp4", 3)
    (root / "notes.txt").write_text("not a video")
    (root / "outside").symlink_to(frame_folder(tmp_path_factory.mktemp("elsewhere") / "frames", 3))
    return root


@pytest.fixture(scope="module")
def server(checkpoint, root):
    with running(checkpoint_pool(checkpoint), root, busy_wait_s=0.3, max_sessions=100) as (srv, client):
        yield srv, client


@pytest.fixture
def client(server):
    return server[1]


def open_square(client) -> str:
    resp = client.post("/api/sessions", json={"source": "clips/square"})
    assert resp.status_code == 200, resp.text
    return resp.json()["session_id"]


def test_health_and_video_list(client, root):
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["backend"] == "sam2"
    assert health["prompt_types"] == ["box", "mask", "points"] and health["fell_back"] is False
    listed = {v["source"]: v["kind"] for v in client.get("/api/videos").json()["videos"]}
    assert listed == {"demo:shapes": "demo", "clips/square": "frames", "long": "frames", "clips/numbers.mp4": "video"}


def test_session_info_frames_and_close(client, root):
    info = client.post("/api/sessions", json={"source": "clips/numbers.mp4"}).json()
    assert (info["num_frames"], info["width"], info["height"]) == (8, 64, 48)
    assert info["fps"] == pytest.approx(10.0) and info["prompt_types"] == ["box", "mask", "points"]
    sid = info["session_id"]
    resp = client.get(f"/api/sessions/{sid}/frames/3")
    assert resp.headers["content-type"] == "image/jpeg"
    jpeg = np.asarray(Image.open(io.BytesIO(resp.content)).convert("RGB")).astype(int)
    frame = open_source(root / "clips" / "numbers.mp4").frame(3).astype(int)
    assert jpeg.shape == (48, 64, 3) and np.abs(jpeg - frame).mean() < 4  # JPEG of the same frame
    assert sid in [s["session_id"] for s in client.get("/api/sessions").json()["sessions"]]
    assert client.delete(f"/api/sessions/{sid}").json() == {"closed": sid}
    assert "does not exist" in assert_one_sentence(client.get(f"/api/sessions/{sid}/frames/0"), 404)
    assert_one_sentence(client.delete(f"/api/sessions/{sid}"), 404)


def _cli(root, checkpoint, out, *prompt_args) -> Path:
    assert main(["segment", str(root / "clips" / "square"), *prompt_args, "--frame", "4", "--checkpoint", str(checkpoint),
                 "--resolution", "64", "--direction", "both", "--format", "png,rle", "--out", str(out), "--quiet"]) == 0
    return out


def _assert_equal_to_cli(client, sid, lines, out, tmp_path) -> None:
    """Every streamed frame equals the CLI's RLE, GET masks gives the same, and the DAVIS export
    equals the CLI's palette PNGs."""
    assert lines[-1] == {"done": True, "frames": N, "cancelled": False}
    assert [line["frame_idx"] for line in lines[:-1]] == [*range(4, N), 3, 2, 1, 0]  # one line per frame, as computed
    for line in lines[:-1]:
        cli_rle = json.loads((out / "rle" / f"{line['frame_idx']:05d}.json").read_text())["objects"]
        assert {str(o["obj_id"]): o["mask"] for o in line["objects"]} == cli_rle
        assert client.get(f"/api/sessions/{sid}/masks/{line['frame_idx']}").json()["objects"] == line["objects"]
    export = client.get(f"/api/sessions/{sid}/export", params={"format": "davis"})
    with zipfile.ZipFile(io.BytesIO(export.content)) as z:
        assert sorted(z.namelist()) == [f"masks/{k:05d}.png" for k in range(N)]
        z.extractall(tmp_path / "zip")
    for k in range(N):
        exported = read_label_map(tmp_path / "zip" / "masks" / f"{k:05d}.png")
        assert np.array_equal(exported, read_label_map(out / "masks" / f"{k:05d}.png"))


def test_mask_prompts_equal_maskvos_segment(client, root, checkpoint, tmp_path):
    """Two objects' masks on frame 4 (a palette PNG for the CLI), propagated both ways."""
    sid = open_square(client)
    labels = np.zeros((48, 64), np.uint8)
    labels[square_mask()] = 1
    labels[34:46, 36:60] = 3
    for obj_id in (1, 3):
        resp = client.post(f"/api/sessions/{sid}/prompts",
                           json={"frame_idx": 4, "obj_id": obj_id, "mask": encode_rle(labels == obj_id)})
        assert resp.status_code == 200, resp.text
        assert np.array_equal(decode_rle(resp.json()["objects"][-1]["mask"]), labels == obj_id)
    assert [o["obj_id"] for o in resp.json()["objects"]] == [1, 3]  # the frame's masks, both objects
    lines = propagate_lines(client, sid, direction="both")
    write_label_map(tmp_path / "prompt.png", labels)
    out = _cli(root, checkpoint, tmp_path / "cli", "--prompt", str(tmp_path / "prompt.png"))
    _assert_equal_to_cli(client, sid, lines, out, tmp_path)


def test_click_and_box_prompts_equal_maskvos_segment(client, root, checkpoint, tmp_path):
    sid = open_square(client)
    resp = client.post(f"/api/sessions/{sid}/prompts", json={"frame_idx": 4, "obj_id": 2, "points": [[50, 40], [10, 5]],
                                                             "labels": [1, 0], "box": [30, 28, 62, 47]})
    assert resp.status_code == 200, resp.text
    lines = propagate_lines(client, sid, direction="both")
    out = _cli(root, checkpoint, tmp_path / "cli", "--points", "50,40,1", "10,5,0", "--box", "30,28,62,47", "--obj-id", "2")
    _assert_equal_to_cli(client, sid, lines, out, tmp_path)


def test_correction_and_repropagation_equal_the_library_session(client, root, checkpoint):
    """Prompt, propagate, correct frame 6 with mask plus clicks (a refinement), propagate again: the
    same as a `Session` given the same calls."""
    sid = open_square(client)
    client.post(f"/api/sessions/{sid}/prompts", json={"frame_idx": 0, "obj_id": 1, "mask": encode_rle(square_mask())})
    first = propagate_lines(client, sid)
    fixed = square_mask(x=17)
    resp = client.post(f"/api/sessions/{sid}/prompts", json={"frame_idx": 6, "obj_id": 1, "mask": encode_rle(fixed),
                                                             "points": [[30, 20]], "labels": [1]})
    assert resp.status_code == 200, resp.text
    again = propagate_lines(client, sid)
    assert [line["frame_idx"] for line in again[:-1]] == list(range(6, N))  # from the corrected frame
    from maskvos.checkpoints import load_model

    session = open_session(load_model(checkpoint), open_source(root / "clips" / "square"), InferenceConfig(resolution=64))
    session.add_mask(0, 1, square_mask())
    lib_first = {r.frame_idx: r.masks[0].numpy() for r in session.propagate()}
    refined = session.add_mask(6, 1, fixed)
    refined = session.add_points(6, 1, [[30, 20]], [1])
    assert np.array_equal(decode_rle(resp.json()["objects"][0]["mask"]), refined.masks[0].numpy())
    lib_again = {r.frame_idx: r.masks[0].numpy() for r in session.propagate()}
    for line in first[:-1]:
        assert np.array_equal(decode_rle(line["objects"][0]["mask"]), lib_first[line["frame_idx"]])
    for line in again[:-1]:
        assert np.array_equal(decode_rle(line["objects"][0]["mask"]), lib_again[line["frame_idx"]])
    assert client.get(f"/api/sessions/{sid}").json()["prompt_frames"] == [0, 6]


def test_box_prompt_and_object_removal(client):
    sid = open_square(client)
    box = client.post(f"/api/sessions/{sid}/prompts", json={"frame_idx": 2, "obj_id": 3, "box": [4, 8, 30, 32]})
    assert box.status_code == 200 and box.json()["objects"][0]["obj_id"] == 3
    client.post(f"/api/sessions/{sid}/prompts", json={"frame_idx": 2, "obj_id": 1, "mask": encode_rle(square_mask())})
    propagate_lines(client, sid)
    assert client.delete(f"/api/sessions/{sid}/objects/3").json() == {"removed": 3, "objects": [1]}
    assert [o["obj_id"] for o in client.get(f"/api/sessions/{sid}/masks/5").json()["objects"]] == [1]
    assert "no object 3" in assert_one_sentence(client.delete(f"/api/sessions/{sid}/objects/3"), 404)
    lines = propagate_lines(client, sid, start=2)
    assert all([o["obj_id"] for o in line["objects"]] == [1] for line in lines[:-1])


def test_exports_are_read_back_by_pycocotools(client, tmp_path):
    from pycocotools.coco import COCO

    sid = open_square(client)
    assert "no masks to export" in assert_one_sentence(client.get(f"/api/sessions/{sid}/export"), 400)
    client.post(f"/api/sessions/{sid}/prompts", json={"frame_idx": 0, "obj_id": 1, "mask": encode_rle(square_mask())})
    client.post(f"/api/sessions/{sid}/prompts", json={"frame_idx": 0, "obj_id": 5, "box": [30, 30, 60, 46]})
    lines = propagate_lines(client, sid)[:-1]
    coco_zip = client.get(f"/api/sessions/{sid}/export", params={"format": "coco"})
    assert coco_zip.headers["content-disposition"] == 'attachment; filename="square-coco.zip"'
    with zipfile.ZipFile(io.BytesIO(coco_zip.content)) as z:
        (tmp_path / "coco.json").write_bytes(z.read("annotations.json"))
    coco = COCO(str(tmp_path / "coco.json"))
    assert [coco.imgs[i]["file_name"] for i in sorted(coco.imgs)] == [f"{k:05d}.jpg" for k in range(N)]
    for line in lines:
        image_id = line["frame_idx"] + 1
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        by_track = {a["track_id"]: coco.annToMask(a).astype(bool) for a in anns}
        expected = {o["obj_id"]: decode_rle(o["mask"]) for o in line["objects"] if decode_rle(o["mask"]).any()}
        assert by_track.keys() == expected.keys()
        for track, mask in by_track.items():
            assert np.array_equal(mask, expected[track])
    with zipfile.ZipFile(io.BytesIO(client.get(f"/api/sessions/{sid}/export", params={"format": "rle"}).content)) as z:
        record = json.loads(z.read("rle/00007.json"))
    assert record["frame"] == "00007"
    assert record["objects"] == {str(o["obj_id"]): o["mask"] for o in lines[7]["objects"]}
    assert "unknown" in assert_one_sentence(client.get(f"/api/sessions/{sid}/export", params={"format": "tiff"}), 400)


def test_cancel_stops_within_one_frame(client):
    resp = client.post("/api/sessions", json={"source": "long"})
    sid = resp.json()["session_id"]
    client.post(f"/api/sessions/{sid}/prompts", json={"frame_idx": 0, "obj_id": 1, "mask": encode_rle(square_mask())})
    assert client.post(f"/api/sessions/{sid}/cancel").json() == {"cancelled": False, "frames": None}
    lines, at_cancel = [], None
    with client.stream("POST", f"/api/sessions/{sid}/propagate", json={}) as stream:
        assert stream.headers["x-maskvos-frames-total"] == "120"
        for raw in stream.iter_lines():
            lines.append(json.loads(raw))
            if len(lines) == 3:
                at_cancel = client.post(f"/api/sessions/{sid}/cancel").json()
    assert at_cancel["cancelled"] is True
    done = lines[-1]
    assert done["done"] is True and done["cancelled"] is True
    assert done["frames"] == len(lines) - 1 < 120
    assert done["frames"] <= at_cancel["frames"] + 1  # the frame being computed, then no more
    assert client.get(f"/api/sessions/{sid}").json()["propagating"] is False
    rest = propagate_lines(client, sid, start=done["frames"])  # the session goes on from there
    assert rest[-1]["frames"] == 120 - done["frames"]


def test_busy_model_and_running_propagation(client):
    """A second session's request while the model propagates gets 503 after the wait, not a hang; the
    propagating session itself refuses prompts and a second propagation with 409."""
    a = client.post("/api/sessions", json={"source": "long"}).json()["session_id"]
    b = open_square(client)
    mask = encode_rle(square_mask())
    client.post(f"/api/sessions/{a}/prompts", json={"frame_idx": 0, "obj_id": 1, "mask": mask})
    results: dict[str, object] = {}

    def run() -> None:
        results["lines"] = propagate_lines(client, a)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while not client.get(f"/api/sessions/{a}").json()["propagating"] and time.monotonic() < deadline:
        time.sleep(0.01)
    began = time.monotonic()
    busy = client.post(f"/api/sessions/{b}/prompts", json={"frame_idx": 0, "obj_id": 1, "mask": mask})
    waited = time.monotonic() - began
    assert "busy" in assert_one_sentence(busy, 503) and waited < 5
    assert "propagating" in assert_one_sentence(
        client.post(f"/api/sessions/{a}/prompts", json={"frame_idx": 3, "obj_id": 1, "mask": mask}), 409)
    assert_one_sentence(client.post(f"/api/sessions/{a}/propagate", json={}), 409)
    assert_one_sentence(client.delete(f"/api/sessions/{a}/objects/1"), 409)
    client.post(f"/api/sessions/{a}/cancel")
    thread.join(60)
    assert results["lines"][-1]["done"] is True
    assert client.post(f"/api/sessions/{b}/prompts", json={"frame_idx": 0, "obj_id": 1, "mask": mask}).status_code == 200


BAD_PROMPTS = [
    ({"frame_idx": 99, "obj_id": 1, "mask": "M"}, 422, "field 'mask'"),
    ({"frame_idx": 99, "obj_id": 1, "box": [1, 2, 30, 40]}, 400, "outside the video"),
    ({"frame_idx": 0, "obj_id": 0, "box": [1, 2, 30, 40]}, 422, "obj_id"),
    ({"frame_idx": "first", "obj_id": 1, "box": [1, 2, 30, 40]}, 422, "frame_idx"),
    ({"frame_idx": 0, "obj_id": 1}, 400, "no mask, points or box"),
    ({"frame_idx": 0, "obj_id": 1, "mask": {"size": [10, 10], "counts": "0"}}, 400, "48x64"),
    ({"frame_idx": 0, "obj_id": 1, "mask": {"size": [48, 64], "counts": "\u00ff\u00ff"}}, 400, "COCO RLE"),
    ({"frame_idx": 0, "obj_id": 1, "points": [[3, 4], [5, 6]], "labels": [1]}, 400, "2 points were sent with 1 labels"),
    ({"frame_idx": 0, "obj_id": 1, "points": [[3, 4]], "labels": [2]}, 422, "labels"),
    ({"frame_idx": 0, "obj_id": 1, "box": [30, 30, 10, 10]}, 400, "empty"),
    ({"frame_idx": 0, "obj_id": 1, "box": [1, 2, 30, 40], "colour": "red"}, 422, "colour"),
]


@pytest.mark.parametrize(("body", "status", "words"), BAD_PROMPTS)
def test_bad_prompts_get_one_sentence(client, body, status, words):
    sid = open_square(client)
    message = assert_one_sentence(client.post(f"/api/sessions/{sid}/prompts", json=body), status)
    assert words in message


def test_bad_requests_get_one_sentence(client, root):
    sid = open_square(client)
    cases = [
        (client.post("/api/sessions", json={"source": "../"}), 403, "outside the server's root"),
        (client.post("/api/sessions", json={"source": "/etc"}), 403, "outside the server's root"),
        (client.post("/api/sessions", json={"source": "clips/../../x"}), 403, "outside"),
        (client.post("/api/sessions", json={"source": "outside"}), 403, "outside"),  # a link out of the root
        (client.post("/api/sessions", json={"source": "nothing/here.mp4"}), 404, "does not exist"),
        (client.post("/api/sessions", json={"source": "notes.txt"}), 400, "not a supported video"),
        (client.post("/api/sessions", json={"source": "clips/square", "model": "sam9-giant"}), 400, "sam9-giant"),
        (client.post("/api/sessions", json={}), 422, "source"),
        (client.post("/api/sessions", content=b"{not json", headers={"content-type": "application/json"}), 400, "not valid JSON"),
        (client.post("/api/sessions"), 400, "no body"),
        (client.get(f"/api/sessions/{sid}/frames/12"), 404, "outside the video"),
        (client.get(f"/api/sessions/{sid}/frames/-1"), 404, "outside the video"),
        (client.get(f"/api/sessions/{sid}/frames/one"), 422, "frame_idx"),
        (client.get(f"/api/sessions/{sid}/masks/3"), 404, "no masks yet"),
        (client.get("/api/sessions/feedbeef/masks/3"), 404, "does not exist"),
        (client.post(f"/api/sessions/{sid}/propagate", json={}), 400, "No object"),
        (client.post(f"/api/sessions/{sid}/propagate", json={"direction": "sideways"}), 422, "direction"),
        (client.post(f"/api/sessions/{sid}/propagate", json={"start": 40}), 400, "outside the video"),
        (client.delete(f"/api/sessions/{sid}/objects/4"), 404, "no object 4"),
        (client.get("/api/nothing"), 404, "/api/nothing"),
        (client.put("/api/health"), 405, "PUT"),
    ]
    for resp, status, words in cases:
        assert words in assert_one_sentence(resp, status), (resp.request.url, resp.text)
    client.post(f"/api/sessions/{sid}/prompts", json={"frame_idx": 5, "obj_id": 1, "mask": encode_rle(square_mask())})
    resp = client.post(f"/api/sessions/{sid}/propagate", json={"direction": "forward", "start": 8, "end": 2})
    assert "comes before" in assert_one_sentence(resp, 400)


def test_uploads(client, root, tmp_path):
    video = tmp_path / "clip.mp4"
    write_video(video, 6)
    info = client.post("/api/sessions", files={"file": ("my clip.mp4", video.read_bytes(), "video/mp4")}).json()
    assert info["num_frames"] == 6 and info["source"] == "upload:my clip.mp4"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for k in range(4):
            image = io.BytesIO()
            Image.fromarray(np.full((20, 30, 3), 40 * k, np.uint8)).save(image, format="PNG")
            z.writestr(f"frames/{k:03d}.png", image.getvalue())
        z.writestr("__MACOSX/frames/._000.png", b"junk")
    zipped = client.post("/api/sessions", files={"file": ("frames.zip", buffer.getvalue(), "application/zip")}).json()
    assert (zipped["num_frames"], zipped["width"], zipped["height"]) == (4, 30, 20)
    frame = np.asarray(Image.open(io.BytesIO(client.get(f"/api/sessions/{zipped['session_id']}/frames/2").content)))
    assert abs(int(frame.mean()) - 80) <= 2
    assert_one_sentence(client.post("/api/sessions", files={"file": ("notes.txt", b"hello", "text/plain")}), 415)
    assert_one_sentence(client.post("/api/sessions", files={"file": ("broken.zip", b"PK no zip", "application/zip")}), 400)
    assert_one_sentence(client.post("/api/sessions", files={"file": ("bad.mp4", b"\x00" * 100, "video/mp4")}), 400)
    assert_one_sentence(client.post("/api/sessions", files={"other": ("a.mp4", b"1", "video/mp4")}), 400)


def test_internal_errors_are_one_sentence(client, server, monkeypatch):
    sid = open_square(client)
    serve = server[0].app.state.manager.get(sid)

    def broken(_frame_idx):
        raise RuntimeError("a bug")

    monkeypatch.setattr(serve, "frame_jpeg", broken)
    message = assert_one_sentence(client.get(f"/api/sessions/{sid}/frames/0"), 500)
    assert "RuntimeError" in message and "a bug" not in message


def test_full_server_and_idle_sessions(checkpoint, root):
    with running(checkpoint_pool(checkpoint), root, max_sessions=2, idle_s=0.5) as (_srv, client):
        first = open_square(client)
        open_square(client)
        assert "most sessions" in assert_one_sentence(client.post("/api/sessions", json={"source": "clips/square"}), 503)
        deadline = time.monotonic() + 10
        while client.get("/api/health").json()["sessions"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/api/health").json()["sessions"] == 0  # both closed after 0.5 s idle
        assert_one_sentence(client.get(f"/api/sessions/{first}"), 404)
        assert client.post("/api/sessions", json={"source": "clips/square"}).status_code == 200


def test_featmatch_server_says_so_and_refuses_clicks(tmp_path):
    """With featmatch the page's health says which prompts work; clicks get one sentence; a mask
    prompt on the demo clip tracks the object."""
    with running(featmatch_pool(), tmp_path) as (_srv, client):
        health = client.get("/api/health").json()
        assert health["backend"] == "featmatch" and health["prompt_types"] == ["mask"]
        sid = client.post("/api/sessions", json={"source": "demo:shapes"}).json()["session_id"]
        resp = client.post(f"/api/sessions/{sid}/prompts", json={"frame_idx": 0, "obj_id": 1, "points": [[60, 200]]})
        assert "mask prompts only" in assert_one_sentence(resp, 400)
        _, labels = render(0)
        client.post(f"/api/sessions/{sid}/prompts", json={"frame_idx": 0, "obj_id": 1, "mask": encode_rle(labels == 1)})
        lines = propagate_lines(client, sid, end=9)
        assert lines[-1]["frames"] == 10
        _, truth = render(9)
        got = decode_rle(lines[9]["objects"][0]["mask"])
        assert (got & (truth == 1)).sum() / (got | (truth == 1)).sum() > 0.8


def test_cli_serve_refuses_bad_settings(tmp_path, capsys):
    assert main(["serve", "--root", str(tmp_path / "missing"), "--model", "featmatch"]) == 2
    err = capsys.readouterr().err
    assert "is not a folder" in err and "Traceback" not in err
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", "--root", str(tmp_path), "--model", "featmatch", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"Cannot listen on 127.0.0.1:{port}" in err and "Traceback" not in err
