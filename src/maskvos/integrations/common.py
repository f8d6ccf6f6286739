"""What every HTTP integration shares: its own serve sessions (on the server's shared models, so a
model computes for one session at a time whichever API opened it), the root-confined video
catalog, a folder for frames a tool uploads, and a router lifespan that reaps idle sessions and
closes them all when the server stops."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from maskvos.serve.api import ServeSettings
from maskvos.serve.sessions import ModelPool, SessionManager, periodic
from maskvos.serve.videos import VideoCatalog


class SessionHost:
    """One integration's sessions and files.

    Attributes:
        manager: the integration's serve sessions (limits and idle time-out of `settings`).
        catalog: the videos under the server's root (a path outside it is refused).
        work_dir: the integration's own folder (uploaded frames); under `settings.work_dir` when
            that is given, else a temporary folder removed when the server stops.
    """

    def __init__(self, name: str, pool: ModelPool, settings: ServeSettings) -> None:
        self.name, self.pool, self.settings = name, pool, settings
        self._own_dir = settings.work_dir is None
        if self._own_dir:
            self.work_dir = Path(tempfile.mkdtemp(prefix=f"maskvos-{name}-"))
        else:
            self.work_dir = Path(settings.work_dir) / "integrations" / name
            self.work_dir.mkdir(parents=True, exist_ok=True)
        self.catalog = VideoCatalog(settings.root, self.work_dir)
        self.manager = SessionManager(pool, settings.max_sessions, settings.idle_s, settings.busy_wait_s)
        self._stop = threading.Event()

    def upload_dir(self) -> Path:
        """A new empty folder for one session's uploaded frames (removed with the session)."""
        return Path(tempfile.mkdtemp(prefix="frames-", dir=self.work_dir))

    @asynccontextmanager
    async def lifespan(self, _app: object) -> AsyncIterator[None]:
        """Reap idle sessions while the server runs; close them all and remove owned files at the end."""
        periodic(min(30.0, max(self.settings.idle_s / 4, 0.05)), self.manager.reap, self._stop)
        try:
            yield
        finally:
            self._stop.set()
            await run_in_threadpool(self.manager.close_all)
            if self._own_dir:
                shutil.rmtree(self.work_dir, ignore_errors=True)
