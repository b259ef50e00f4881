#!/usr/bin/env bash
# The GPU measurement as one prepared script, for a machine with a CUDA GPU and a CUDA build of
# torch (plus pytest-benchmark, einops, numpy, tqdm, matplotlib) already installed. From the repo root:
#
#     OUT=gpu-results bash bench/gpu.sh
#
# It finishes within 6 minutes, each step under a time limit and keeping going past a failing one.
# Results are appended to their files under $OUT (default bench/gpu-out) line by line as they are
# measured, the most important first, so that a run cut short still brings back what it measured:
#   gpu.log              the GPU, driver and torch version, and every step's warnings and errors
#   speedup-cuda.txt     `bench/speedup.py --device cuda`, in this order:
#                        1. conv over per-position at blocks 8, 64 and 256, at 256 and 8192 names a
#                           step, eager (fast to measure);
#                        2. the default model's whole training step (forward, backward, AdamW) at
#                           262144 names, fp32 and bf16, eager and compiled (train --compile: fixed-shape
#                           buckets, CUDA graphs), with the bytes a position moves and the bandwidth;
#                        3. cached sampling against recomputing every window, block 256, 8192 names;
#                        4. the block table again, both models compiled and captured as CUDA graphs
#   train-cuda.txt       `wavenet-names train --device cuda --compile`, then `evaluate`: the CLI end to end
#   profile-cuda.txt     `bench/profile_step.py` at 256 names, compiled: where a small step's time goes
#   RESULTS.md, speedup.png     bench/report.py over this repo's CPU results and the new log
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
    echo "== $name ($(date +%T))" | tee -a "$out/gpu.log"
    timeout -s INT -k 10 "$limit" "$@" 2>>"$out/gpu.log" | tee -a "$log" \
        || { echo "== $name FAILED" | tee -a "$out/gpu.log"; status=1; }
}
speedup=("$py" bench/speedup.py --device cuda --repeats 5)
log="$out/speedup-cuda.txt"
step 40 "1. eager speedup per block" "$log" "${speedup[@]}" --blocks 8 64 256 --names 256 8192 --large-batch
step 90 "2. whole step, 262144 names" "$log" "${speedup[@]}" --blocks --large-batch 262144 --precisions fp32 bf16 \
    --compile
step 25 "3. cached sampling" "$log" "${speedup[@]}" --blocks --large-batch --sample-names 8192
step 100 "4. compiled speedup per block" "$log" "${speedup[@]}" --blocks 8 64 256 --names 256 8192 --large-batch \
    --compile
step 40 "train --compile on cuda" "$out/train-cuda.txt" "$py" -m wavenet_names train --device cuda --compile \
    --steps 2000 --eval-every 500 --samples 5 --out "$out/smoke-run" --overwrite
step 15 "evaluate on cuda" "$out/train-cuda.txt" "$py" -m wavenet_names evaluate --device cuda \
    --checkpoint "$out/smoke-run/model.pt"
rm -rf "$out/smoke-run"  # checkpoints stay behind: only logs and results come back
step 25 "profile, 256 names, compiled" "$out/profile-cuda.txt" "$py" bench/profile_step.py --device cuda \
    --names 256 --compile
step 15 "report" "$out/gpu.log" "$py" bench/report.py bench/results-cpu.json --speedup-log bench/speedup-cpu.txt \
    --speedup-log "$log" --out "$out/RESULTS.md" --plot "$out/speedup.png"
echo "== done ($(date +%T)), status $status" | tee -a "$out/gpu.log"
exit $status
