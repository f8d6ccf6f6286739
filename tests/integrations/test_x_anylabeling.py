"""X-AnyLabeling's remote-server video protocol, spoken as its client (`remote_server.py` of
X-AnyLabeling) speaks it: frames as data URIs, clicks as fractions of the frame, obj_id 10000,
the propagation read line by line from the SSE stream, cleanup with ?model=. Shapes are checked
against the library session's masks; polygons against the masks they came from."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image
from scipy import ndimage

from maskvos.backends import open_session
from maskvos.checkpoints import save_checkpoint
from maskvos.integrations import create_integration_app
from maskvos.integrations.polygons import mask_box, mask_polygons
from maskvos.integrations.x_anylabeling import XAnyLabeling, build_router
from maskvos.io.frames import open_source
from maskvos.serve import ServeSettings
from maskvos.serve.server import BackgroundServer

from model_tools import tiny_sam2
from serve_tools import checkpoint_pool, featmatch_pool, frame_folder, square_mask

N = 8
HEADERS = {"Content-Type": "application/json", "Token": ""}  # what the client sends with every request


# ---- the client's side of the protocol ------------------------------------------------------------

def data_uris(folder: Path) -> list[str]:
    """The frames as the client packs them for /v1/video/init."""
    return [f"data:image/jpeg;base64,{base64.b64encode(p.read_bytes()).decode()}" for p in sorted(folder.glob("*.jpg"))]


def png_base64(mask: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def sse_events(client: httpx.Client, body: dict, path: str = "/v1/video/propagate/stream") -> list[dict]:
    """The events of a propagation, parsed the way the client does (lines starting 'data: ')."""
    with client.stream("POST", path, json=body, headers=HEADERS) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        return [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: ")]


def raster(polygons: list[list[list[float]]], h: int, w: int) -> np.ndarray:
    """Pixels whose centres lie inside any of the polygons (even-odd rule per polygon)."""
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    out = np.zeros((h, w), bool)
    for polygon in polygons:
        p = np.array(polygon[:-1], float)
        inside = np.zeros((h, w), bool)
        for (x0, y0), (x1, y1) in zip(p, np.roll(p, -1, 0)):
            with np.errstate(divide="ignore", invalid="ignore"):
                xi = x0 + (yy - y0) * (x1 - x0) / (y1 - y0)
            inside ^= ((y0 > yy) != (y1 > yy)) & (xx < xi)
        out |= inside
    return out


def polygons_of(shapes: list[dict]) -> list:
    return [s["points"] for s in shapes if s["shape_type"] == "polygon"]


def assert_error(resp: httpx.Response, status: int, code: str) -> str:
    """X-AnyLabeling's error body, with one sentence."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["success"] is False and body["error"]["code"] == code, body
    message = body["error"]["message"]
    assert message.endswith(".") and message.count(". ") == 0 and "\n" not in message, message
    return message


# ---- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("root")
    frame_folder(root / "square", N)
    frame_folder(root / "long", 150, seed=1)
    return root


def running(pool, root: Path) -> tuple[BackgroundServer, XAnyLabeling]:
    x = XAnyLabeling(pool, ServeSettings(root=root, busy_wait_s=0.5))
    app = FastAPI()
    app.include_router(build_router(x))
    return BackgroundServer(pool, x.settings, app_factory=lambda _p, _s: app), x


@pytest.fixture(scope="module")
def featmatch(root):
    server, x = running(featmatch_pool(), root)
    with server, httpx.Client(base_url=server.url, timeout=120) as client:
        yield client, x


@pytest.fixture(scope="module")
def sam2(root, tmp_path_factory):
    pool = checkpoint_pool(save_checkpoint(tiny_sam2(), tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"))
    server, x = running(pool, root)
    with server, httpx.Client(base_url=server.url, timeout=120) as client:
        yield client, x


def model_id(client: httpx.Client) -> str:
    resp = client.get("/v1/models", headers=HEADERS)
    assert resp.status_code == 200
    return next(iter(resp.json()["data"]))


def init(client: httpx.Client, folder: Path, start: int = 0) -> str:
    resp = client.post("/v1/video/init", headers=HEADERS,
                       json={"model": model_id(client), "frames": data_uris(folder), "start_frame_index": start})
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert data["num_frames"] == N and data["start_frame_index"] == start
    return data["session_id"]


# ---- polygons -------------------------------------------------------------------------------------

def test_polygons_cover_exactly_the_mask_and_simplify_within_tolerance():
    rng = np.random.default_rng(0)
    for i in range(60):
        mask = rng.random((30, 40)) > (0.6 if i % 2 else 0.4)
        if i % 3 == 0:
            mask = ndimage.binary_opening(mask)
        exact = mask_polygons(mask, 0.0, min_part_share=0.0)
        assert np.array_equal(raster(exact, 30, 40), ndimage.binary_fill_holes(mask)), i  # holes are filled
        assert all(p[0] == p[-1] for p in exact)  # closed, as the reference server sends them
    disc = np.hypot(*np.mgrid[-40:40, -50:50]) < 30
    coarse = mask_polygons(disc, 0.01)
    assert len(coarse) == 1 and 8 < len(coarse[0]) < 60  # a few dozen vertices, not the staircase
    assert (raster(coarse, 80, 100) ^ disc).sum() < 0.05 * disc.sum()
    assert mask_polygons(square_mask()) == [[[5.0, 10.0], [25.0, 10.0], [25.0, 30.0], [5.0, 30.0], [5.0, 10.0]]]
    assert mask_box(square_mask()) == (5.0, 10.0, 25.0, 30.0) and mask_box(np.zeros((4, 4), bool)) is None
    speck = square_mask()
    speck[40, 60] = True
    assert len(mask_polygons(speck)) == 1 and len(mask_polygons(speck, min_part_share=0.0)) == 2


# ---- the protocol ---------------------------------------------------------------------------------

def test_models_list_in_the_clients_format(featmatch, sam2):
    for (client, x), takes_clicks in ((featmatch, False), (sam2, True)):
        body = client.get("/v1/models", headers=HEADERS).json()
        assert body["success"] is True and list(body["data"]) == [x.pool.default.name]
        info = body["data"][x.pool.default.name]
        assert info["batch_processing_mode"] == "video"  # the client's switch to the session protocol
        names = [w["name"] for w in info["widgets"]]
        assert ("button_add_point" in names) is takes_clicks and "mask_fineness_slider" in names
        assert set(info) >= {"display_name", "widgets", "params", "capabilities"}
    health = featmatch[0].get("/health").json()
    assert health["status"] == "healthy" and health["timestamp"].endswith("Z")


def test_clicks_as_the_client_sends_them_give_the_library_sessions_mask(sam2, root):
    client, x = sam2
    folder = root / "square"
    sid = init(client, folder)
    w, h = 64, 48
    clicks = [[15.0, 20.0], [40.0, 40.0]]  # pixels; the client divides by the frame size
    resp = client.post("/v1/video/prompt", headers=HEADERS, json={
        "session_id": sid, "model": model_id(client), "frame_index": 2,
        "points": [[px / w, py / h] for px, py in clicks], "point_labels": [1, 0], "obj_id": 10000,
        "params": {"conf_threshold": 0.0, "epsilon_factor": 0.0}})
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    session = open_session(x.pool.default.loaded.model, open_source(folder), x.pool.default.config)
    expected = session.add_points(2, 10000, clicks, [1, 0]).masks[0].numpy()
    assert expected.sum() > 0
    assert data["frame_index"] == 2 and data["num_objects"] == 1
    assert {s["group_id"] for s in data["masks"]} == {10001} and {s["label"] for s in data["masks"]} == {"AUTOLABEL_OBJECT"}
    drawn = raster(polygons_of(data["masks"]), h, w)
    filled = ndimage.binary_fill_holes(expected)
    assert not (drawn & ~filled).any() and drawn.sum() >= 0.95 * filled.sum()  # specks under 1 % dropped only
    # a box (maskvos' extension, fractions like the clicks) with show_boxes gives a rectangle too
    resp = client.post("/v1/video/prompt", headers=HEADERS, json={
        "session_id": sid, "model": model_id(client), "frame_index": 5, "box": [5 / w, 10 / h, 25 / w, 30 / h],
        "obj_id": 3, "params": {"show_boxes": True}})
    kinds = [s["shape_type"] for s in resp.json()["data"]["masks"]]
    assert resp.status_code == 200 and "rectangle" in kinds and "polygon" in kinds
    assert client.post(f"/v1/video/cleanup/{sid}", params={"model": model_id(client)}, headers=HEADERS).json()["success"]


def test_mask_prompt_propagates_as_sse_events_equal_to_the_library(featmatch, root):
    client, x = featmatch
    folder = root / "square"
    sid = init(client, folder, start=100)  # the client's numbering starts at start_frame_index
    resp = client.post("/v1/video/prompt", headers=HEADERS, json={
        "session_id": sid, "model": model_id(client), "frame_index": 102, "mask": png_base64(square_mask(x=9)),
        "obj_id": 10000, "params": {"conf_threshold": 0.0, "epsilon_factor": 0.0}})
    assert resp.status_code == 200, resp.text
    assert polygons_of(resp.json()["data"]["masks"]) == [[[9.0, 10.0], [29.0, 10.0], [29.0, 30.0], [9.0, 30.0], [9.0, 10.0]]]
    events = sse_events(client, {"session_id": sid, "model": model_id(client), "start_frame": 102})
    assert events[0] == {"type": "started", "total_frames": N, "start_frame_index": 100}
    progress = events[1:-1]
    assert [e["type"] for e in progress] == ["progress"] * (N - 2)
    assert [e["current_frame"] for e in progress] == list(range(102, 100 + N))
    assert progress[-1]["progress"] == 1.0
    done = events[-1]
    assert done["type"] == "completed" and sorted(map(int, done["results"])) == list(range(102, 100 + N))
    session = open_session(x.pool.default.loaded.model, open_source(folder), x.pool.default.config)
    session.add_mask(2, 10000, square_mask(x=9))
    for result in session.propagate(start=2):
        shapes = done["results"][str(result.frame_idx + 100)]["masks"]
        assert shapes == progress[result.frame_idx - 2]["masks"]  # the live events hold the same shapes
        expected = ndimage.binary_fill_holes(result.masks[0].numpy())
        drawn = raster(polygons_of(shapes), 48, 64)
        assert not (drawn & ~expected).any() and drawn.sum() >= 0.95 * expected.sum(), result.frame_idx
    assert client.post(f"/v1/video/cleanup/{sid}", params={"model": model_id(client)}, headers=HEADERS).json() == {
        "success": True, "data": {"message": f"Session {sid} cleaned up"}}
    # the session is gone: every endpoint answers as for an unknown id
    assert_error(client.post(f"/v1/video/cleanup/{sid}", params={"model": "x"}, headers=HEADERS), 404, "SESSION_NOT_FOUND")
    assert_error(client.post("/v1/video/prompt", headers=HEADERS, json={
        "session_id": sid, "model": model_id(client), "frame_index": 102, "mask": png_base64(square_mask())}), 404, "SESSION_NOT_FOUND")
    assert x.host.manager.sessions() == [] and sid not in x.videos


def test_source_under_the_root_instead_of_frames(featmatch, root, tmp_path):
    client, _x = featmatch
    resp = client.post("/v1/video/init", headers=HEADERS, json={"model": model_id(client), "source": "square"})
    assert resp.status_code == 200 and resp.json()["data"]["num_frames"] == N
    frame_folder(tmp_path / "outside", 3)
    assert_error(client.post("/v1/video/init", headers=HEADERS, json={"model": model_id(client), "source": str(tmp_path / "outside")}),
                 403, "FORBIDDEN")
    assert_error(client.post("/v1/video/init", headers=HEADERS, json={"model": model_id(client), "source": "../"}), 403, "FORBIDDEN")


def test_refusals_are_one_sentence_in_the_clients_error_body(featmatch, root):
    client, _x = featmatch
    model = model_id(client)
    assert_error(client.post("/v1/video/prompt", headers=HEADERS, json={"session_id": "nope", "model": model, "points": [[0.5, 0.5]],
                                                                        "point_labels": [1]}), 404, "SESSION_NOT_FOUND")
    assert_error(client.post("/v1/video/init", headers=HEADERS, json={"model": "segment_anything_3_video", "frames": data_uris(root / "square")}),
                 404, "MODEL_NOT_FOUND")
    assert_error(client.post("/v1/video/init", headers=HEADERS, json={"model": model, "frames": ["data:image/jpeg;base64,bm90IGFuIGltYWdl"]}),
                 400, "INVALID_FRAME")
    assert_error(client.post("/v1/video/init", headers=HEADERS, json={"model": model, "frames": []}), 400, "MISSING_FRAMES")
    assert_error(client.post("/v1/video/init", headers=HEADERS, json={"frames": []}), 422, "VALIDATION_ERROR")
    assert_error(client.post("/v1/video/init", headers=HEADERS, content=b"{"), 400, "INVALID_JSON")
    sid = init(client, root / "square")
    base = {"session_id": sid, "model": model, "frame_index": 1}
    assert "text" in assert_error(client.post("/v1/video/prompt", headers=HEADERS, json={**base, "text_prompt": "cat."}), 400,
                                  "TEXT_PROMPT_UNSUPPORTED")
    assert "mask" in assert_error(client.post("/v1/video/prompt", headers=HEADERS, json={
        **base, "points": [[0.5, 0.5]], "point_labels": [1]}), 400, "INVALID_REQUEST")  # featmatch takes masks only
    assert_error(client.post("/v1/video/prompt", headers=HEADERS, json={**base, "points": [[30, 20]], "point_labels": [1]}), 400,
                 "INVALID_PROMPT")  # pixels, not fractions
    assert_error(client.post("/v1/video/prompt", headers=HEADERS, json={**base, "points": [[0.5, 0.5]], "point_labels": []}), 400,
                 "INVALID_PROMPT")
    assert_error(client.post("/v1/video/prompt", headers=HEADERS, json=base), 400, "MISSING_PROMPT")
    assert_error(client.post("/v1/video/prompt", headers=HEADERS, json={**base, "frame_index": N, "mask": png_base64(square_mask())}),
                 400, "INVALID_FRAME")
    assert_error(client.post("/v1/video/prompt", headers=HEADERS, json={**base, "mask": png_base64(np.ones((4, 4), bool))}), 400,
                 "INVALID_PROMPT")
    # a propagation's refusal is an error event, which the client shows as "Propagation failed: <message>"
    for body in ({"session_id": "nope", "model": model}, {"session_id": sid, "model": model}, {"model": model}):
        events = sse_events(client, body)
        assert len(events) == 1 and events[0]["type"] == "error" and events[0]["message"].endswith("."), events
    assert "prompted" in sse_events(client, {"session_id": sid, "model": model})[0]["message"]


def test_closing_the_stream_cancels_the_propagation(featmatch, root):
    client, x = featmatch
    sid = client.post("/v1/video/init", headers=HEADERS, json={"model": model_id(client), "source": "long"}).json()["data"]["session_id"]
    assert client.post("/v1/video/prompt", headers=HEADERS, json={
        "session_id": sid, "model": model_id(client), "frame_index": 0, "mask": png_base64(square_mask())}).status_code == 200
    with client.stream("POST", "/v1/video/propagate/stream", json={"session_id": sid, "model": model_id(client)}, headers=HEADERS) as resp:
        lines = resp.iter_lines()
        seen = [json.loads(line[6:]) for line, _ in zip((li for li in lines if li.startswith("data: ")), range(3))]
    assert [e["type"] for e in seen] == ["started", "progress", "progress"]
    run = x.host.manager.get(sid).run
    assert run.wait(30)
    assert run.cancel_event.is_set() and run.frames < 50  # stopped within frames of the close (150 take ~10 s)


def test_standalone_app_answers_at_the_root(root):
    pool = featmatch_pool()
    settings = ServeSettings(root=root)
    with BackgroundServer(pool, settings, app_factory=lambda p, s: create_integration_app("x-anylabeling", p, s)) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        sid = init(client, root / "square")
        assert client.post("/v1/video/prompt", headers=HEADERS, json={
            "session_id": sid, "model": model_id(client), "frame_index": 0, "mask": png_base64(square_mask())}).status_code == 200
        events = sse_events(client, {"session_id": sid, "model": model_id(client), "start_frame": 0, "end_frame": 3})
        assert [e["type"] for e in events] == ["started", *["progress"] * 4, "completed"]
        assert sorted(map(int, events[-1]["results"])) == [0, 1, 2, 3]
