"""The command line of the adapters: `maskvos serve --integrations` and `maskvos serve-integration`
refuse unknown names (and cvat, which is not a server) in one sentence, before loading a model; a
served adapter answers on loopback at the root of its address."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

from maskvos.cli import main


def test_unknown_and_function_integrations_are_refused(capsys) -> None:
    assert main(["serve", "--integrations", "x-anylabeling,nope", "--model", "featmatch"]) == 2
    err = capsys.readouterr().err
    assert err == "maskvos: error: Unknown integration 'nope'; use one or more of cvat, label-studio, x-anylabeling.\n"
    assert main(["serve-integration", "cvat"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maskvos: error: The cvat integration is a cvat-cli function module, not a server; run cvat-cli")
    assert "function create-native 'maskvos' --function-module maskvos.integrations.cvat" in err
    assert "note:" not in err and err.count("\n") == 1  # no model was loaded first, one sentence


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_integration_answers_at_its_root(tmp_path) -> None:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "maskvos", "serve-integration", "x-anylabeling", "--model", "featmatch",
                             "--port", str(port), "--root", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline, body = time.time() + 60, None
        while time.time() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as reply:
                    body = json.loads(reply.read())
            except OSError:
                time.sleep(0.3)
        assert body is not None, "serve-integration never answered"
        assert body["success"] is True and list(body["data"]) == ["featmatch"]
        assert body["data"]["featmatch"]["batch_processing_mode"] == "video"
    finally:
        proc.terminate()
        proc.wait(10)
    assert f"give http://127.0.0.1:{port}/ to the tool as its server URL" in proc.stdout.read().decode()
