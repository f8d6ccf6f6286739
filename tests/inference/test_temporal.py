"""Temporal-consistency post-processors (`maskvos.inference.temporal`) on hand-built results: presence
hysteresis on known sequences, hole filling and speck removal against a brute-force flood fill of the
reference's definition, logit smoothing, prompted frames, objects added mid-pass, flush and order,
exact resume from a saved state, and the recommended chain through an interrupted and resumed run."""

from __future__ import annotations

import io
from collections import deque

import numpy as np
import pytest
import torch

from maskvos.app import SaveSchedule, prompts_from_mask_file, segment_video
from maskvos.backends.featmatch import FeatMatchConfig, FeatMatchModel
from maskvos.errors import ConfigError
from maskvos.inference.api import FrameResult
from maskvos.inference.postprocess import PostChain, PostProcessor
from maskvos.inference.temporal import (
    ABSENT_LOGIT,
    DEFAULT_HOLE_AREA,
    FILL_LOGIT,
    FillHoles,
    LogitSmoothing,
    PresenceHysteresis,
    component_areas,
    parse_temporal_spec,
    temporal_chain,
)
from maskvos.io.frames import open_source
from maskvos.io.masks import read_label_map, write_label_map

from media_tools import occlusion_video

H, W = 16, 20


# --------------------------------------------------------------------------- building results


def _result(idx: int, rows: dict[int, tuple[torch.Tensor, float]], prompts=()) -> FrameResult:
    """A frame's result from {obj_id: (logits (H, W), object score)}; masks are the logits' signs."""
    ids = list(rows)
    logits = torch.stack([rows[o][0].float() for o in ids]) if ids else torch.zeros(0, H, W)
    scores = torch.tensor([float(rows[o][1]) for o in ids])
    return FrameResult(idx, ids, logits, logits > 0, scores, is_prompt=[o in prompts for o in ids])


def _box(t: int) -> torch.Tensor:
    """Logits of a box that moves with the frame index (so every frame's mask is its own)."""
    logits = torch.full((H, W), -5.0)
    logits[3:9, 2 + t % 8 : 8 + t % 8] = 5.0
    return logits


def _presence_frames(seq: str, prompts: dict[int, set] | None = None) -> list[FrameResult]:
    """One object; 'P' present (a box, score 2), 'A' absent (SAM2's -1024 logits, score -3)."""
    prompts = prompts or {}
    return [_result(t, {1: (_box(t), 2.0) if c == "P" else (torch.full((H, W), -1024.0), -3.0)}, prompts.get(t, ()))
            for t, c in enumerate(seq)]


def _delay(proc) -> int:
    return sum(p.max_delay for p in proc.processors) if isinstance(proc, PostChain) else proc.max_delay


def _run(proc, results: list[FrameResult]) -> list[FrameResult]:
    """Feed a pass, checking the hold-back bound after every frame, then flush; all outputs in order."""
    out: list[FrameResult] = []
    for n, r in enumerate(results, 1):
        out += proc.process(r)
        assert n - len(out) <= _delay(proc), "held more frames than max_delay"
    out += proc.flush()
    assert [r.frame_idx for r in out] == [r.frame_idx for r in results]
    return out


def _presence(result: FrameResult, i: int = 0) -> str:
    return "P" if bool(result.object_scores[i] > 0) and bool(result.masks[i].any()) else "A"


def _same(a: FrameResult, b: FrameResult) -> bool:
    return (a.frame_idx == b.frame_idx and a.obj_ids == b.obj_ids and a.is_prompt == b.is_prompt
            and torch.equal(a.mask_logits, b.mask_logits) and torch.equal(a.masks, b.masks)
            and torch.equal(a.object_scores, b.object_scores)
            and ((a.labels is None and b.labels is None) or np.array_equal(a.labels, b.labels)))


def _row_of(result: FrameResult, obj_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    i = result.obj_ids.index(obj_id)
    return result.mask_logits[i], result.masks[i], result.object_scores[i]


def _rows_equal(a: FrameResult, b: FrameResult, obj_id: int) -> bool:
    return all(torch.equal(x, y) for x, y in zip(_row_of(a, obj_id), _row_of(b, obj_id)))


def _check_invariants(inputs: list[FrameResult], outputs: list[FrameResult]) -> int:
    """Prompted rows are untouched; every changed row has masks == logits > 0. Returns rows changed."""
    changed = 0
    for r_in, r_out in zip(inputs, outputs):
        assert r_out.obj_ids == r_in.obj_ids and r_out.is_prompt == r_in.is_prompt
        for i, obj_id in enumerate(r_in.obj_ids):
            if r_in.is_prompt[i]:
                assert _rows_equal(r_in, r_out, obj_id), f"prompted object {obj_id} altered on frame {r_in.frame_idx}"
            elif not _rows_equal(r_in, r_out, obj_id):
                changed += 1
                assert torch.equal(r_out.masks[i], r_out.mask_logits[i] > 0)
    return changed


def _mixed_pass(n: int = 9, seed: int = 0) -> list[FrameResult]:
    """Two objects with presence blips, one-frame flips and holes; object 2 joins on frame 2 and the row
    order changes on frame 6; object 1 is prompted on frame 0, object 2 on frame 4."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(n):
        rows = {}
        base = _box(t)
        noise = torch.from_numpy(rng.normal(0, 1, (H, W))).float()
        one = base + noise
        one[5, 4 + t % 8] = -1.0  # a one-pixel hole
        if t == 3:
            one = torch.full((H, W), -1024.0)  # an absent blip
        rows[1] = (one, 2.0 if t != 3 else -3.0)
        if t >= 2:
            two = torch.full((H, W), -4.0)
            two[10:15, 10:18] = 4.0
            two += torch.from_numpy(rng.normal(0, 1, (H, W))).float() * (3.0 if t == 5 else 0.5)
            rows[2] = (two, 1.5)
        if t >= 6:
            rows = {2: rows[2], 1: rows[1]}
        prompts = {1} if t == 0 else ({2} if t == 4 else set())
        out.append(_result(t, rows, prompts))
    return out


# --------------------------------------------------------------------------- presence hysteresis


@pytest.mark.parametrize(
    ("seq", "expected"),
    [
        ("PPAPP", "PPPPP"),  # a one-frame absence is a blip
        ("PAAPPP", "PPPPPP"),  # so is a two-frame one
        ("PAAAPP", "PAAAPP"),  # three frames: the object leaves on frame 1, not later
        ("AAPAA", "AAAAA"),  # a one-frame presence is a blip
        ("AAPPAA", "AAAAAA"),
        ("AAPPPA", "AAPPPA"),  # it arrives on frame 2; the last frame's absence is cut by the end and stands
        ("PPAAPAAAP", "PPPPPAAAP"),
        ("PPPPA", "PPPPA"),  # the end of the pass: the engine's state stands
        ("APPP", "APPP"),  # the start of the pass: the first frame's state is the initial state
        ("PA", "PA"),  # a pass shorter than k is left alone
    ],
)
def test_hysteresis_on_known_presence_sequences(seq, expected):
    inputs = _presence_frames(seq)
    out = _run(PresenceHysteresis(k=3), inputs)
    assert "".join(_presence(r) for r in out) == expected
    last_present = None
    for r_in, r_out in zip(inputs, out):
        assert torch.equal(r_out.masks, r_out.mask_logits > 0)
        if _presence(r_in) == _presence(r_out):
            assert _same(r_in, r_out), "a frame that agrees with the state is left as it was"
        elif _presence(r_out) == "P":  # an absent blip shows the last present mask and score
            assert torch.equal(r_out.mask_logits[0], last_present.mask_logits[0])
            assert torch.equal(r_out.object_scores, last_present.object_scores)
        else:  # a present blip is emptied
            assert bool((r_out.mask_logits == ABSENT_LOGIT).all()) and float(r_out.object_scores[0]) == ABSENT_LOGIT
            assert r_out.labels is None
        if _presence(r_out) == "P":
            last_present = r_out


def test_hysteresis_k_one_changes_nothing_and_k_four_needs_four_frames():
    inputs = _presence_frames("PAPAAP")
    assert all(_same(a, b) for a, b in zip(inputs, _run(PresenceHysteresis(k=1), inputs)))
    assert "".join(_presence(r) for r in _run(PresenceHysteresis(k=4), _presence_frames("PAAAPP"))) == "PPPPPP"
    assert "".join(_presence(r) for r in _run(PresenceHysteresis(k=4), _presence_frames("PAAAAP"))) == "PAAAAP"


def test_hysteresis_present_needs_a_mask_and_a_positive_score():
    """A positive score with an empty mask is absent; a prompt sets the state and is never altered."""
    frames = _presence_frames("PPPPPP")
    frames[2] = FrameResult(2, [1], torch.full((1, H, W), -3.0), torch.zeros(1, H, W, dtype=torch.bool), torch.tensor([4.0]))
    out = _run(PresenceHysteresis(), frames)
    assert "".join(_presence(r) for r in out) == "PPPPPP" and torch.equal(out[2].mask_logits, out[1].mask_logits)
    # A prompted absence (say an empty mask the user gave) stands and makes the object absent from there.
    inputs = _presence_frames("PPAPPPP", {2: {1}})
    out = _run(PresenceHysteresis(), inputs)
    assert _same(out[2], inputs[2]) and "".join(_presence(r) for r in out) == "PPAPPPP"
    # A prompted presence inside absence is kept, and the object is present from it on (until k absent frames).
    inputs = _presence_frames("AAPAAAA", {2: {1}})
    out = _run(PresenceHysteresis(), inputs)
    assert _same(out[2], inputs[2]) and "".join(_presence(r) for r in out) == "AAPAAAA"
    inputs = _presence_frames("AAPAPPP", {2: {1}})
    assert "".join(_presence(r) for r in _run(PresenceHysteresis(), inputs)) == "AAPPPPP"


# --------------------------------------------------------------------------- hole filling, the reference's definition


def _flood_areas(mask: np.ndarray) -> np.ndarray:
    """Brute force: the area of each True pixel's 8-connected component (breadth-first flood fill)."""
    h, w = mask.shape
    area = np.zeros((h, w), np.int64)
    seen = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            if not mask[y, x] or seen[y, x]:
                continue
            seen[y, x] = True
            queue, component = deque([(y, x)]), []
            while queue:
                cy, cx = queue.popleft()
                component.append((cy, cx))
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = cy + dy, cx + dx
                        if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                            seen[ny, nx] = True
                            queue.append((ny, nx))
            for p in component:
                area[p] = len(component)
    return area


def _reference_fill(logits: torch.Tensor, max_hole: float, max_speck: float) -> torch.Tensor:
    """The definition, brute force: background = logits <= 0; its components of area <= max_hole become
    0.1; foreground components (of the same input) of area <= max_speck become -0.1."""
    fg = (logits > 0).numpy()
    out = logits.clone()
    if max_hole:
        bg_area = _flood_areas(~fg)
        out[torch.from_numpy((bg_area > 0) & (bg_area <= max_hole))] = FILL_LOGIT
    if max_speck:
        fg_area = _flood_areas(fg)
        out[torch.from_numpy((fg_area > 0) & (fg_area <= max_speck))] = -FILL_LOGIT
    return out


@pytest.mark.parametrize("seed", range(6))
def test_hole_filling_equals_a_brute_force_flood_fill(seed):
    rng = np.random.default_rng(seed)
    for h, w in ((13, 17), (16, 16), (1, 9), (9, 1), (24, 31)):
        for density in (0.3, 0.55, 0.8):
            logits = torch.from_numpy(np.where(rng.random((h, w)) < density, 1.0, -1.0) * rng.uniform(0.1, 8, (h, w))).float()
            logits[torch.from_numpy(rng.random((h, w)) < 0.05)] = 0.0  # a logit of exactly 0 is background
            for mask in ((logits > 0).numpy(), (logits <= 0).numpy()):
                assert np.array_equal(component_areas(mask), _flood_areas(mask))
            for max_hole, max_speck in ((1, 0), (3, 0), (10, 0), (0.05, 0), (4, 2), (0, 5), (10_000, 0)):
                result = FrameResult(0, [7], logits[None], logits[None] > 0, torch.tensor([1.0]))
                (out,) = FillHoles(max_hole, max_speck).process(result)
                hole_px = max_hole * h * w if max_hole < 1 else max_hole
                speck_px = max_speck * h * w if max_speck < 1 else max_speck
                expected = _reference_fill(logits, hole_px, speck_px)
                assert torch.equal(out.mask_logits[0], expected), (h, w, density, max_hole, max_speck)
                assert torch.equal(out.masks, out.mask_logits > 0) and torch.equal(out.object_scores, result.object_scores)


def _grid(rows: list[str]) -> torch.Tensor:
    return torch.tensor([[4.0 if c == "#" else -4.0 for c in row] for row in rows])


def _filled(rows: list[str], max_hole=0.0, max_speck=0.0) -> list[str]:
    logits = _grid(rows)
    (out,) = FillHoles(max_hole, max_speck).process(FrameResult(0, [1], logits[None], logits[None] > 0, torch.tensor([1.0])))
    return ["".join("#" if v else "." for v in row) for row in out.masks[0].tolist()]


def test_hole_connectivity_is_eight_way_and_border_regions_count():
    ring = [".....",
            ".###.",
            ".#.#.",
            ".###.",
            "....."]
    assert _filled(ring, max_hole=1)[2] == ".###."  # an enclosed pixel is a hole
    leaky = [".....",
             ".###.",
             ".#.#.",
             ".##..",
             "....."]
    # The hole touches the outside through a diagonal: one 8-connected background region, not a hole.
    assert _filled(leaky, max_hole=1) == leaky
    assert _filled(leaky, max_hole=17) == leaky and _filled(leaky, max_hole=18) == ["#####"] * 5  # 18 background pixels
    corner = ["..###",
              "..###",
              "#####"]
    # A small background region touching the border is a hole too (the reference does not look at borders).
    assert _filled(corner, max_hole=4) == ["#####"] * 3
    assert _filled(corner, max_hole=3) == corner
    # Specks: two pixels touching at a corner are one component of 2.
    specks = ["#....",
              ".#...",
              "....#",
              "....."]
    assert _filled(specks, max_speck=1) == ["#....", ".#...", ".....", "....."]
    assert _filled(specks, max_speck=2) == ["....."] * 4
    # Holes and specks are both found on the mask as given: the ring of 8 is a speck, its hole is filled.
    dot = ["###",
           "#.#",
           "###"]
    assert _filled(dot, max_hole=1, max_speck=8) == ["...", ".#.", "..."]
    assert _filled(dot, max_hole=1, max_speck=7) == ["###"] * 3


def test_hole_area_defaults_and_units():
    assert FillHoles().max_hole_area == DEFAULT_HOLE_AREA == 8 / 65536 and FillHoles().max_sprinkle_area == 0
    # At 256x256 the default is the reference's 8 pixels.
    logits = torch.full((256, 256), 5.0)
    logits[10:12, 10:14] = -5.0  # a hole of 8
    logits[100:103, 100:103] = -5.0  # a hole of 9
    (out,) = FillHoles().process(FrameResult(0, [1], logits[None], logits[None] > 0, torch.tensor([1.0])))
    assert bool(out.masks[0, 10:12, 10:14].all()) and not bool(out.masks[0, 100:103, 100:103].any())
    # An absent object (SAM2's -1024 everywhere) stays empty; nothing to do leaves the result as it was.
    absent = FrameResult(0, [1], torch.full((1, H, W), -1024.0), torch.zeros(1, H, W, dtype=torch.bool), torch.tensor([-5.0]))
    assert FillHoles(max_hole_area=0.5).process(absent)[0] is absent
    for bad in (-1, float("nan"), float("inf"), "8"):
        with pytest.raises(ConfigError):
            FillHoles(bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- logit smoothing


def _blob() -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    return 6.0 - ((y - 8) ** 2 / 16 + (x - 9) ** 2 / 25) * 3  # a smooth bump, > 0 inside an ellipse


def test_smoothing_keeps_a_still_object_bit_for_bit():
    still = [_result(t, {1: (_blob(), 3.0)}) for t in range(7)]
    for proc in (LogitSmoothing(3), LogitSmoothing(5), PostChain(temporal_chain(max_hole_area=4))):
        out = _run(proc, still)
        assert all(_same(a, b) for a, b in zip(still, out))
    # Signs that agree on every frame keep them, whatever the magnitudes: the mask does not move.
    rng = np.random.default_rng(0)
    sign = torch.where(_blob() > 0, 1.0, -1.0)
    moving = [_result(t, {1: (sign * torch.from_numpy(rng.uniform(0.1, 9, (H, W))).float(), 3.0)}) for t in range(7)]
    for window in (3, 5):
        out = _run(LogitSmoothing(window), moving)
        assert all(torch.equal(r.masks[0], _blob() > 0) for r in out)
        assert any(not torch.equal(a.mask_logits, b.mask_logits) for a, b in zip(moving, out))


def test_smoothing_removes_one_frame_flips_and_uses_the_frames_available_at_the_ends():
    frames = []
    for t in range(7):
        logits = _blob().clone()
        if t in (0, 3, 6):
            logits[0:2, 0:3] = 2.0  # a speck appears for one frame
            logits[7:9, 8:10] = -2.0  # and a hole
        frames.append(_result(t, {1: (logits, 3.0)}))
    out = _run(LogitSmoothing(3), frames)
    assert torch.equal(out[3].masks[0], _blob() > 0), "a one-frame flip inside the pass is removed"
    assert _same(out[0], frames[0]) and _same(out[6], frames[6]), "a window of 3 leaves a pass's first and last frame"
    assert torch.equal(out[3].masks, out[3].mask_logits > 0)
    # A window of 5 removes a two-frame flip; at the ends it uses the frames there are.
    two = [_result(t, {1: (torch.where(torch.tensor(t in (2, 3)), -_blob(), _blob()), 3.0)}) for t in range(7)]
    out = _run(LogitSmoothing(5), two)
    assert all(torch.equal(r.masks[0], _blob() > 0) for r in out)
    # The object score is smoothed with the logits.
    scores = [_result(t, {1: (_blob(), -1.0 if t == 2 else 3.0)}) for t in range(5)]
    assert float(_run(LogitSmoothing(3), scores)[2].object_scores[0]) == 3.0
    with pytest.raises(ConfigError):
        LogitSmoothing(4)


def test_featmatch_style_rows_are_read_by_their_masks():
    """An engine whose mask is wider than its positive logits (featmatch's label map): a changed row is
    read as its mask says, and comes out with masks == logits > 0."""
    logits = _blob() - 2.0
    mask = _blob() > 0  # wider than logits > 0
    frames = [FrameResult(t, [1], logits[None].clone(), mask[None].clone(), torch.tensor([3.0])) for t in range(3)]
    hole = frames[1].mask_logits.clone()
    hole[0, 8, 9] = -3.0
    frames[1] = FrameResult(1, [1], hole, mask[None].clone(), torch.tensor([3.0]))
    out = _run(LogitSmoothing(3), frames)
    assert torch.equal(out[1].masks[0], mask) and torch.equal(out[1].masks, out[1].mask_logits > 0)


# --------------------------------------------------------------------------- every processor: prompts, objects, order, resume


PROCESSORS = {
    "hysteresis": lambda: PresenceHysteresis(),
    "hysteresis-4": lambda: PresenceHysteresis(4),
    "smoothing": lambda: LogitSmoothing(),
    "smoothing-5": lambda: LogitSmoothing(5),
    "holes": lambda: FillHoles(max_hole_area=6, max_sprinkle_area=3),
    "chain": lambda: PostChain(temporal_chain(max_hole_area=6, max_sprinkle_area=3)),
}


@pytest.mark.parametrize("name", PROCESSORS)
def test_prompted_objects_are_never_altered_and_changed_rows_stay_consistent(name):
    inputs = _mixed_pass()
    out = _run(PROCESSORS[name](), inputs)
    assert _check_invariants(inputs, out) > 0, "the pass gives every processor something to change"


def test_a_prompted_frame_informs_its_neighbours():
    patch = _blob().clone()
    patch[0:2, 0:3] = 2.0
    for prompted, kept in ((patch, True), (_blob(), False)):
        rows = [_blob(), patch, prompted, _blob(), _blob()]
        frames = [_result(t, {1: (rows[t], 3.0)}, {1} if t == 2 else ()) for t in range(5)]
        out = _run(LogitSmoothing(3), frames)
        assert _same(out[2], frames[2])
        assert torch.equal(out[1].masks[0], (patch if kept else _blob()) > 0), "the prompt's logits are one vote"


@pytest.mark.parametrize("name", PROCESSORS)
def test_objects_added_mid_pass_are_handled_by_id(name):
    mixed = _mixed_pass()
    only_one = [_result(r.frame_idx, {1: (_row_of(r, 1)[0], float(_row_of(r, 1)[2]))}, {1} if r.is_prompt[r.obj_ids.index(1)] else ())
                for r in mixed]
    two_from = [r for r in mixed if 2 in r.obj_ids]
    only_two = [_result(r.frame_idx, {2: (_row_of(r, 2)[0], float(_row_of(r, 2)[2]))}, {2} if r.is_prompt[r.obj_ids.index(2)] else ())
                for r in two_from]
    out = _run(PROCESSORS[name](), mixed)
    alone = _run(PROCESSORS[name](), only_one)
    assert all(_rows_equal(a, b, 1) for a, b in zip(out, alone)), "object 1 does not notice object 2"
    # Object 2 is handled as if the pass started on its first frame.
    late = _run(PROCESSORS[name](), only_two)
    assert all(_rows_equal(a, b, 2) for a, b in zip(out[-len(late):], late))


@pytest.mark.parametrize("name", PROCESSORS)
def test_flush_returns_everything_in_order_and_forgets_the_pass(name):
    proc = PROCESSORS[name]()
    first = _mixed_pass(7, seed=1)
    backward = [_result(10 - t, {o: (r.mask_logits[i], float(r.object_scores[i])) for i, o in enumerate(r.obj_ids)})
                for t, r in enumerate(_mixed_pass(6, seed=2))]
    out1 = _run(proc, first)
    out2 = _run(proc, backward)  # frames 10, 9, ... 5: a backward pass through the same instance
    assert [r.frame_idx for r in out2] == list(range(10, 4, -1))
    fresh = _run(PROCESSORS[name](), backward)
    assert all(_same(a, b) for a, b in zip(out2, fresh)), "a pass does not see the one before"
    assert len(out1) == len(first) and proc.flush() == []
    empty = _result(0, {})
    assert [r.frame_idx for r in _run(PROCESSORS[name](), [empty, _result(1, {}), empty])] == [0, 1, 0]


def _save_and_load(proc, fresh):
    buffer = io.BytesIO()
    torch.save(proc.state_dict(), buffer)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    return fresh


@pytest.mark.parametrize("name", PROCESSORS)
def test_state_round_trip_mid_pass_is_exact(name):
    inputs = _mixed_pass(9, seed=3)
    whole = _run(PROCESSORS[name](), inputs)
    for j in range(len(inputs) + 1):
        proc, out = PROCESSORS[name](), []
        for r in inputs[:j]:
            out += proc.process(r)
        proc = _save_and_load(proc, PROCESSORS[name]())
        for r in inputs[j:]:
            out += proc.process(r)
        out += proc.flush()
        assert len(out) == len(whole) and all(_same(a, b) for a, b in zip(out, whole)), f"saved after {j} frames"


def test_the_recommended_chain_its_repr_and_spec_strings():
    chain = temporal_chain()
    assert repr(chain) == "[PresenceHysteresis(k=3), LogitSmoothing(window=3), FillHoles(max_hole_area=0.0001220703125, max_sprinkle_area=0.0)]"
    assert sum(p.max_delay for p in chain) == 3
    before = repr(chain)
    _run(PostChain(chain), _mixed_pass())
    for p in chain:
        p.process(_mixed_pass()[1])
    assert repr(chain) == before, "held frames are not part of the repr"
    assert chain == temporal_chain()
    assert repr(parse_temporal_spec("on")) == before == repr(parse_temporal_spec(""))
    assert parse_temporal_spec("off") == [] and temporal_chain(1, 1, 0) == []
    assert parse_temporal_spec("k=5, window=5, holes=20, sprinkles=0.001") == [
        PresenceHysteresis(5), LogitSmoothing(5), FillHoles(20.0, 0.001)]
    assert parse_temporal_spec("window=1,holes=0") == [PresenceHysteresis(3)]
    for bad in ("k=x", "size=3", "window=4", "k", "holes=-1", "k=0"):
        with pytest.raises(ConfigError):
            parse_temporal_spec(bad)


# --------------------------------------------------------------------------- through a whole run


class _Spy(PostProcessor):
    """Records what the engine gave (first in the chain; changes nothing)."""

    def __init__(self) -> None:
        self.seen: dict[int, np.ndarray] = {}

    def __repr__(self) -> str:
        return "_Spy()"

    def process(self, result):
        self.seen[result.frame_idx] = result.label_map("score")
        return [result]


def test_the_chain_through_an_interrupted_and_resumed_run(tmp_path):
    """Forward from the prompt on frame 2, then backward; interrupted where the saved chain holds frames,
    presence tracks and a smoothing window (forward) and at the start of the backward pass."""
    n, prompt = 10, 2
    frames, truths = occlusion_video(n)
    frames = np.ascontiguousarray(frames[:, ::2, ::2])  # 80x112: small and fast
    model = FeatMatchModel(FeatMatchConfig(scale=1.0))
    labels = np.zeros(frames.shape[1:3], np.uint8)
    labels[truths[prompt][1][::2, ::2]] = 1
    labels[truths[prompt][2][::2, ::2]] = 2
    write_label_map(tmp_path / "prompt.png", labels)
    prompts = prompts_from_mask_file(tmp_path / "prompt.png", open_source(frames), prompt, None)
    args = dict(direction="both", model_name="featmatch")
    chain = lambda: temporal_chain(max_hole_area=8)  # noqa: E731
    spy = _Spy()
    segment_video(model, frames, prompts, tmp_path / "whole", postprocessors=[spy, *chain()], **args)
    expected = [read_label_map(tmp_path / "whole" / "masks" / f"{i:05d}.png") for i in range(n)]
    differs = [not np.array_equal(spy.seen[i], expected[i]) for i in range(n)]
    assert any(differs), "the chain changed something, so the equality below says something"
    assert not differs[prompt], "the prompted frame is left alone"

    class Stop:
        def __init__(self, after):
            self.after, self.done = after, 0

        def update(self, n=1):
            self.done += n
            if self.done == self.after:
                raise KeyboardInterrupt

        def close(self):
            pass

    for after in (4, 9):
        out = tmp_path / f"stopped-{after}"
        with pytest.raises(KeyboardInterrupt):
            segment_video(model, frames, prompts, out, postprocessors=chain(), save=SaveSchedule(every_frames=2),
                          progress=lambda total, after=after: Stop(after), **args)
        resumed = segment_video(model, frames, prompts, out, postprocessors=chain(), resume=True, **args)
        assert resumed.resumed_at is not None and resumed.frames_written < n
        for i in range(n):
            assert np.array_equal(read_label_map(out / "masks" / f"{i:05d}.png"), expected[i]), f"stopped after {after}: frame {i}"
