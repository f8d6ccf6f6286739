"""The README's Python example runs as written (with a local checkpoint in place of the download)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from maskvos.model.config import get_config
from maskvos.model.sam2 import SAM2Model

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_api_example_runs(tmp_path, capsys):
    text = README.read_text()
    assert text.startswith("# maskvos")
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    assert blocks[0].splitlines()[:2] == ["bash scripts/install.sh      # install maskvos, its test dependencies and the reference sam2==1.1.0", "python3 -m pytest -q         # run the tests (the full parity suite: python3 -m pytest -m parity)"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "bash scripts/install.sh\npython3 -m pytest -q\n" in ci
    code = re.search(r"```python\n(.*?)```", text.split("## Python API")[1], re.S).group(1)
    checkpoint = tmp_path / "tiny.pt"
    torch.save({"model": SAM2Model(get_config("sam2.1-tiny")).state_dict()}, checkpoint)
    code = code.replace('maskvos.load_model("sam2.1-tiny")', f"maskvos.load_model({str(checkpoint)!r})")
    exec(compile(code, "README.md", "exec"), {})
    assert "torch.Size([2, 1, 256, 256])" in capsys.readouterr().out
