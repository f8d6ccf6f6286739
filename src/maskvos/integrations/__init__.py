"""Adapters for annotation tools, thin layers over serve sessions.

Each HTTP integration is a module exposing `NAME` and `router(pool, settings) -> APIRouter`; it is
mounted under `/integrations/<NAME>` of `maskvos serve` (`create_app_with`, before the page's
catch-all at "/"), or runs alone at "/" (`create_integration_app`, `serve_integration`).

CVAT is different: CVAT's AI agents call a Python function module in a `cvat-cli` process, not an
HTTP server, so `cvat` mounts only an info endpoint (GET /integrations/cvat/) that gives the
`cvat-cli` commands, and cannot run alone.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI

from maskvos.errors import ConfigError
from maskvos.serve.api import ServeSettings, create_app
from maskvos.serve.sessions import ModelPool

#: Integration name -> the module that implements it.
INTEGRATIONS: dict[str, str] = {
    "cvat": "maskvos.integrations.cvat",
    "label-studio": "maskvos.integrations.label_studio",
    "x-anylabeling": "maskvos.integrations.x_anylabeling",
}
#: Integrations that are not HTTP servers: they mount an info endpoint only.
FUNCTION_MODULES = frozenset({"cvat"})
#: Where `maskvos serve` mounts integration NAME.
PREFIX = "/integrations"


def check_names(names: Sequence[str]) -> list[str]:
    """`names` without repeats, each known; an unknown one is refused in one sentence."""
    unknown = [n for n in names if n not in INTEGRATIONS]
    if unknown:
        raise ConfigError(
            f"Unknown integration {', '.join(repr(n) for n in unknown)}; use one or more of {', '.join(INTEGRATIONS)}."
        )
    return list(dict.fromkeys(names))


def cvat_commands() -> dict[str, Any]:
    """How to connect CVAT: the function module and the `cvat-cli` commands that register and run it."""
    module = INTEGRATIONS["cvat"]
    return {
        "integration": "cvat",
        "kind": "cvat-cli native function (CVAT AI agent), not an HTTP endpoint",
        "function_module": module,
        "register": f"cvat-cli --server-host CVAT_URL --auth USER:PASSWORD function create-native 'maskvos' --function-module {module}",
        "run_agent": f"cvat-cli --server-host CVAT_URL --auth USER:PASSWORD function run-agent FUNCTION_ID --function-module {module}",
        "install": "pip install 'maskvos[integrations]'",
    }


def integration_router(name: str, pool: ModelPool, settings: ServeSettings) -> APIRouter:
    """The router of integration `name` (for `cvat`: its info endpoint)."""
    check_names([name])
    if name in FUNCTION_MODULES:
        info = APIRouter(tags=["CVAT"])
        info.add_api_route("/", cvat_commands, methods=["GET"])
        return info
    try:
        module = importlib.import_module(INTEGRATIONS[name])
    except ImportError as exc:
        raise ConfigError(
            f"Integration '{name}' cannot be loaded ({exc}); install it with pip install 'maskvos[integrations]'."
        ) from None
    return module.router(pool, settings)


def integration_routers(names: Sequence[str], pool: ModelPool, settings: ServeSettings) -> list[tuple[str, APIRouter]]:
    """(prefix, router) of each named integration, mounted at /integrations/<name>."""
    return [(f"{PREFIX}/{name}", integration_router(name, pool, settings)) for name in check_names(names)]


def create_app_with(pool: ModelPool, settings: ServeSettings, names: Sequence[str] | None = None) -> FastAPI:
    """`maskvos serve`'s application with integrations `names` (default: `settings.integrations`)
    under /integrations/<name>; the page and /api as without them."""
    chosen = check_names(settings.integrations if names is None else names)
    routers = integration_routers(chosen, pool, settings)
    return create_app(pool, _with_names(settings, chosen), extra_routers=routers)


def check_servable(name: str) -> None:
    """Refuse, in one sentence, a name that is unknown or not an HTTP server (cvat)."""
    check_names([name])
    if name in FUNCTION_MODULES:
        commands = cvat_commands()
        raise ConfigError(
            f"The cvat integration is a cvat-cli function module, not a server; run {commands['register']} "
            f"and then {commands['run_agent']}."
        )


def create_integration_app(name: str, pool: ModelPool, settings: ServeSettings) -> FastAPI:
    """Integration `name` alone, at "/" (the tool's server URL is then the server's address)."""
    check_servable(name)
    app = FastAPI(title=f"maskvos {name}", docs_url="/docs", redoc_url=None)
    app.include_router(integration_router(name, pool, settings))
    return app


def serve_integration(name: str, host: str, port: int, pool: ModelPool, settings: ServeSettings,
                      announce: Callable[[str], None] = print) -> None:
    """Run integration `name` alone on host:port until interrupted."""
    from maskvos.serve.server import serve

    app = create_integration_app(name, pool, settings)
    serve(host, port, pool, settings, announce=announce, app_factory=lambda _p, _s: app,
          banner=lambda url: f"maskvos serve-integration {name}: give {url} to the tool as its server URL "
                             f"(model {pool.default.name}); Ctrl-C stops it")


def _with_names(settings: ServeSettings, names: list[str]) -> ServeSettings:
    return dataclasses.replace(settings, integrations=tuple(names))


__all__ = ["INTEGRATIONS", "check_names", "check_servable", "create_app_with", "create_integration_app", "integration_router",
           "integration_routers", "serve_integration"]
