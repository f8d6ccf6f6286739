"""Propagation latency per frame as the browser sees it (maskvos serve, its page in headless
chromium) against `maskvos segment`'s (the same library run the CLI does), on the same video,
model and prompt, in one run.

    python benchmarks/serve_latency.py                       # the demo clip, featmatch
    python benchmarks/serve_latency.py --video ../shared/data/vos/davis2017-lowres/JPEGImages/dogs-jump \\
        --prompt ../shared/data/vos/davis2017-lowres/Annotations/dogs-jump/00000.png
    python benchmarks/serve_latency.py --checkpoint tiny.safetensors --resolution 512

The page is opened, the prompt (the first frame's mask of every object) is sent by the page's own
fetch, then the Propagate button is clicked; each frame's arrival time in the page is recorded by
the page (`performance.now()` when its NDJSON line is parsed). Printed: time to the first frame,
mean time between frames, frames per second, and the ratio to the CLI run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from maskvos.app import load_run_model, prompts_from_mask_file, segment_video
from maskvos.app.demo import write_demo_clip
from maskvos.backends import open_session
from maskvos.inference.config import InferenceConfig
from maskvos.io.frames import open_source
from maskvos.io.writers import encode_rle
from maskvos.serve import ServeSettings
from maskvos.serve.server import BackgroundServer
from maskvos.serve.sessions import ModelPool, PooledModel

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def cli_run(loaded, video: Path, prompts, config: InferenceConfig, out: Path) -> tuple[float, int, list[float]]:
    """`maskvos segment`'s run (segment_video with the png writer): seconds, frames, per-frame times."""
    stamps: list[float] = []

    class Stamp:
        def update(self, n: int = 1) -> None:
            stamps.append(time.perf_counter())

        def close(self) -> None:
            pass

    began = time.perf_counter()
    summary = segment_video(loaded.model, video, prompts, out, config=config, progress=lambda _total: Stamp())
    return time.perf_counter() - began, summary.frames_written, [t - began for t in stamps]


def browser_run(pool: ModelPool, video: Path, prompts, chromium: str) -> tuple[float, int, list[float]]:
    from playwright.sync_api import sync_playwright

    root = video.parent
    with BackgroundServer(pool, ServeSettings(root=root)) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(server.url)
        page.click(f"#video-list li[data-source='{video.name}']")
        page.wait_for_function("window.maskvos.state.session !== null")
        for spec in prompts:
            page.evaluate(
                "async (b) => { const r = await fetch(`/api/sessions/${window.maskvos.state.session.session_id}/prompts`,"
                " {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(b)});"
                " if (!r.ok) throw new Error(await r.text()); }",
                {"frame_idx": spec.frame_idx, "obj_id": spec.obj_id, "mask": encode_rle(spec.mask)},
            )
        began = time.perf_counter()
        page.click("#propagate")
        page.wait_for_function("window.maskvos.state.runs === 1 && !window.maskvos.state.propagating", timeout=3_600_000)
        seconds = time.perf_counter() - began
        timings = page.evaluate("window.maskvos.state.timings.map((t) => t.ms / 1000)")
        browser.close()
    return seconds, len(timings), timings


def http_run(pool: ModelPool, video: Path, prompts) -> tuple[float, int, list[float]]:
    """The same API calls from a plain HTTP client (no page): the server's share of the latency."""
    import json

    import httpx

    with BackgroundServer(pool, ServeSettings(root=video.parent)) as server, httpx.Client(base_url=server.url, timeout=600) as client:
        sid = client.post("/api/sessions", json={"source": video.name}).json()["session_id"]
        for spec in prompts:
            client.post(f"/api/sessions/{sid}/prompts", json={"frame_idx": spec.frame_idx, "obj_id": spec.obj_id,
                                                              "mask": encode_rle(spec.mask)}).raise_for_status()
        stamps = []
        began = time.perf_counter()
        with client.stream("POST", f"/api/sessions/{sid}/propagate", json={}) as resp:
            for line in resp.iter_lines():
                if line.strip() and "frame_idx" in json.loads(line):
                    stamps.append(time.perf_counter() - began)
        return time.perf_counter() - began, len(stamps), stamps


def describe(name: str, seconds: float, frames: int, stamps: list[float]) -> dict:
    gaps = np.diff(stamps) if len(stamps) > 1 else np.array([seconds])
    return {"path": name, "frames": frames, "first_s": stamps[0] if stamps else float("nan"),
            "ms_per_frame": 1000 * float(np.mean(gaps)), "median_ms": 1000 * float(statistics.median(gaps)),
            "fps": frames / seconds, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, help="frame folder or video file (default: the demo clip)")
    parser.add_argument("--prompt", type=Path, help="first-frame mask PNG (default: the demo clip's)")
    parser.add_argument("--model", default="featmatch")
    parser.add_argument("--checkpoint")
    parser.add_argument("--resolution", type=int)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="serve-latency-"))
    if args.video is None:
        video = write_demo_clip(work / "demo")
        prompt = work / "demo" / "Annotations" / "shapes" / "00000.png"
    else:
        video, prompt = args.video.resolve(), args.prompt
    config = InferenceConfig(resolution=args.resolution)
    loaded = load_run_model(args.checkpoint or args.model, "cpu", allow_fallback=False)
    prompts = prompts_from_mask_file(prompt, open_source(video), 0, None)
    pool = ModelPool(PooledModel(loaded, config), "cpu", config)
    # the first propagation of a process pays a one-off warm-up (about 0.4 s with featmatch): pay it here
    session = open_session(loaded.model, open_source(video), config)
    prompts[0].apply(session)
    list(session.propagate(end=min(2, (session.num_frames or 3) - 1)))
    rows = [describe("browser (serve + page)", *browser_run(pool, video, prompts, args.chromium)),
            describe("CLI (maskvos segment)", *cli_run(loaded, video, prompts, config, work / "cli"))]
    rows.append(describe("HTTP client only (httpx, no page)", *http_run(pool, video, prompts)))
    rows.append(describe("browser, again", *browser_run(pool, video, prompts, args.chromium)))
    cli = rows[1]
    print(f"video: {video} ({rows[1]['frames']} frames), model: {loaded.name}, resolution: {args.resolution or 'default'}")
    print("| path | frames | first frame (s) | ms per frame (mean / median) | frames/s | vs CLI (ms per frame) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['frames']} | {r['first_s']:.2f} | {r['ms_per_frame']:.0f} / {r['median_ms']:.0f} | "
              f"{r['fps']:.2f} | {r['ms_per_frame'] / cli['ms_per_frame']:.2f}x |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
