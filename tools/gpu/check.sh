#!/usr/bin/env bash
# On a GPU machine: the gpu-marked tests, then the GPU benchmark suite (bf16, with MFU).
#
#   bash tools/gpu/check.sh [all|tests|bench] [tools/bench/train.py arguments...]
#   e.g. bash tools/gpu/check.sh bench --shapes 1.3B
#
# Logs and JSON go to $OUT (default ./gpu-check): gpu.txt, gpu_tests.log, gpu_bench.log,
# gpu_bench.json. Where DeepSpeed is not installed (an offline machine with only PyTorch), the
# wheels from tools/gpu/offline_kit.sh in $KIT (default .whl) are installed under /tmp first.
# DeepSpeed JIT-builds its fused Adam with nvcc on first use (a minute or two, once per machine).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu-check}
KIT=${KIT:-.whl}
PY=${PY:-python3}
WHAT=${1:-all}
[ $# -gt 0 ] && shift
mkdir -p "$OUT"
if ! "$PY" -c "import deepspeed" >/dev/null 2>&1; then
  if [ ! -d "$KIT" ]; then
    echo "check.sh: DeepSpeed is not installed and $KIT/ is missing: run 'bash tools/gpu/offline_kit.sh'" \
         "where pip works and bring $KIT/ along" >&2
    exit 2
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/megatron_lite_kit "$KIT"/*.whl || exit 2
  export PYTHONPATH=/tmp/megatron_lite_kit${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
       WANDB_MODE=offline TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
"$PY" -c "import torch, deepspeed, transformers; print('torch', torch.__version__, 'deepspeed', \
deepspeed.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"

status=0
if [ "$WHAT" != bench ]; then
  "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/gpu 2>&1 | tee "$OUT/gpu_tests.log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
fi
if [ "$WHAT" != tests ]; then
  "$PY" tools/bench/train.py --suite gpu --out "$OUT/gpu_bench.json" "$@" 2>&1 | tee "$OUT/gpu_bench.log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
fi
exit $status
