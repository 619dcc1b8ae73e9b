#!/usr/bin/env bash
# One-shot GPU check: the cascade's stages on a CUDA machine without Prefect or MLflow, per-stage wall
# time, pipeline latency fp32 vs bf16, generation accuracy, and bench/bench_decoder.py (evaluation,
# training throughput fp32 vs bf16, sampling latency).
#
#   OUT=/some/dir bash bench/gpu_check.sh            # from the repo root, the wheels in .whl/
#
# Writes at most 7 files to $OUT: log.txt (everything), times.txt ("stage seconds [FAILED|SKIPPED]"),
# metrics.json (each stage's evaluation), pipeline.json, generation.json, decoder_bench.json and
# decoder_samples.png. Every stage has a timeout and the whole run a budget (GPU_CHECK_BUDGET seconds
# from the start): a failed or hung stage is recorded and the later stages still run where they can.
#
# Measured on one H200 (2026-11-26, torch 2.11): the demo cascade's stages 4.3 min (CLIP 38 s, embedding
# 34 s, prior 22 s, decoder 86 s, upsamplers 26 s and 49 s), one 512 px image 0.33 s fp32 against 0.43 s
# bf16 (tiny models); decoder training 390 images/s fp32 against 234 bf16 at batch 16 (measured then by a
# script this one has since replaced by bench_decoder.py).
#
# Environment: OUT (required), GPU_CHECK_PRESET (demo), DEVICE (cuda), PY (python3),
# GPU_CHECK_BUDGET (360), GPU_CHECK_CAP_SCALE (1: multiplies each stage's timeout),
# GPU_CHECK_WORK (/tmp/gpu_check), SKIP_WHEELS=1 (use the
# interpreter's own packages instead of installing .whl/*.whl into /tmp/site). Smoke test on a CPU:
#   OUT=/tmp/gpucheck_out PY=.venv/bin/python SKIP_WHEELS=1 GPU_CHECK_PRESET=smoke DEVICE=cpu \
#     GPU_CHECK_BUDGET=3600 GPU_CHECK_CAP_SCALE=10 bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

: "${OUT:?set OUT to an output folder}"
PY=${PY:-python3}
PRESET=${GPU_CHECK_PRESET:-demo}
DEVICE=${DEVICE:-cuda}
BUDGET=${GPU_CHECK_BUDGET:-360}
CAP_SCALE=${GPU_CHECK_CAP_SCALE:-1}
W=${GPU_CHECK_WORK:-/tmp/gpu_check}
SITE=/tmp/site
START=$(date +%s)
DEADLINE=$((START + BUDGET))

export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10
mkdir -p "$OUT"
rm -rf "$W" && mkdir -p "$W"
TIMES=$OUT/times.txt
: >"$TIMES"
: >"$OUT/log.txt"

main() {
echo "=== gpu_check: preset $PRESET, device $DEVICE, budget ${BUDGET}s, work dir $W, $(date -u +%FT%TZ)"
if [[ ${SKIP_WHEELS:-0} != 1 ]]; then
  t0=$(date +%s)
  if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl; then
    echo "pip install failed: unzipping the wheels into $SITE instead"
    mkdir -p "$SITE"
    for w in .whl/*.whl; do "$PY" -m zipfile -e "$w" "$SITE"; done
  fi
  echo "wheels $(($(date +%s) - t0))" >>"$TIMES"
  export PYTHONPATH=$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

nvidia-smi -L 2>/dev/null || echo "(no nvidia-smi)"
echo "cpus: $(nproc)"
"$PY" - <<'PYEOF' || echo "FAILED environment check"
import sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda available", torch.cuda.is_available(),
      "| torch threads", torch.get_num_threads())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "| bf16", torch.cuda.is_bf16_supported())
import accelerate, diffusers, huggingface_hub, open_clip, pydantic, safetensors, transformers
for m in (accelerate, diffusers, huggingface_hub, open_clip, pydantic, safetensors, transformers):
    print(m.__name__, getattr(m, "__version__", "?"), m.__file__)
PYEOF

# run_stage NAME CAP MIN CMD...: CMD with a timeout of CAP seconds (less if the budget has less left),
# skipped when under MIN seconds are left. Appends "NAME seconds" (or FAILED/SKIPPED) to times.txt.
run_stage() {
  local name=$1 cap=$(($2 * CAP_SCALE)) min=$3 left rc=0 t0 dt
  shift 3
  left=$((DEADLINE - $(date +%s)))
  if ((left < min)); then
    echo "=== SKIPPED $name: ${left}s of the budget left"
    echo "$name - SKIPPED" >>"$TIMES"
    return 1
  fi
  if ((cap > left)); then cap=$left; fi
  echo "=== $name (timeout ${cap}s): $*"
  t0=$(date +%s.%N)
  timeout -k 10 "$cap" "$@" || rc=$?
  dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  if ((rc == 0)); then
    echo "$name $dt" >>"$TIMES"
    echo "=== $name done in ${dt}s"
  else
    echo "$name $dt FAILED rc=$rc$(if ((rc == 124)); then echo ' (timeout)'; fi)" >>"$TIMES"
    echo "=== FAILED $name (rc $rc) after ${dt}s"
  fi
  return $rc
}
have() { [[ -e $1 ]] || { echo "=== missing $1: skipping what needs it"; return 1; }; }

# The decoder's side: the size of the images stored beside the embeddings (as flows/train.py does).
IMAGE_SIZE=$("$PY" -c "import sys; from flows.presets import cascade_settings; print(cascade_settings(sys.argv[1]).embed_image_size)" \
  "$PRESET") || IMAGE_SIZE=64

SHARDS=$W/shards
run_stage clip 150 20 "$PY" -m clip.train --preset "$PRESET" --out "$W/clip" || true
if have "$W/clip/model/clip_spec.json"; then
  for split in train val; do
    run_stage "embed_$split" 90 10 "$PY" -m clip.embed --clip "$W/clip/model" --preset "$PRESET" --split "$split" \
      --out "$SHARDS/$split" --image-size "$IMAGE_SIZE" --device "$DEVICE" || true
  done
fi
if have "$SHARDS/train/index.json" && have "$SHARDS/val/index.json"; then
  run_stage prior 90 20 "$PY" -m prior.train --preset "$PRESET" --shards "$SHARDS/train" --val-shards "$SHARDS/val" \
    --out "$W/prior" || true
  run_stage decoder 180 30 "$PY" -m decoder.train --preset "$PRESET" --shards "$SHARDS/train" --val-shards "$SHARDS/val" \
    --out "$W/decoder" || true
fi
run_stage upsampler1 90 20 "$PY" -m upsamplers.train --stage 1 --preset "$PRESET" --out "$W/upsampler1" || true
run_stage upsampler2 120 20 "$PY" -m upsamplers.train --stage 2 --preset "$PRESET" --out "$W/upsampler2" || true

# The models folder UnclipPipeline.from_models_dir reads: clip/ prior/ decoder/ [upsampler1/ [upsampler2/]].
M=$W/models
mkdir -p "$M"
for stage in clip prior decoder upsampler1 upsampler2; do
  if [[ -d $W/$stage/model ]]; then ln -sfn "$W/$stage/model" "$M/$stage"; fi
done
if [[ ! -e $M/upsampler1 ]]; then rm -f "$M/upsampler2"; fi
echo "models: $(ls "$M" | tr '\n' ' ')"

if have "$M/clip" && have "$M/prior" && have "$M/decoder"; then
  run_stage bench_pipeline 90 30 "$PY" bench/bench_pipeline.py --models "$M" --device "$DEVICE" --repeats 3 \
    --json "$OUT/pipeline.json" || true
fi
if have "$W/decoder/model"; then
  # evaluation at guidance 1 and 3, training throughput fp32 against bf16 autocast, sampling latency
  run_stage bench_decoder 90 20 "$PY" bench/bench_decoder.py --preset "$PRESET" --shards "$SHARDS/train" \
    --val-shards "$SHARDS/val" --out "$W/decoder" --skip-train --device "$DEVICE" --json "$OUT/decoder_bench.json" || true
fi
if have "$M/clip" && have "$M/prior" && have "$M/decoder"; then
  run_stage bench_generation 60 20 "$PY" bench/bench_generation.py --models "$M" --device "$DEVICE" \
    --preset "$PRESET" --prompts 8 --images 2 --json "$OUT/generation.json" || true
fi

"$PY" - "$W" "$OUT/metrics.json" <<'PYEOF' || echo "FAILED collecting the stages' metrics"
import json, sys
from pathlib import Path
w, out = Path(sys.argv[1]), Path(sys.argv[2])
metrics = {p.parent.parent.name: json.loads(p.read_text()) for p in sorted(w.glob("*/model/metrics.json"))}
out.write_text(json.dumps(metrics, indent=2) + "\n")
print("stage metrics:", json.dumps(metrics))
PYEOF
grid=$(ls "$W"/decoder/samples_*.png 2>/dev/null | tail -n 1 || true)
if [[ -n $grid ]]; then cp "$grid" "$OUT/decoder_samples.png"; fi
echo "total $(($(date +%s) - START))" >>"$TIMES"
echo "=== times.txt"
cat "$TIMES"
}

main 2>&1 | tee -a "$OUT/log.txt"
