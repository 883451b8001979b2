#!/usr/bin/env bash
# Issue 13's GPU checks as one prepared run on the lent device machine (the library's `run` tool):
# the CUDA tests, then benchmarks/perf/gpu_speed.py (MACE included), results to $OUT. Fill .gpu-wheels
# here first (bash benchmarks/perf/gpu_check.sh --fetch-wheels, ~6 MB). The device image runs CPython
# 3.12 (/opt/torch/.venv, per the library's device/KINDS.md) with torch, e3nn, numpy, scipy, pandas,
# h5py, pyyaml, pytest and tqdm, but not ase, tblite or mace-torch: only those missing travel, built
# for 3.12. The checkout and the carried folder must stay under the run tool's 64 MiB (the
# checkout is ~51 MiB): tblite stays here, and the tests' xTB frames travel instead. The accuracy_budget
# models (~15 MiB, not used on the device) can push it over: if --fetch-wheels says so, move them aside
# for the call (mv benchmarks/accuracy_budget/runs /tmp/runs_aside; run; mv /tmp/runs_aside benchmarks/accuracy_budget/runs).
# Then, from this machine:
#   run(command="bash benchmarks/perf/gpu_check.sh", carry=[".gpu-wheels"], timeout_s=560)
# and commit $OUT/gpu_speed.{json,md} (python benchmarks/perf/gpu_speed.py --merge .../gpu_speed.json).
set -uo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${GPU_PYTHON:-python3}"  # the device's python3 is the one that holds torch
BASE_WHEELS="ase"  # not tblite (7 MB): the tests' xTB frames are made here and travel with the wheels
# mace-torch 0.3.16 and what it imports that the image lacks; it pins e3nn 0.4.4, so it goes into a
# folder of its own that only MACE's process puts on its path.
MACE_WHEELS="mace-torch==0.3.16 e3nn==0.4.4 torch-ema matscipy prettytable wcwidth configargparse GitPython
  gitdb smmap lmdb orjson"
if [ "${1:-}" = "--fetch-wheels" ]; then  # here, not on the device: the device machine has no network
    TARGET="--only-binary=:all: --python-version ${GPU_PYTHON_VERSION:-3.12} --implementation cp"
    for n in 28 27 24 17; do TARGET="$TARGET --platform manylinux_2_${n}_x86_64"; done
    TARGET="$TARGET --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
    rm -rf .gpu-wheels && mkdir -p .gpu-wheels/base .gpu-wheels/mace || exit 1
    pip download -q --no-deps $TARGET -d .gpu-wheels/base $BASE_WHEELS || exit 1
    pip download -q --no-deps $TARGET -d .gpu-wheels/mace $MACE_WHEELS || exit 1
    # python-hostlist comes as source only: build its (pure-Python) wheel here
    (cd .gpu-wheels/mace && pip download -q --no-deps python-hostlist && pip wheel -q --no-deps python_hostlist-*.tar.gz \
        && rm python_hostlist-*.tar.gz) || exit 1
    python -c 'import sys; from pathlib import Path; from tests.helpers import write_xtb_ethanol; write_xtb_ethanol(Path(sys.argv[1]))' \
        .gpu-wheels/xtb_ethanol.xyz || exit 1
    ls .gpu-wheels/*
    # what a run call sends: tracked and untracked-unignored files, plus the carried folder
    git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | cat - <(du -sb .gpu-wheels | cut -f1) \
        | awk '{s += $1} END {printf "checkout + .gpu-wheels: %.1f MiB of the 64 MiB a run call takes\n", s / 1048576}'
    exit
fi
OUT="${OUT:-/tmp/gpu_out}"; mkdir -p "$OUT"
"$PYTHON" -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name())'
# Into folders of their own, not the image's environment; a wheel that does not fit this Python stops
# only its own folder's install, and what needs it is skipped.
INSTALL="$PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target"
BASE_SITE=/tmp/site MACE_SITE=/tmp/mace_site
$INSTALL "$BASE_SITE" .gpu-wheels/base/*.whl 2>&1 | tail -3
$INSTALL "$MACE_SITE" .gpu-wheels/mace/*.whl 2>&1 | tail -3
export PYTHONPATH="$PWD:$BASE_SITE${PYTHONPATH:+:$PYTHONPATH}"  # the package from this checkout, no build step
export REMUL_FF_TEST_XTB_ETHANOL="$PWD/.gpu-wheels/xtb_ethanol.xyz"  # the tests' xTB frames, made where tblite is
# CUDA tests first: the recorded MD step and force call, the sync-free MD and training steps, and
# every test with a CUDA case (the neighbour pipeline, the calculator and batched MD against the CPU).
timeout 150 "$PYTHON" -m pytest -q -p no:cacheprovider -o addopts="" tests/test_graphs.py tests/test_recorded_calculator.py \
    tests/test_training_sync.py tests/test_neighbors.py tests/test_calculator.py tests/test_md.py \
    -k "cuda or test_graphs or test_recorded_calculator or test_training_sync" 2>&1 | tail -15 | tee "$OUT/cuda_tests.txt"
MODEL=benchmarks/stability/rmd17_ethanol_500K/remul_offeq_f02/model.pt
EGNN=benchmarks/stability/rmd17_ethanol/egnn/model.pt
timeout 360 "$PYTHON" benchmarks/perf/gpu_speed.py --model "$MODEL" --egnn-model "$EGNN" --out "$OUT" \
    --mace-python "$PYTHON" --mace-path "$MACE_SITE" ${GPU_SPEED_ARGS:-} 2>&1 | tail -20  # GPU_SPEED_ARGS: a CPU rehearsal
