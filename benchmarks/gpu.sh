#!/usr/bin/env bash
# Throughput of frugal.gamma.unmix on a GPU machine, in one go.
#
# Usage: bash benchmarks/gpu.sh OUTDIR [extra arguments of throughput.py]
#
# Expects JAX with its CUDA plugin already installed (e.g. `pip install -U "jax[cuda13]"`),
# flax, optax, numpy, matplotlib and tqdm, and the cached models and paper rows in
# benchmarks/results/models (written by a run of benchmarks/throughput.py on a machine with
# the Geant4 data). Runs from the checkout without installing it. Writes
# throughput_gpu.json / .png, the log, the GPU description and estimates_gpu.npz (compare
# it with the CPU's: python benchmarks/gpu_agreement.py gpu=OUTDIR/estimates_gpu.npz) to OUTDIR.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu.sh OUTDIR [throughput.py arguments]}
shift
mkdir -p "$out"
root=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# One compilation per chunk shape across the worker processes.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/frugal-jax-cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
python=${PYTHON:-python3}
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
  "$python" -c "import jax, flax, optax, numpy; print('jax', jax.__version__, jax.devices()); print('flax', flax.__version__, 'optax', optax.__version__, 'numpy', numpy.__version__)"
} 2>&1 | tee "$out/gpu.txt"
cd "$root/benchmarks"
# Stopped inside the caller's limit so that what was measured (saved after every point) is copied.
timeout "${FRUGAL_GPU_LIMIT_S:-480}" "$python" throughput.py --tag throughput_gpu --chunk-size 16384 --chunk-sweep 4096,65536 \
    --cpu-baseline 1000 --million 1000000 --million-problem paper --timeout 200 "$@" 2>&1 | tee "$out/log.txt"
status=${PIPESTATUS[0]}
cp results/throughput_gpu.json results/throughput_gpu.png "$out"/ 2>/dev/null
# Inputs and estimates of 2000 spectra, to check against the CPU with gpu_agreement.py.
timeout 120 "$python" throughput.py --worker --problem paper --batch 10000 --chunk-size 16384 --repeats 1 \
    --save "$out/estimates_gpu.npz" >/dev/null || status=1
exit "$status"
