#!/usr/bin/env bash
# The GPU figures of issue 16, in one run for a session that has a CUDA device (random weights;
# about 5 minutes on one H200, each part under its own time limit so that one stuck part does
# not take the whole budget). Run from the repository root:
#
#     bash bench/gpu_check.sh            # writes its report to $OUT/gpu_check.txt when $OUT is set
#
# Targets: 3DSAM-adapter ViT-B first click <= 40 ms and refinement <= 5 ms (a warm session,
# 512x512x300 volume); SAM2.1-tiny propagation at 512 px >= 100 slices/s and >= 2x the stock
# predictor fed from JPEG frames; peak device memory flat from 50 to 200 slices.
set -uo pipefail
cd "$(dirname "$0")/.."
report="${OUT:-/tmp}/gpu_check.txt"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TQDM_DISABLE=1
{
  echo "== $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo 'no git')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0))"

  echo; echo "== 3DSAM-adapter ViT-B on CUDA: warm session, first click on a new crop, 10 refinements"
  # bfloat16 is the session's "auto" precision on CUDA; float32 (TF32 off) beside it.
  timeout 240 python bench/adapter_click.py --devices cuda --sizes vit_b --precisions bfloat16,float32 \
    --repeats 10 --warmup --threads 8 || echo "adapter bench: exit $?"

  echo; echo "== SAM2.1-tiny at 512 px on CUDA, 50/100/200 slices, against the stock predictor (JPEG frames)"
  timeout 330 python bench/sam2_propagation.py --device cuda --slices 50 100 200 --warm --stages \
    --encode-batch 8 || echo "sam2 bench: exit $?"
} 2>&1 | tee "$report"
