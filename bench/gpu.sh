#!/usr/bin/env bash
# bench/gpu.sh OUT_DIR: the GPU measurements, one bench/run_bench.py process per run (GPU_SH_RUNS).
#
# Random-weight models built with the host's classes on the GPU (no checkpoint, no text encoder weights, nothing
# downloaded):
#   sd15   SD 1.5 UNet (860 M) at 512 px, 50 steps x 10 inner (bench/random_unet.py; random-weight CLIP): DDIM inversion,
#          null-text ours vs the authors' reference with frozen weights, both with memory_saving, the model in fp16 and
#          bf16 (ours and the frozen reference), Direct Inversion with batch-2 (default) and batch-1 calls
#   sdxl   SDXL UNet (2.6 B) at 1024 px, 10 steps x 5 inner: the same without the fp16 and reference memory_saving rows
#   sd35m  SD3.5 Medium MMDiT-X (2.24 B; bench/random_mmdit.py) in bf16 at 1024 px, 28 steps x 10 inner at guidance
#          4.5: flow inversion, null-text with and without memory_saving, fast modes, one P2P edit; text conditioning
#          random tensors of SD3's shapes (context [1, 154, 4096], pooled [1, 2048]). Target: null-text with
#          memory_saving < 60 s and < 20 GB allocator peak on an H200 (the "target" line of its table)
#   qwen   Qwen-Image (full width; 60 blocks = 20.4 B, 41 GB of bf16 weights, on a GPU with >= 100 GiB, else 30
#          blocks; QWEN_LAYERS) in bf16 at 1024 px, 10 steps x 10 inner at guidance 4.0: the same phases; text
#          conditioning random tensors [1, n, 3584]
#   flux   Flux.1-dev (11.9 B; bench/random_mmdit.py) in bf16 at 1024 px, 28 steps at guidance 1 (guidance-distilled: no
#          null-text): flow inversion with the model's guidance input, Direct Inversion (conditional only) and one
#          P2P edit through double- and single-stream blocks; text conditioning random tensors (context [1, 256, 4096],
#          pooled [1, 768]). Target: inversion + Direct Inversion + edit < 30 s on an H200 (the "target" line)
# Reports wall time per phase, the CUDA allocator peak per phase (torch.cuda.max_memory_allocated, weights included),
# model calls against the floor (flow models) and ours/reference ratios and result agreement (SD).
#
# Needs:
#   COMFYUI_PATH   a ComfyUI checkout (tested: 0.3.64 and 0.33.0); this repository is the one the script sits in
#   PYTHON         a Python with a CUDA torch and the host's requirements.txt installed (default: python3)
# Optional:
#   GPU_SH_RUNS="sd15 sdxl sd35m qwen flux"  the runs, in order. All five do not fit one 10-minute command (about 7
#                      minutes for sd15+sdxl and as much for sd35m+qwen are planned, flux about 2): run them as
#                      several commands
#   GPU_SH_TINY=1      check the script without a GPU: the same runs with narrow models (same layouts; SD3.5 depth 2,
#                      Qwen-Image 2 blocks) at 128 px, 3 steps, 2 inner iterations, on the CPU
#   GPU_SH_BUDGET_S    wall-clock budget for all runs in seconds (default 450); each run gets what is left and is
#                      stopped when it runs out (its JSON, rewritten after every phase, keeps the phases done)
#   SD15_STEPS=50 SD15_INNER=10 SD15_SIZE=512 SD15_PRECISION="fp16 bf16"
#   SDXL_STEPS=10 SDXL_INNER=5  SDXL_SIZE=1024 SDXL_PRECISION="bf16"
#   SD35M_STEPS=28 SD35M_INNER=10 SD35M_SIZE=1024 SD35M_DTYPE=bf16
#   QWEN_STEPS=10 QWEN_INNER=10 QWEN_SIZE=1024 QWEN_DTYPE=bf16 QWEN_LAYERS=auto (1..60)
#   FLUX_STEPS=28 FLUX_SIZE=1024 FLUX_DTYPE=bf16
#   SD15_PHASES / SDXL_PHASES / SD35M_PHASES / QWEN_PHASES / FLUX_PHASES  the --phases of each run (python bench/run_bench.py --help)
# Writes OUT_DIR/<run>.json (one bench report each), gpu.json (all + environment), gpu.md (the tables), <run>.log;
# prints gpu.md at the end.
set -uo pipefail
if [ $# -ne 1 ]; then sed -n '2,48p' "$0"; exit 2; fi
OUT=$1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
: "${COMFYUI_PATH:?set COMFYUI_PATH to a ComfyUI checkout}"
if [ ! -d "$COMFYUI_PATH/comfy" ]; then echo "gpu.sh: COMFYUI_PATH=$COMFYUI_PATH holds no comfy/" >&2; exit 2; fi
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 COMFYUI_PATH
TINY=${GPU_SH_TINY:-0}
BUDGET=${GPU_SH_BUDGET_S:-450}
RUNS=${GPU_SH_RUNS:-sd15 sdxl sd35m qwen flux}
START=$(date +%s)

if [ "$TINY" = 1 ]; then
  SCALE=tiny; DEVICE_ARGS=(--cpu)
  SD15_STEPS=${SD15_STEPS:-3}; SD15_INNER=${SD15_INNER:-2}; SD15_SIZE=${SD15_SIZE:-128}
  SDXL_STEPS=${SDXL_STEPS:-3}; SDXL_INNER=${SDXL_INNER:-2}; SDXL_SIZE=${SDXL_SIZE:-128}
  SD35M_STEPS=${SD35M_STEPS:-3}; SD35M_INNER=${SD35M_INNER:-2}; SD35M_SIZE=${SD35M_SIZE:-128}
  QWEN_STEPS=${QWEN_STEPS:-3}; QWEN_INNER=${QWEN_INNER:-2}; QWEN_SIZE=${QWEN_SIZE:-128}
  FLUX_STEPS=${FLUX_STEPS:-3}; FLUX_SIZE=${FLUX_SIZE:-128}
else
  SCALE=full; DEVICE_ARGS=()
  if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu.sh: $PY sees no CUDA GPU (torch.cuda.is_available() is False); GPU_SH_TINY=1 checks the script on the CPU" >&2
    exit 3
  fi
  SD15_STEPS=${SD15_STEPS:-50}; SD15_INNER=${SD15_INNER:-10}; SD15_SIZE=${SD15_SIZE:-512}
  SDXL_STEPS=${SDXL_STEPS:-10}; SDXL_INNER=${SDXL_INNER:-5}; SDXL_SIZE=${SDXL_SIZE:-1024}
  SD35M_STEPS=${SD35M_STEPS:-28}; SD35M_INNER=${SD35M_INNER:-10}; SD35M_SIZE=${SD35M_SIZE:-1024}
  QWEN_STEPS=${QWEN_STEPS:-10}; QWEN_INNER=${QWEN_INNER:-10}; QWEN_SIZE=${QWEN_SIZE:-1024}
  FLUX_STEPS=${FLUX_STEPS:-28}; FLUX_SIZE=${FLUX_SIZE:-1024}
fi
SD15_PRECISION=${SD15_PRECISION:-fp16 bf16}
SDXL_PRECISION=${SDXL_PRECISION:-bf16}
SD15_PHASES=${SD15_PHASES:-reference,memory_saving,reference_memory_saving,precision,fast}
SDXL_PHASES=${SDXL_PHASES:-reference,memory_saving,precision,fast}
SD35M_DTYPE=${SD35M_DTYPE:-bf16}
QWEN_DTYPE=${QWEN_DTYPE:-bf16}
QWEN_LAYERS=${QWEN_LAYERS:-auto}
SD35M_PHASES=${SD35M_PHASES:-memory_saving,fast,edit}
QWEN_PHASES=${QWEN_PHASES:-memory_saving,fast,edit}
FLUX_DTYPE=${FLUX_DTYPE:-bf16}
FLUX_PHASES=${FLUX_PHASES:-edit}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "repo: $ROOT ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
  echo "comfyui: $COMFYUI_PATH ($(sed -n 's/^__version__ *= *["'\'']\([^"'\'']*\)["'\''].*/\1/p' "$COMFYUI_PATH/comfyui_version.py" 2>/dev/null))"
  "$PY" -c 'import torch; print("torch:", torch.__version__, "cuda:", torch.version.cuda, "device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")'
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
  echo "mode: $SCALE; runs: $RUNS"
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

run() {  # name family steps inner size phases precisions [more run_bench.py arguments]
  local name=$1 fam=$2 steps=$3 inner=$4 size=$5 phases=$6 precs=$7
  shift 7
  local left=$(( BUDGET - ($(date +%s) - START) ))
  if [ "$left" -lt 20 ]; then echo "gpu.sh: no time left for $name (budget ${BUDGET}s)"; return; fi
  local pargs=()
  for p in $precs; do pargs+=(--precision "$p"); done
  echo "gpu.sh: $name: $fam $SCALE, $size px, $steps steps, inner $inner, phases $phases, precision ${precs:-none} $*; ${left}s left"
  timeout -k 10 "$left" "$PY" "$ROOT/bench/run_bench.py" "${DEVICE_ARGS[@]}" --random-unet "$fam" --random-scale "$SCALE" \
    --size "$size" --steps "$steps" --inner "$inner" --phases "$phases" "${pargs[@]}" "$@" \
    --json "$OUT/$name.json" --markdown "$OUT/$name.md" > "$OUT/$name.log" 2>&1
  local rc=$?
  grep -E '^  |^bench:' "$OUT/$name.log" | grep -v '^bench: warm' || true
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then echo "gpu.sh: $name stopped by the time budget (rc $rc); the phases done are kept";
  elif [ $rc -ne 0 ]; then echo "gpu.sh: $name failed (rc $rc); last lines of $OUT/$name.log:"; tail -20 "$OUT/$name.log"; fi
}

QWEN_LAYER_ARGS=()
if [ "$QWEN_LAYERS" != auto ] && [ "$SCALE" = full ]; then QWEN_LAYER_ARGS=(--random-layers "$QWEN_LAYERS"); fi
for name in $RUNS; do
  case $name in
    sd15) run sd15 sd15 "$SD15_STEPS" "$SD15_INNER" "$SD15_SIZE" "$SD15_PHASES" "$SD15_PRECISION" ;;
    sdxl) run sdxl sdxl "$SDXL_STEPS" "$SDXL_INNER" "$SDXL_SIZE" "$SDXL_PHASES" "$SDXL_PRECISION" ;;
    sd35m) run sd35m sd35m "$SD35M_STEPS" "$SD35M_INNER" "$SD35M_SIZE" "$SD35M_PHASES" "" --model-dtype "$SD35M_DTYPE" ;;
    qwen) run qwen qwen-image "$QWEN_STEPS" "$QWEN_INNER" "$QWEN_SIZE" "$QWEN_PHASES" "" --model-dtype "$QWEN_DTYPE" \
            "${QWEN_LAYER_ARGS[@]}" ;;
    flux) run flux flux-dev "$FLUX_STEPS" 0 "$FLUX_SIZE" "$FLUX_PHASES" "" --model-dtype "$FLUX_DTYPE" ;;
    *) echo "gpu.sh: unknown run '$name' in GPU_SH_RUNS (choose from: sd15 sdxl sd35m qwen flux)" >&2 ;;
  esac
done

"$PY" - "$OUT" "$ROOT" $RUNS <<'EOF'
import json, os, sys
out, root, runs = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.path.insert(0, os.path.join(root, "bench"))
from run_bench import render_markdown  # noqa: E402

merged = {"environment": open(os.path.join(out, "environment.txt")).read().splitlines(), "runs": {}}
md = ["# bench/gpu.sh", "", "```", *merged["environment"], "```", ""]
for name in runs:
    path = os.path.join(out, f"{name}.json")
    if not os.path.exists(path):
        md += [f"### {name}: no result (see {name}.log)", ""]
        continue
    with open(path) as f:
        report = json.load(f)
    merged["runs"][name] = report
    md.append(render_markdown(report))
    if report.get("partial"):
        md.append("(partial: the run stopped before its last phase)\n")
with open(os.path.join(out, "gpu.json"), "w") as f:
    json.dump(merged, f, indent=2)
with open(os.path.join(out, "gpu.md"), "w") as f:
    f.write("\n".join(md))
EOF
echo
cat "$OUT/gpu.md"
echo "gpu.sh: $(( $(date +%s) - START ))s in all; wrote $OUT/gpu.json and $OUT/gpu.md"
