#!/usr/bin/env bash
# One prepared benchmark for a machine with an NVIDIA GPU (at most 10 minutes),
# runnable as it is on a machine that reaches no package registry.
#
# hpjax runs from this source tree (PYTHONPATH=$PWD): nothing is installed
# from a package index. The machine's own JAX (with its CUDA plugin), Flax,
# optax, orbax, chex, absl-py, scikit-learn and PyTorch are used. The two
# pure-Python packages such a machine may lack, ml_collections (the config
# files) and tensorboardX (a run's event files), come as wheels carried with
# the tree; download them once where PyPI is reached:
#
#   pip download ml_collections tensorboardX --no-deps -d .whl
#
# (.whl/ is ignored by git: carry it with the working tree, or point
# HPJAX_WHEELS at another folder of wheels.) When either import fails, the
# wheels are installed with `pip install --no-index --no-deps --target`
# into a folder of the script's own (HPJAX_SITE) put first on PYTHONPATH:
# nothing is written into the machine's Python.
#
# Steps, each with its own time limit (620 s in all: the machine's 10
# minutes; the last run took 312 s without levers) and every line also in
# $BENCH_DIR/gpu_check.log; a step that fails or runs out of time is reported
# and the next one still runs, and the exit status says whether any failed:
#   tune        the README's main job (digits_pbt) through the real launcher,
#               on the GPU: hpjax runs on the machine's jax end to end
#               (population, controller, orbax checkpoints, TensorBoard
#               events, report), its wall time printed;
# then separate `python -m experiments.benchmark` runs, JSON in
# $BENCH_DIR/STEP.json:
#   throughput_slices, throughput_xla
#               the bench CNN on digits 28x28 and the ResNet-style model on
#               CIFAR-shaped data at P = 1, 8 and 64, once per convolution
#               implementation (conv_impl slices, then xla: on an H200 in
#               float32 slices was 1.9-6.5x faster), against PyTorch training the same members
#               one at a time on the same GPU; FLOPs per member-step against
#               the measured matmul rate;
#   throughput_bf16
#               both workloads at P = 64 with each convolution
#               implementation, computing in bfloat16 (compute_dtype; float32
#               parameters), member-steps/s only;
#   levers      the engine's settings on 64 members of the 28x28 bench CNN,
#               timed in turn: member chunks, a shared order, one activation
#               and family, and the same CNN as a user's model (hpjax.nn.Conv
#               with its default impl='auto', whose per-member dispatch has
#               not been timed on a GPU);
#   compile     compile time (cold and warm cache) of the default config;
#   memory      device memory and state per P;
#   devices     64 members split over 1, 2, 4 and 8 GPUs where present
#               (counts above the GPUs present are skipped and noted).
#
#   bash experiments/gpu_check.sh                     # from anywhere
#   BENCH_DIR=/tmp/gpu bash experiments/gpu_check.sh  # where the results go
#   bash experiments/gpu_check.sh --dry-run           # rehearsal on a CPU (below)
#
# --dry-run (or DRY_RUN=1) rehearses every step on the CPU (JAX_PLATFORMS=cpu)
# with tiny sizes and the same flags otherwise: the wheel check, the version
# lines, a 2-epoch tune and the seven benchmark steps (4-5 minutes on 2
# busy cores).
# FORCE_WHEELS=1 installs the wheels even where the imports work, to
# rehearse that step too. PYTHON names the interpreter (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."

DRY_RUN="${DRY_RUN:-}"
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    *) echo "gpu_check.sh: unknown argument $arg (allowed: --dry-run)" >&2; exit 2 ;;
  esac
done

PYTHON="${PYTHON:-python3}"
BENCH_DIR="${BENCH_DIR:-${TMPDIR:-/tmp}/hpjax_gpu_check}"
HPJAX_WHEELS="${HPJAX_WHEELS:-$PWD/.whl}"
HPJAX_SITE="${HPJAX_SITE:-${TMPDIR:-/tmp}/hpjax_site}"
TUNE_DIR="${TUNE_DIR:-$BENCH_DIR/tune_run}"  # the tune step's workdir (replaced)
mkdir -p "$BENCH_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# JAX and PyTorch share the GPU in one process: no 75% preallocation by JAX,
# and each memory child's figure is what it uses.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONUNBUFFERED=1

# Sizes. GPU: whole digits epochs (39 steps of 32) and 32 ResNet steps per
# timed call, so that kernels, not launches, are what is timed; P=64 against
# P=1 (the "64 members x N steps" line compares together, hpjax one at a
# time and PyTorch one at a time). Dry run: the same steps at sizes a CPU
# runs in seconds.
declare -A LIMIT  # seconds per step
if [[ -n "$DRY_RUN" ]]; then
  TUNE=(--config.population=4 --config.epochs=2)
  SIZES=(--populations=1,2 --steps=digits28=2,resnet32=1 --resnet_examples=256
         --alone_members=2 --torch_device=cpu --torch_steps=4 --torch_threads=1
         --matmul_size=256 --matmul_reps=2 --min_time=0 --min_reps=2)
  BF16=(--populations=2)
  LEVERS=(--lever_population=2 --lever_rounds=1)
  COMPILE=(--compile_overrides=population=4 --compile_overrides=model.width=4
           --compile_overrides=model.dense=8 --compile_overrides=data.max_train=256)
  MEMORY=(--memory_populations=1,2)
  DEVICES=(--device_counts=1,2 --device_population=4 --device_rounds=1)
  LIMIT=([tune]=300 [throughput_slices]=300 [throughput_xla]=300 [throughput_bf16]=300
         [levers]=300 [compile]=300 [memory]=300 [devices]=300)
else
  TUNE=()
  SIZES=(--populations=1,8,64 --steps=digits28=39,resnet32=32 --resnet_examples=2048
         --alone_members=4 --torch_device=auto --torch_steps=39 --torch_threads=4
         --matmul_size=8192 --matmul_reps=10 --min_time=1.0 --min_reps=5)
  BF16=(--populations=64)
  LEVERS=(--lever_population=64 --lever_rounds=3)
  COMPILE=()
  MEMORY=(--memory_populations=1,8,64)
  DEVICES=(--device_counts=1,2,4,8 --device_population=64 --device_rounds=1)
  LIMIT=([tune]=80 [throughput_slices]=120 [throughput_xla]=100 [throughput_bf16]=70
         [levers]=90 [compile]=75 [memory]=55 [devices]=30)
fi
# One new persistent compilation cache for the steps (removed at the end):
# the memory and devices children load the programs the throughput steps
# compiled (the compile step measures cold and warm caches of its own).
CACHE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/hpjax_gpu_check_cache.XXXXXX")"
trap 'rm -rf "$CACHE_DIR"' EXIT
CACHE=(--cache_dir="$CACHE_DIR")

packages() {  # ml_collections and tensorboardX importable, from the wheels if need be
  if [[ -n "${FORCE_WHEELS:-}" ]] || ! "$PYTHON" -c "import ml_collections, tensorboardX" \
      2>/dev/null; then
    shopt -s nullglob
    local wheels=("$HPJAX_WHEELS"/*.whl)
    shopt -u nullglob
    if (( ${#wheels[@]} == 0 )); then
      echo "ml_collections or tensorboardX is missing and $HPJAX_WHEELS holds no wheels;" \
           "where PyPI is reached: pip download ml_collections tensorboardX --no-deps -d .whl"
      return 1
    fi
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade \
      --target "$HPJAX_SITE" "${wheels[@]}" || return 1
    export PYTHONPATH="$HPJAX_SITE:$PYTHONPATH"
    echo "installed into $HPJAX_SITE: ${wheels[*]##*/}"
  fi
  "$PYTHON" -c "import ml_collections, tensorboardX
print('ml_collections', ml_collections.__file__)
print('tensorboardX', tensorboardX.__version__, tensorboardX.__file__)"
}

failed=()
limited() {  # limited NAME COMMAND...: the command within LIMIT[NAME] s, a failure noted
  local name="$1" limit="${LIMIT[$1]}"
  shift
  echo "== $name (at most ${limit} s)"
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - start)) s"
  if (( rc != 0 )); then
    failed+=("$name (exit $rc$( (( rc == 124 )) && echo ": out of time"))")
  fi
}

step() {  # step NAME FLAGS...: one benchmark invocation, its JSON kept as NAME.json
  local name="$1"
  shift
  limited "$name" "$PYTHON" -m experiments.benchmark "$@" --out="$BENCH_DIR/$name.json"
}

check() {  # every step; the output also goes to $BENCH_DIR/gpu_check.log
  echo "== machine"
  if [[ -n "$DRY_RUN" ]]; then
    export JAX_PLATFORMS=cpu
    echo "dry run: on the CPU with tiny sizes"
  else
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || return 1
  fi
  echo "== python packages"
  packages || return 1
  "$PYTHON" -c "import jax, hpjax
print('jax', jax.__version__, jax.devices(), '| hpjax', hpjax.__version__, hpjax.__file__)" \
    || return 1
  local torch=(--torch=off)
  if "$PYTHON" -c "import torch
print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>/dev/null; then
    torch=(--torch=on)
  else
    echo "no PyTorch: its rows are skipped"
  fi

  rm -rf "$TUNE_DIR"
  limited tune "$PYTHON" -m experiments.tune --config=experiments/configs/digits_pbt.py \
    --workdir="$TUNE_DIR" "${TUNE[@]}"
  for impl in slices xla; do
    step "throughput_$impl" --parts=throughput,flops --workloads=digits28,resnet32 \
      --conv_impls="$impl" "${SIZES[@]}" "${torch[@]}" "${CACHE[@]}"
  done
  step throughput_bf16 --parts=throughput --workloads=digits28,resnet32 \
    --conv_impls=slices,xla --compute_dtypes=bfloat16 "${SIZES[@]}" "${BF16[@]}" --torch=off \
    "${CACHE[@]}"
  step levers --parts=levers --lever_workload=digits28 "${SIZES[@]}" "${LEVERS[@]}" \
    "${CACHE[@]}"
  step compile --parts=compile "${COMPILE[@]}" "${CACHE[@]}"
  step memory --parts=memory --memory_workload=digits28 "${SIZES[@]}" "${MEMORY[@]}" \
    "${CACHE[@]}"
  step devices --parts=devices --device_workload=digits28 "${SIZES[@]}" "${DEVICES[@]}" \
    "${CACHE[@]}"

  echo "== results in $BENCH_DIR"
  if (( ${#failed[@]} )); then
    echo "failed: ${failed[*]}"
    return 1
  fi
  echo "every step ran"
}

check 2>&1 | tee "$BENCH_DIR/gpu_check.log"
exit "${PIPESTATUS[0]}"
