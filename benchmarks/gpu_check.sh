#!/usr/bin/env bash
# Issue 13's GPU checks as one prepared run on the lent device machine (the library's `run` tool):
# the CUDA tests, then benchmarks/gpu_speed.py (MACE included), results to $OUT. Fill .gpu-wheels
# here first (bash benchmarks/gpu_check.sh --fetch-wheels, ~32 MB); the device image has torch, e3nn
# (so scipy), numpy, pyyaml and pytest, not ase, tblite or mace-torch. Then, from this machine:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".gpu-wheels"], timeout_s=560)
# and commit $OUT/gpu_speed.{json,md} (python benchmarks/gpu_speed.py --merge .../gpu_speed.json).
set -uo pipefail
cd "$(dirname "$0")/.."
# mace-torch 0.3.16 and what it imports; it pins e3nn 0.4.4, so it goes into a folder of its own.
MACE_WHEELS="mace-torch==0.3.16 e3nn==0.4.4 opt_einsum opt-einsum-fx torch-ema torchmetrics lightning-utilities
  matscipy prettytable wcwidth configargparse GitPython gitdb smmap h5py lmdb orjson pandas python-hostlist
  python-dateutil six tzdata"
if [ "${1:-}" = "--fetch-wheels" ]; then  # here, not on the device: the device machine has no network
    rm -rf .gpu-wheels && mkdir -p .gpu-wheels/base .gpu-wheels/mace
    pip download -q --no-deps -d .gpu-wheels/base ase tblite cffi pycparser tqdm
    pip download -q --no-deps -d .gpu-wheels/mace $MACE_WHEELS
    # python-hostlist comes as source only: build its wheel here, the device image may lack `wheel`
    (cd .gpu-wheels/mace && pip wheel -q --no-deps python_hostlist-*.tar.gz && rm python_hostlist-*.tar.gz)
    du -sh .gpu-wheels; exit
fi
OUT="${OUT:-/tmp/gpu_out}"; mkdir -p "$OUT"
python -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name())'
# Wheels are for CPython 3.11; one that does not fit this Python fails alone, and what needs it is skipped.
pip install -q --no-deps --no-index .gpu-wheels/base/* 2>&1 | tail -3
MACE_SITE=/tmp/mace_site
pip install -q --no-deps --no-index --no-build-isolation --target "$MACE_SITE" .gpu-wheels/mace/* 2>&1 | tail -3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the package from this checkout, no build step
# CUDA tests first: the recorded MD step and force call, the sync-free MD and training steps.
timeout 150 python -m pytest -q -p no:cacheprovider -o addopts="" tests/test_graphs.py tests/test_recorded_calculator.py \
    tests/test_training_sync.py "tests/test_calculator.py::test_calculator_on_cuda_matches_cpu" \
    "tests/test_md.py::test_nose_hoover_md_on_cuda_does_not_synchronise_after_the_first_step" 2>&1 | tail -15 | tee "$OUT/cuda_tests.txt"
MODEL=benchmarks/stability/rmd17_ethanol_500K/remul_offeq_f02/model.pt
EGNN=benchmarks/stability/rmd17_ethanol/egnn/model.pt
timeout 360 python benchmarks/gpu_speed.py --model "$MODEL" --egnn-model "$EGNN" --out "$OUT" \
    --mace-python python --mace-path "$MACE_SITE" ${GPU_SPEED_ARGS:-} 2>&1 | tail -20  # GPU_SPEED_ARGS: a CPU rehearsal
