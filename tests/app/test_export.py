"""`export_results`: existing label maps (a `maskvos segment --out` folder, a folder of PNGs, a
DAVIS-layout folder of sequences) converted by the same writers a run uses, read back and compared
with the label maps; an export of a run's label maps equals the run's own file; one-sentence
errors for a missing or empty folder, an unknown format, the overlay, an unwritable output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from maskvos.app import EXPORT_FORMATS, ExportError, export_results, prompts_from_label_map, segment_video
from maskvos.backends.featmatch import FeatMatchConfig, FeatMatchModel
from maskvos.io.masks import read_label_map, write_label_map
from maskvos.io.writers import Category, ObjectCategories, OutputError

from media_tools import occlusion_video

H, W = 24, 36


def labels_of(i: int, shift: int = 0) -> np.ndarray:
    """Object 1 moving right; object 4 absent on frame 1."""
    labels = np.zeros((H, W), np.uint8)
    labels[2:10, 2 + 3 * i + shift : 10 + 3 * i + shift] = 1
    if i != 1:
        labels[14:22, 20:30] = 4
    return labels


def write_maps(folder: Path, n: int = 3, shift: int = 0) -> list[np.ndarray]:
    folder.mkdir(parents=True)
    maps = [labels_of(i, shift) for i in range(n)]
    for i, labels in enumerate(maps):
        write_label_map(folder / f"{i:05d}.png", labels)
    return maps


def coco_tracks(path: Path) -> dict[int, list[np.ndarray | None]]:
    data = json.loads(path.read_text())
    return {a["id"]: [None if r is None else coco_mask.decode(r).astype(bool) for r in a["segmentations"]] for a in data["annotations"]}


def assert_coco_equals(path: Path, maps: list[np.ndarray]) -> None:
    tracks = coco_tracks(path)
    assert sorted(tracks) == [1, 4]
    for obj_id, on_frames in tracks.items():
        assert len(on_frames) == len(maps)
        for mask, labels in zip(on_frames, maps):
            truth = labels == obj_id
            assert (mask is None) == (not truth.any())
            if mask is not None:
                assert np.array_equal(mask, truth)


def test_export_a_segment_out_folder_to_every_format(tmp_path):
    maps = write_maps(tmp_path / "run" / "masks")
    (tmp_path / "run" / "rle").mkdir()  # other outputs of the run are left alone
    out = tmp_path / "exported"
    summary = export_results(tmp_path / "run", list(EXPORT_FORMATS), out, categories=ObjectCategories({4: Category(2, "car")}))
    assert summary.videos == ["run"] and summary.frames == 3 and summary.obj_ids == [1, 4]
    assert summary.formats == list(EXPORT_FORMATS)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert summary.files_written == len(files)
    per_frame = [f"{d}/{i:05d}.{ext}" for d, ext in (("masks", "png"), ("objects/1", "png"), ("rle", "json"),
                 ("mots/instances/run", "png"), ("youtube-vos/Annotations/run", "png")) for i in range(3)]
    per_frame += [f"objects/4/{i:05d}.png" for i in (0, 2)]
    assert files == sorted([*per_frame, "instances.json", "mots/instances_txt/run.txt", "youtube-vos/meta.json",
                            "annotations.xml", "label_studio.json"])
    assert_coco_equals(out / "instances.json", maps)
    for i in range(3):
        assert np.array_equal(read_label_map(out / "masks" / f"{i:05d}.png"), maps[i])
        with Image.open(out / "mots" / "instances" / "run" / f"{i:05d}.png") as img:
            ids = np.asarray(img).astype(np.int64)
        assert np.array_equal(ids, np.select([maps[i] == 1, maps[i] == 4], [1001, 2004], 0))
    meta = json.loads((out / "youtube-vos" / "meta.json").read_text())
    assert meta["videos"]["run"]["objects"]["4"] == {"category": "car", "frames": ["00000", "00002"]}
    lines = summary.lines()
    assert lines[0].startswith("exported 3 frames of 1 video(s) with 2 object(s)") and "COCO video:" in "\n".join(lines)


def test_export_a_folder_of_label_maps_names_frames_and_video(tmp_path):
    maps = write_maps(tmp_path / "preds")
    summary = export_results(tmp_path / "preds", "label-studio", tmp_path / "out", video_name="cam1",
                             image_prefix="/data/local-files/?d=", image_suffix=".png")
    assert summary.videos == ["cam1"] and summary.files_written == 1
    tasks = json.loads((tmp_path / "out" / "label_studio.json").read_text())
    assert [t["data"]["image"] for t in tasks] == [f"/data/local-files/?d=cam1/{i:05d}.png" for i in range(3)]
    assert [len(t["predictions"][0]["result"]) for t in tasks] == [int((m == 1).any()) + int((m == 4).any()) for m in maps]


def test_export_a_davis_layout_folder_one_video_per_sequence(tmp_path):
    seqs = {"bear": write_maps(tmp_path / "preds" / "bear", 3), "car-turn": write_maps(tmp_path / "preds" / "car-turn", 4, 5)}
    write_maps(tmp_path / "preds" / "batch-video" / "masks", 2)  # a `maskvos batch` video: its masks/
    summary = export_results(tmp_path / "preds", ["coco-video", "cvat-xml"], tmp_path / "out")
    assert summary.videos == ["batch-video", "bear", "car-turn"] and summary.frames == 9
    assert summary.files_written == 6
    for name, maps in seqs.items():
        assert_coco_equals(tmp_path / "out" / name / "instances.json", maps)
        data = json.loads((tmp_path / "out" / name / "instances.json").read_text())
        assert data["videos"][0]["name"] == name and data["videos"][0]["length"] == len(maps)
    assert "the same for each of the 3 videos" in summary.lines()[-1]


def test_frames_are_numbered_by_their_names(tmp_path):
    """YouTube-VOS-style names (every 5th frame): CVAT frame numbers and MOTS time frames are the names' numbers."""
    folder = tmp_path / "preds"
    folder.mkdir()
    for k, name in enumerate(["00000", "00005", "00010"]):
        write_label_map(folder / f"{name}.png", labels_of(k))
    export_results(folder, ["cvat-xml", "mots"], tmp_path / "out")
    import xml.etree.ElementTree as ET

    root = ET.parse(tmp_path / "out" / "annotations.xml").getroot()
    assert [m.get("frame") for m in root.find("track[@id='4']").findall("mask")] == ["0", "5", "10"]
    assert [m.get("outside") for m in root.find("track[@id='4']").findall("mask")] == ["0", "1", "0"]
    assert root.find("meta/task/size").text == "11"
    frames = {int(line.split()[0]) for line in (tmp_path / "out" / "mots" / "instances_txt" / "preds.txt").read_text().splitlines()}
    assert frames == {0, 5, 10}


def test_export_of_a_runs_label_maps_equals_the_runs_own_file(tmp_path):
    frames, truths = occlusion_video(4)
    folder = tmp_path / "walk"
    folder.mkdir()
    for t in range(4):
        Image.fromarray(frames[t]).save(folder / f"{t:05d}.jpg", quality=95)
    prompt = truths[0][1].astype(np.uint8) + 2 * truths[0][2].astype(np.uint8)
    formats = ["coco-video", "label-studio"]
    segment_video(FeatMatchModel(FeatMatchConfig(scale=1.0)), folder, prompts_from_label_map(prompt, tmp_path / "p.png", 0, None),
                  tmp_path / "run", formats=formats)
    export_results(tmp_path / "run", formats, tmp_path / "exported", video_name="walk")
    for name in ("instances.json", "label_studio.json"):
        assert (tmp_path / "exported" / name).read_bytes() == (tmp_path / "run" / name).read_bytes()


def _one_sentence(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert message.endswith(".") and message.count(". ") == 0 and "\n" not in message
    return message


def test_errors_are_one_sentence_and_write_nothing(tmp_path):
    with pytest.raises(ExportError, match="does not exist") as err:
        export_results(tmp_path / "nowhere", "coco-video", tmp_path / "out")
    _one_sentence(err)
    (tmp_path / "empty" / "masks").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ExportError, match="holds no label-map PNGs") as err:
        export_results(tmp_path / "empty", "coco-video", tmp_path / "out")
    _one_sentence(err)
    write_maps(tmp_path / "preds")
    with pytest.raises(ExportError, match="'coco' is unknown; use any of png") as err:
        export_results(tmp_path / "preds", "coco", tmp_path / "out")
    _one_sentence(err)
    with pytest.raises(ExportError, match="needs the video's images") as err:
        export_results(tmp_path / "preds", ["png", "overlay"], tmp_path / "out")
    _one_sentence(err)
    assert not (tmp_path / "out").exists()
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(OutputError, match="not writable") as err:
        export_results(tmp_path / "preds", "coco-video", tmp_path / "a-file" / "out")
    _one_sentence(err)
    write_label_map(tmp_path / "preds" / "00003.png", np.ones((H + 1, W), np.uint8))
    with pytest.raises(ExportError, match="one size") as err:
        export_results(tmp_path / "preds", "coco-video", tmp_path / "out")
    _one_sentence(err)
    assert not (tmp_path / "out" / "instances.json").exists()
