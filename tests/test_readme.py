"""The README's Python example runs as written (with a local checkpoint in place of the download)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from maskvos.io.masks import write_label_map
from maskvos.model.config import get_config
from maskvos.model.sam2 import SAM2Model

from media_tools import write_video

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_api_example_runs(tmp_path, capsys):
    text = README.read_text()
    assert text.startswith("# maskvos")
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    assert blocks[0].splitlines()[:2] == ["bash scripts/install.sh      # install maskvos, its test dependencies and the reference sam2==1.1.0", "python3 -m pytest -q         # run the tests (the full parity suite: python3 -m pytest -m parity)"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "bash scripts/install.sh\npython3 -m pytest -q\n" in ci
    session_code, run_code, offline_code, step_code = re.findall(r"```python\n(.*?)```", text.split("## Python API")[1], re.S)[:4]
    checkpoint = tmp_path / "tiny.pt"
    torch.save({"model": SAM2Model(get_config("sam2.1-tiny")).state_dict()}, checkpoint)
    clip = tmp_path / "clip.mp4"
    write_video(clip, 3)  # 64x48
    load = ('maskvos.load_model("sam2.1-tiny")', f"maskvos.load_model({str(checkpoint)!r})")
    # The session example at a small model input keeps the test fast; the code is otherwise as printed.
    session_code = session_code.replace(*load).replace('"clip.mp4"', repr(str(clip))).replace("resolution=512", "resolution=64")
    exec(compile(session_code, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == "2 [1, 2] (2, 48, 64) (48, 64)"
    scope: dict = {}
    exec(compile(offline_code.replace('"clip.mp4"', repr(str(clip))), "README.md", "exec"), scope)
    assert type(scope["session"]).__name__ == "FeatMatchSession" and scope["session"].num_frames == 3
    exec(compile(step_code.replace(*load), "README.md", "exec"), {})
    assert "torch.Size([2, 1, 256, 256])" in capsys.readouterr().out
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 10:30] = 1
    write_label_map(tmp_path / "first_frame_mask.png", mask)
    run_code = run_code.replace('"clip.mp4"', repr(str(clip))).replace('"first_frame_mask.png"', repr(str(tmp_path / "first_frame_mask.png")))
    exec(compile(run_code.replace('"results/"', repr(str(tmp_path / "results"))), "README.md", "exec"), {})
    assert capsys.readouterr().out.startswith("segmented 3 frames of 1 object(s)")
    assert len(list((tmp_path / "results" / "rle").glob("*.json"))) == 3
