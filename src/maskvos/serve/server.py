"""`maskvos serve`: pick the model (with the offline fall-back), build the application, and run it
with uvicorn on 127.0.0.1 by default."""

from __future__ import annotations

import dataclasses
import logging
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from maskvos.app import load_run_model, settings_for
from maskvos.app.models import FALLBACK_BACKEND
from maskvos.errors import CheckpointDownloadError, ConfigError
from maskvos.inference.config import InferenceConfig
from maskvos.serve.api import ServeSettings, create_app
from maskvos.serve.sessions import ModelPool, PooledModel

if TYPE_CHECKING:
    from fastapi import FastAPI

#: The model `maskvos serve` runs when none is named, if it is in the download cache.
DEFAULT_MODEL = "sam2.1-tiny"
#: What builds a server's application from its models and settings (`create_app` by default).
AppFactory = Callable[[ModelPool, ServeSettings], "FastAPI"]


def build_pool(
    model: str | None,
    checkpoint: str | None,
    device: str | None,
    config: InferenceConfig,
    notify: Callable[[str], None],
    adapter: str | None = None,
) -> ModelPool:
    """The server's models. With neither `model` nor `checkpoint`: `DEFAULT_MODEL` if cached, else
    `featmatch` (with a notice); a named model that cannot be downloaded falls back to `featmatch`
    (with a notice); a checkpoint path must load."""
    from maskvos.checkpoints import cached_checkpoint

    notice = None
    if adapter is not None:
        if checkpoint is None and model is None:
            raise ConfigError("--adapter needs the model it was trained from; add --model NAME or --checkpoint PATH.")
        loaded = load_run_model(checkpoint or model, device, allow_fallback=False, notify=notify, adapter=adapter)
    elif checkpoint is not None:
        loaded = load_run_model(checkpoint, device, allow_fallback=False)
    elif model is None and cached_checkpoint(DEFAULT_MODEL) is None:
        notice = (f"No SAM2 checkpoint is available offline ({DEFAULT_MODEL} is not in the download cache), so the "
                  f"offline '{FALLBACK_BACKEND}' backend runs: mask and brush prompts only. Start the server with "
                  f"--model {DEFAULT_MODEL} where the network reaches huggingface.co (downloaded once), or with --checkpoint PATH.")
        loaded = load_run_model(FALLBACK_BACKEND, device, allow_fallback=False)
    else:
        name = model or DEFAULT_MODEL
        try:
            loaded = load_run_model(name, device, allow_fallback=False)
        except CheckpointDownloadError as exc:
            notice = (f"{exc} Running the offline '{FALLBACK_BACKEND}' backend instead: mask and brush prompts only.")
            loaded = load_run_model(FALLBACK_BACKEND, None, allow_fallback=False)
    if notice:
        loaded = dataclasses.replace(loaded, fell_back=True)
        notify(notice)
    return ModelPool(PooledModel(loaded, settings_for(loaded, config, notify), notice), device, config)


def serve(
    host: str,
    port: int,
    pool: ModelPool,
    settings: ServeSettings,
    announce: Callable[[str], None] = print,
    app_factory: AppFactory = create_app,
    banner: Callable[[str], str] | None = None,
) -> None:
    """Run the server until interrupted (port 0: any free port). `app_factory(pool, settings)`
    builds the application (`maskvos.integrations.create_app_with` adds the tool adapters);
    `banner(url)`, if given, is the line announced once it listens."""
    import uvicorn

    sock = bind(host, port)
    port = sock.getsockname()[1]
    app = app_factory(pool, settings)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    _started = server.startup

    async def startup(*args, **kwargs):
        await _started(*args, **kwargs)
        if server.started:
            announce(banner(address(host, port)) if banner else
                     f"maskvos serve: open {address(host, port)} (model {pool.default.name}, videos under "
                     f"{settings.root}{_mounted(address(host, port), settings)}); Ctrl-C stops it")

    server.startup = startup
    server.run(sockets=[sock])


def _mounted(url: str, settings: ServeSettings) -> str:
    return "".join(f"; {name} at {url}integrations/{name}" for name in settings.integrations)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or one sentence saying why there is none."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"Cannot listen on {host}:{port} ({exc.strerror or exc}); pass a free --port or another --host.") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def address(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("maskvos serve: %(message)s"))
    logger = logging.getLogger("maskvos.serve")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def check_root(root: str) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ConfigError(f"--root '{root}' is not a folder; pass the folder that holds your videos.")
    return path.resolve()


class BackgroundServer:
    """The server in a thread of this process, on a free port of `host` (for tests, benchmarks and
    programs that drive the page themselves). Use as a context manager; `url` is its address."""

    def __init__(self, pool: ModelPool, settings: ServeSettings, host: str = "127.0.0.1",
                 app_factory: AppFactory = create_app) -> None:
        import threading

        import uvicorn

        self.sock = bind(host, 0)
        self.url = address(host, self.sock.getsockname()[1])
        self.app = app_factory(pool, settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", timeout_graceful_shutdown=5))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> BackgroundServer:
        import time

        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the background server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self._thread.join(30)
        self.sock.close()
