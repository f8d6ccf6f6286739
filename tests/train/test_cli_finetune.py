"""`maskvos finetune` and `--adapter` from the command line: an adapter that changes segment's masks,
eval-run with it, and refusals in one sentence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from maskvos.checkpoints import save_checkpoint
from maskvos.cli import main
from maskvos.io.masks import read_label_map
from maskvos.train.synthetic import DomainSpec, write_synthetic_domain

from model_tools import tiny_sam2


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli_ft")
    write_synthetic_domain(root / "domain", 2, seed=0, spec=DomainSpec(size=(96, 80), frames=5))
    base = save_checkpoint(tiny_sam2(), root / "base.safetensors")
    other_model = tiny_sam2()
    with torch.no_grad():
        next(other_model.image_encoder.parameters()).add_(1e-3)
    other = save_checkpoint(other_model, root / "other.safetensors")
    adapter = root / "domain.safetensors"
    code = main(["finetune", str(root / "domain"), "--checkpoint", str(base), "--out", str(adapter), "--resolution", "128",
                 "--steps", "3", "--frames-per-clip", "3", "--val", "0", "--lr", "1e-2", "--quiet"])
    assert code == 0
    return {"root": root, "base": base, "other": other, "adapter": adapter, "domain": root / "domain"}


def _segment(setup, out: Path, *extra: str) -> int:
    seq = setup["domain"] / "JPEGImages" / "clip000"
    prompt = setup["domain"] / "Annotations" / "clip000" / "00000.png"
    return main(["segment", str(seq), "--prompt", str(prompt), "--out", str(out), "--resolution", "128", "--quiet", *extra])


def test_finetune_prints_its_summary_and_the_adapter_changes_segment(setup, tmp_path, capsys):
    assert setup["adapter"].is_file()
    assert _segment(setup, tmp_path / "plain", "--checkpoint", str(setup["base"])) == 0
    assert _segment(setup, tmp_path / "tuned", "--checkpoint", str(setup["base"]), "--adapter", str(setup["adapter"])) == 0
    plain = [read_label_map(p) for p in sorted((tmp_path / "plain" / "masks").glob("*.png"))]
    tuned = [read_label_map(p) for p in sorted((tmp_path / "tuned" / "masks").glob("*.png"))]
    assert len(plain) == len(tuned) == 5
    assert np.array_equal(plain[0], tuned[0])  # the prompt frame is the user's mask either way
    assert any(not np.array_equal(a, b) for a, b in zip(plain[1:], tuned[1:]))


def test_resuming_with_another_adapter_state_is_refused(setup, tmp_path, capsys):
    out = tmp_path / "run"
    assert _segment(setup, out, "--checkpoint", str(setup["base"]), "--adapter", str(setup["adapter"])) == 0
    capsys.readouterr()
    assert _segment(setup, out, "--checkpoint", str(setup["base"]), "--resume") == 2
    assert "maskvos: error:" in capsys.readouterr().err


def test_eval_run_takes_the_adapter(setup, tmp_path, capsys):
    code = main(["eval-run", str(setup["domain"]), "--checkpoint", str(setup["base"]), "--adapter", str(setup["adapter"]),
                 "--resolution", "128", "--out", str(tmp_path / "pred"), "--sequences", "clip001"])
    assert code == 0
    assert "J&F" in capsys.readouterr().out


@pytest.mark.parametrize("model", ["other", "featmatch"])
def test_wrong_base_is_refused_in_one_sentence(setup, tmp_path, capsys, model):
    flag = ["--model", "featmatch"] if model == "featmatch" else ["--checkpoint", str(setup[model])]
    assert _segment(setup, tmp_path / "x", *flag, "--adapter", str(setup["adapter"])) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("maskvos: error:") and "Traceback" not in err and len(err.splitlines()) == 1
    assert ("another base model" in err) if model == "other" else ("SAM2-family" in err)
    assert not (tmp_path / "x" / "masks").exists()


def test_finetune_refuses_bad_options_in_one_sentence(setup, tmp_path, capsys):
    code = main(["finetune", str(setup["domain"]), "--checkpoint", str(setup["base"]), "--out", str(tmp_path / "a.safetensors"),
                 "--train", "image_encoder"])
    assert code == 2
    err = capsys.readouterr().err
    assert "Trainable part 'image_encoder' is unknown" in err and len(err.strip().splitlines()) == 1
    code = main(["finetune", str(tmp_path), "--checkpoint", str(setup["base"]), "--out", str(tmp_path / "a.safetensors")])
    assert code == 2 and "DAVIS-layout" in capsys.readouterr().err


def test_batch_workers_and_the_server_load_the_adapter(setup):
    from maskvos.adapters import base_fingerprint
    from maskvos.batch.jobs import ModelSpec, load_worker_model
    from maskvos.checkpoints import load_model
    from maskvos.errors import ConfigError
    from maskvos.inference.config import InferenceConfig
    from maskvos.serve import build_pool

    plain = base_fingerprint(load_model(setup["base"]))
    worker = load_worker_model(ModelSpec(str(setup["base"]), "cpu", adapter=str(setup["adapter"])))
    assert base_fingerprint(worker.model) != plain and "adapter" in worker.name
    pool = build_pool(None, str(setup["base"]), "cpu", InferenceConfig(resolution=128), lambda _m: None, adapter=str(setup["adapter"]))
    assert base_fingerprint(pool.default.loaded.model) == base_fingerprint(worker.model)
    with pytest.raises(ConfigError, match="needs the model it was trained from"):
        build_pool(None, None, "cpu", InferenceConfig(), lambda _m: None, adapter=str(setup["adapter"]))
