"""The annotation formats (coco-video, mots, youtube-vos, cvat-xml, label-studio), each written from
small hand-made label maps and read back by the reader a user of the tool would use: pycocotools,
PIL + numpy, xml.etree + cvat_sdk's mask decoder, label_studio_sdk's brush decoder. Also: the
encoders against the tools' own encoders, a resumed run's whole-video files equal to an
uninterrupted run's, discard writes nothing, ids a format cannot hold, categories, and a
`segment_video` run through the featmatch backend."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from cvat_sdk import masks as cvat_masks
from label_studio_sdk.converter import brush
from PIL import Image
from pycocotools import mask as coco_mask

from maskvos.io.coco import CategoryError
from maskvos.io.frames import ArraySource
from maskvos.io.masks import davis_palette, read_label_map
from maskvos.io.writers import (
    WRITERS,
    AnnotationInfo,
    Category,
    ObjectCategories,
    OutputError,
    OutputFrame,
    OutputTarget,
    Writer,
    encode_brush_rle,
    encode_cvat_mask,
    open_writers,
    prepare_output_dir,
)

from media_tools import occlusion_video

H, W, N = 30, 44, 5  # not square: a swapped width and height shows
#: Object 2 is a "car" (category 3); the others the default "person" (category 1).
CATEGORIES = ObjectCategories({2: Category(3, "car")}, Category(1, "person"))
WHOLE_VIDEO_FILES = {
    "coco-video": "instances.json",
    "mots": "mots/instances_txt/clip.txt",
    "youtube-vos": "youtube-vos/meta.json",
    "cvat-xml": "annotations.xml",
    "label-studio": "label_studio.json",
}


class FakeResult:
    """A `MaskFrame` of a label map."""

    def __init__(self, frame_idx: int, labels: np.ndarray) -> None:
        self.frame_idx, self.labels = frame_idx, labels
        self.obj_ids = [int(i) for i in np.unique(labels) if i != 0]

    def label_map(self) -> np.ndarray:
        return self.labels

    def masks_by_id(self) -> dict[int, np.ndarray]:
        return {obj_id: self.labels == obj_id for obj_id in self.obj_ids}


def labels_of(i: int) -> np.ndarray:
    """Object 1 in the top-left corner (its box starts on an object pixel), growing; object 2 a ring
    (holes: runs within rows), absent on frames 2 and 3; object 7 appears on frame 1 and moves."""
    labels = np.zeros((H, W), np.uint8)
    labels[0 : 4 + i, 0 : 6 + i] = 1
    if i not in (2, 3):
        labels[10:22, 20:34] = 2
        labels[13:19, 24:30] = 0
    if i >= 1:
        labels[24:29, 3 + 5 * i : 9 + 5 * i] = 7
    return labels


def object_masks(i: int) -> dict[int, np.ndarray]:
    labels = labels_of(i)
    return {obj_id: labels == obj_id for obj_id in (1, 2, 7) if (labels == obj_id).any()}


def make_target(out: Path, resume: bool = False, categories: ObjectCategories = CATEGORIES) -> OutputTarget:
    out = prepare_output_dir(out)
    source = ArraySource(np.zeros((N, H, W, 3), np.uint8))
    return OutputTarget(out, source, out / "masks", resume=resume, annotation=AnnotationInfo("clip", categories))


def write_frames(writers: list[Writer], target: OutputTarget, frames) -> None:
    for i in frames:
        for writer in writers:
            writer.write(OutputFrame(i, target.source.stem(i), None), FakeResult(i, labels_of(i)))


def run(fmt: str, out: Path, categories: ObjectCategories = CATEGORIES) -> OutputTarget:
    target = make_target(out, categories=categories)
    writers = open_writers([fmt], target)
    write_frames(writers, target, range(N))
    for writer in writers:
        writer.close()
    return target


def parts(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".part" in p.name]


# --------------------------------------------------------------------------- coco-video


def test_coco_video_read_back_by_pycocotools(tmp_path):
    target = run("coco-video", tmp_path / "out")
    data = json.loads((target.out_dir / "instances.json").read_text())
    (video,) = data["videos"]
    assert (video["width"], video["height"], video["length"]) == (W, H, N)
    assert video["file_names"] == [f"clip/{i:05d}.jpg" for i in range(N)]
    assert data["categories"] == [{"id": 1, "name": "person", "supercategory": "person"},
                                  {"id": 3, "name": "car", "supercategory": "car"}]
    tracks = {a["id"]: a for a in data["annotations"]}
    assert sorted(tracks) == [1, 2, 7]
    assert {k: a["category_id"] for k, a in tracks.items()} == {1: 1, 2: 3, 7: 1}
    for obj_id, track in tracks.items():
        assert track["video_id"] == 1 and track["iscrowd"] == 0
        assert len(track["segmentations"]) == len(track["bboxes"]) == len(track["areas"]) == N
        for i in range(N):
            truth = object_masks(i).get(obj_id)
            rle = track["segmentations"][i]
            if truth is None:
                assert rle is None and track["bboxes"][i] is None and track["areas"][i] is None
                continue
            assert rle["size"] == [H, W]
            decoded = coco_mask.decode(rle).astype(bool)
            assert np.array_equal(decoded, truth)
            assert track["areas"][i] == int(coco_mask.area(rle)) == int(truth.sum())
            ys, xs = np.nonzero(truth)
            box = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert track["bboxes"][i] == [float(v) for v in coco_mask.toBbox(rle)] == [float(v) for v in box]
    assert tracks[2]["segmentations"][2] is None and tracks[7]["segmentations"][0] is None
    assert not parts(target.out_dir)


# --------------------------------------------------------------------------- mots


def test_mots_pngs_and_txt_read_back(tmp_path):
    target = run("mots", tmp_path / "out")
    folder = target.out_dir / "mots" / "instances" / "clip"
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:05d}.png" for i in range(N)]
    for i in range(N):
        with Image.open(folder / f"{i:05d}.png") as img:
            assert img.mode.startswith("I;16")
            ids = np.asarray(img)
        assert ids.shape == (H, W)
        expected = np.zeros((H, W), np.int64)
        for obj_id, mask in object_masks(i).items():
            expected[mask] = CATEGORIES.of(obj_id).id * 1000 + obj_id
        assert np.array_equal(ids, expected)
        assert np.array_equal(np.where(ids > 0, ids % 1000, 0), labels_of(i))
    lines = (target.out_dir / "mots" / "instances_txt" / "clip.txt").read_text().splitlines()
    seen = {}
    for line in lines:
        time_frame, mots_id, class_id, height, width, counts = line.split(" ")
        assert (int(height), int(width)) == (H, W)
        assert int(mots_id) // 1000 == int(class_id)
        mask = coco_mask.decode({"size": [H, W], "counts": counts.encode()}).astype(bool)
        seen[int(time_frame), int(mots_id) % 1000] = (int(class_id), mask)
    expected_keys = {(i, obj_id) for i in range(N) for obj_id in object_masks(i)}
    assert set(seen) == expected_keys and len(lines) == len(expected_keys)
    for (i, obj_id), (class_id, mask) in seen.items():
        assert class_id == CATEGORIES.of(obj_id).id and np.array_equal(mask, object_masks(i)[obj_id])
    assert [int(line.split()[0]) for line in lines] == sorted(int(line.split()[0]) for line in lines)


def test_mots_refuses_ids_a_mots_id_cannot_hold(tmp_path):
    target = make_target(tmp_path / "out")
    (writer,) = open_writers(["mots"], target)
    labels = np.zeros((H, W), np.uint16)
    labels[:3, :3] = 1000
    with pytest.raises(OutputError, match=r"1\.\.999") as err:
        writer.write(OutputFrame(0, "00000", None), FakeResult(0, labels))
    assert str(err.value).count(". ") == 0 and str(err.value).endswith(".")
    writer.discard()
    assert not (target.out_dir / "mots" / "instances_txt" / "clip.txt").exists()


# --------------------------------------------------------------------------- youtube-vos


def test_youtube_vos_palette_pngs_and_meta_read_back(tmp_path):
    target = run("youtube-vos", tmp_path / "out")
    root = target.out_dir / "youtube-vos"
    for i in range(N):
        with Image.open(root / "Annotations" / "clip" / f"{i:05d}.png") as img:
            assert img.mode == "P" and img.getpalette()[:24] == davis_palette()[:24]
            assert np.array_equal(np.asarray(img), labels_of(i))
    meta = json.loads((root / "meta.json").read_text())
    objects = meta["videos"]["clip"]["objects"]
    assert objects == {
        "1": {"category": "person", "frames": ["00000", "00001", "00002", "00003", "00004"]},
        "2": {"category": "car", "frames": ["00000", "00001", "00004"]},
        "7": {"category": "person", "frames": ["00001", "00002", "00003", "00004"]},
    }


def test_youtube_vos_refuses_ids_a_palette_cannot_hold(tmp_path):
    target = make_target(tmp_path / "out")
    (writer,) = open_writers(["youtube-vos"], target)
    labels = np.zeros((H, W), np.uint16)
    labels[:3, :3] = 300
    with pytest.raises(OutputError, match="palette PNG") as err:
        writer.write(OutputFrame(0, "00000", None), FakeResult(0, labels))
    assert str(err.value).count(". ") == 0


# --------------------------------------------------------------------------- cvat-xml


def cvat_tracks(path: Path, n: int = N) -> tuple[ET.Element, dict[int, tuple[str, dict[int, np.ndarray | None]]]]:
    """Each track's label and its mask on every frame, as CVAT reads the file: a track's state on a
    frame is its last keyframe at or before it (outside: not shown), decoded by cvat_sdk."""
    root = ET.parse(path).getroot()
    size = root.find("meta/task/original_size")
    width, height = int(size.find("width").text), int(size.find("height").text)
    tracks = {}
    for track in root.findall("track"):
        keyframes = {}
        for shape in track.findall("mask"):
            assert shape.get("keyframe") == "1" and shape.get("source") is None
            left, top = int(shape.get("left")), int(shape.get("top"))
            w, h = int(shape.get("width")), int(shape.get("height"))
            points = [int(v) for v in shape.get("rle").split(",")] + [left, top, left + w - 1, top + h - 1]
            mask = cvat_masks.decode_mask(points, image_width=width, image_height=height)
            keyframes[int(shape.get("frame"))] = None if shape.get("outside") == "1" else mask
        state, frames = None, {}
        for i in range(n):
            state = keyframes.get(i, state)
            frames[i] = state
        tracks[int(track.get("id"))] = (track.get("label"), frames)
    return root, tracks


def test_cvat_xml_read_back_by_etree_and_cvat_sdk(tmp_path):
    target = run("cvat-xml", tmp_path / "out")
    root, tracks = cvat_tracks(target.out_dir / "annotations.xml")
    assert root.tag == "annotations" and root.find("version").text == "1.1"
    task = root.find("meta/task")
    assert task.find("mode").text == "interpolation" and task.find("size").text == str(N)
    assert [(lab.find("name").text, lab.find("type").text) for lab in task.findall("labels/label")] == [("person", "mask"), ("car", "mask")]
    assert [t.get("source") for t in root.findall("track")] == ["auto"] * 3
    assert sorted(tracks) == [1, 2, 7]
    assert {k: label for k, (label, _) in tracks.items()} == {1: "person", 2: "car", 7: "person"}
    for obj_id, (_, frames) in tracks.items():
        for i in range(N):
            truth = object_masks(i).get(obj_id)
            assert (frames[i] is None) == (truth is None), (obj_id, i)
            if truth is not None:
                assert np.array_equal(frames[i], truth)
    # object 2 leaves on frame 2 (one outside keyframe) and comes back on frame 4
    shapes = [(s.get("frame"), s.get("outside")) for s in root.find("track[@id='2']").findall("mask")]
    assert shapes == [("0", "0"), ("1", "0"), ("2", "1"), ("4", "0")]


def test_cvat_rle_is_cvat_sdks():
    rng = np.random.default_rng(3)
    for mask in [labels_of(4) == 1, labels_of(0) == 2, rng.random((9, 13)) < 0.4, np.eye(6, dtype=bool)]:
        runs, left, top, width, height = encode_cvat_mask(mask)
        assert [*runs, left, top, left + width - 1, top + height - 1] == cvat_masks.encode_mask(mask)
        assert sum(runs) == width * height


# --------------------------------------------------------------------------- label-studio


def test_label_studio_tasks_read_back_by_its_brush_decoder(tmp_path):
    target = run("label-studio", tmp_path / "out")
    tasks = json.loads((target.out_dir / "label_studio.json").read_text())
    assert [t["data"]["image"] for t in tasks] == [f"clip/{i:05d}.jpg" for i in range(N)]
    assert [t["data"]["frame"] for t in tasks] == [f"{i:05d}" for i in range(N)]
    for i, task in enumerate(tasks):
        (prediction,) = task["predictions"]
        regions = {r["id"]: r for r in prediction["result"]}
        assert sorted(regions) == [f"obj{k}" for k in sorted(object_masks(i))]
        for obj_id, truth in object_masks(i).items():
            region = regions[f"obj{obj_id}"]
            assert (region["type"], region["from_name"], region["to_name"]) == ("brushlabels", "tag", "image")
            assert (region["original_width"], region["original_height"]) == (W, H)
            assert region["value"]["format"] == "rle"
            assert region["value"]["brushlabels"] == [CATEGORIES.of(obj_id).name]
            rgba = brush.decode_rle(region["value"]["rle"]).reshape(H, W, 4)
            assert np.array_equal(rgba[..., 3] > 0, truth)


def test_brush_rle_is_label_studios():
    rng = np.random.default_rng(4)
    long_runs = np.zeros((300, 250), bool)  # background runs over 2**16 channel values
    long_runs[200:210, 10:240] = True
    for mask in [labels_of(3) == 1, rng.random((7, 11)) < 0.5, np.ones((2, 3), bool), long_runs]:
        assert encode_brush_rle(mask) == list(brush.mask2rle(mask.astype(np.uint8) * 255))


# --------------------------------------------------------------------------- every whole-video format


@pytest.mark.parametrize("fmt", sorted(WHOLE_VIDEO_FILES))
def test_resumed_run_gives_the_uninterrupted_files(fmt, tmp_path):
    whole = run(fmt, tmp_path / "whole").out_dir / WHOLE_VIDEO_FILES[fmt]
    # the interrupted run: frames 0-2 written, then an interrupt
    target = make_target(tmp_path / "resumed")
    writers = open_writers([fmt], target)
    write_frames(writers, target, range(3))
    for writer in writers:
        writer.discard()
    resumed_file = target.out_dir / WHOLE_VIDEO_FILES[fmt]
    assert not resumed_file.exists() and not parts(target.out_dir)
    # the resumed run: frame 2 again (the saved state was before it), then 3-4
    target = make_target(tmp_path / "resumed", resume=True)
    writers = open_writers([fmt], target)
    write_frames(writers, target, range(2, N))
    for writer in writers:
        writer.close()
    assert resumed_file.read_bytes() == whole.read_bytes()
    # without the rebuild, frames 0 and 1 would be missing
    target = make_target(tmp_path / "not-resumed")
    writers = open_writers([fmt], target)
    write_frames(writers, target, range(2, N))
    for writer in writers:
        writer.close()
    assert (target.out_dir / WHOLE_VIDEO_FILES[fmt]).read_bytes() != whole.read_bytes()


@pytest.mark.parametrize("fmt", sorted(WHOLE_VIDEO_FILES))
def test_frames_out_of_order_are_written_in_frame_order(fmt, tmp_path):
    whole = run(fmt, tmp_path / "whole").out_dir / WHOLE_VIDEO_FILES[fmt]
    target = make_target(tmp_path / "both")
    writers = open_writers([fmt], target)
    write_frames(writers, target, [2, 3, 4, 2, 1, 0])  # a "both" run from frame 2
    for writer in writers:
        writer.close()
    assert (target.out_dir / WHOLE_VIDEO_FILES[fmt]).read_bytes() == whole.read_bytes()
    assert writers[-1].describe().startswith(f"{writers[-1].label}:")


def test_whole_video_formats_need_label_maps_or_their_own_pngs_to_resume():
    assert {name: WRITERS[name].requires for name in WHOLE_VIDEO_FILES} == {
        "coco-video": ("png",), "cvat-xml": ("png",), "label-studio": ("png",), "mots": (), "youtube-vos": ()}


def test_default_category_and_video_name(tmp_path):
    out = prepare_output_dir(tmp_path / "my-run")
    target = OutputTarget(out, ArraySource(np.zeros((2, H, W, 3), np.uint8)), out / "masks")
    writers = open_writers(["coco-video", "cvat-xml"], target)
    for i in range(2):
        for writer in writers:
            writer.write(OutputFrame(i, f"{i:05d}", None), FakeResult(i, labels_of(i)))
    for writer in writers:
        writer.close()
    data = json.loads((out / "instances.json").read_text())
    assert data["videos"][0]["name"] == "my-run" and data["videos"][0]["file_names"][0] == "my-run/00000.jpg"
    assert data["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    assert {a["category_id"] for a in data["annotations"]} == {1}
    root = ET.parse(out / "annotations.xml").getroot()
    assert root.find("meta/task/name").text == "my-run"
    assert {t.get("label") for t in root.findall("track")} == {"object"}


def test_categories_parse_and_refuse_contradictions():
    parsed = ObjectCategories.parse(["1=person", "2=car:3", "4=person", "5=dog"])
    assert [parsed.of(k) for k in (1, 2, 4, 5, 9)] == [
        Category(1, "person"), Category(3, "car"), Category(1, "person"), Category(2, "dog"), Category(4, "object")]
    assert ObjectCategories.parse(["2=object:7"]).of(1) == Category(7, "object")
    for bad in (["1person"], ["x=car"], ["1=car:x"], ["1="]):
        with pytest.raises(CategoryError, match="OBJ=NAME") as err:
            ObjectCategories.parse(bad)
        assert str(err.value).count(". ") == 0
    with pytest.raises(CategoryError, match="two names"):
        ObjectCategories({1: Category(1, "person"), 2: Category(1, "car")}, Category(2, "x"))
    with pytest.raises(CategoryError, match="two ids"):
        ObjectCategories({1: Category(2, "object")})
    with pytest.raises(CategoryError, match="id of 1 or more"):
        ObjectCategories({1: Category(0, "zero")})


# --------------------------------------------------------------------------- through a run


def test_segment_video_writes_the_formats_of_its_label_maps(tmp_path):
    from maskvos.app import prompts_from_label_map, segment_video
    from maskvos.backends.featmatch import FeatMatchConfig, FeatMatchModel

    frames, truths = occlusion_video(4)
    folder = tmp_path / "walk"
    folder.mkdir()
    for t in range(4):
        Image.fromarray(frames[t]).save(folder / f"f{t}.jpg", quality=95)
    prompt = truths[0][1].astype(np.uint8) + 2 * truths[0][2].astype(np.uint8)
    prompts = prompts_from_label_map(prompt, tmp_path / "p.png", 0, None)
    out = tmp_path / "out"
    summary = segment_video(FeatMatchModel(FeatMatchConfig(scale=1.0)), folder, prompts, out,
                            formats=["coco-video", "cvat-xml", "mots"])
    assert summary.frames_written == 4
    assert any(line.startswith("COCO video:") for line in summary.outputs)
    label_maps = [read_label_map(out / "masks" / f"f{t}.png") for t in range(4)]
    assert all((lab == 1).any() and (lab == 2).any() for lab in label_maps)
    data = json.loads((out / "instances.json").read_text())
    assert data["videos"][0]["name"] == "walk"
    assert data["videos"][0]["file_names"] == [f"walk/f{t}.jpg" for t in range(4)]
    for track in data["annotations"]:
        for t, rle in enumerate(track["segmentations"]):
            assert np.array_equal(coco_mask.decode(rle).astype(bool), label_maps[t] == track["id"])
    _, tracks = cvat_tracks(out / "annotations.xml", n=4)
    for obj_id, (_, on_frames) in tracks.items():
        for t in range(4):
            assert np.array_equal(on_frames[t], label_maps[t] == obj_id)
    for t in range(4):  # the MOTS PNGs are named like the frames; time_frame is the index (stems are not numbers)
        with Image.open(out / "mots" / "instances" / "walk" / f"f{t}.png") as img:
            assert np.array_equal(np.asarray(img) % 1000, label_maps[t])
    assert {int(line.split()[0]) for line in (out / "mots" / "instances_txt" / "walk.txt").read_text().splitlines()} == {0, 1, 2, 3}
