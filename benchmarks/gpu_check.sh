#!/usr/bin/env bash
# benchmarks/gpu_check.py on a lent GPU machine, in under 5 minutes: pretraining views/s (eager float32,
# bf16 autocast, compiled) at batch 4 and 16, the share of step time spent waiting on data with 0/4/8/16
# workers, peak GPU memory, and `segment` against MONAI. Writes $OUT/gpu_check.json (after every
# measurement, so a run cut short still returns what it measured) and $OUT/gpu_check.log.
#
# The machine's image has torch but not dynamic-network-architectures or MONAI (pure-Python wheels,
# 1.7 MB together) nor SimpleITK (too large to carry: the check then uses synthetic volumes). Once, here:
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 -d .whl dynamic_network_architectures==0.4.4 monai==1.6.1
# (.whl/ is git-ignored), then on the device (carry .whl; about 4.5 minutes of device time):
#   OUT=$OUT bash benchmarks/gpu_check.sh
# and copy gpu_check.json into benchmarks/results/. Extra arguments go to gpu_check.py.
set -uo pipefail
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# gpu_check.py keeps to its own budget (240 s of measurements); this is the hard stop
timeout "${LIMIT_S:-285}" python3 benchmarks/gpu_check.py --out "$OUT/gpu_check.json" "$@" 2>&1 | tee "$OUT/gpu_check.log"
