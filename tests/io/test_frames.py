"""Frame sources: folders in natural order, video files, arrays, streams, prefetch, preprocessing."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from media_tools import numbered_frame, write_video
from maskvos.io.frames import (
    ArraySource,
    FrameSourceError,
    ImageFolderSource,
    StreamSource,
    natural_key,
    open_source,
    prefetch,
    to_model_input,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "vos"


_frame = numbered_frame
_write_video = write_video


def test_folder_in_natural_order_whatever_the_names(tmp_path):
    for name, i in [("frame_10.png", 10), ("frame_2.png", 2), ("frame_1.png", 1)]:
        Image.fromarray(_frame(i)).save(tmp_path / name)
    (tmp_path / ".DS_Store").write_bytes(b"x")
    src = open_source(tmp_path)
    assert isinstance(src, ImageFolderSource) and src.num_frames == 3
    assert [p.name for p in src.paths] == ["frame_1.png", "frame_2.png", "frame_10.png"]
    assert [f[0, 0, 0] for _, f in src.frames()] == [20, 40, 200]
    assert sorted(["a10", "a9", "A1"], key=natural_key) == ["A1", "a9", "a10"]


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: None, "holds no images"),
        (lambda d: (d / "notes.txt").write_text("hi"), "not images \\(notes.txt\\)"),
    ],
)
def test_bad_folders(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(FrameSourceError, match=message):
        open_source(tmp_path)


def test_unreadable_or_odd_sized_image(tmp_path):
    Image.fromarray(_frame(0)).save(tmp_path / "0.png")
    (tmp_path / "1.png").write_bytes(b"not a png")
    Image.fromarray(_frame(2, h=40)).save(tmp_path / "2.png")
    src = open_source(tmp_path)
    with pytest.raises(FrameSourceError, match="1.png' cannot be read"):
        src.frame(1)
    with pytest.raises(FrameSourceError, match="must have one size"):
        src.frame(2)
    with pytest.raises(FrameSourceError, match="outside the video \\(frames 0..2\\)"):
        src.frame(3)


def test_video_file_is_decoded_lazily(tmp_path):
    path = tmp_path / "clip.mp4"
    _write_video(path, 12)
    src = open_source(path)
    assert (src.num_frames, src.height, src.width) == (12, 48, 64)
    frames = list(src.frames(5))
    assert [i for i, _ in frames] == list(range(5, 12))
    # lossy codec: the red level of frame i is about 20 * i
    assert abs(int(frames[0][1][..., 0].mean()) - 100) < 12
    assert abs(int(src.frame(11)[..., 0].mean()) - 220) < 12


def test_bad_video_files(tmp_path):
    corrupt = tmp_path / "broken.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    with pytest.raises(FrameSourceError, match="broken.mp4' cannot be decoded"):
        open_source(corrupt)
    with pytest.raises(FrameSourceError, match="does not exist"):
        open_source(tmp_path / "missing.mp4")
    text = tmp_path / "notes.txt"
    text.write_text("x")
    with pytest.raises(FrameSourceError, match="not a supported video"):
        open_source(text)


@pytest.mark.skipif(not (DATA / "davis2017-lowres").exists(), reason="shared development data not present")
def test_real_mp4_matches_its_frame_count():
    src = open_source(DATA / "davis2017-lowres" / "videos" / "dogs-jump.mp4")
    assert (src.num_frames, src.width, src.height) == (66, 432, 240)


def test_arrays_and_streams():
    arr = ArraySource(np.stack([_frame(i) for i in range(4)]))
    assert arr.frame(3)[0, 0, 0] == 60
    stream = StreamSource(_frame(i) for i in range(5))
    assert stream.num_frames is None and (stream.height, stream.width) == (48, 64)
    assert [i for i, _ in stream.frames(2)] == [2, 3, 4]
    with pytest.raises(FrameSourceError, match="only be read forward"):
        next(stream.frames(0))
    with pytest.raises(FrameSourceError, match="empty"):
        StreamSource(iter([]))
    floats = ArraySource([np.full((4, 4, 3), 0.5, np.float32)])
    assert floats.frame(0)[0, 0, 0] == 127


def test_prefetch_keeps_order_and_raises_errors():
    assert [i for i, _ in prefetch(((i, _frame(i)) for i in range(20)), depth=2)] == list(range(20))

    def failing():
        yield 0, _frame(0)
        raise FrameSourceError("boom")

    got = []
    with pytest.raises(FrameSourceError, match="boom"):
        for item in prefetch(failing()):
            got.append(item[0])
    assert got == [0]


def test_model_input_matches_the_reference_loader(tmp_path):
    sam2_misc = pytest.importorskip("sam2.utils.misc", reason="reference sam2==1.1.0 not installed")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (60, 90, 3), dtype=np.uint8)).save(tmp_path / "0.jpg")
    ref, _, _ = sam2_misc._load_img_as_tensor(str(tmp_path / "0.jpg"), 128)
    ref = (ref.float() - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    ours = to_model_input(np.asarray(Image.open(tmp_path / "0.jpg").convert("RGB")), 128)
    assert ours.shape == (3, 128, 128)
    assert (ours - ref).abs().max() < 1e-5
