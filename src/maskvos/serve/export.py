"""Exports of a serve session as a zip: DAVIS palette PNGs (`masks/<frame>.png`, as `maskvos
segment` writes them), per-frame COCO RLE JSON (`rle/<frame>.json`, as its `rle` format writes
them) or one COCO-style JSON with a track id per object (`annotations.json`)."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

from maskvos.io.coco import CocoVideoBuilder
from maskvos.serve.errors import bad_request
from maskvos.serve.sessions import ServeSession

EXPORT_FORMATS = ("davis", "rle", "coco")


def export_zip(serve: ServeSession, fmt: str, folder: Path) -> Path:
    """Write the export of `serve`'s frames with masks into a new zip file under `folder`."""
    if fmt not in EXPORT_FORMATS:
        raise bad_request(f"Export format '{fmt}' is unknown; use one of {', '.join(EXPORT_FORMATS)}.")
    indices = serve.store.frame_indices()
    if not indices:
        raise bad_request("This session has no masks to export yet; prompt an object and propagate first.")
    h, w = serve.session.height, serve.session.width
    fd, name = tempfile.mkstemp(dir=folder, prefix=f"export-{fmt}-", suffix=".zip")
    os.close(fd)
    path = Path(name)
    try:
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            coco = CocoVideoBuilder(_video_name(serve.source), w, h) if fmt == "coco" else None
            for idx in indices:
                frame = serve.store.get(idx)
                if frame is None:
                    continue
                stem = serve.frames.stem(idx)
                if fmt == "davis":
                    archive.writestr(f"masks/{stem}.png", frame.label_map_png(h, w), compress_type=zipfile.ZIP_STORED)
                elif fmt == "rle":
                    record = {"frame": stem, "objects": {str(k): m.rle for k, m in sorted(frame.objects.items())}}
                    archive.writestr(f"rle/{stem}.json", json.dumps(record))
                else:
                    coco.add_frame(idx, _file_name(serve, idx, stem), [(k, m.rle, m.score) for k, m in sorted(frame.objects.items())])
            if coco is not None:
                archive.writestr("annotations.json", json.dumps(coco.to_dict()))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _file_name(serve: ServeSession, idx: int, stem: str) -> str:
    """The frame's image name: its file in a frame folder, else `<stem>.jpg`."""
    paths = getattr(serve.frames, "paths", None)
    return paths[idx].name if paths is not None else f"{stem}.jpg"


def _video_name(source: str) -> str:
    name = Path(source.rstrip("/")).name
    return name.split(":")[-1] or "video"


def download_name(serve: ServeSession, fmt: str) -> str:
    return f"{_video_name(serve.source)}-{fmt}.zip"
