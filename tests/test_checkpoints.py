"""Checkpoint resolution, download (against a local server), strict loading and clear errors."""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from maskvos.checkpoints import (
    ENDPOINT_ENV,
    detect_config,
    load_model,
    read_state_dict,
    save_checkpoint,
    strip_wrapper_prefixes,
)
from maskvos.errors import CheckpointDownloadError, CheckpointError, ConfigError
from maskvos.model.config import MODEL_CONFIGS, get_config
from maskvos.model.sam2 import SAM2Model


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return SAM2Model(get_config("sam2.1-tiny")).state_dict()


@pytest.fixture(scope="module")
def official_file(tmp_path_factory, tiny_state) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": tiny_state}, path)
    return path


def _same_weights(model: SAM2Model, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_official_file_loads_and_is_recognised(official_file, tiny_state):
    model = load_model(official_file)
    assert model.config.name == "sam2.1-tiny"
    assert not model.training
    assert _same_weights(model, tiny_state)


def test_each_published_config_is_told_apart():
    # Every configuration has its own key set/shapes, so a file names its configuration unambiguously,
    # except EfficientTAM's variants of one size (plain, 512-pixel, two pooled attentions: the same
    # weights' shapes), which the file's published name tells apart.
    from maskvos.checkpoints import expected_shapes

    shapes = {name: expected_shapes(cfg) for name, cfg in MODEL_CONFIGS.items()}
    groups: dict[str, list[str]] = {}
    for name, shape in shapes.items():
        groups.setdefault(repr(sorted(shape.items())), []).append(name)
    shared = sorted(sorted(g) for g in groups.values() if len(g) > 1)
    assert shared == [["efficienttam-s", "efficienttam-s-1", "efficienttam-s-2", "efficienttam-s-512"],
                      ["efficienttam-ti", "efficienttam-ti-1", "efficienttam-ti-2", "efficienttam-ti-512"]]
    fake = {k: torch.empty(s, device="meta") for k, s in shapes["sam2-base-plus"].items()}
    assert detect_config(fake).name == "sam2-base-plus"
    fake = {k: torch.empty(s, device="meta") for k, s in shapes["efficienttam-ti"].items()}
    assert detect_config(fake).name == "efficienttam-ti"
    for name, file_name in [("efficienttam-ti-2", "efficienttam_ti_2.pt"), ("efficienttam-ti-512", "efficienttam_ti_512x512.pt"),
                            ("efficienttam-ti", "my_weights.pt")]:
        assert detect_config(fake, file_name).name == name


def test_wrong_config_names_the_one_that_fits(official_file):
    with pytest.raises(CheckpointError) as err:
        load_model(official_file, config="sam2.1-base-plus")
    text = str(err.value)
    assert "this is a SAM2.1 tiny checkpoint" in text
    assert "load it as 'sam2.1-tiny'" in text
    assert "mis-shaped keys (" in text and "image_encoder.trunk.blocks.0.attn.qkv.weight (288, 96) vs (336, 112)" in text


def test_sam2_file_is_not_loaded_as_sam2_1(tmp_path, tiny_state):
    sd = dict(tiny_state)
    sd.pop("no_obj_embed_spatial")
    sd = {k: v for k, v in sd.items() if not k.startswith("obj_ptr_tpos_proj")}
    path = tmp_path / "old.pt"
    torch.save({"model": sd}, path)
    assert load_model(path).config.name == "sam2-tiny"
    with pytest.raises(CheckpointError, match="this is a SAM2 tiny checkpoint") as err:
        load_model(path, config="sam2.1-tiny")
    assert "missing keys (3): no_obj_embed_spatial, obj_ptr_tpos_proj.bias, obj_ptr_tpos_proj.weight" in str(err.value)


def test_partial_file_lists_missing_and_unexpected_keys(tmp_path, tiny_state):
    sd = dict(tiny_state)
    sd.pop("no_mem_embed")
    sd["extra.weight"] = torch.zeros(3)
    path = tmp_path / "partial.pt"
    torch.save(sd, path)  # a bare state dict is accepted too
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    text = str(err.value)
    assert "matches none of the published" in text
    assert "missing keys (1): no_mem_embed" in text
    assert "unexpected keys (1): extra.weight" in text


def test_wrapper_prefixes_are_stripped(tmp_path, tiny_state):
    path = tmp_path / "wrapped.pt"
    torch.save({"model": {f"module._orig_mod.{k}": v for k, v in tiny_state.items()}}, path)
    assert _same_weights(load_model(path), tiny_state)
    assert strip_wrapper_prefixes({"model.a": torch.zeros(1), "b": torch.zeros(1)}).keys() == {"model.a", "b"}


def test_safetensors_round_trip(tmp_path, tiny_state):
    model = SAM2Model(get_config("sam2.1-tiny"))
    model.load_state_dict(tiny_state)
    path = save_checkpoint(model, tmp_path / "tiny.safetensors")
    assert not (tmp_path / "tiny.safetensors.part").exists()
    loaded = load_model(path, dtype=torch.bfloat16)
    assert loaded.no_mem_embed.dtype == torch.bfloat16
    assert torch.equal(loaded.no_mem_embed.float(), tiny_state["no_mem_embed"].to(torch.bfloat16).float())


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"this is just some text, not weights\n", "is not a PyTorch or safetensors checkpoint"),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), "is not a PyTorch or safetensors checkpoint"),
    ],
)
def test_bad_files_give_one_sentence(tmp_path, content, expected):
    path = tmp_path / "model.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected) as err:
        read_state_dict(path)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_truncated_and_wrong_content_files(tmp_path, official_file):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(official_file.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="corrupt, truncated"):
        read_state_dict(truncated)
    no_model = tmp_path / "nomodel.pt"
    torch.save({"epoch": 3, "optimizer": {"lr": torch.tensor(0.1)}}, no_model)
    with pytest.raises(CheckpointError, match="holds no model state dict"):
        read_state_dict(no_model)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_state_dict(bad_st)


def test_unknown_model_name():
    with pytest.raises(ConfigError, match="Unknown model name 'sam3-huge'"):
        get_config("sam3-huge")
    assert get_config("SAM2.1_b+").name == "sam2.1-base-plus"


class _HubHandler(http.server.BaseHTTPRequestHandler):
    """Answers Hugging Face `resolve` URLs for the files in `self.server.files`."""

    def _head(self) -> bytes | None:
        self.server.requests.append(self.path)
        payload = self.server.files.get(self.path)
        if payload is None:
            self.send_response(404)
            self.end_headers()
            return None
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("ETag", '"' + hashlib.sha256(payload).hexdigest() + '"')
        self.send_header("X-Repo-Commit", "0123456789abcdef0123456789abcdef01234567")
        self.end_headers()
        return payload

    def do_HEAD(self):
        self._head()

    def do_GET(self):
        payload = self._head()
        if payload is not None:
            self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def local_hub(official_file):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HubHandler)
    server.files = {"/facebook/sam2.1-hiera-tiny/resolve/main/sam2.1_hiera_tiny.pt": official_file.read_bytes()}
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_download_once_then_cached(local_hub, tmp_path, monkeypatch, tiny_state):
    cache = tmp_path / "cache"
    monkeypatch.setenv(ENDPOINT_ENV, f"http://127.0.0.1:{local_hub.server_address[1]}")
    model = load_model("sam2.1-tiny", cache_dir=cache)
    assert model.config.name == "sam2.1-tiny" and _same_weights(model, tiny_state)
    gets = [p for p in local_hub.requests if p.endswith(".pt")]
    assert gets, "the file was fetched from the local server"
    # The server goes away: the cached copy is used.
    local_hub.shutdown()
    local_hub.server_close()
    assert _same_weights(load_model("sam2.1-tiny", cache_dir=cache), tiny_state)


def test_offline_and_not_cached_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv(ENDPOINT_ENV, "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
    with pytest.raises(CheckpointDownloadError) as err:
        load_model("sam2.1-small", cache_dir=tmp_path / "empty")
    text = str(err.value)
    assert "sam2.1_hiera_small.pt" in text and "facebook/sam2.1-hiera-small" in text
    assert "--checkpoint PATH" in text and "\n" not in text


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maskvos", *args], capture_output=True, text=True, timeout=120)


def test_cli_info_missing_and_corrupt(tmp_path, official_file):
    missing = _cli("info", "--checkpoint", str(tmp_path / "missing.pt"))
    assert missing.returncode != 0
    assert missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
    assert "missing.pt' does not exist" in missing.stderr
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(official_file.read_bytes()[:50_000])
    bad = _cli("info", "--checkpoint", str(corrupt))
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.count("\n") == 1 and "corrupt, truncated" in bad.stderr


def test_cli_info_describes_a_checkpoint(official_file):
    ok = _cli("info", "--checkpoint", str(official_file))
    assert ok.returncode == 0, ok.stderr
    assert "model:        sam2.1-tiny" in ok.stdout
    n = sum(v.numel() for k, v in torch.load(official_file)["model"].items() if "gaussian_matrix" not in k)
    assert f"{n:,}" in ok.stdout
