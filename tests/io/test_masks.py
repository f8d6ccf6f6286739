"""Palette / 16-bit id-map PNG <-> label map <-> per-object masks; the void label."""

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
    void_label_message,
    void_pixels,
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


def _id_map() -> np.ndarray:
    labels = np.zeros((20, 30), np.uint16)
    labels[2:8, 3:9] = 1
    labels[10:15, 20:28] = 300
    labels[15:, :5] = 1000
    labels[0, 0] = 255  # an ordinary id in a 16-bit map
    return labels


def test_16_bit_id_map_round_trip(tmp_path):
    labels = _id_map()
    write_label_map(tmp_path / "00000.png", labels)
    with Image.open(tmp_path / "00000.png") as img:
        assert img.mode.startswith("I")  # a 16-bit grey PNG, not a palette
    back = read_label_map(tmp_path / "00000.png")
    assert back.dtype == np.uint16 and np.array_equal(back, labels)
    masks = label_map_to_masks(back)
    assert sorted(masks) == [1, 255, 300, 1000]
    assert masks[300].sum() == 40 and masks[1000].sum() == 25 and masks[255].sum() == 1
    assert void_pixels(back) == 0
    assert not list(tmp_path.glob("*.part"))


def test_16_bit_id_map_saved_elsewhere_is_read_as_ids(tmp_path):
    labels = _id_map()
    Image.fromarray(labels).save(tmp_path / "plain.png")  # no maskvos marker
    Image.fromarray(labels.astype(">u2")).save(tmp_path / "big_endian.png")
    assert np.array_equal(read_label_map(tmp_path / "plain.png"), labels)
    assert np.array_equal(read_label_map(tmp_path / "big_endian.png"), labels)


@pytest.mark.parametrize("value", [65535, 255])
def test_16_bit_binary_mask_is_one_object(tmp_path, value):
    mask = np.zeros((10, 10), np.uint16)
    mask[3:6, 3:6] = value
    Image.fromarray(mask).save(tmp_path / "binary16.png")
    labels = read_label_map(tmp_path / "binary16.png")
    assert labels.dtype == np.uint8 and sorted(label_map_to_masks(labels)) == [1] and labels.sum() == 9


def test_single_object_255_written_as_id_map_keeps_its_id(tmp_path):
    labels = np.zeros((10, 10), np.uint16)  # a 16-bit map whose only id is 255: not a binary mask
    labels[2:4, 2:4] = 255
    write_label_map(tmp_path / "m.png", labels)
    back = read_label_map(tmp_path / "m.png")
    assert np.array_equal(back, labels) and sorted(label_map_to_masks(back)) == [255]


def test_palette_255_is_still_void(tmp_path):
    labels = np.zeros((10, 10), np.uint8)
    labels[:2] = 1
    labels[5:] = 255
    write_label_map(tmp_path / "gt.png", labels)
    with Image.open(tmp_path / "gt.png") as img:
        assert img.mode == "P"
    back = read_label_map(tmp_path / "gt.png")
    assert back.dtype == np.uint8 and np.array_equal(back, labels)
    assert sorted(label_map_to_masks(back)) == [1]
    assert void_pixels(back) == 50
    message = void_label_message(tmp_path / "gt.png")
    assert str(tmp_path / "gt.png") in message and "255" in message and "16-bit id-map PNG" in message
    assert message.endswith(".") and message.count(". ") == 0 and "\n" not in message


def test_300_objects_written_and_read_back(tmp_path):
    ids = np.arange(1, 301)
    masks = {}
    for obj_id in ids:
        mask = np.zeros((30, 40), bool)
        mask[(obj_id - 1) // 40 * 4 : (obj_id - 1) // 40 * 4 + 3, (obj_id - 1) % 40] = True
        masks[int(obj_id)] = mask
    labels = masks_to_label_map(masks)
    assert labels.dtype == np.uint16
    write_label_map(tmp_path / "many.png", labels)
    back = label_map_to_masks(read_label_map(tmp_path / "many.png"))
    assert sorted(back) == list(range(1, 301))
    assert all(np.array_equal(back[i], masks[i]) for i in masks)


def test_object_255_is_not_lost_as_void():
    mask = np.zeros((4, 4), bool)
    mask[1, 1] = True
    labels = masks_to_label_map({255: mask})  # id 255 needs a 16-bit map: in 8 bits it is void
    assert labels.dtype == np.uint16 and sorted(label_map_to_masks(labels)) == [255]


def test_ids_beyond_16_bits_are_refused(tmp_path):
    labels = np.zeros((4, 4), np.int32)
    labels[0, 0] = 70000
    with pytest.raises(MaskFileError, match=r"outside 0\.\.65535"):
        write_label_map(tmp_path / "x.png", labels)
    assert not list(tmp_path.iterdir())
