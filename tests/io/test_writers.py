"""Streaming writers: files read back and compared; atomic writes; resume bookkeeping; bad output folder."""

from __future__ import annotations

import json
import os

import av
import numpy as np
import pytest

from maskvos.io.masks import read_label_map
from maskvos.io.writers import (
    ObjectPngWriter,
    OutputError,
    OverlayVideoWriter,
    PalettePngWriter,
    RleJsonWriter,
    completed_frames,
    decode_rle,
    prepare_output_dir,
)


def _result(i: int):
    labels = np.zeros((40, 60), np.uint8)
    labels[5 + i : 15 + i, 10:20] = 1
    labels[20:30, 30 + i : 45 + i] = 3
    masks = {1: labels == 1, 3: labels == 3}
    frame = np.full((40, 60, 3), 90, np.uint8)
    return labels, masks, frame


def test_png_writers_read_back(tmp_path):
    pal, obj = PalettePngWriter(tmp_path / "pal"), ObjectPngWriter(tmp_path / "obj")
    for i in range(3):
        labels, masks, frame = _result(i)
        pal.write(f"{i:05d}", labels, masks, frame)
        obj.write(f"{i:05d}", labels, masks, frame)
    labels, masks, _ = _result(2)
    assert np.array_equal(read_label_map(tmp_path / "pal" / "00002.png"), labels)
    assert np.array_equal(read_label_map(tmp_path / "obj" / "3" / "00002.png").astype(bool), masks[3])
    assert completed_frames(tmp_path / "pal") == {"00000", "00001", "00002"}
    assert not list((tmp_path / "pal").glob("*.part"))


def test_rle_json_round_trip(tmp_path):
    writer = RleJsonWriter(tmp_path)
    labels, masks, frame = _result(1)
    writer.write("frame_7", labels, masks, frame)
    record = json.loads((tmp_path / "frame_7.json").read_text())
    assert record["frame"] == "frame_7" and sorted(record["objects"]) == ["1", "3"]
    for obj_id, mask in masks.items():
        assert np.array_equal(decode_rle(record["objects"][str(obj_id)]), mask)


def test_overlay_video_has_every_frame_tinted(tmp_path):
    writer = OverlayVideoWriter(tmp_path / "overlay.mp4", fps=10)
    for i in range(5):
        writer.write(f"{i}", *_result(i))
        assert not (tmp_path / "overlay.mp4").exists()  # only complete files appear
    writer.close()
    with av.open(str(tmp_path / "overlay.mp4")) as video:
        frames = [f.to_ndarray(format="rgb24") for f in video.decode(video=0)]
    assert len(frames) == 5 and frames[0].shape == (40, 60, 3)
    labels = _result(4)[0]
    obj1 = frames[4][labels == 1].mean(axis=0)  # palette colour 1 is red (128, 0, 0)
    assert obj1[0] > obj1[1] + 20
    assert abs(frames[4][labels == 0].mean() - 90) < 8


def test_unwritable_output_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permission bits: use a path under a file instead
            blocker = tmp_path / "file"
            blocker.write_text("x")
            target = blocker / "out"
        else:
            target = locked / "out"
        with pytest.raises(OutputError, match="is not writable"):
            prepare_output_dir(target)
    finally:
        os.chmod(locked, 0o700)
