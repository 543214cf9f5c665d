#!/usr/bin/env bash
# The checks that need a CUDA GPU, as run on a lent GPU machine (see docs/performance.md, "On a GPU"): the CUDA tests,
# then the one-process bench race on the GPU, strided conv4 first (the setting).
#   bash experiments/gpu_check.sh OUT_DIR [PYTHON]
# PYTHON must import torch (CUDA build), learn2learn, higher, pandas, matplotlib, scipy, pytest, tqdm, yaml.
set -uo pipefail
out=${1:?usage: gpu_check.sh OUT_DIR [PYTHON]}
py=${2:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
"$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())' \
  | tee -a "$out/gpu.txt"
timeout 300 "$py" -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out/tests_cuda.log"
for model in conv4_strided conv4; do
  timeout 300 "$py" -m metacompare bench --device cuda --models "$model" --steps 1 5 --repeats 5 \
    --no-progress --out "$out/bench_$model" 2>&1 | tee "$out/bench_$model.log"
  rm -f "$out/bench_$model/bench.png" "$out/bench_$model/sampling.csv"  # redrawn from the csv; a CPU rate
done
