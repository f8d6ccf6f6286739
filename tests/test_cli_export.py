"""`maskvos export` on the command line: label maps to the tools' formats, read back by pycocotools
and cvat_sdk; bad input in one sentence."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask

from maskvos.cli import main
from maskvos.io.masks import write_label_map


def _results(folder: Path) -> list[np.ndarray]:
    (folder / "masks").mkdir(parents=True)
    maps = []
    for i in range(4):
        labels = np.zeros((30, 40), np.uint8)
        labels[5:15, 3 + i : 13 + i] = 1
        if i != 2:
            labels[20:28, 20:35] = 2
        write_label_map(folder / "masks" / f"{i:05d}.png", labels)
        maps.append(labels)
    return maps


def test_cli_export_coco_and_cvat(tmp_path: Path, capsys) -> None:
    maps = _results(tmp_path / "run")
    code = main(["export", str(tmp_path / "run"), "--format", "coco-video,cvat-xml", "--out", str(tmp_path / "x"),
                 "--category", "1=person", "2=car", "--video-name", "clip"])
    assert code == 0
    assert capsys.readouterr().out.startswith("exported 4 frames of 1 video(s) with 2 object(s)")
    data = json.loads((tmp_path / "x" / "instances.json").read_text())
    assert data["videos"][0]["name"] == "clip" and data["videos"][0]["length"] == 4
    names = {c["id"]: c["name"] for c in data["categories"]}
    for ann in data["annotations"]:
        assert names[ann["category_id"]] == {1: "person", 2: "car"}[ann["id"]]
        for i, rle in enumerate(ann["segmentations"]):
            want = maps[i] == ann["id"]
            if rle is None:
                assert not want.any()
            else:
                assert np.array_equal(coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool), want)
    tracks = ET.parse(tmp_path / "x" / "annotations.xml").getroot().findall("track")
    assert sorted(t.get("label") for t in tracks) == ["car", "person"]


def test_cli_export_bad_input(tmp_path: Path, capsys) -> None:
    assert main(["export", str(tmp_path / "missing"), "--format", "mots", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maskvos: error: Results folder") and err.count("\n") == 1
    _results(tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), "--format", "mots", "--out", str(tmp_path / "x"), "--category", "1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
