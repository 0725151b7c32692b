#!/usr/bin/env bash
# The GPU checks, as one script for a lent CUDA machine (no network, no Ray there):
# the CUDA parity test, DiT-XL/2 bf16 throughput, GraNd on CUDA, one trial GPU vs CPU.
# Needs the faiss-cpu wheel in .whl/ (pip download faiss-cpu==1.15.1 -d .whl ...) when
# faiss is not installed. Output: stdout and $OUT/gpu.log when OUT is set.
set -uo pipefail
log="${OUT:-/tmp}/gpu.log"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  if ! python3 -c "import faiss" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
  fi
  export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
  python3 -c "import torch, faiss; print('torch', torch.__version__, 'faiss', faiss.__version__)"
  echo "== pytest tests/test_pruning_stats.py (CUDA parity included)"
  timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_pruning_stats.py
  echo "== bench_models --gpu"
  timeout 150 python3 -m benchmarks.bench_models --gpu --iters 20
  echo "== bench_grand on cuda"
  timeout 90 python3 -m benchmarks.bench_grand --device cuda --n 512 --repeats 2
  echo "== bench_gpu_trial"
  timeout 150 python3 -m benchmarks.bench_gpu_trial
} 2>&1 | tee "$log"
