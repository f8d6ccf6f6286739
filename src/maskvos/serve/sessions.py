"""Serve sessions: each one video, a maskvos `Session` on it, its last results, and at most one
propagation running in a thread of its own; the models they share, each computing for one
session at a time; and the manager that opens, finds, closes and times out sessions.

A request that needs a model another session is using waits `busy_wait_s`, then gets 503; a
prompt or a second propagation on a session that is propagating gets 409; a full server gets 503.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import secrets
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from maskvos.app import LoadedModel, load_run_model, settings_for
from maskvos.backends import open_session
from maskvos.errors import MaskvosError
from maskvos.inference.api import Pass, Session
from maskvos.inference.config import InferenceConfig
from maskvos.inference.postprocess import OverlapResolver, PostChain
from maskvos.io.frames import FrameSource, open_source
from maskvos.serve.errors import bad_request, conflict, not_found, unavailable
from maskvos.serve.store import FrameMasks, ResultStore
from maskvos.serve.wire import PromptRequest, PropagateRequest, decode_mask

log = logging.getLogger("maskvos.serve")

#: JPEGs of this many frames are kept per session (scrubbing back and forth reads them again).
JPEG_CACHE_FRAMES = 64


@dataclass
class PooledModel:
    """A loaded model with the settings its sessions use and the lock that lets one session at a
    time compute with it. `notice` says why it is not the model asked for (a fall-back), if so."""

    loaded: LoadedModel
    config: InferenceConfig
    notice: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def prompt_types(self) -> frozenset[str]:
        return self.loaded.backend.prompt_types

    def acquire(self, wait_s: float) -> None:
        if not self.lock.acquire(timeout=max(wait_s, 0.0)):
            raise unavailable(
                f"Model '{self.name}' is busy with another session's propagation; try again when it has finished (or cancel it)."
            )

    @contextmanager
    def held(self, wait_s: float) -> Iterator[None]:
        self.acquire(wait_s)
        try:
            yield
        finally:
            self.lock.release()


class ModelPool:
    """The server's default model, and models sessions ask for by name, loaded once on first use."""

    def __init__(self, default: PooledModel, device: str | None, config: InferenceConfig) -> None:
        self.default = default
        self.device, self.config = device, config
        self._models: dict[str, PooledModel] = {default.name: default}
        self._lock = threading.Lock()

    def get(self, name: str | None) -> PooledModel:
        if name is None or name == self.default.name:
            return self.default
        with self._lock:
            if name not in self._models:
                loaded = load_run_model(name, self.device, allow_fallback=False)
                self._models[name] = PooledModel(loaded, settings_for(loaded, self.config))
            return self._models[name]


class Propagation:
    """One propagation of a serve session, computed in its own thread. `lines` receives one dict
    per frame as it is computed ({"frame_idx", "objects"}), an {"error"} line if it fails, and
    last {"done": true, "frames": n, "cancelled": bool}. The model is held until it ends."""

    def __init__(self, owner: ServeSession, passes: list[Pass]) -> None:
        self.owner, self.passes = owner, passes
        self.total = _total_frames(passes, owner.session.num_frames)
        self.lines: queue.Queue[dict] = queue.Queue()
        self.cancel_event = threading.Event()
        self.finished = threading.Event()
        self.frames = 0
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._work, name=f"propagate-{owner.session_id}", daemon=True)

    @property
    def is_running(self) -> bool:
        return not self.finished.is_set()

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        self.cancel_event.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.finished.wait(timeout)

    def _work(self) -> None:
        owner = self.owner
        chain = PostChain([OverlapResolver(owner.model.config.overlap)])
        error = None
        try:
            results = owner.session.run_passes(self.passes)
            try:
                for result in results:
                    for out in chain.process(result):
                        self._emit(owner.store.put_result(out))
                    if self.cancel_event.is_set():
                        break
                if not self.cancel_event.is_set():
                    for out in chain.flush():
                        self._emit(owner.store.put_result(out))
            finally:
                results.close()
        except MaskvosError as exc:
            error = str(exc)
        except Exception as exc:  # a bug: logged with its traceback here, one sentence to the client
            log.exception("propagation of session %s failed", owner.session_id)
            error = f"The propagation failed with an internal error ({type(exc).__name__}: {exc}); the server's log has the details."
        finally:
            owner.model.lock.release()
            owner.touch()
            if error is not None:
                self.lines.put({"error": error})
            self.lines.put({"done": True, "frames": self.frames, "cancelled": self.cancel_event.is_set()})
            self.finished.set()

    def _emit(self, frame: FrameMasks) -> None:
        self.frames += 1
        self.lines.put(frame.as_json())


class ServeSession:
    """One video opened over the API."""

    def __init__(
        self, session_id: str, source: str, frames: FrameSource, session: Session, model: PooledModel,
        fps: float | None, busy_wait_s: float, cleanup: Path | None = None,
    ) -> None:
        self.session_id, self.source, self.frames, self.session, self.model = session_id, source, frames, session, model
        self.fps, self.busy_wait_s, self.cleanup = fps, busy_wait_s, cleanup
        self.store = ResultStore()
        self.lock = threading.Lock()
        self.run: Propagation | None = None
        self.prompt_frames: set[int] = set()
        self.last_used = time.monotonic()
        self._jpegs: OrderedDict[int, bytes] = OrderedDict()
        self._jpeg_lock = threading.Lock()

    @property
    def num_frames(self) -> int:
        return int(self.session.num_frames or 0)

    @property
    def is_propagating(self) -> bool:
        return self.run is not None and self.run.is_running

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def info(self) -> dict[str, object]:
        return {
            "session_id": self.session_id,
            "source": self.source,
            "num_frames": self.num_frames,
            "width": self.session.width,
            "height": self.session.height,
            "fps": self.fps,
            "model": self.model.name,
            "backend": self.model.loaded.backend.name,
            "prompt_types": sorted(self.model.prompt_types),
            "objects": self.session.obj_ids,
            "prompt_frames": sorted(self.prompt_frames),
            "frames_with_masks": len(self.store),
            "propagating": self.is_propagating,
        }

    def check_frame(self, frame_idx: int, what: str = "Frame") -> None:
        if not 0 <= frame_idx < self.num_frames:
            raise not_found(
                f"{what} {frame_idx} is outside the video (frames 0..{self.num_frames - 1}); use a frame in that range."
            )

    def frame_jpeg(self, frame_idx: int, quality: int = 90) -> bytes:
        """Frame `frame_idx` as JPEG (read from the source, not the session's cache, so it can be
        served while a propagation runs)."""
        self.check_frame(frame_idx)
        with self._jpeg_lock:
            if frame_idx in self._jpegs:
                self._jpegs.move_to_end(frame_idx)
                return self._jpegs[frame_idx]
        buffer = io.BytesIO()
        Image.fromarray(self.frames.frame(frame_idx)).save(buffer, format="JPEG", quality=quality)
        data = buffer.getvalue()
        with self._jpeg_lock:
            self._jpegs[frame_idx] = data
            while len(self._jpegs) > JPEG_CACHE_FRAMES:
                self._jpegs.popitem(last=False)
        return data

    def masks(self, frame_idx: int) -> FrameMasks:
        self.check_frame(frame_idx)
        found = self.store.get(frame_idx)
        if found is None:
            raise not_found(f"Frame {frame_idx} has no masks yet; prompt an object on it or propagate first.")
        return found

    def _check_not_propagating(self, action: str) -> None:
        if self.is_propagating:
            raise conflict(
                f"Session {self.session_id} is propagating; cancel it (POST /api/sessions/{self.session_id}/cancel) "
                f"or wait for it to finish before {action}."
            )

    def prompt(self, request: PromptRequest) -> FrameMasks:
        """Apply one prompt and return the frame's masks (all objects; the prompted one's new mask)."""
        kinds = request.prompt_types
        if not kinds:
            raise bad_request("The prompt gives no mask, points or box; send at least one of them.")
        missing = sorted(kinds - self.model.prompt_types)
        if missing:
            names = " and ".join("clicks" if k == "points" else f"{k}es" if k == "box" else f"{k}s" for k in missing)
            raise bad_request(
                f"The {self.model.loaded.backend.name} model of this session takes {', '.join(sorted(self.model.prompt_types))} "
                f"prompts only, not {names}; send a mask, or open the session with a SAM2 model."
            )
        if request.frame_idx < 0 or request.frame_idx >= self.num_frames:
            raise bad_request(
                f"Prompt frame {request.frame_idx} is outside the video (frames 0..{self.num_frames - 1}); prompt a frame in that range."
            )
        if request.labels is not None and len(request.labels) != len(request.points or []):
            raise bad_request(
                f"{len(request.points or [])} points were sent with {len(request.labels)} labels; send one label (1 object, 0 background) per point."
            )
        mask = None
        if request.mask is not None:
            mask = decode_mask(request.mask, self.session.height, self.session.width,
                               f"The mask of object {request.obj_id} on frame {request.frame_idx}")
        with self.lock:
            self._check_not_propagating("adding prompts")
            with self.model.held(self.busy_wait_s):
                result = None
                if mask is not None:
                    result = self.session.add_mask(request.frame_idx, request.obj_id, mask)
                if request.points or request.box is not None:
                    labels = request.labels if request.labels is not None else ([1] * len(request.points or []))
                    result = self.session.add_points(
                        request.frame_idx, request.obj_id, request.points or None, labels or None, request.box
                    )
            self.prompt_frames.add(request.frame_idx)
            self.touch()
            return self.store.put_prompt(result)

    def remove_object(self, obj_id: int) -> None:
        with self.lock:
            self._check_not_propagating("removing objects")
            if obj_id not in self.session.obj_ids:
                raise not_found(f"Session {self.session_id} has no object {obj_id} (objects: {self._object_list()}); pass one of them.")
            self.session.remove_object(obj_id)
            self.store.drop_object(obj_id)
            self.touch()

    def _object_list(self) -> str:
        return ", ".join(map(str, self.session.obj_ids)) or "none"

    def start_propagation(self, request: PropagateRequest) -> Propagation:
        """Plan and start a propagation (the model is held from here until it ends)."""
        for what, idx in (("Start frame", request.start), ("End frame", request.end)):
            if idx is not None and not 0 <= idx < self.num_frames:
                raise bad_request(f"{what} {idx} is outside the video (frames 0..{self.num_frames - 1}); pass a frame in that range.")
        with self.lock:
            self._check_not_propagating("starting another propagation")
            if not self.session.obj_ids:
                raise bad_request("No object has been prompted in this session; add a mask, clicks or a box first.")
            self.model.acquire(self.busy_wait_s)
            try:
                passes = self.session.plan_passes(request.start, request.end, request.direction)
                run = Propagation(self, passes)
                run.start()
            except BaseException:
                self.model.lock.release()
                raise
            self.run = run
            self.touch()
            return run

    def cancel(self) -> bool:
        """Ask the running propagation to stop after the frame it is computing; False if none runs."""
        run = self.run
        if run is None or not run.is_running:
            return False
        run.cancel()
        return True

    def close(self) -> None:
        run = self.run
        if run is not None and run.is_running:
            run.cancel()
            run.wait(30.0)
        if self.cleanup is not None:
            shutil.rmtree(self.cleanup, ignore_errors=True)


def _total_frames(passes: list[Pass], num_frames: int | None) -> int | None:
    lengths = [p.length(num_frames) for p in passes]
    return None if any(n is None for n in lengths) else sum(lengths)


class SessionManager:
    """The open serve sessions: at most `max_sessions`, each closed after `idle_s` seconds without
    a request (a propagating session is never idle)."""

    def __init__(self, pool: ModelPool, max_sessions: int = 8, idle_s: float = 1800.0, busy_wait_s: float = 2.0) -> None:
        self.pool, self.max_sessions, self.idle_s, self.busy_wait_s = pool, max_sessions, idle_s, busy_wait_s
        self._sessions: dict[str, ServeSession] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def sessions(self) -> list[ServeSession]:
        with self._lock:
            return list(self._sessions.values())

    def create(self, path: Path, source: str, model_name: str | None, cleanup: Path | None = None) -> ServeSession:
        """Open `path` (a video file or frame folder) as a new session."""
        self.reap()
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                raise unavailable(
                    f"The server already holds the most sessions it allows ({self.max_sessions}); close one "
                    f"(DELETE /api/sessions/ID) or wait until idle ones close after {self.idle_s:g} s."
                )
        model = self.pool.get(model_name)
        frames = open_source(path)
        if frames.num_frames is None or frames.num_frames == 0:
            raise bad_request(f"Source '{source}' has no frames; open a video file or a folder of frame images.")
        with model.held(self.busy_wait_s):
            session = open_session(model.loaded.model, frames, model.config)
        fps = getattr(frames, "fps", None)
        serve = ServeSession(secrets.token_hex(8), source, frames, session, model, fps, self.busy_wait_s, cleanup)
        with self._lock:
            self._sessions[serve.session_id] = serve
        log.info("session %s opened on %s (%d frames, model %s)", serve.session_id, source, serve.num_frames, model.name)
        return serve

    def get(self, session_id: str) -> ServeSession:
        with self._lock:
            found = self._sessions.get(session_id)
        if found is None:
            raise not_found(f"Session '{session_id}' does not exist (it was closed, timed out or never opened); open one with POST /api/sessions.")
        found.touch()
        return found

    def close(self, session_id: str) -> None:
        with self._lock:
            found = self._sessions.pop(session_id, None)
        if found is None:
            raise not_found(f"Session '{session_id}' does not exist (it was closed, timed out or never opened); nothing to close.")
        found.close()

    def reap(self, now: float | None = None) -> list[str]:
        """Close sessions idle for longer than `idle_s`; their ids."""
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [s for s in self._sessions.values() if not s.is_propagating and now - s.last_used > self.idle_s]
            for s in idle:
                del self._sessions[s.session_id]
        for s in idle:
            log.info("session %s closed after %.0f s idle", s.session_id, now - s.last_used)
            s.close()
        return [s.session_id for s in idle]

    def close_all(self) -> None:
        for s in self.sessions():
            self.close(s.session_id)


def periodic(interval_s: float, action: Callable[[], object], stop: threading.Event) -> threading.Thread:
    """Run `action` every `interval_s` seconds in a daemon thread until `stop` is set."""

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                action()
            except Exception:  # keep reaping even if one close fails
                log.exception("periodic task failed")

    thread = threading.Thread(target=loop, name="maskvos-serve-reaper", daemon=True)
    thread.start()
    return thread


def remove_tree(path: str | os.PathLike[str]) -> None:
    shutil.rmtree(path, ignore_errors=True)
