#!/usr/bin/env bash
# The accelerator benchmarks of docs/performance.md, one after another, in two parts of under 8 minutes each on
# one GPU (a lent device runs at most 10 minutes a call):
#
#   bash benchmarks/accelerator.sh DATA_DIR DOWNLOAD_DIR OUT_DIR fixed_costs   # time to 99%, compile, run batches
#   bash benchmarks/accelerator.sh DATA_DIR DOWNLOAD_DIR OUT_DIR steps         # train steps, tiled_conv, determinism
#
# DATA_DIR: a TFDS data directory with MNIST prepared (reading it needs no TensorFlow); DOWNLOAD_DIR: the raw
# MNIST files as DOWNLOAD_DIR/mnist/*-ubyte.gz (the PyTorch side reads them). Writes every benchmark's output to
# OUT_DIR/accelerator.log and its results as JSON beside it. Each benchmark has a time limit, so one that
# overruns costs only its own row. fixed_costs: time to 99% on MNIST (cold and warm compilation cache, PyTorch
# beside, then with XLA's command buffers), where a step's compile time goes (ours against flax), a run batch of 8
# LeNet-5 seeds against one run, the loop against its step. steps: ResNet-50's train step, the small models'
# steps, tiled_conv at a GPU-sized shape, and two LeNet-5 runs with train.deterministic off and two with it on
# (do they agree, and at what images/s).
set -uo pipefail
if [ $# -ne 4 ] || [[ "$4" != fixed_costs && "$4" != steps ]]; then
  echo "usage: bash benchmarks/accelerator.sh DATA_DIR DOWNLOAD_DIR OUT_DIR fixed_costs|steps" >&2
  exit 2
fi
mkdir -p "$3"
data=$(realpath "$1") raw=$(realpath "$2") out=$(realpath "$3")
cd "$(dirname "$0")/.." || exit
log=$out/accelerator.log

bench() {  # bench NAME SECONDS COMMAND...: run COMMAND with a time limit, its output appended to the log
  local name=$1 limit=$2
  shift 2
  echo "== $name ($(date +%T), limit ${limit}s): $*" | tee -a "$log"
  timeout "$limit" "$@" 2>&1 | tee -a "$log"
  echo "== $name: exit status ${PIPESTATUS[0]}" | tee -a "$log"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$log"
if [[ "$4" == fixed_costs ]]; then
  # ours (a cold compilation cache), ours again (warm cache, decoded arrays kept), PyTorch eager.
  bench time_to_accuracy 120 python3 benchmarks/time_to_accuracy.py --download_dir="$raw" --data_dir="$data" \
    --json "$out/time_to_accuracy.json"
  bench compile_time 120 python3 benchmarks/compile_time.py --cases gpu --models lenet5 resnet20 --repeats 1 \
    --export cuda --json "$out/compile_time.json"
  bench run_batches 80 python3 benchmarks/run_batches.py --part step --models lenet5 --runs 1 8 --batch 128 \
    --json "$out/run_batches.json"
  bench loop 70 python3 benchmarks/loop.py --config=experiments/configs/lenet5_mnist.py --batch=128 --repeats 1 \
    --data_dir="$data" --download_dir="$raw" --settings device:16 device:64 device:16:scan:epoch \
    --json "$out/loop.json"
  # The lead for the loop's per-step cost: XLA's command buffers for while loops and conditionals (cold cache).
  XLA_FLAGS="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUDNN,CUSTOM_CALL,WHILE,CONDITIONAL" \
    bench time_to_accuracy_command_buffers 60 python3 benchmarks/time_to_accuracy.py --download_dir="$raw" \
    --data_dir="$data" --who ours --json "$out/time_to_accuracy_command_buffers.json"
else
  bench resnet50_step 220 python3 benchmarks/train_step.py --cases gpu --models resnet50 --seconds 2 \
    --json "$out/resnet50_step.json"
  bench small_steps 110 python3 benchmarks/train_step.py --cases gpu --models resnet20 lenet5 \
    --variants ours flax torch --seconds 2 --json "$out/small_steps.json"
  bench tiled 45 python3 benchmarks/ops.py --only tiled --tiled_shape gpu
  bench determinism 120 python3 benchmarks/determinism.py --config=experiments/configs/lenet5_mnist.py --steps=2000 \
    --data_dir="$data" --download_dir="$raw" --json "$out/determinism.json"
fi
