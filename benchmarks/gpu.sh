#!/usr/bin/env bash
# One command for a GPU machine (about 10 minutes at most): installs the CUDA build of
# TensorFlow, then measures extraction at each precision with a larger batch, and training.
# It needs pip access to TensorFlow's wheels (a few hundred MB); a machine without network
# must have TensorFlow 2.16+ installed already (skip `make venv` then).
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
make venv TF=gpu
for precision in float32 mixed_float16 mixed_bfloat16; do
  .venv/bin/python benchmarks/extract.py --videos 64 --batch-clips 64 --decode-workers 8 \
    --precision "$precision"
done
.venv/bin/python benchmarks/train.py --quick
