#!/usr/bin/env bash
# One prepared benchmark for a machine with an NVIDIA GPU (about 5-8 minutes).
#
# Installs hpjax with CUDA 12 JAX and the benchmark extra (PyTorch, Optuna),
# names the GPU, then runs experiments/benchmark.py at GPU sizes: the bench
# CNN on digits 28x28 and the ResNet-style model on CIFAR-shaped data, at
# P = 1, 8 and 64, against PyTorch training the same members one at a time on
# the same GPU; the FLOP count against the measured matmul rate; compile time
# (cold and warm cache) of the default config; and device memory per P. The
# markdown tables go to stdout, every number to $BENCH_JSON.
#
#   bash experiments/gpu_check.sh                 # from the repository root
#   BENCH_JSON=/tmp/gpu.json bash experiments/gpu_check.sh
#   SKIP_INSTALL=1 bash experiments/gpu_check.sh  # the environment is ready
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
BENCH_JSON="${BENCH_JSON:-${TMPDIR:-/tmp}/hpjax_gpu_benchmark.json}"

nvidia-smi --query-gpu=name --format=csv
if [[ -z "${SKIP_INSTALL:-}" ]]; then
  "$PYTHON" -m pip install -q -e ".[cuda12,bench]"
fi
"$PYTHON" -c "import jax; print('jax', jax.__version__, jax.devices())"
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

# JAX and PyTorch share the GPU in one process: no 75% preallocation by JAX,
# and each memory child's figure is what it uses.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONUNBUFFERED=1

# Sizes: whole digits epochs (39 steps of 32) and 32 ResNet steps per timed
# call, so that kernels, not launches, are what is timed; P=64 against P=1
# (the "64 members x N steps" line compares together, hpjax one at a time and
# PyTorch one at a time). The devices part splits 64 members over 1, 2, 4 and
# 8 GPUs where that many are present (counts above are skipped and noted).
timeout 450 "$PYTHON" -m experiments.benchmark \
  --parts=throughput,flops,compile,memory,devices \
  --workloads=digits28,resnet32 \
  --populations=1,8,64 \
  --steps=digits28=39,resnet32=32 \
  --resnet_examples=2048 \
  --alone_members=4 \
  --torch_device=auto --torch_steps=39 --torch_threads=4 \
  --matmul_size=8192 --matmul_reps=10 \
  --memory_populations=1,8,64 \
  --min_time=1.0 --min_reps=5 \
  --device_counts=1,2,4,8 --device_population=64 --device_rounds=1 \
  --out="$BENCH_JSON"
echo "results: $BENCH_JSON"
