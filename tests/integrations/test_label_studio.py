"""The Label Studio ML backend spoken to as Label Studio speaks to it: the requests of its
"Connect model" (GET /health, POST /setup with the project's schema) and of predictions
(POST /predict with tasks, the label config and the interactive context), as the label-studio-ml
package documents them. Regions are built as Label Studio's editor writes them (VideoRectangle
keyframes in percent, 1-based frames; brush RLE from label_studio_sdk's own `mask2rle`); results
are validated by label_studio_sdk's `LabelInterface` and decoded by its `decode_rle`."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from label_studio_sdk.converter.brush import decode_rle, mask2rle
from label_studio_sdk.label_interface import LabelInterface

from maskvos.app.models import LoadedModel
from maskvos.backends import BACKENDS
from maskvos.backends.featmatch import FeatMatchConfig, FeatMatchModel
from maskvos.inference.config import InferenceConfig
from maskvos.integrations import create_integration_app
from maskvos.serve import ServeSettings
from maskvos.serve.sessions import ModelPool, PooledModel

N, H, W, SIDE = 10, 48, 64, 16
VIDEO = "/data/local-files/?d=clips/square.mp4"

#: Label Studio's video object tracking template (its VideoRectangle docs), framerate set to the clip's.
VIDEO_CONFIG = """<View>
  <Header>Label the video:</Header>
  <Video name="video" value="$video" framerate="10"/>
  <VideoRectangle name="box" toName="video"/>
  <Labels name="videoLabels" toName="video">
    <Label value="square" background="#944BFF"/>
    <Label value="other" background="#98C84E"/>
  </Labels>
</View>"""

#: The brush view: the video's frames as a multi-image Image (valueList) with BrushLabels.
BRUSH_CONFIG = """<View>
  <Image name="frames" valueList="$frames"/>
  <BrushLabels name="tag" toName="frames">
    <Label value="square" background="#FF0000"/>
  </BrushLabels>
</View>"""


def object_x(i: int) -> int:
    return 4 + 2 * i


def truth(i: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[16 : 16 + SIDE, object_x(i) : object_x(i) + SIDE] = True
    return mask


def write_clip(path: Path) -> None:
    """N frames at 10 fps: a smooth background and a red square moving right 2 px per frame."""
    path.parent.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:H, 0:W]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10, options={"qscale": "1"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for i in range(N):
            img = np.stack([60 + xx, 90 + yy, 120 + 0 * xx], -1).astype(np.uint8)
            img[truth(i)] = [230, 30, 30]
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def one_sentence(resp, status: int) -> str:
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert set(body) == {"status", "detail"} and body["status"] == status, body
    message = body["detail"]
    assert message.endswith(".") and ". " not in message and "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ls-root")
    write_clip(root / "clips" / "square.mp4")
    return root


@pytest.fixture(scope="module")
def client(root):
    """The backend alone at "/", as `maskvos serve-integration label-studio` runs it, on featmatch at
    a small working size."""
    loaded = LoadedModel(FeatMatchModel(FeatMatchConfig(short_side=96)), "featmatch", BACKENDS["featmatch"], torch.device("cpu"))
    pool = ModelPool(PooledModel(loaded, InferenceConfig()), "cpu", InferenceConfig())
    with TestClient(create_integration_app("label-studio", pool, ServeSettings(root=root))) as client:
        yield client


def percent_box(mask: np.ndarray) -> dict[str, float]:
    ys, xs = np.nonzero(mask)
    return {"x": 100 * xs.min() / W, "y": 100 * ys.min() / H,
            "width": 100 * (xs.max() + 1 - xs.min()) / W, "height": 100 * (ys.max() + 1 - ys.min()) / H}


def keyframe(i: int) -> dict:
    """A VideoRectangle keyframe as Label Studio's player writes it (frame from 1, time in s)."""
    return {"frame": i + 1, "enabled": True, "rotation": 0, "time": i / 10, **percent_box(truth(i))}


def predict_body(task: dict, config: str, context: dict | None = None) -> dict:
    """The body Label Studio posts to /predict (ml/api_connector: tasks, model_version, project,
    label_config, params with login, password and the interactive context)."""
    return {"tasks": [task], "model_version": "maskvos-featmatch", "project": "1.1718000000",
            "label_config": config, "params": {"login": None, "password": None, "context": context}}


def video_task(**extra) -> dict:
    return {"id": 11, "data": {"video": VIDEO}, "meta": {}, "created_at": "2024-06-10T10:00:00.000000Z",
            "annotations": [], "predictions": [], "is_labeled": False, "project": 1, **extra}


def test_label_studio_connects_health_setup_webhook(client):
    health = client.get("/health").json()
    assert health["status"] == "UP" and health["model_version"] == "maskvos-featmatch"
    assert client.get("/").json() == health
    setup = client.post("/setup", json={"project": "1.1718000000", "schema": VIDEO_CONFIG, "hostname": "http://localhost:8080",
                                        "access_token": "token", "model_version": None, "extra_params": None})
    assert setup.status_code == 200 and setup.json() == {"model_version": "maskvos-featmatch"}
    hook = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "annotation": {"id": 1}, "project": {"id": 1}})
    assert hook.status_code == 201 and hook.json()["status"] == "ignored"
    assert client.get("/versions").json()["versions"] == ["maskvos-featmatch"]
    bad = client.post("/setup", json={"project": "2.1", "schema": "<View><Image name='i' value='$image'/></View>"})
    assert "VideoRectangle" in one_sentence(bad, 400)


def test_a_rectangle_drawn_on_one_frame_becomes_a_videorectangle_track(client):
    region = {"id": "tRk0aBc1", "type": "videorectangle", "from_name": "box", "to_name": "video", "origin": "manual",
              "value": {"framesCount": N, "duration": N / 10, "sequence": [keyframe(3)], "labels": ["square"]}}
    resp = client.post("/predict", json=predict_body(video_task(), VIDEO_CONFIG, {"result": [region]}))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    (prediction,) = body["results"]
    assert prediction["model_version"] == "maskvos-featmatch" and 0.5 < prediction["score"] <= 1
    assert LabelInterface(VIDEO_CONFIG).validate_prediction(prediction, return_errors=True) == []
    (track,) = prediction["result"]
    assert track["id"] == "tRk0aBc1" and track["type"] == "videorectangle" and track["value"]["labels"] == ["square"]
    sequence = track["value"]["sequence"]
    assert [k["frame"] for k in sequence] == list(range(1, N + 1))  # forward and backward from frame 4
    assert sequence[3] == keyframe(3)  # the user's keyframe comes back as drawn
    for k in sequence:
        i = k["frame"] - 1
        assert k["time"] == pytest.approx(i / 10)
        centre = (k["x"] + k["width"] / 2) * W / 100
        assert abs(centre - (object_x(i) + SIDE / 2)) < 2.5, (i, k)
        assert k["height"] == pytest.approx(100 * SIDE / H, abs=8)


def test_a_brush_on_frame_zero_returns_brush_masks_on_the_other_frames(client):
    rle = mask2rle(truth(0).astype(np.uint8) * 255)
    annotation = {"id": 5, "was_cancelled": False, "result": [
        {"id": "brush0", "type": "brushlabels", "from_name": "tag", "to_name": "frames", "origin": "manual",
         "original_width": W, "original_height": H, "image_rotation": 0, "item_index": 0,
         "value": {"format": "rle", "rle": rle, "brushlabels": ["square"]}}]}
    frames = [f"/data/local-files/?d=clips/square/{i:05d}.jpg" for i in range(N)]
    task = video_task(annotations=[annotation])
    task["data"] = {"video": "http://localhost:8080" + VIDEO, "frames": frames}  # an absolute local-files URL
    resp = client.post("/predict", json=predict_body(task, BRUSH_CONFIG))  # no context: "Retrieve predictions"
    assert resp.status_code == 200, resp.text
    (prediction,) = resp.json()["results"]
    assert LabelInterface(BRUSH_CONFIG).validate_prediction(prediction, return_errors=True) == []
    regions = prediction["result"]
    assert [r["item_index"] for r in regions] == list(range(1, N))  # not frame 0, where the user's brush is
    for r in regions:
        i = r["item_index"]
        assert r["type"] == "brushlabels" and r["value"]["brushlabels"] == ["square"] and r["value"]["frame"] == i + 1
        assert (r["original_width"], r["original_height"]) == (W, H) and r["value"]["format"] == "rle"
        mask = np.asarray(decode_rle(r["value"]["rle"])).reshape(H, W, 4)[..., 3] > 0
        assert iou(mask, truth(i)) > 0.6, (i, iou(mask, truth(i)))


def test_two_objects_from_per_frame_rectangles_keep_their_labels(client):
    config = VIDEO_CONFIG.replace('<VideoRectangle name="box" toName="video"/>',
                                  '<VideoRectangle name="box" toName="video"/>\n  <BrushLabels name="tag" toName="video">'
                                  '<Label value="square"/><Label value="corner"/></BrushLabels>')
    corner = np.zeros((H, W), bool)
    corner[0:8, 56:64] = True  # a static patch of background, the second object
    regions = [{"id": "r1", "type": "rectanglelabels", "item_index": 2,
                "value": {**percent_box(truth(2)), "rotation": 0, "rectanglelabels": ["square"]}},
               {"id": "r2", "type": "rectanglelabels", "value": {**percent_box(corner), "frame": 3, "rotation": 0,
                                                                  "rectanglelabels": ["corner"]}}]
    resp = client.post("/predict", json=predict_body(video_task(), config, {"result": regions}))
    assert resp.status_code == 200, resp.text
    result = resp.json()["results"][0]["result"]
    tracks = [r for r in result if r["type"] == "videorectangle"]
    brushes = [r for r in result if r["type"] == "brushlabels"]
    # "corner" is no label of the VideoRectangle's <Labels>: its track takes the first one there
    assert [t["value"]["labels"] for t in tracks] == [["square"], ["square"]]
    assert sorted({b["value"]["brushlabels"][0] for b in brushes}) == ["corner", "square"]
    square = {b["item_index"]: b for b in brushes if b["value"]["brushlabels"] == ["square"]}
    assert set(square) == set(range(N))  # rectangles are no brushes: every frame gets one
    mask = np.asarray(decode_rle(square[7]["value"]["rle"])).reshape(H, W, 4)[..., 3] > 0
    assert iou(mask, truth(7)) > 0.6


def test_tasks_without_prompts_get_an_empty_prediction(client):
    body = {"tasks": [video_task(id=1), video_task(id=2)], "label_config": VIDEO_CONFIG, "project": "1.1", "params": {}}
    resp = client.post("/predict", json=body)
    assert resp.status_code == 200
    assert [p["result"] for p in resp.json()["results"]] == [[], []]


@pytest.mark.parametrize("video, status, words", [
    ("https://example.com/v.mp4", 400, "local"),
    ("/data/upload/1/abc-square.mp4", 400, "local storage"),
    ("/data/local-files/?d=../outside.mp4", 403, "outside"),
    ("/data/local-files/?d=clips/missing.mp4", 404, "does not exist"),
    ("s3://bucket/square.mp4", 400, "local"),
])
def test_videos_it_cannot_open_are_refused_in_one_sentence(client, video, status, words):
    region = {"id": "t", "type": "videorectangle", "value": {"framesCount": N, "duration": 1, "sequence": [keyframe(0)]}}
    task = video_task()
    task["data"]["video"] = video
    resp = client.post("/predict", json=predict_body(task, VIDEO_CONFIG, {"result": [region]}))
    assert words in one_sentence(resp, status)


def test_bad_prompts_are_refused_in_one_sentence(client):
    late = {"id": "t", "type": "videorectangle", "value": {"framesCount": 99, "duration": 9.9,
                                                           "sequence": [{**keyframe(0), "frame": 50}]}}
    resp = client.post("/predict", json=predict_body(video_task(), VIDEO_CONFIG, {"result": [late]}))
    assert "frame 49" in one_sentence(resp, 400)
    wrong_size = {"id": "b", "type": "brushlabels", "item_index": 0,
                  "value": {"format": "rle", "rle": mask2rle(np.zeros((8, 8), np.uint8)), "brushlabels": ["square"]}}
    resp = client.post("/predict", json=predict_body(video_task(), BRUSH_CONFIG, {"result": [wrong_size]}))
    assert "64x48" in one_sentence(resp, 400)
    no_frame = copy.deepcopy(wrong_size)
    del no_frame["item_index"]
    resp = client.post("/predict", json=predict_body(video_task(), BRUSH_CONFIG, {"result": [no_frame]}))
    assert "item_index" in one_sentence(resp, 400)
    resp = client.post("/predict", content=b"not json", headers={"Content-Type": "application/json"})
    one_sentence(resp, 400)
    resp = client.post("/predict", json=json.loads('{"tasks": [], "label_config": "<View>"}'))
    assert "XML" in one_sentence(resp, 400)
