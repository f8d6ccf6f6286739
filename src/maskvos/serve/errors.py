"""Errors of the HTTP API: one sentence and the status code it is answered with."""

from __future__ import annotations

from maskvos.errors import MaskvosError


class ServeError(MaskvosError):
    """A request the server refuses: `status` is its HTTP status (4xx for the client's mistakes, 503
    for a full server or a busy model); the message is the one sentence sent back."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def not_found(message: str) -> ServeError:
    return ServeError(404, message)


def bad_request(message: str) -> ServeError:
    return ServeError(400, message)


def conflict(message: str) -> ServeError:
    return ServeError(409, message)


def unavailable(message: str) -> ServeError:
    return ServeError(503, message)
