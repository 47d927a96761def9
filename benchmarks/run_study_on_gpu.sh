#!/usr/bin/env bash
# The transfer study v2 on a one-GPU machine whose Python lacks SimpleITK and
# dynamic-network-architectures: the DNA wheel travels in .whl/, the arrays in study_data/
# (benchmarks/study_data.py), and benchmarks/transfer.py runs without SimpleITK.
# Usage: OUT=results_dir DEADLINE_MIN=6.5 WORKERS=14 bash benchmarks/run_study_on_gpu.sh [extra args]
set -uo pipefail
OUT="${OUT:-/tmp/study_out}"
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 PGL_STUDY_NO_SIMPLEITK=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, dynamic_network_architectures; print('torch', torch.__version__, torch.cuda.is_available())"
WORK=/tmp/study_work
mkdir -p "$WORK"
if [ -f study_prev/work.tgz ]; then tar xzf study_prev/work.tgz -C "$WORK"; fi   # records of an earlier call
python3 benchmarks/transfer.py --data study_data --device cuda --workers "${WORKERS:-14}" --threads 1 \
  --deadline-min "${DEADLINE_MIN:-6.5}" --work "$WORK" --out "$OUT" "$@" 2>&1 | grep -v "pretrain:" | tee "$OUT/study.log"
# records, pretraining metrics and summaries, exported encoders (no checkpoints, no fine-tuning runs)
tar czf "$OUT/work.tgz" -C "$WORK" --exclude='*.pt' --exclude='*/finetune' .
ls -la "$OUT"
