"""Integrations mounted under `maskvos serve` (/integrations/<name>, the page and /api unchanged),
or one alone at "/"; unknown names refused in one sentence."""

from __future__ import annotations

import base64
import importlib.util
import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

from maskvos.errors import ConfigError
from maskvos.integrations import INTEGRATIONS, create_app_with, create_integration_app, integration_routers
from maskvos.serve import ServeSettings, create_app
from maskvos.serve.server import BackgroundServer

from serve_tools import featmatch_pool, frame_folder, square_mask

#: Label Studio's adapter is written alongside; it is mounted here once its module exists.
HAS_LABEL_STUDIO = importlib.util.find_spec("maskvos.integrations.label_studio") is not None


@pytest.fixture(scope="module")
def pool():
    return featmatch_pool()


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("root")
    frame_folder(root / "square", 5)
    return root


def one_sentence(message: str) -> str:
    assert message.endswith(".") and message.count(". ") == 0 and "\n" not in message, message
    return message


def test_serve_mounts_integrations_beside_the_page_and_api(pool, root):
    names = ("x-anylabeling", "cvat", *(("label-studio",) if HAS_LABEL_STUDIO else ()))
    settings = ServeSettings(root=root, integrations=names)
    with BackgroundServer(pool, settings, app_factory=create_app_with) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.get("/api/health").json()["status"] == "ok"
        page = client.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower()
        # the page's API still works next to the integrations
        sid = client.post("/api/sessions", json={"source": "square"}).json()["session_id"]
        assert client.get(f"/api/sessions/{sid}").json()["num_frames"] == 5
        # X-AnyLabeling's server URL is http://host:port/integrations/x-anylabeling
        base = "/integrations/x-anylabeling"
        models = client.get(f"{base}/v1/models").json()
        assert models["success"] is True and list(models["data"]) == [pool.default.name]
        init = client.post(f"{base}/v1/video/init", json={"model": pool.default.name, "source": "square"}).json()
        x_sid = init["data"]["session_id"]
        png = io.BytesIO()
        Image.fromarray(square_mask().astype("uint8") * 255).save(png, format="PNG")
        prompt = client.post(f"{base}/v1/video/prompt", json={
            "session_id": x_sid, "model": pool.default.name, "frame_index": 0, "mask": base64.b64encode(png.getvalue()).decode()})
        assert prompt.status_code == 200 and prompt.json()["data"]["num_objects"] == 1
        with client.stream("POST", f"{base}/v1/video/propagate/stream", json={"session_id": x_sid, "model": pool.default.name}) as resp:
            events = [line for line in resp.iter_lines() if line.startswith("data: ")]
        assert '"type":"completed"' in events[-1] and len(events) == 1 + 5 + 1
        # the two APIs keep their own sessions: the page's id is unknown to X-AnyLabeling's endpoints
        assert client.post(f"{base}/v1/video/cleanup/{sid}").status_code == 404
        assert client.get(f"/api/sessions/{x_sid}").status_code == 404
        # CVAT is a cvat-cli function module: its mount tells how to run it
        cvat = client.get("/integrations/cvat/").json()
        assert cvat["function_module"] == "maskvos.integrations.cvat" and "create-native" in cvat["register"]
        if HAS_LABEL_STUDIO:
            assert client.get("/integrations/label-studio/health").status_code == 200
        assert client.get("/integrations/nope/v1/models").status_code == 404


def test_unknown_names_are_refused_in_one_sentence(pool, root):
    with pytest.raises(ConfigError) as err:
        create_app_with(pool, ServeSettings(root=root), ["x-anylabeling", "labelstudio"])
    message = one_sentence(str(err.value))
    assert "'labelstudio'" in message and all(name in message for name in INTEGRATIONS)
    with pytest.raises(ConfigError):
        create_integration_app("nope", pool, ServeSettings(root=root))
    # serve alone cannot mount integrations (it sits below them); asked to, it says how
    with pytest.raises(ConfigError) as err:
        create_app(pool, ServeSettings(root=root, integrations=("x-anylabeling",)))
    assert "create_app_with" in one_sentence(str(err.value))
    assert [prefix for prefix, _ in integration_routers(["x-anylabeling", "x-anylabeling"], pool, ServeSettings(root=root))] == [
        "/integrations/x-anylabeling"]


def test_cvat_cannot_run_alone_and_says_how_to_run_it(pool, root):
    with pytest.raises(ConfigError) as err:
        create_integration_app("cvat", pool, ServeSettings(root=root))
    message = one_sentence(str(err.value))
    assert "function create-native" in message and "--function-module maskvos.integrations.cvat" in message


def test_one_integration_alone_at_the_root(pool, root):
    app = create_integration_app("x-anylabeling", pool, ServeSettings(root=root))
    paths = set(app.openapi()["paths"])
    assert {"/v1/models", "/v1/video/init", "/v1/video/prompt", "/v1/video/propagate/stream",
            "/v1/video/cleanup/{session_id}", "/health"} <= paths
    assert not any(p.startswith("/api") for p in paths)  # no page, no page API
