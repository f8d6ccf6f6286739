"""Errors a user can cause. Each carries one sentence naming the input and the fix."""

from __future__ import annotations


class MaskvosError(Exception):
    """Base class for errors caused by user input; the CLI prints the message without a traceback."""


class CheckpointError(MaskvosError):
    """A checkpoint file is missing, unreadable, corrupt, or does not fit any known model."""


class CheckpointDownloadError(CheckpointError):
    """A named checkpoint could not be downloaded and is not in the local cache."""


class ConfigError(MaskvosError):
    """An unknown model name or an invalid configuration value."""
