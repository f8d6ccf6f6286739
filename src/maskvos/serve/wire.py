"""What travels over the API: request bodies (checked by pydantic, unknown keys refused), masks as
COCO RLE, and the one-sentence message of a request that does not fit its schema."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from maskvos.io.masks import MAX_ID_MAP_ID
from maskvos.serve.errors import bad_request


class Rle(BaseModel):
    """A mask as pycocotools writes it: {"size": [h, w], "counts": "<compressed counts>"}."""

    model_config = ConfigDict(extra="forbid")
    size: tuple[int, int]
    counts: str


class CreateSessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(description="a path under the server's root as GET /api/videos lists it, or 'demo:shapes'")
    model: str | None = Field(None, description="a model name or checkpoint path; default: the server's model")


class PromptRequest(BaseModel):
    """One object's prompt on one frame: a mask, and/or clicks with labels, and/or a box (pixels of
    the original frame). A mask with clicks refines the mask."""

    model_config = ConfigDict(extra="forbid")
    frame_idx: int
    obj_id: int = Field(ge=1, le=MAX_ID_MAP_ID)
    mask: Rle | None = None
    points: list[tuple[float, float]] | None = None
    labels: list[Literal[0, 1]] | None = None
    box: tuple[float, float, float, float] | None = None

    @property
    def prompt_types(self) -> frozenset[str]:
        kinds = set()
        if self.mask is not None:
            kinds.add("mask")
        if self.points:
            kinds.add("points")
        if self.box is not None:
            kinds.add("box")
        return frozenset(kinds)


class PropagateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    direction: Literal["forward", "backward", "both"] = "forward"
    start: int | None = Field(None, description="first frame; default: the earliest frame prompted since the last propagation")
    end: int | None = Field(None, description="last frame, inclusive; default: the end of the video in that direction")


def decode_mask(rle: Rle, height: int, width: int, what: str) -> np.ndarray:
    """The (H, W) bool mask of a wire RLE, checked against the frame size."""
    from pycocotools import mask as coco_mask

    if tuple(rle.size) != (height, width):
        raise bad_request(
            f"{what} is {rle.size[0]}x{rle.size[1]} (height x width) but the video's frames are {height}x{width}; send a mask of the frame's size."
        )
    try:
        mask = coco_mask.decode({"size": [height, width], "counts": rle.counts.encode("ascii")})
    except (UnicodeEncodeError, ValueError, TypeError, IndexError) as exc:
        raise bad_request(f"{what} is not a valid COCO RLE ({exc}); encode it as pycocotools does.") from None
    if mask.shape != (height, width):
        raise bad_request(f"{what} is not a valid COCO RLE for a {height}x{width} frame; encode it as pycocotools does.")
    return mask.astype(bool)


def validation_sentence(errors: list[dict]) -> str:
    """One sentence for pydantic's list of errors (the first one named; how many others)."""
    if not errors:
        return "The request is invalid; see /api/docs for its format."
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body",)]
    where = ".".join(loc) if loc else "body"
    if loc and loc[0] in ("path", "query"):
        where = f"{loc[0]} parameter '{'.'.join(loc[1:])}'"
    else:
        where = f"field '{where}'"
    message = str(first.get("msg", "invalid")).rstrip(".")
    more = len(errors) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"The request's {where} is invalid: {message[0].lower() + message[1:]}{tail}; see /api/docs for the request format."
