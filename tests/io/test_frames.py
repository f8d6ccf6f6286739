"""Frame sources: folders in natural order, video files, arrays, streams, prefetch, preprocessing."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from maskvos.inference.frame_cache import FrameCache
from maskvos.io.frames import (
    ArraySource,
    FrameSourceError,
    ImageFolderSource,
    StreamSource,
    VideoFileSource,
    VideoIndex,
    natural_key,
    open_source,
    prefetch,
)
from maskvos.model.preprocess import to_model_input

from media_tools import numbered_frame, write_video

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
    with pytest.raises(FrameSourceError, match=r"1\.png' cannot be read"):
        src.frame(1)
    with pytest.raises(FrameSourceError, match="must have one size"):
        src.frame(2)
    with pytest.raises(FrameSourceError, match=r"outside the video \(frames 0\.\.2\)"):
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
    with pytest.raises(FrameSourceError, match=r"broken\.mp4' cannot be decoded"):
        open_source(corrupt)
    with pytest.raises(FrameSourceError, match="does not exist"):
        open_source(tmp_path / "missing.mp4")
    text = tmp_path / "notes.txt"
    text.write_text("x")
    with pytest.raises(FrameSourceError, match="not a supported video"):
        open_source(text)


#: Encoded videos with several keyframes: (file name, write_video keywords, whether it has B-frames).
SEEKABLE_VIDEOS = [
    ("x264.mp4", {"codec": "libx264", "gop_size": 10, "max_b_frames": 0}, False),
    ("x264-bframes.mp4", {"codec": "libx264", "gop_size": 10, "max_b_frames": 3}, True),
    ("x264-open-gop.mp4", {"codec": "libx264", "gop_size": 10, "options": {"x264-params": "open-gop=1:bframes=3"}}, True),
    ("mpeg4-bframes.mkv", {"codec": "mpeg4", "gop_size": 10, "max_b_frames": 2}, True),
    ("vp9.webm", {"codec": "libvpx-vp9", "gop_size": 10}, False),
]


def _decoded_from_zero(path: Path) -> list[np.ndarray]:
    """Every frame of a video, decoded from frame 0 (what any read must give)."""
    return [frame for _, frame in VideoFileSource(path, seek=False).frames(0)]


def _has_b_frames(path: Path) -> bool:
    with av.open(str(path)) as container:
        return any(frame.pict_type == av.video.frame.PictureType.B for frame in container.decode(video=0))


@pytest.mark.parametrize("name, options, has_b_frames", SEEKABLE_VIDEOS, ids=[v[0] for v in SEEKABLE_VIDEOS])
def test_frames_after_a_seek_equal_frames_decoded_from_zero(tmp_path, name, options, has_b_frames):
    path = tmp_path / name
    write_video(path, 40, **options)
    assert _has_b_frames(path) == has_b_frames
    expected = _decoded_from_zero(path)
    src = VideoFileSource(path)
    assert src.num_frames == len(expected) == 40
    assert len(src.index.keyframes) >= 4 and src.index.keyframes[0] == 0
    for start in range(40):
        keyframe = src.keyframe_at_or_before(start)
        assert keyframe in src.index.keyframes and keyframe <= start < keyframe + 11
        before = src.decoded_frames
        got = list(src.frames(start))
        assert [t for t, _ in got] == list(range(start, 40))
        assert all(np.array_equal(frame, expected[t]) for t, frame in got)
        # decoded from the keyframe on (open-GOP leading frames may add a few), not from frame 0
        assert 40 - keyframe <= src.decoded_frames - before <= 40 - keyframe + 3
    for t in (39, 3, 27, 0, 14):  # random access seeks too
        before = src.decoded_frames
        assert np.array_equal(src.frame(t), expected[t])
        assert src.decoded_frames - before <= t - src.keyframe_at_or_before(t) + 1 + 4
    assert src.seek_fallbacks == 0


class _ShiftedIndex(VideoFileSource):
    """A source whose packet index lies: every pts one tick late, so no decoded frame is found in it."""

    @property
    def index(self) -> VideoIndex | None:
        true = super().index
        return VideoIndex([p + 1 for p in true.pts], [true.pts[k] + 1 for k in true.keyframes])


class _ShortIndex(VideoFileSource):
    """A source whose packet index misses the last 6 frames: a seek gives the first ones, then a surprise."""

    @property
    def index(self) -> VideoIndex | None:
        true = super().index
        keyframe_pts = [true.pts[k] for k in true.keyframes if k < 34]
        return VideoIndex(true.pts[:34], keyframe_pts)


@pytest.mark.parametrize("source_class", [_ShiftedIndex, _ShortIndex])
def test_a_misleading_index_falls_back_to_decoding_from_zero(tmp_path, source_class):
    path = tmp_path / "clip.mp4"
    write_video(path, 40, codec="libx264", gop_size=10)
    expected = _decoded_from_zero(path)
    for start in (0, 12, 25, 39):
        src = source_class(path)
        got = list(src.frames(start))
        assert [t for t, _ in got] == list(range(start, 40))
        assert all(np.array_equal(frame, expected[t]) for t, frame in got)
        assert src.seek_fallbacks == (start >= 10)


def test_packets_marked_to_discard_are_read_from_frame_zero(tmp_path):
    """An mp4 whose first packets come before its edit list (pts < 0): the decoder drops them, so
    packets do not match frames; the index is refused and reads decode from frame 0 as before."""
    path = tmp_path / "edit-list.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.gop_size = 10
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(_frame(i), format="rgb24")
            frame.pts = i - 3
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    expected = _decoded_from_zero(path)
    src = VideoFileSource(path)
    assert src.index is None and src.keyframe_at_or_before(20) == 0
    assert [t for t, _ in src.frames(12)] == list(range(12, len(expected)))
    assert np.array_equal(src.frame(20), expected[20])


def test_backward_pass_decodes_each_frame_about_once(tmp_path):
    path = tmp_path / "clip.mp4"
    n = 120
    write_video(path, n, codec="libx264", gop_size=10, max_b_frames=3)
    expected = _decoded_from_zero(path)
    src = VideoFileSource(path)
    cache = FrameCache(src, encode=lambda frame: frame, cache_size=2)
    cache.reverse_budget_bytes = 32 * 48 * 64 * 3  # less than the clip: without seeks, chunks restart at 0
    before = src.decoded_frames
    backward = list(cache.iterate(n - 1, 0, reverse=True))
    assert [t for t, _ in backward] == list(range(n - 1, -1, -1))
    assert all(np.array_equal(frame, expected[t]) for t, frame in backward)
    # chunks of 32 each decoded from frame 0 cost 120 + 88 + 56 + 24 = 288 decodes
    assert src.decoded_frames - before <= 1.5 * n
    assert src.seek_fallbacks == 0


def test_backward_pass_within_a_small_memory_budget(tmp_path):
    path = tmp_path / "clip.mp4"
    n = 60
    write_video(path, n, codec="libx264", gop_size=10)
    expected = _decoded_from_zero(path)
    src = VideoFileSource(path)
    cache = FrameCache(src, encode=lambda frame: frame, cache_size=2)
    cache.reverse_budget_bytes = 4 * 48 * 64 * 3  # 4 frames: a 10-frame group is read in 3 chunks
    before = src.decoded_frames
    backward = list(cache.iterate(n - 1, 5, reverse=True))
    assert [t for t, _ in backward] == list(range(n - 1, 4, -1))
    assert all(np.array_equal(frame, expected[t]) for t, frame in backward)
    # a group of G frames costs about G * (G / M + 1) / 2 decodes: 18 for G = 10, M = 4
    groups = np.diff([*src.index.keyframes, n])
    assert src.decoded_frames - before <= sum(g * (g / 4 + 1) / 2 + 1 for g in groups)


@pytest.mark.parametrize(
    "name, options",
    [("clip.mp4", {"codec": "libx264", "gop_size": 10}), ("clip.mkv", {}), ("clip.webm", {"codec": "libvpx-vp9"})],
)
def test_num_frames_from_packets_without_decoding(tmp_path, name, options):
    path = tmp_path / name
    write_video(path, 37, **options)
    with av.open(str(path)) as container:
        is_count_stored = container.streams.video[0].frames > 0
    assert is_count_stored == name.endswith(".mp4")
    src = VideoFileSource(path)
    assert src.num_frames == len(_decoded_from_zero(path)) == 37
    assert src.decoded_frames == 1  # only the first frame, for its size
    without_index = VideoFileSource(path, seek=False)
    assert without_index.num_frames == 37
    assert without_index.decoded_frames == (1 if is_count_stored else 38)


def test_truncated_and_corrupt_video_files(tmp_path):
    whole = tmp_path / "clip.mp4"
    write_video(whole, 40, codec="libx264", gop_size=10)
    truncated = tmp_path / "truncated.mp4"  # an mp4 keeps its index at the end: cut, it cannot be opened
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(FrameSourceError, match=r"truncated\.mp4' cannot be decoded") as err:
        open_source(truncated)
    assert str(err.value).count(". ") == 0 and str(err.value).endswith(".")

    mkv = tmp_path / "clip.mkv"
    write_video(mkv, 40, codec="libx264", gop_size=10)
    cut = tmp_path / "cut.mkv"  # a cut mkv holds the frames before the cut, as decoding finds them
    cut.write_bytes(mkv.read_bytes()[: mkv.stat().st_size * 3 // 4])
    expected = _decoded_from_zero(cut)
    src = open_source(cut)
    assert 10 < src.num_frames == len(expected) < 40
    assert all(np.array_equal(frame, expected[t]) for t, frame in src.frames(src.num_frames - 3))

    with av.open(str(mkv)) as container:
        payload = bytes([p for p in container.demux(video=0) if p.size][12])
    data = mkv.read_bytes()
    at = data.find(payload)
    corrupt = tmp_path / "corrupt.mkv"  # one frame's data overwritten: the decoder rejects it
    corrupt.write_bytes(data[:at] + bytes([0xA5]) * len(payload) + data[at + len(payload) :])
    with pytest.raises(FrameSourceError, match=r"corrupt\.mkv' is corrupt") as err:
        list(open_source(corrupt).frames(0))  # raised on opening before frames were counted from packets
    assert str(err.value).count(". ") == 0 and str(err.value).endswith(".")


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
