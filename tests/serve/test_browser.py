"""The page in a real browser: Debian's chromium, headless, driven by Playwright's Python package.

The whole loop on the demo clip as a user does it (paint two objects on frame 0, propagate and see
every frame arrive, correct frame 20 with the brush, propagate again, export DAVIS PNGs), checked
against `maskvos segment` and the library session; and the page's RLE code against pycocotools.
A screenshot of the page is saved under test-artifacts/ (or $MASKVOS_TEST_ARTIFACTS).
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from maskvos.backends import open_session
from maskvos.cli import main
from maskvos.inference.postprocess import OverlapResolver
from maskvos.io.frames import open_source
from maskvos.io.masks import decode_label_map, read_label_map, write_label_map
from maskvos.io.writers import decode_rle, encode_rle

from serve_tools import featmatch_pool, running

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("MASKVOS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("MASKVOS_TEST_ARTIFACTS") or Path(__file__).resolve().parents[2] / "test-artifacts")
# The flags a root user's headless chromium needs on a machine without a network or a GPU.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need Playwright (pip install playwright)")
    if CHROMIUM is None:
        pytest.skip("no chromium to drive: install Debian's package (apt-get install chromium) or set MASKVOS_CHROMIUM")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def featmatch_server(tmp_path_factory):
    with running(featmatch_pool(), tmp_path_factory.mktemp("root")) as (server, client):
        yield server, client


def test_page_rle_matches_pycocotools(browser, featmatch_server):
    server, _client = featmatch_server
    page = browser.new_page()
    page.goto(server.url)
    page.wait_for_function("window.maskvos !== undefined")
    rng = np.random.default_rng(0)
    masks = [np.zeros((7, 5), bool), np.ones((7, 5), bool), rng.random((31, 17)) > 0.5]
    big = np.zeros((480, 640), bool)
    big[100:400, 37:600] = True  # runs of tens of thousands of pixels: multi-character counts
    big[200:210, 50:55] = False
    masks.append(big)
    for mask in masks:
        h, w = mask.shape
        flat = [int(v) for v in mask.reshape(-1)]
        js = page.evaluate("([m, h, w]) => window.maskvos.rle.encode(Uint8Array.from(m), h, w)", [flat, h, w])
        assert js == encode_rle(mask)
        back = page.evaluate("(r) => Array.from(window.maskvos.rle.decode(r))", encode_rle(mask))
        assert np.array_equal(np.array(back, bool).reshape(h, w), mask)
    page.close()


def _paint_rect(page, x0: int, y0: int, x1: int, y1: int, brush: int, frame_w: int = 640, frame_h: int = 480) -> None:
    """Brush strokes covering the rectangle (frame pixels), row after row, as one stroke."""
    box = page.locator("#draw-canvas").bounding_box()
    sx, sy = box["width"] / frame_w, box["height"] / frame_h
    page.mouse.move(box["x"] + x0 * sx, box["y"] + y0 * sy)
    page.mouse.down()
    for y in range(y0, y1 + 1, max(brush // 2, 1)):
        page.mouse.move(box["x"] + x0 * sx, box["y"] + y * sy, steps=2)
        page.mouse.move(box["x"] + x1 * sx, box["y"] + y * sy, steps=6)
    page.mouse.up()


def _prompted(page, frame_idx: int, obj_id: int) -> None:
    page.wait_for_function(
        "([k, id]) => document.querySelector('#status').textContent === `object ${id} prompted on frame ${k}`",
        arg=[frame_idx, obj_id], timeout=60_000)


def _propagated(page, run: int) -> None:
    page.wait_for_function(
        "(run) => window.maskvos.state.runs === run && !window.maskvos.state.propagating "
        "&& document.querySelector('#progress').dataset.done === 'done'", arg=run, timeout=300_000)


def _export_davis(page, folder: Path) -> dict[str, np.ndarray]:
    page.select_option("#export-format", "davis")
    with page.expect_download() as download:
        page.click("#export")
    path = folder / download.value.suggested_filename
    download.value.save_as(path)
    with zipfile.ZipFile(path) as z:
        return {Path(n).stem: decode_label_map(z.read(n)) for n in z.namelist()}


def _labels_of(masks_json: dict, h: int = 480, w: int = 640) -> dict[int, np.ndarray]:
    return {o["obj_id"]: decode_rle(o["mask"]) for o in masks_json["objects"]}


def test_whole_loop_on_the_demo_clip(browser, featmatch_server, tmp_path):
    server, client = featmatch_server
    page = browser.new_page(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url)
    assert "featmatch" in page.inner_text("#notice") or page.is_hidden("#notice")
    page.click("#video-list li[data-source='demo:shapes']")
    page.wait_for_function("window.maskvos.state.session !== null")
    sid = page.evaluate("window.maskvos.state.session.session_id")

    # frame 0: paint object 1 (the red square) and, as a new object, object 2 (the blue bar)
    page.keyboard.press("b")
    _paint_rect(page, 40, 180, 116, 256, brush=24)
    _prompted(page, 0, 1)
    page.keyboard.press("n")
    _paint_rect(page, 310, 140, 374, 260, brush=24)
    _prompted(page, 0, 2)
    painted = _labels_of(client.get(f"/api/sessions/{sid}/masks/0").json())
    assert sorted(painted) == [1, 2] and 4000 < painted[1].sum() < 9216 + 3000

    # propagate: every frame's masks arrive in the page, in order, the timeline filling in
    page.keyboard.press("Enter")
    _propagated(page, 1)
    arrived = page.evaluate("window.maskvos.state.timings.filter((t) => t.run === 1).map((t) => t.frame_idx)")
    assert arrived == list(range(40))
    assert page.get_attribute("#timeline-strip", "data-frames-done") == "40"
    first = _export_davis(page, tmp_path)
    assert sorted(first) == [f"{k:05d}" for k in range(40)]

    # the same prompts through `maskvos segment`
    clip = server.app.state.catalog.resolve("demo:shapes")
    prompt = np.zeros((480, 640), np.uint8)
    for obj_id, mask in painted.items():
        prompt[mask] = obj_id
    write_label_map(tmp_path / "prompt.png", prompt)
    assert main(["segment", str(clip), "--prompt", str(tmp_path / "prompt.png"), "--model", "featmatch",
                 "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    for stem, labels in first.items():
        assert np.array_equal(labels, read_label_map(tmp_path / "cli" / "masks" / f"{stem}.png")), stem

    # correct frame 20 with the brush (object 1's strip left of object 2), propagate again from it
    for _ in range(2):
        page.keyboard.press("Shift+ArrowRight")
    assert page.inner_text("#frame-label") == "frame 20 / 39"
    page.keyboard.press("1")
    _paint_rect(page, 284, 170, 298, 250, brush=12)
    _prompted(page, 20, 1)
    corrected = _labels_of(client.get(f"/api/sessions/{sid}/masks/20").json())
    assert corrected[1].sum() > 0
    page.keyboard.press("Enter")
    _propagated(page, 2)
    arrived = page.evaluate("window.maskvos.state.timings.filter((t) => t.run === 2).map((t) => t.frame_idx)")
    assert arrived == list(range(20, 40))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-page.png"))
    second = _export_davis(page, tmp_path)

    # the library session given the same calls: prompts, propagation, correction, propagation
    session = open_session(server.app.state.pool.default.loaded.model, open_source(clip))
    for obj_id, mask in painted.items():
        session.add_mask(0, obj_id, mask)
    list(session.propagate())
    session.add_mask(20, 1, corrected[1])
    resolve = OverlapResolver("score")
    expected = {f"{r.frame_idx:05d}": resolve.process(r)[0].label_map() for r in session.propagate()}
    for k in range(40):
        stem = f"{k:05d}"
        reference = first[stem] if k < 20 else expected[stem]
        assert np.array_equal(second[stem], reference), stem
    assert (second["00020"] == 1).sum() >= (first["00020"] == 1).sum()  # the brush added to object 1
    assert not errors, errors
    page.close()


@pytest.fixture(scope="module")
def sam2_server(tmp_path_factory):
    from maskvos.checkpoints import save_checkpoint

    from model_tools import tiny_sam2
    from serve_tools import checkpoint_pool, frame_folder

    root = tmp_path_factory.mktemp("sam2root")
    frame_folder(root / "square", 10, h=96, w=128)
    checkpoint = save_checkpoint(tiny_sam2(), tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")
    with running(checkpoint_pool(checkpoint), root) as (server, client):
        yield server, client, root


def _click(page, x: float, y: float, w: int, h: int, shift: bool = False) -> None:
    box = page.locator("#draw-canvas").bounding_box()
    modifiers = ["Shift"] if shift else []
    page.mouse.move(box["x"] + x * box["width"] / w, box["y"] + y * box["height"] / h)
    if shift:
        page.keyboard.down("Shift")
    page.mouse.down()
    page.mouse.up()
    if shift:
        page.keyboard.up("Shift")
    del modifiers


def test_clicks_and_box_tools_with_a_sam2_model(browser, sam2_server):
    """Positive and negative clicks and a dragged box, as the page sends them, give the masks the
    library session gives for the same points and box; propagation then streams the library's masks."""
    server, client, root = sam2_server
    w, h = 128, 96
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url)
    assert page.is_hidden("#notice")
    page.click("#video-list li[data-source='square']")
    page.wait_for_function("window.maskvos.state.session !== null")
    assert page.is_enabled("#tools button[data-tool='click']") and page.is_enabled("#tools button[data-tool='box']")
    sid = page.evaluate("window.maskvos.state.session.session_id")
    page.keyboard.press("c")
    _click(page, 20, 30, w, h)
    _prompted(page, 0, 1)
    _click(page, 90, 70, w, h, shift=True)
    _prompted(page, 0, 1)
    page.keyboard.press("x")
    bbox = page.locator("#draw-canvas").bounding_box()
    page.mouse.move(bbox["x"] + 4 * bbox["width"] / w, bbox["y"] + 8 * bbox["height"] / h)
    page.mouse.down()
    page.mouse.move(bbox["x"] + 40 * bbox["width"] / w, bbox["y"] + 40 * bbox["height"] / h, steps=5)
    page.mouse.up()
    _prompted(page, 0, 1)
    sent = page.evaluate("window.maskvos.state.clicks.get('0:1')")
    assert sent["labels"] == [1, 0] and len(sent["points"]) == 2 and sent["box"] is not None
    assert sent["points"][0] == pytest.approx([20, 30], abs=1) and sent["box"] == pytest.approx([4, 8, 40, 40], abs=1)
    shown = decode_rle(client.get(f"/api/sessions/{sid}/masks/0").json()["objects"][0]["mask"])

    session = open_session(server.app.state.pool.default.loaded.model, open_source(root / "square"),
                           server.app.state.pool.default.config)
    session.add_points(0, 1, sent["points"][:1], [1])
    session.add_points(0, 1, sent["points"], [1, 0])
    expected = session.add_points(0, 1, sent["points"], [1, 0], sent["box"])
    assert np.array_equal(shown, expected.masks[0].numpy())
    page.keyboard.press("Enter")
    _propagated(page, 1)
    streamed = page.evaluate(
        "Array.from(window.maskvos.state.masks.entries()).map(([k, m]) => [k, m.get(1).mask])")
    library = {r.frame_idx: r.masks[0].numpy() for r in session.propagate()}
    assert sorted(k for k, _ in streamed) == list(range(10))
    for k, rle in streamed:
        assert np.array_equal(decode_rle(rle), library[k]), k
    assert not errors, errors
    page.close()
