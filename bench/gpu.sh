#!/usr/bin/env bash
# Issue 4's GPU measurement as one prepared script, for a machine with a CUDA GPU and a CUDA build of
# torch (plus pytest-benchmark, einops, numpy, tqdm, matplotlib) already installed. From the repo root:
#
#     OUT=gpu-results bash bench/gpu.sh
#
# It writes into $OUT (default bench/gpu-out), keeping going past a failing step so that one run
# brings back everything it could measure:
#   gpu.txt            the GPU, driver and torch version
#   smoke.log          a short `wavenet-names train --device cuda` and `evaluate` (the CUDA training path)
#   bench.log          `pytest bench/test_speed.py`, its CUDA rows: fp32, bf16 and torch.compile
#   results-cuda.json  its pytest-benchmark JSON
#   speedup-cuda.txt   `bench/speedup.py --device cuda`, with the large-batch positions/s
#   RESULTS.md, speedup.png   bench/report.py over this repo's CPU results and the new CUDA ones
# Then copy results-cuda.json, speedup-cuda.txt, RESULTS.md and speedup.png into bench/ and commit.
set -uo pipefail
out=${OUT:-bench/gpu-out}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

if ! "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "error: no CUDA GPU visible to $py's torch" | tee "$out/gpu.txt" >&2
    exit 2
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$py" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } 2>&1 | tee "$out/gpu.txt"

status=0
step() {  # step NAME LOG COMMAND...: run, log, remember a failure, go on
    local name=$1 log=$2; shift 2
    echo "== $name"
    "$@" 2>&1 | tee -a "$log" || { echo "== $name FAILED"; status=1; }
}
step "train on cuda" "$out/smoke.log" "$py" -m wavenet_names train --device cuda --steps 300 --eval-every 100 \
    --out "$out/smoke-run" --overwrite
step "evaluate on cuda" "$out/smoke.log" "$py" -m wavenet_names evaluate --device cuda \
    --checkpoint "$out/smoke-run/model.pt"
rm -rf "$out/smoke-run"  # checkpoints stay behind: only logs and results come back
# CUDA rows only: the CPU tables and floors are this project's 2-core figures, not the GPU host's
step "pytest bench (cuda)" "$out/bench.log" "$py" -m pytest bench/test_speed.py -q -p no:cacheprovider \
    -k "cuda or gpu_variants" --benchmark-json="$out/results-cuda.json"
step "speedup.py --device cuda" "$out/speedup-cuda.txt" "$py" bench/speedup.py --device cuda
step "report" "$out/bench.log" "$py" bench/report.py bench/results-cpu.json "$out/results-cuda.json" \
    --speedup-log bench/speedup-cpu.txt --speedup-log "$out/speedup-cuda.txt" \
    --out "$out/RESULTS.md" --plot "$out/speedup.png"
exit $status
