"""Writing files so that a reader never sees half of one: a temporary name next to the target,
renamed into place once complete, and deleted if writing fails or is interrupted."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Suffix of files still being written; a run that resumes ignores (and overwrites) them.
PART_SUFFIX = ".part"


def temporary_path(path: str | os.PathLike[str], suffix: str = PART_SUFFIX) -> Path:
    """The temporary name `path` is written under before it is renamed into place."""
    path = Path(path)
    return path.with_name(path.name + suffix)


@contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = PART_SUFFIX) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on any error it is deleted.

    Example:
        >>> with atomic_path("out/00000.png") as tmp:
        ...     image.save(tmp, format="PNG")
    """
    target = Path(path)
    tmp = temporary_path(target, suffix)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
