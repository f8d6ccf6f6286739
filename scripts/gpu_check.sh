#!/usr/bin/env bash
# The device check of issue 16, for a lent GPU machine (one H200; no network). About 7 minutes.
#
# Here, once, before asking for the machine (copies the reference sam2==1.1.0 and its pure-Python
# dependencies out of this environment, since the machine cannot install them):
#     scripts/gpu_check.sh --prepare
# Then one device run (the `run` tool), carrying that folder:
#     command: bash scripts/gpu_check.sh     carry: [".gpu_site"]     timeout_s: 560
#
# On the machine it uses python3 (which holds PyTorch, Triton, numpy, pillow, tqdm there), with
# src/ and .gpu_site/ on PYTHONPATH; where .gpu_site is missing it installs sam2 only if pip can reach
# a registry, else the parity tests skip. Phases, each under its own timeout:
#   1. pytest -m gpu tests/model/test_gpu.py (CUDA parity, bfloat16 deviation, compiled recompiles)  <= 220 s
#   2. benchmarks/session_speed.py --device cuda: tiny and large at 1024, 1/3/10 objects, float32 and
#      bfloat16, memory_batch 1 and all, the reference's plain predictor; peak memory 100 vs 1000 frames  <= 200 s
#   3. the same, compiled (maskvos --compile; tiny and large, 1 and 10 objects, memory_batch all)     <= 120 s
#   4. with time left, the reference's vos_optimized (max-autotune) build for tiny                     the rest
# Logs and JSON go to $OUT (default /tmp/gpu_check; 8 files: 4 logs, 3 JSON, summary.txt); a summary
# is printed at the end.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD

if [ "${1:-}" = "--prepare" ]; then
    mkdir -p .gpu_site
    python3 - <<'EOF'
import importlib, importlib.metadata as md, pathlib, shutil
dest = pathlib.Path(".gpu_site")
for dist, module in [("sam2", "sam2"), ("hydra-core", "hydra"), ("omegaconf", "omegaconf"),
                     ("antlr4-python3-runtime", "antlr4"), ("iopath", "iopath")]:
    pkg = pathlib.Path(importlib.import_module(module).__file__).parent
    shutil.copytree(pkg, dest / module, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"))
    info = pathlib.Path(md.distribution(dist)._path)
    shutil.copytree(info, dest / info.name, dirs_exist_ok=True)
    print(f"copied {dist} {md.version(dist)}")
EOF
    grep -qx '/.gpu_site/' .git/info/exclude 2>/dev/null || echo '/.gpu_site/' >> .git/info/exclude
    du -sh .gpu_site
    exit 0
fi

OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT/src:$ROOT/.gpu_site:$ROOT/tests${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
BEGAN=$(date +%s)
elapsed() { echo $(( $(date +%s) - BEGAN )); }
BUDGET=${GPU_CHECK_BUDGET:-500}   # seconds for all phases (the run's timeout leaves a margin)

{
    echo "== machine"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -2
    $PY -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee /tmp/gpu_check_machine.txt

if ! $PY -c "import sam2, hydra" 2>/dev/null; then
    if timeout 20 $PY -m pip download --no-deps -q -d /tmp/gpu_check_probe sam2==1.1.0 >/dev/null 2>&1; then
        echo "== installing sam2==1.1.0 (the reference) from the registry"
        timeout 120 $PY -m pip install -q --target /tmp/gpu_check_site sam2==1.1.0 hydra-core iopath --no-deps \
            && timeout 60 $PY -m pip install -q --target /tmp/gpu_check_site omegaconf antlr4-python3-runtime==4.9.3 --no-deps \
            && export PYTHONPATH="$PYTHONPATH:/tmp/gpu_check_site"
    else
        echo "== sam2 is not importable and no registry answers: the parity tests will skip (run --prepare and carry .gpu_site)"
    fi
fi

phase() {  # phase NAME SECONDS COMMAND...: run under a timeout, log to $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    local left=$(( BUDGET - $(elapsed) ))
    if [ "$left" -lt 30 ]; then echo "== $name: skipped (no time left)" | tee "$OUT/$name.log"; return; fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (at most ${limit}s, ${left}s left)"
    timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "   $name: exit $rc after $(elapsed)s in all"
    echo "$name $rc" >> /tmp/gpu_check_status.txt
}

: > /tmp/gpu_check_status.txt
phase pytest_gpu 220 $PY -m pytest -m gpu tests/model/test_gpu.py -q -s -rA -p no:cacheprovider
phase bench 200 $PY benchmarks/session_speed.py --device cuda --models sam2.1-tiny sam2.1-large \
    --objects 1 3 10 --dtypes float32 bfloat16 --compile off --memory-batch 1 all --frames 10 \
    --memory-lengths 100 1000 --json "$OUT/bench.json"
phase bench_compiled 120 $PY benchmarks/session_speed.py --device cuda --models sam2.1-tiny sam2.1-large \
    --objects 1 10 --dtypes float32 bfloat16 --compile on --memory-batch all --frames 10 --no-reference \
    --memory-lengths --json "$OUT/bench_compiled.json"
phase bench_reference_compiled 200 $PY benchmarks/session_speed.py --device cuda --models sam2.1-tiny \
    --objects 1 10 --dtypes bfloat16 --compile off --memory-batch all --frames 10 --reference-compiled \
    --memory-lengths --json "$OUT/bench_reference_compiled.json"

{
    echo
    echo "================ summary ($(elapsed) s) ================"
    cat /tmp/gpu_check_machine.txt
    echo "-- phases (name exit-code; 124 = timed out)"
    cat /tmp/gpu_check_status.txt
    echo "-- gpu tests"
    grep -E "^(PASSED|FAILED|SKIPPED|ERROR)|passed|failed|^\[cuda" "$OUT/pytest_gpu.log" | tail -n 30
    for b in bench bench_compiled bench_reference_compiled; do
        [ -f "$OUT/$b.log" ] || continue
        echo "-- $b"
        grep -E "^\||^frames per|^peak|^reference|^note|Error|error" "$OUT/$b.log" | tail -n 60 || tail -n 8 "$OUT/$b.log"
    done
} 2>&1 | tee "$OUT/summary.txt"
