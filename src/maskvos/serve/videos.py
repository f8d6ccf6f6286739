"""The videos a server may open: files and image folders under its root (never a path outside it),
the demo clip, and uploads kept in the server's own folder."""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from maskvos.app.demo import write_demo_clip
from maskvos.io.frames import IMAGE_SUFFIXES, VIDEO_SUFFIXES, natural_key
from maskvos.serve.errors import ServeError, bad_request, not_found

#: The `source` that names the demo clip (written into the server's folder on first use).
DEMO_SOURCE = "demo:shapes"
#: Folders deeper than this under the root are not listed (they can still be opened by path).
MAX_DEPTH = 4
#: At most this many entries are listed.
MAX_ENTRIES = 1000
UPLOAD_SUFFIXES = VIDEO_SUFFIXES | {".zip"}


@dataclass(frozen=True)
class VideoEntry:
    """One openable video: `source` is what POST /api/sessions takes."""

    source: str
    name: str
    kind: str  # "video" (a file), "frames" (an image folder) or "demo"

    def as_json(self) -> dict[str, str]:
        return {"source": self.source, "name": self.name, "kind": self.kind}


class VideoCatalog:
    """Videos under `root`, and where uploads and the demo clip go (`work_dir`, the server's own)."""

    def __init__(self, root: str | os.PathLike[str], work_dir: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.work_dir = Path(work_dir)
        if not self.root.is_dir():
            raise ServeError(400, f"Root folder '{root}' does not exist or is not a folder; pass an existing folder as --root.")

    def entries(self) -> list[VideoEntry]:
        """The demo clip, then every video file and image folder under the root, in natural order."""
        found = [VideoEntry(DEMO_SOURCE, "demo clip (synthetic, 40 frames, 2 objects)", "demo")]
        for folder, dirs, files in os.walk(self.root):
            here = Path(folder)
            depth = len(here.relative_to(self.root).parts)
            dirs[:] = sorted((d for d in dirs if not d.startswith(".")), key=natural_key) if depth < MAX_DEPTH else []
            rel = here.relative_to(self.root).as_posix()
            if here != self.root and any(Path(f).suffix.lower() in IMAGE_SUFFIXES for f in files):
                found.append(VideoEntry(rel, rel + "/", "frames"))
            for name in sorted(files, key=natural_key):
                if Path(name).suffix.lower() in VIDEO_SUFFIXES and not name.startswith("."):
                    path = name if rel == "." else f"{rel}/{name}"
                    found.append(VideoEntry(path, path, "video"))
            if len(found) > MAX_ENTRIES:
                break
        return found[: MAX_ENTRIES + 1]

    def resolve(self, source: str) -> Path:
        """The file or folder a `source` names: the demo clip, or a path under the root (relative to it,
        or absolute inside it). A path outside the root is refused."""
        if source == DEMO_SOURCE:
            return write_demo_clip(self.work_dir / "demo")
        if not source or "\x00" in source:
            raise bad_request("The source is empty; pass a path under the server's root as listed by GET /api/videos.")
        given = Path(source)
        path = (given if given.is_absolute() else self.root / given).resolve()
        if path != self.root and self.root not in path.parents:
            raise ServeError(403, f"Source '{source}' lies outside the server's root folder; pass a path under it (see GET /api/videos).")
        if not path.exists():
            raise not_found(f"Source '{source}' does not exist under the server's root; pass a path listed by GET /api/videos.")
        return path

    def store_upload(self, filename: str, stream, limit_bytes: int) -> Path:
        """Save an uploaded video file (or a zip of frame images) in the server's folder and return
        what a session opens: the file, or the folder the zip's images were unpacked into."""
        name = _safe_name(filename)
        suffix = Path(name).suffix.lower()
        if suffix not in UPLOAD_SUFFIXES:
            raise ServeError(
                415, f"Upload '{filename}' is not a video ({', '.join(sorted(VIDEO_SUFFIXES))}) or a zip of frame images; upload one of those."
            )
        folder = self.work_dir / "uploads" / os.urandom(6).hex()
        folder.mkdir(parents=True)
        target = folder / name
        written = 0
        try:
            with target.open("wb") as out:
                while chunk := stream.read(1 << 20):
                    written += len(chunk)
                    if written > limit_bytes:
                        raise ServeError(413, f"Upload '{filename}' is larger than the server's limit of {limit_bytes >> 20} MiB; upload a smaller file or start the server with a larger --max-upload-mb.")
                    out.write(chunk)
            if written == 0:
                raise bad_request(f"Upload '{filename}' is empty; upload a video file.")
            return _unzip_frames(target, filename) if suffix == ".zip" else target
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise


def _safe_name(filename: str) -> str:
    name = PurePosixPath(filename.replace("\\", "/")).name
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".")
    return name or "upload"


def _is_frame_member(member: zipfile.ZipInfo) -> bool:
    """An image file of a zip, not a folder, a hidden file or macOS's resource-fork copies."""
    parts = PurePosixPath(member.filename.replace("\\", "/")).parts
    return (not member.is_dir() and bool(parts) and Path(parts[-1]).suffix.lower() in IMAGE_SUFFIXES
            and not any(p.startswith(".") or p == "__MACOSX" for p in parts))


def _unzip_frames(path: Path, filename: str) -> Path:
    """The images of an uploaded zip, unpacked flat into a folder next to it (paths inside the zip
    never leave that folder)."""
    frames = path.with_suffix("")
    frames.mkdir()
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if _is_frame_member(m)]
            names = {_safe_name(m.filename) for m in members}
            if not members or len(names) != len(members):
                raise bad_request(f"Upload '{filename}' holds no frame images, or two with the same name; zip one folder of frames.")
            for member in members:
                (frames / _safe_name(member.filename)).write_bytes(archive.read(member))
    except zipfile.BadZipFile:
        raise bad_request(f"Upload '{filename}' is not a readable zip file; zip the frame images again.") from None
    path.unlink()
    return frames
