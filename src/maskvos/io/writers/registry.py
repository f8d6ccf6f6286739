"""The output formats by name, and opening the writers of a run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from maskvos.io.writers.base import OutputError, OutputTarget, Writer
from maskvos.io.writers.coco_video import CocoVideoWriter
from maskvos.io.writers.cvat import CvatXmlWriter
from maskvos.io.writers.images import ObjectPngWriter, PalettePngWriter
from maskvos.io.writers.label_studio import LabelStudioWriter
from maskvos.io.writers.mots import MotsWriter
from maskvos.io.writers.overlay import OverlayVideoWriter
from maskvos.io.writers.rle import RleJsonWriter
from maskvos.io.writers.youtube_vos import YouTubeVosWriter

#: Every output format: its name -> its writer class. A new format is one class and one entry here,
#: after the formats it requires (writers are opened, written and closed in this order).
WRITERS: dict[str, type[Writer]] = {
    "png": PalettePngWriter,
    "objects": ObjectPngWriter,
    "rle": RleJsonWriter,
    "overlay": OverlayVideoWriter,
    "coco-video": CocoVideoWriter,
    "mots": MotsWriter,
    "youtube-vos": YouTubeVosWriter,
    "cvat-xml": CvatXmlWriter,
    "label-studio": LabelStudioWriter,
}
FORMATS: tuple[str, ...] = tuple(WRITERS)


def resolve_formats(formats: Sequence[str]) -> list[str]:
    """The formats named plus those they require, each once, in the order of `WRITERS` (so every
    format comes after those it requires): ["overlay", "rle"] -> ["png", "rle", "overlay"].

    Raises:
        OutputError: a name that is not a format.
    """
    for name in formats:
        if name not in WRITERS:
            raise OutputError(f"Output format '{name}' is unknown; use any of {', '.join(FORMATS)}.")
    wanted = set(formats)
    pending = list(formats)
    while pending:
        for required in WRITERS[pending.pop()].requires:
            if required not in wanted:
                wanted.add(required)
                pending.append(required)
    return [name for name in WRITERS if name in wanted]


def open_writers(formats: Sequence[str], target: OutputTarget, with_required: bool = True) -> list[Writer]:
    """Open one writer per format of `resolve_formats(formats)` on `target`, in that order
    (`with_required=False`: only the formats named, in the order of `WRITERS`; an export of finished
    label maps needs none of the files a writer requires for resuming).

    Raises:
        OutputError: an unknown format (before anything is opened) or a folder that cannot be
            written; the writers opened before the failure are discarded.
    """
    names = resolve_formats(formats)
    if not with_required:
        names = [name for name in names if name in formats]
    writers: list[Writer] = []
    try:
        for name in names:
            writer = WRITERS[name]()
            writer.open(target)
            writers.append(writer)
    except BaseException:
        for writer in reversed(writers):
            with contextlib.suppress(Exception):  # the original error is the one to report
                writer.discard()
        raise
    return writers


@contextlib.contextmanager
def finishing(writers: Sequence[Writer]) -> Iterator[None]:
    """Close every writer when the block ends normally (the outputs are complete); discard every one
    when it raises or is interrupted (no partial file stays), then let the error through."""
    try:
        yield
        for writer in writers:
            writer.close()
    except BaseException:
        for writer in writers:
            writer.discard()
        raise
