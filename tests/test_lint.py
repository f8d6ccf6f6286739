"""`ruff check` is clean on the whole repository (configured in pyproject.toml), so the README's test
command, and CI with it, enforces the lint rules."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    ruff = shutil.which("ruff")
    command = [ruff] if ruff else [sys.executable, "-m", "ruff"]
    done = subprocess.run([*command, "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert "No module named ruff" not in done.stderr, "ruff is missing: run scripts/install.sh (it installs the test extras)"
    assert done.returncode == 0, done.stdout + done.stderr
