"""Writers behind the `Writer` protocol: files read back and compared; the overlay streamed or
rebuilt; discard leaves no partial file; the format registry; a bad output folder."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from maskvos.io.frames import ArraySource
from maskvos.io.masks import read_label_map, write_label_map
from maskvos.io.writers import (
    FORMATS,
    WRITERS,
    OutputError,
    OutputFrame,
    OutputTarget,
    OverlayVideoWriter,
    PalettePngWriter,
    Writer,
    decode_rle,
    open_writers,
    prepare_output_dir,
)

H, W = 40, 60


class FakeResult:
    """A `MaskFrame`: a label map and the masks it implies."""

    def __init__(self, frame_idx: int, labels: np.ndarray) -> None:
        self.frame_idx = frame_idx
        self.labels = labels
        self.obj_ids = [int(i) for i in np.unique(labels) if i != 0]

    def label_map(self) -> np.ndarray:
        return self.labels

    def masks_by_id(self) -> dict[int, np.ndarray]:
        return {obj_id: self.labels == obj_id for obj_id in self.obj_ids}


def _labels(i: int) -> np.ndarray:
    """Object 1 moves down, object 3 right, with the frame index."""
    labels = np.zeros((H, W), np.uint8)
    labels[5 + i : 15 + i, 10:20] = 1
    labels[20:30, 30 + i : 45 + i] = 3
    return labels


def _grey_frames(n: int, step: int) -> np.ndarray:
    """Frames whose grey level tells their index: 20 + step * i."""
    return np.stack([np.full((H, W, 3), 20 + step * i, np.uint8) for i in range(n)])


def _target(tmp_path: Path, frames: np.ndarray, resume: bool = False) -> OutputTarget:
    out = prepare_output_dir(tmp_path / "out")
    return OutputTarget(out_dir=out, source=ArraySource(frames), masks_dir=out / "masks", fps=10, resume=resume)


def _write(writers: list[Writer], target: OutputTarget, frame_idx: int, labels: np.ndarray, image: np.ndarray | None = None) -> None:
    stem = target.source.stem(frame_idx)
    needs_image = any(w.needs_image for w in writers)
    if image is None and needs_image:
        image = target.source.frame(frame_idx)
    for writer in writers:
        writer.write(OutputFrame(frame_idx, stem, image if writer.needs_image else None), FakeResult(frame_idx, labels))


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as video:
        return [f.to_ndarray(format="rgb24") for f in video.decode(video=0)]


def _parts(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".part" in p.name]


def test_png_and_object_writers_read_back(tmp_path):
    target = _target(tmp_path, _grey_frames(3, 10))
    writers = open_writers(["objects", "png"], target)
    assert [w.name for w in writers] == ["png", "objects"]
    for i in range(2):
        _write(writers, target, i, _labels(i))
    many = np.zeros((H, W), np.uint16)  # ids above 254: a 16-bit id map under the same name
    many[:10, :10], many[20:, 30:] = 300, 1000
    _write(writers, target, 2, many)
    for writer in writers:
        writer.close()
    out = target.out_dir
    assert np.array_equal(read_label_map(out / "masks" / "00001.png"), _labels(1))
    assert np.array_equal(read_label_map(out / "masks" / "00002.png"), many)
    with Image.open(out / "objects" / "3" / "00001.png") as img:
        obj3 = np.asarray(img)
    assert set(np.unique(obj3)) == {0, 255} and np.array_equal(obj3 == 255, _labels(1) == 3)
    with Image.open(out / "objects" / "1000" / "00002.png") as img:
        assert np.array_equal(np.asarray(img) == 255, many == 1000)
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert writers[0].describe() == f"label maps:      {out / 'masks'}/"
    assert not _parts(out)


def test_rle_json_round_trip(tmp_path):
    target = _target(tmp_path, _grey_frames(2, 10))
    (writer,) = open_writers(["rle"], target)
    labels = _labels(1)
    writer.write(OutputFrame(1, "frame_7", None), FakeResult(1, labels))
    writer.close()
    record = json.loads((target.out_dir / "rle" / "frame_7.json").read_text())
    assert record["frame"] == "frame_7" and sorted(record["objects"]) == ["1", "3"]
    for obj_id in (1, 3):
        rle = record["objects"][str(obj_id)]
        assert rle["size"] == [H, W]
        decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
        assert np.array_equal(decoded.astype(bool), labels == obj_id)
        assert np.array_equal(decode_rle(rle), labels == obj_id)


def test_overlay_streams_frames_in_order(tmp_path):
    n = 64  # more than the H.264 encoder's look-ahead, so packets reach the file before close
    images = _grey_frames(n, 3)
    target = _target(tmp_path, np.zeros_like(images))  # the source differs: a rebuild would show black frames
    writer = OverlayVideoWriter()
    writer.open(target)
    tmp = target.out_dir / "overlay.mp4.part.mp4"
    sizes = []
    for i in range(n):
        writer.write(OutputFrame(i, f"{i:05d}", images[i]), FakeResult(i, _labels(i % 20)))
        sizes.append(tmp.stat().st_size if tmp.exists() else 0)
        assert not (target.out_dir / "overlay.mp4").exists()  # only the complete file appears
    assert writer.is_streaming
    assert any(b > a > 0 for a, b in itertools.pairwise(sizes)), "nothing was encoded before close"
    writer.close()
    frames = _decode(target.out_dir / "overlay.mp4")
    assert len(frames) == n and frames[0].shape == (H, W, 3)
    for i, frame in enumerate(frames):
        labels = _labels(i % 20)
        assert abs(frame[labels == 0].mean() - (20 + 3 * i)) < 8  # the image given to write, in order
    labels = _labels(63 % 20)
    obj1 = frames[63][labels == 1].mean(axis=0)  # palette colour 1 is red (128, 0, 0)
    assert obj1[0] > obj1[1] + 20
    assert writer.describe() == f"overlay preview: {target.out_dir / 'overlay.mp4'}"
    assert not _parts(target.out_dir)


def test_overlay_rebuilt_in_frame_order_when_frames_come_out_of_order(tmp_path):
    target = _target(tmp_path, _grey_frames(6, 40))
    writers = open_writers(["overlay"], target)
    assert [w.name for w in writers] == ["png", "overlay"]
    overlay = writers[1]
    for i in (2, 3, 4, 1, 0):  # a "both" run: forward from frame 2, then backward; frame 5 never written
        _write(writers, target, i, _labels(i))
        assert overlay.is_streaming == (i >= 2)  # until the first frame out of order
    assert not _parts(target.out_dir)  # the streamed start was dropped
    for writer in writers:
        writer.close()
    frames = _decode(target.out_dir / "overlay.mp4")
    assert len(frames) == 5  # frame 5 has no label map: skipped
    for i, frame in enumerate(frames):
        labels = _labels(i)
        assert abs(frame[labels == 0].mean() - (20 + 40 * i)) < 8  # video order = frame order
        obj1 = frame[labels == 1].mean(axis=0)
        assert obj1[0] > obj1[1] + 20
    assert not _parts(target.out_dir)


def test_overlay_rebuilt_on_resume(tmp_path):
    target = _target(tmp_path, _grey_frames(4, 40), resume=True)
    target.masks_dir.mkdir()
    for i in (0, 1):  # written by the interrupted run
        write_label_map(target.masks_dir / f"{i:05d}.png", _labels(i))
    writers = open_writers(["png", "overlay"], target)
    for i in (2, 3):
        _write(writers, target, i, _labels(i))
    assert not writers[1].is_streaming
    for writer in writers:
        writer.close()
    frames = _decode(target.out_dir / "overlay.mp4")
    assert len(frames) == 4
    assert [round((float(f[_labels(i) == 0].mean()) - 20) / 40) for i, f in enumerate(frames)] == [0, 1, 2, 3]


def test_discard_leaves_no_partial_file(tmp_path):
    n = 50
    target = _target(tmp_path, _grey_frames(n, 4))
    writers = open_writers(FORMATS, target)
    for i in range(n):
        _write(writers, target, i, _labels(i % 20))
    assert (target.out_dir / "overlay.mp4.part.mp4").exists()  # the overlay was being encoded
    for writer in writers:
        writer.discard()
    assert not _parts(target.out_dir)
    assert not (target.out_dir / "overlay.mp4").exists()
    # complete per-frame files stay: a resumed run continues after them
    assert len(list((target.out_dir / "masks").glob("*.png"))) == n
    assert len(list((target.out_dir / "rle").glob("*.json"))) == n


def test_unknown_format_is_one_sentence_and_opens_nothing(tmp_path):
    target = _target(tmp_path, _grey_frames(1, 10))
    with pytest.raises(OutputError) as err:
        open_writers(["png", "gif"], target)
    assert str(err.value) == (
        "Output format 'gif' is unknown; use any of png, objects, rle, overlay, coco-video, mots, youtube-vos, cvat-xml, label-studio."
    )
    assert not target.masks_dir.exists()


def test_required_formats_are_opened_once(tmp_path):
    target = _target(tmp_path, _grey_frames(1, 10))
    names = [w.name for w in open_writers(["overlay", "rle", "png", "overlay"], target)]
    assert names == ["png", "rle", "overlay"]
    assert target.masks_dir.is_dir()


def test_registry_names_and_order():
    assert FORMATS == ("png", "objects", "rle", "overlay", "coco-video", "mots", "youtube-vos", "cvat-xml", "label-studio")
    for position, (name, cls) in enumerate(WRITERS.items()):
        assert cls.name == name
        for required in cls.requires:  # what a format requires comes before it: opened, written and closed first
            assert list(WRITERS).index(required) < position


def test_failed_open_discards_the_writers_already_opened(tmp_path, monkeypatch):
    discarded = []

    class RecordingPngWriter(PalettePngWriter):
        def discard(self) -> None:
            discarded.append(self.name)

    monkeypatch.setitem(WRITERS, "png", RecordingPngWriter)
    target = _target(tmp_path, _grey_frames(1, 10))
    (target.out_dir / "rle").write_text("a file where the rle folder goes")
    with pytest.raises(OutputError, match="is not writable"):
        open_writers(["png", "rle"], target)
    assert discarded == ["png"]


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
