#!/usr/bin/env bash
# Issue 13's GPU checks as one prepared run on the lent device machine (the library's `run` tool):
# the CUDA tests, then benchmarks/gpu_speed.py, results to $OUT. Fill .gpu-wheels here first
# (bash benchmarks/gpu_check.sh --fetch-wheels); the device image has torch, e3nn, numpy, pyyaml and
# pytest but not ase or tblite. Then, from this machine:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".gpu-wheels"], timeout_s=540)
# and commit $OUT/gpu_speed.{json,md} (python benchmarks/gpu_speed.py --merge .../gpu_speed.json).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--fetch-wheels" ]; then  # here, not on the device: the device machine has no network
    mkdir -p .gpu-wheels && pip download --no-deps -d .gpu-wheels ase tblite cffi pycparser scipy tqdm
    exit
fi
OUT="${OUT:-/tmp/gpu_out}"; mkdir -p "$OUT"
python -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name())'
pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -3  # a wheel for another Python fails alone
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the package from this checkout, no build step
# CUDA tests first: the recorded MD step and force call, the sync-free MD and training steps.
timeout 150 python -m pytest -q -p no:cacheprovider -o addopts="" tests/test_graphs.py tests/test_recorded_calculator.py \
    tests/test_training_sync.py "tests/test_calculator.py::test_calculator_on_cuda_matches_cpu" \
    "tests/test_md.py::test_nose_hoover_md_on_cuda_does_not_synchronise_after_the_first_step" 2>&1 | tail -15 | tee "$OUT/cuda_tests.txt"
MODEL=benchmarks/stability/rmd17_ethanol_500K/remul_offeq_f02/model.pt
EGNN=benchmarks/stability/rmd17_ethanol/egnn/model.pt
timeout 360 python benchmarks/gpu_speed.py --model "$MODEL" --egnn-model "$EGNN" --out "$OUT" 2>&1 | tail -20
