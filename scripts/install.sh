#!/usr/bin/env bash
# Install maskvos with its test dependencies into the current Python environment.
#
# Without an NVIDIA GPU, a CPU build of PyTorch is installed first (a plain `torch` requirement
# would pull a multi-GB CUDA build on Linux). The reference implementation sam2==1.1.0 (an sdist,
# used only by the parity tests) is built without its CUDA extension and without build isolation,
# after torch, as its own instructions require.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if ! "$PY" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        "$PY" -m pip install "torch>=2.5"
    else
        "$PY" -m pip install "torch==2.13.0"
    fi
fi
"$PY" -m pip install -e ".[test]"
"$PY" -m pip install setuptools wheel
SAM2_BUILD_CUDA=0 "$PY" -m pip install --no-build-isolation --no-deps "sam2==1.1.0"
# SAMURAI's modified sam2 package (for the samurai policy's parity tests only). It installs a module
# also named `sam2`, so it goes into its own folder, which the tests run in a subprocess.
SAM2_BUILD_CUDA=0 "$PY" -m pip install --no-build-isolation --no-deps --upgrade \
    --target .oracles/samurai "absolutely-not-samurai==1.0.0"
# EdgeTAM's own code (edgetam-dimos, also a module named `sam2`) with the timm release it builds its
# RepViT trunk with, for the EdgeTAM parity tests only, in their own folder (run in a subprocess).
"$PY" -m pip install --no-deps --upgrade --target .oracles/edgetam "edgetam-dimos==1.0.1" "timm==1.0.15"
# EfficientTAM's own code (efficient-track-anything, a module named `sam2` too), likewise.
"$PY" -m pip install --no-deps --upgrade --target .oracles/efficienttam "efficient-track-anything==1.0"
# Headless Chromium for the web page's browser tests (driven by Playwright's Python package with
# executable_path; Playwright's own browser download is never used). Debian's package, where this
# machine has apt-get and the rights to use it; elsewhere the browser tests skip and say why.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
            || echo "install.sh: could not install chromium; the browser tests will be skipped" >&2
    elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
            || echo "install.sh: could not install chromium; the browser tests will be skipped" >&2
    else
        echo "install.sh: no chromium and no apt-get to install it; the browser tests will be skipped" >&2
    fi
fi
