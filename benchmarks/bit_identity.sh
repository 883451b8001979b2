#!/bin/bash
# Bit identity of a refactor on the CPU: the main job (examples/xtb_ethanol.yaml, 3 epochs with no time
# budget, so the schedule does not depend on the clock) and one MD run (the committed 60-minute stage-two
# model, 4 replicas x 1 ps of Nose-Hoover MD at 500 K), with the code of REF and of the working tree.
# Usage (repository root, venv active): bash benchmarks/bit_identity.sh REF [WORKDIR]
set -euo pipefail
ref=$1; work=${2:-/tmp/bit_identity}; repo=$(pwd)
rm -rf "$work" && mkdir -p "$work" && git worktree add -f -q "$work/old_code" "$ref"
cp -r examples "$work/" && cd "$work"
model=$repo/benchmarks/accuracy_budget/runs/stage2_60min_seed0/model.pt
for v in old new; do
  if [ $v = old ]; then export PYTHONPATH=$work/old_code; else unset PYTHONPATH; fi
  OMP_NUM_THREADS=1 python -m remul_ff train examples/xtb_ethanol.yaml --no-progress --set train.max_minutes=null \
    --set train.epochs=3 --set output_dir=run_$v > train_$v.log
  OMP_NUM_THREADS=1 python -m remul_ff md "$model" ethanol -o md_$v --time 1ps --replicas 4 --write-interval 20 \
    --temperature 500 --thermostat nose-hoover --no-progress > md_$v.log
done
unset PYTHONPATH
python - <<'PY'
import csv, filecmp, glob, torch
a, b = (torch.load(f"run_{v}/model.pt", weights_only=True) for v in ("old", "new"))
same = a["state_dict"].keys() == b["state_dict"].keys() and all(
    torch.equal(x, b["state_dict"][k]) if torch.is_tensor(x) else x == b["state_dict"][k] for k, x in a["state_dict"].items())
print(f"main job, model.pt weights bit-identical: {same} (keys only in the new file: {sorted(set(b) - set(a))})")
timing = {"epoch_time_s", "wall_time_s", "structures_per_s"}
rows = [[{k: v for k, v in r.items() if k not in timing} for r in csv.DictReader(open(f"run_{v}/log.csv"))] for v in ("old", "new")]
print(f"main job, log.csv identical apart from timings: {rows[0] == rows[1]} ({len(rows[0])} epochs)")
files = ["thermo.csv", "collapses.json"] + sorted(p.split("/")[-1] for p in glob.glob("md_old/replica_*.traj"))
print(f"MD, byte-identical files: {sum(filecmp.cmp(f'md_old/{f}', f'md_new/{f}', shallow=False) for f in files)} of {len(files)} ({', '.join(files)})")
PY
cd "$repo" && git worktree remove --force "$work/old_code"
