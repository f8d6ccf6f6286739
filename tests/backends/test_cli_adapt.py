"""`--adapt` (featmatch test-time adaptation) from the command line: it changes featmatch's masks and
is refused for other models in one sentence."""

from __future__ import annotations

import numpy as np
from PIL import Image

from maskvos.checkpoints import save_checkpoint
from maskvos.cli import main
from maskvos.io.masks import read_label_map, write_label_map

from media_tools import occlusion_video
from model_tools import tiny_sam2


def _clip(tmp_path):
    frames, truths = occlusion_video(8)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame.astype(np.uint8)).save(folder / f"{i:05d}.png")
    labels = np.zeros(frames[0].shape[:2], np.uint8)
    for obj_id, mask in truths[0].items():
        labels[mask] = obj_id
    write_label_map(tmp_path / "prompt.png", labels)
    return folder, tmp_path / "prompt.png"


def test_adapt_changes_featmatch_masks_but_not_the_prompt(tmp_path):
    folder, prompt = _clip(tmp_path)
    base = ["segment", str(folder), "--prompt", str(prompt), "--model", "featmatch", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "off")]) == 0
    assert main([*base, "--out", str(tmp_path / "on"), "--adapt", "--adapt-steps", "50"]) == 0
    off = [read_label_map(p) for p in sorted((tmp_path / "off" / "masks").glob("*.png"))]
    on = [read_label_map(p) for p in sorted((tmp_path / "on" / "masks").glob("*.png"))]
    assert len(off) == len(on) == 8 and np.array_equal(off[0], on[0])
    assert any(not np.array_equal(a, b) for a, b in zip(off[1:], on[1:]))


def test_adapt_is_refused_for_sam2_models(tmp_path, capsys):
    folder, prompt = _clip(tmp_path)
    ckpt = save_checkpoint(tiny_sam2(), tmp_path / "tiny.safetensors")
    code = main(["segment", str(folder), "--prompt", str(prompt), "--checkpoint", str(ckpt), "--out", str(tmp_path / "x"),
                 "--resolution", "64", "--adapt", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "maskvos: error: --adapt applies to the featmatch backend only; add --model featmatch or drop --adapt."
