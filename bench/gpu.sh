#!/usr/bin/env bash
# The GPU measurement as one prepared script, for a machine with a CUDA GPU and a CUDA build of
# torch (plus pytest-benchmark, einops, numpy, tqdm, matplotlib) already installed. From the repo root:
#
#     OUT=gpu-results bash bench/gpu.sh
#
# It writes into $OUT (default bench/gpu-out), most important first, each step under a time limit and
# keeping going past a failing one, so that one run on a short lease brings back all it could measure:
#   gpu.log              the GPU, driver and torch version, the training run and the pytest output,
#                        and every step's warnings and errors
#   train-cuda.txt       `wavenet-names train` at 65536 names a step in TF32 and bf16, eager and
#                        --compile: the trainer's own positions/s
#   speedup-cuda.txt     `bench/speedup.py --device cuda`: the default model at 262144 names in TF32 and
#                        bf16, eager and compiled side by side; then the speedup per block size at 256
#                        and 8192 names, and the large-batch positions/s in fp32, TF32 and bf16
#   profile-cuda.txt     `bench/profile_step.py` at two large batches (eager and compiled) and a small
#                        one: where a step's time goes
#   results-cuda.json    `pytest bench/test_speed.py`, its CUDA rows: fp32 and bf16
#   results-cuda-compile.json   its torch.compile rows (last: compiling takes the longest)
#   RESULTS.md, speedup.png     bench/report.py over this repo's CPU results and the new CUDA ones
# Then copy all but gpu.log into bench/ and commit.
set -uo pipefail
out=${OUT:-bench/gpu-out}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

if ! "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "error: no CUDA GPU visible to $py's torch" | tee "$out/gpu.log" >&2
    exit 2
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$py" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } 2>&1 | tee "$out/gpu.log"

status=0
step() {  # step SECONDS NAME LOG COMMAND...: run under a time limit, log, remember a failure, go on
    # stdout goes to LOG, stderr (warnings, tracebacks) to gpu.log, so that results files stay clean
    local limit=$1 name=$2 log=$3; shift 3
    echo "== $name" | tee -a "$out/gpu.log"
    timeout -s INT -k 20 "$limit" "$@" 2>>"$out/gpu.log" | tee -a "$log" \
        || { echo "== $name FAILED" | tee -a "$out/gpu.log"; status=1; }
}
step 90 "train on cuda" "$out/gpu.log" "$py" -m wavenet_names train --device cuda --steps 300 --eval-every 100 \
    --out "$out/smoke-run" --overwrite
step 30 "evaluate on cuda" "$out/gpu.log" "$py" -m wavenet_names evaluate --device cuda \
    --checkpoint "$out/smoke-run/model.pt"
rm -rf "$out/smoke-run"  # checkpoints stay behind: only logs and results come back
# the trainer's own throughput at a large batch (sampling, forward, backward, AdamW), per precision;
# its evaluation lines report positions/s since the last one: the later ones are past warm-up
for run in "tf32" "bf16" "tf32 --compile" "bf16 --compile"; do
    set -- $run
    echo "# --precision $run" >> "$out/train-cuda.txt"
    step 120 "train --batch-size 65536 --precision $run" "$out/train-cuda.txt" "$py" -m wavenet_names train \
        --device cuda --batch-size 65536 --steps 60 --eval-every 20 --precision "$@" --samples 0 \
        --out "$out/large-run" --overwrite
done
rm -rf "$out/large-run"
# the headline figure: the default model's training throughput at a large batch, eager and compiled side by side
step 150 "speedup.py --device cuda --compile" "$out/speedup-cuda.txt" "$py" bench/speedup.py --device cuda \
    --blocks --large-batch 262144 --precisions tf32 bf16 --compile
step 60 "profile, 262144 names, bf16" "$out/profile-cuda.txt" "$py" bench/profile_step.py --device cuda \
    --names 262144 --precision bf16
step 120 "profile, 262144 names, bf16, compiled" "$out/profile-cuda.txt" "$py" bench/profile_step.py \
    --device cuda --names 262144 --precision bf16 --compile
step 120 "speedup.py --device cuda" "$out/speedup-cuda.txt" "$py" bench/speedup.py --device cuda
# 256 names leave an H200 idle, waiting on kernel launches: the same table at a batch that fills it
step 120 "speedup.py --device cuda --names 8192" "$out/speedup-cuda.txt" "$py" bench/speedup.py --device cuda \
    --names 8192 --large-batch
step 60 "profile, 256 names" "$out/profile-cuda.txt" "$py" bench/profile_step.py --device cuda --names 256
step 60 "profile, 65536 names" "$out/profile-cuda.txt" "$py" bench/profile_step.py --device cuda --names 65536
# CUDA rows only: the CPU tables and speedup floors are this project's 2-core figures, not the GPU host's
bench=("$py" -m pytest bench/test_speed.py -q -p no:cacheprovider)
# with pytest-timeout, a compile that runs too long fails its own test and the others still report
"$py" -c "import pytest_timeout" 2>/dev/null && bench+=(--timeout 75)
step 150 "pytest bench (cuda, fp32 and bf16)" "$out/gpu.log" "${bench[@]}" -k "cuda or (gpu_variants and not compile)" \
    --benchmark-json="$out/results-cuda.json"
step 200 "pytest bench (cuda, torch.compile)" "$out/gpu.log" "${bench[@]}" -k "gpu_variants and compile" \
    --benchmark-json="$out/results-cuda-compile.json"
jsons=()
for f in "$out/results-cuda.json" "$out/results-cuda-compile.json"; do [ -s "$f" ] && jsons+=("$f"); done
step 60 "report" "$out/gpu.log" "$py" bench/report.py bench/results-cpu.json "${jsons[@]}" \
    --speedup-log bench/speedup-cpu.txt --speedup-log "$out/speedup-cuda.txt" \
    --out "$out/RESULTS.md" --plot "$out/speedup.png"
exit $status
