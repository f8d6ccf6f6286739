"""Palette PNG <-> label map <-> per-object masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskvos.io.masks import (
    MaskFileError,
    davis_palette,
    label_map_to_masks,
    masks_to_label_map,
    read_label_map,
    write_label_map,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "vos"


def test_palette_round_trip(tmp_path):
    labels = np.zeros((20, 30), np.uint8)
    labels[2:8, 3:9] = 1
    labels[10:15, 20:28] = 7
    write_label_map(tmp_path / "00000.png", labels)
    assert not (tmp_path / "00000.png.part").exists()
    with Image.open(tmp_path / "00000.png") as img:
        assert img.mode == "P" and img.getpalette()[3:6] == [128, 0, 0]
    back = read_label_map(tmp_path / "00000.png")
    assert np.array_equal(back, labels)
    masks = label_map_to_masks(back)
    assert sorted(masks) == [1, 7] and masks[7].sum() == 40


def test_palette_equals_davis_files():
    files = sorted((DATA / "davis2017-lowres" / "Annotations").glob("*/*.png"))
    if not files:
        pytest.skip("shared development data not present")
    with Image.open(files[0]) as img:
        assert img.mode == "P"
        assert img.getpalette()[: 3 * 8] == davis_palette()[: 3 * 8]
    labels = read_label_map(files[0])
    assert labels.max() >= 3  # dogs-jump has three objects


def test_grey_and_binary_masks_are_one_object(tmp_path):
    grey = np.zeros((10, 10), np.uint8)
    grey[3:6, 3:6] = 255
    Image.fromarray(grey).save(tmp_path / "g.png")
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "rgb_grey.png")
    assert read_label_map(tmp_path / "g.png").sum() == 9
    assert read_label_map(tmp_path / "rgb_grey.png").sum() == 9
    colour = np.zeros((10, 10, 3), np.uint8)
    colour[2, 2] = [255, 0, 0]
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(MaskFileError, match="colour image"):
        read_label_map(tmp_path / "colour.png")
    (tmp_path / "junk.png").write_bytes(b"junk")
    with pytest.raises(MaskFileError, match="cannot be read"):
        read_label_map(tmp_path / "junk.png")


def test_overlaps_resolved_by_score():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:, :3] = True
    b[:, 1:] = True
    scores = {1: np.full((4, 4), 2.0), 2: np.full((4, 4), 1.0)}
    scores[2][:, 2] = 5.0
    labels = masks_to_label_map({1: a, 2: b}, scores)
    assert labels[0].tolist() == [1, 1, 2, 2]
    assert masks_to_label_map({1: a, 2: b})[0].tolist() == [1, 2, 2, 2]  # last listed wins


def test_label_map_by_score_equals_the_argmax_definition():
    # Many overlapping objects: each pixel goes to the highest-scoring object whose mask covers it,
    # ties to the object listed first; pixels no mask covers stay 0.
    rng = np.random.default_rng(3)
    ids = [5, 2, 9, 4, 7, 1]
    masks = {i: rng.random((40, 50)) < 0.3 for i in ids}
    scores = {i: rng.integers(0, 4, (40, 50)).astype(np.float32) for i in ids}  # small ints: many ties
    stacked = np.stack([np.where(masks[i], scores[i], -np.inf) for i in ids])
    covered = np.stack([masks[i] for i in ids]).any(0)
    expected = np.where(covered, np.asarray(ids)[stacked.argmax(0)], 0)
    assert np.array_equal(masks_to_label_map(masks, scores), expected)
