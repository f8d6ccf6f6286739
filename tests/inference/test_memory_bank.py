"""SAM2's memory selection rules as pure functions, checked against the reference's own code/values."""

from __future__ import annotations

import pytest

from maskvos.inference.memory_bank import pointer_distances, recent_frame_slots, select_prompted_frames


def test_prompted_frames_all_selected_by_default():
    assert select_prompted_frames(10, [0, 30, 5], -1) == ([0, 30, 5], [])


@pytest.mark.parametrize("frame_idx", [0, 7, 12, 40])
@pytest.mark.parametrize("limit", [2, 3, 4])
def test_prompted_frame_limit_matches_reference(frame_idx, limit):
    sam2_utils = pytest.importorskip("sam2.modeling.sam2_utils", reason="reference sam2==1.1.0 not installed")
    prompted = [0, 5, 9, 13, 20, 33]
    ref_sel, ref_unsel = sam2_utils.select_closest_cond_frames(frame_idx, {t: t for t in prompted}, limit)
    sel, unsel = select_prompted_frames(frame_idx, prompted, limit)
    assert sorted(sel) == sorted(ref_sel) and sorted(unsel) == sorted(ref_unsel)
    assert len(sel) == limit


def test_recent_slots_stride_one():
    # slot 6 is the adjacent frame; slot 1 the farthest
    assert recent_frame_slots(10, 7) == [(1, 4), (2, 5), (3, 6), (4, 7), (5, 8), (6, 9)]
    assert recent_frame_slots(10, 7, reverse=True) == [(1, 16), (2, 15), (3, 14), (4, 13), (5, 12), (6, 11)]


def test_recent_slots_with_stride():
    # stride 5: the adjacent frame, then every 5th frame at or before frame_idx - 2
    assert recent_frame_slots(23, 7, stride=5) == [(1, 0), (2, 5), (3, 10), (4, 15), (5, 20), (6, 22)]
    assert recent_frame_slots(23, 7, stride=5, reverse=True) == [(1, 45), (2, 40), (3, 35), (4, 30), (5, 25), (6, 24)]


def test_pointer_distances_forward_and_reverse():
    prompted, recent, max_distance = pointer_distances(10, [0, 4, 12], num_frames=100)
    assert prompted == [(0, 10), (4, 6)]  # the future prompt at 12 is left out
    assert recent == [(10 - d, d) for d in range(1, 11)]  # stops at frame 0
    assert max_distance == 15
    prompted, recent, _ = pointer_distances(10, [0, 12], num_frames=14, reverse=True)
    assert prompted == [(12, 2)]
    assert recent == [(11, 1), (12, 2), (13, 3)]


def test_pointer_distances_short_video_and_unsigned():
    prompted, recent, max_distance = pointer_distances(3, [0, 5], num_frames=6, signed=False, only_past_prompts=False)
    assert prompted == [(0, 3), (5, 2)]
    assert max_distance == 5  # min(num_frames, 16) - 1
    assert recent == [(2, 1), (1, 2), (0, 3)]
    _, recent, max_distance = pointer_distances(100, [0], num_frames=None)
    assert max_distance == 15 and len(recent) == 15
