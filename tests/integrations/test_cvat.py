"""The CVAT tracking function driven as cvat-cli's agent drives it: the agent's own worker jobs
(`_worker_job_init_tracking`, `_worker_job_track` of `cvat_cli._internal.agent_driver_tracking`)
where cvat-cli is installed, else context objects built the way those jobs build them; shapes
decoded with `cvat_sdk.masks.decode_mask` and compared with the moving object."""

from __future__ import annotations

import itertools
from pathlib import Path

import cvat_sdk.auto_annotation as cvataa
import numpy as np
import PIL.Image
import PIL.ImageDraw
import pytest
import torch
from cvat_sdk.masks import decode_mask, encode_mask

from maskvos.app.models import LoadedModel
from maskvos.backends import BACKENDS
from maskvos.backends.featmatch import FeatMatchConfig, FeatMatchModel
from maskvos.checkpoints import save_checkpoint
from maskvos.integrations import cvat
from maskvos.integrations.cvat import CvatTrackerError, MaskvosTracker

from model_tools import tiny_sam2

H, W, SIDE = 48, 64, 16


def object_x(i: int) -> int:
    return 4 + 2 * i


def truth(i: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[14 : 14 + SIDE, object_x(i) : object_x(i) + SIDE] = True
    return mask


def frame(i: int, visible: bool = True) -> PIL.Image.Image:
    """A smooth background with a little noise and a red square moving right 2 px per frame."""
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack([60 + xx, 90 + yy, 120 + 0 * xx], -1) + rng.integers(0, 8, (H, W, 3))
    if visible:
        img[truth(i)] = [230, 30, 30]
    return PIL.Image.fromarray(img.astype(np.uint8))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def one_sentence(message: str) -> str:
    assert message.endswith(".") and ". " not in message and "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def tracker() -> MaskvosTracker:
    """The tracker on featmatch at a small working size (the default 480-pixel short side upscales
    these 48-pixel frames tenfold)."""
    found = MaskvosTracker("featmatch", "cpu")
    found._loaded = LoadedModel(FeatMatchModel(FeatMatchConfig(short_side=96)), "featmatch", BACKENDS["featmatch"],
                                torch.device("cpu"))
    return found


class ShapeContext(cvataa.TrackingFunctionShapeContext):
    """What the agent passes to init_tracking_state and track (its `_TrackingFunctionShapeContextImpl`)."""

    def __init__(self, shape_type: str) -> None:
        self._type = shape_type

    @property
    def original_shape_type(self) -> str:
        return self._type


class Context(cvataa.TrackingFunctionContext):
    """What the agent passes to preprocess_image."""


def start(tracker: MaskvosTracker, shape: cvataa.TrackableShape) -> cvat.TrackState:
    pp = tracker.preprocess_image(Context(), frame(0))
    return tracker.init_tracking_state(ShapeContext(shape.type), pp, shape)


def step(tracker: MaskvosTracker, state: cvat.TrackState, i: int, visible: bool = True) -> cvataa.TrackableShape | None:
    return tracker.track(ShapeContext(state.shape_type), tracker.preprocess_image(Context(), frame(i, visible)), state)


def test_the_agents_own_jobs_track_a_mask_that_follows_the_object(tracker):
    tracking = pytest.importorskip("cvat_cli._internal.agent_driver_tracking")
    from cvat_cli._internal.agent_driver import set_worker_current_function

    ids = (f"state-{n}" for n in itertools.count())
    set_worker_current_function(tracker)
    tracking.AgentTrackingFunctionDriver.init_worker(lambda: next(ids))
    # the spec as `function create-native` registers it, and the compatibility check of run-agent
    fields = tracking.AgentTrackingFunctionDriver.get_remote_function_fields(cvat.spec)
    assert fields == {"supported_shape_types": ["mask", "polygon", "rectangle"]}
    shape = cvataa.TrackableShape(type="mask", points=encode_mask(truth(0)))
    states = tracking._worker_job_init_tracking(7, frame(0), [shape])
    assert states == ["state-0"]
    for i in range(1, 11):
        (out,) = tracking._worker_job_track(7, frame(i), states)
        assert out is not None and out.type == "mask"
        mask = decode_mask(out.points, image_width=W, image_height=H)
        assert iou(mask, truth(i)) > 0.6, (i, iou(mask, truth(i)))
        centre = np.nonzero(mask.any(0))[0].mean()
        assert abs(centre - (object_x(i) + SIDE / 2 - 0.5)) < 3, (i, centre)
    # the states the agent keeps are ours, one per shape, and refuse another task's requests
    (inner, shape_type) = tracking._tracking_states.retrieve("state-0", task_id=7, image_dims=(W, H))
    assert shape_type == "mask" and inner.frames_tracked == 10
    with pytest.raises(tracking.BadArError):
        tracking._worker_job_track(8, frame(11), states)


def test_polygons_and_rectangles_come_back_as_what_was_drawn(tracker):
    x, y = object_x(0), 14
    polygon = start(tracker, cvataa.TrackableShape(type="polygon", points=[x, y, x + SIDE, y, x + SIDE, y + SIDE, x, y + SIDE]))
    rect = start(tracker, cvataa.TrackableShape(type="rectangle", points=[x, y, x + SIDE, y + SIDE]))
    for i in range(1, 7):
        poly_out, rect_out = step(tracker, polygon, i), step(tracker, rect, i)
        assert poly_out.type == "polygon" and len(poly_out.points) >= 6 and len(poly_out.points) % 2 == 0
        canvas = PIL.Image.new("1", (W, H), 0)
        PIL.ImageDraw.Draw(canvas).polygon(poly_out.points, fill=1)
        assert iou(np.asarray(canvas, bool), truth(i)) > 0.5, i
        assert rect_out.type == "rectangle" and len(rect_out.points) == 4
        x0, y0, x1, y1 = rect_out.points
        assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
        # featmatch takes the box as a filled mask: the box follows the object's centre
        assert abs((x0 + x1) / 2 - (object_x(i) + SIDE / 2)) < 4, (i, rect_out.points)


def test_a_tracks_memory_stays_the_same_however_long_it_runs(tracker):
    state = start(tracker, cvataa.TrackableShape(type="mask", points=encode_mask(truth(0))))
    sizes = {}
    for i in range(1, 41):
        step(tracker, state, i % 20)  # back and forth across the frame: a long track
        sizes[i] = state.nbytes()
        assert len(state.session.frames._frames) <= state.session.frames.cache_size
    assert sizes[20] > 0
    assert sizes[40] == sizes[20], sizes  # the memory window and the frame cache are full by frame 20
    assert max(sizes.values()) <= sizes[20]


def test_a_lost_object_gives_none_and_the_track_goes_on(tracker):
    state = start(tracker, cvataa.TrackableShape(type="mask", points=encode_mask(truth(0))))
    assert step(tracker, state, 1) is not None
    gone = [step(tracker, state, i, visible=False) for i in range(2, 6)]
    assert gone[-1] is None  # featmatch judges the object absent: no mask, no shape
    assert state.frames_tracked == 5


def test_cvat_cli_loads_the_module_as_a_factory_of_parameters_without_loading_a_model(monkeypatch):
    common = pytest.importorskip("cvat_cli._internal.common")
    parsers = pytest.importorskip("cvat_cli._internal.parsers")
    params = dict(parsers.parse_function_parameter(p) for p in ("model=str:sam2.1-tiny", "device=str:cpu", "resolution=int:512"))
    function = common.FunctionLoader("maskvos.integrations.cvat", None, params).load()
    assert isinstance(function, MaskvosTracker) and function.spec is cvat.spec
    assert (function.model_name, function.device, function.config.resolution) == ("sam2.1-tiny", "cpu", 512)
    assert function._loaded is None  # create-native reads the spec only: nothing is downloaded
    # --function-file with this module's path loads a copy of it, the same factory
    from_file = common.FunctionLoader(None, Path(cvat.__file__), {"model": "featmatch"}).load()
    assert type(from_file).__name__ == "MaskvosTracker" and from_file.spec.supported_shape_types == set(cvat.SHAPE_TYPES)
    monkeypatch.setenv(cvat.MODEL_ENV, "featmatch")
    assert common.FunctionLoader("maskvos.integrations.cvat", None, {}).load().model_name == "featmatch"
    monkeypatch.delenv(cvat.MODEL_ENV)
    assert cvat.create().model_name == cvat.DEFAULT_MODEL


def test_shapes_it_cannot_take_are_refused_in_one_sentence(tracker):
    with pytest.raises(CvatTrackerError) as err:
        start(tracker, cvataa.TrackableShape(type="ellipse", points=[10, 10, 20, 20]))
    assert "ellipse" in one_sentence(str(err.value))
    with pytest.raises(CvatTrackerError) as err:
        start(tracker, cvataa.TrackableShape(type="polygon", points=[1, 2, 3, 4]))
    assert "at least three points" in one_sentence(str(err.value))
    with pytest.raises(CvatTrackerError) as err:
        start(tracker, cvataa.TrackableShape(type="rectangle", points=[70, 60, 90, 80]))
    one_sentence(str(err.value))
    state = start(tracker, cvataa.TrackableShape(type="mask", points=encode_mask(truth(0))))
    with pytest.raises(CvatTrackerError) as err:
        tracker.track(ShapeContext("mask"), tracker.preprocess_image(Context(), frame(1).resize((32, 24))), state)
    assert "32x24" in one_sentence(str(err.value))


def test_a_sam2_checkpoint_takes_the_rectangle_as_a_box_prompt(tmp_path):
    path = save_checkpoint(tiny_sam2(), tmp_path / "tiny.safetensors")
    sam2 = cvat.create(model=str(path), device="cpu", resolution=64)
    x, y = object_x(0), 14
    state = start(sam2, cvataa.TrackableShape(type="rectangle", points=[x, y, x + SIDE, y + SIDE]))
    assert sam2.loaded.backend.name == "sam2" and "box" in state.session.prompt_types
    outs = [step(sam2, state, i) for i in range(1, 4)]
    for out in outs:  # random weights: where the box goes is arbitrary, but it is a rectangle in the frame
        assert out is None or (out.type == "rectangle" and 0 <= out.points[0] < out.points[2] <= W)
    assert state.frames_tracked == 3
