"""Issue 13's GPU measurements in one short run, on whatever device is given (``cuda`` when present).

Measured, all in this one process:

* batched NVE MD of ethanol replicas (float32, collapse check every 10 steps): µs per atom-step and
  replica-steps/s at each ``--replicas`` size, with the whole step replayed from a CUDA graph
  (``md.cuda_graph``, the default on CUDA) and without it (kernels launched one by one);
* the neighbour pipeline's share of a step: a radius-graph rebuild of the whole batch on the device,
  against one step (a run with fixed pairs builds its pairs once; this is what a rebuild per step
  would cost);
* ms per ASE ``VelocityVerlet`` step of one ethanol through ``REMULCalculator`` (float32), with its
  force call replayed from a CUDA graph (the default on CUDA) and without;
* the EGNN baseline's batched step (``--egnn-model``) at the same sizes, up to ``--egnn-max-replicas``;
* MACE per ASE step on the same device (``--mace-python``, with ``--mace-path`` where mace-torch and
  its pinned e3nn were installed with ``pip install --target``), in its own process, and MACE's energy
  and forces of ``--mace-replicas`` ethanol copies in one batch (µs per atom; no neighbour list or
  integration, so it flatters MACE against remul-ff's whole MD step);
* training structures/s at batch 8 and 64 (REMUL loss, float32; labels are synthetic: values do not
  change the time).

Run from the repository root; on the GPU machine the whole thing takes a few minutes::

    python benchmarks/perf/gpu_speed.py --model benchmarks/stability/rmd17_ethanol_500K/remul_offeq_f02/model.pt \\
        --egnn-model benchmarks/stability/rmd17_ethanol/egnn/model.pt --out results

``--out`` is a folder (the device machine's ``$OUT``) for ``gpu_speed.json`` and ``gpu_speed.md``;
``--merge`` then puts them under ``cuda`` in ``benchmarks/results/md_speed.json`` with the device name.
On a CPU, ``--device cpu --replicas 1 8 --steps 4 --mace-replicas 8`` checks that the script runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _ase_timing import atoms_ms_per_step
from _common import RESULTS, command_line, machine
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from remul_ff.config import load_config
from remul_ff.data.neighbors import radius_graph
from remul_ff.integrations import REMULCalculator
from remul_ff.md import MDSettings, run_md
from remul_ff.md.state import compute_forces, state_from_atoms
from remul_ff.models import load_model
from remul_ff.models.common import inference_model, with_fixed_pairs
from remul_ff.scaling.measure import step_seconds
from remul_ff.training.trainer import Trainer

BENCHMARKS = Path(__file__).resolve().parents[1]
ETHANOL = molecule("CH3CH2OH")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def replicas_of(n: int, seed: int = 0) -> list:
    """``n`` ethanol molecules, each rattled by 0.02 Å."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = ETHANOL.copy()
        atoms.positions += rng.normal(0, 0.02, atoms.positions.shape)
        out.append(atoms)
    return out


def batched_md(model: torch.nn.Module, replicas: int, steps: int, cuda_graph: bool) -> dict:
    """µs per atom-step and replica-steps/s of batched NVE MD in steady state.

    Runs of ``steps`` and ``2 * steps`` steps (after a short one for lazy initialisation) are timed and
    their difference taken: what a run does once (setting up the state and the collapse monitor,
    recording the CUDA graph) cancels.
    """
    starts = replicas_of(replicas)

    def wall_s(n_steps: int) -> float:
        settings = MDSettings(
            temperature=300,
            timestep_fs=0.5,
            total_time_fs=0.5 * n_steps,
            thermostat="nve",
            write_interval=0,
            thermo_interval=10,
            check_interval=10,
            cuda_graph=cuda_graph,
        )
        return run_md(model, starts, settings, None, progress=False).wall_time_s

    wall_s(2)
    step_s = (wall_s(2 * steps) - wall_s(steps)) / steps
    return {"replica_steps_per_s": replicas / step_s, "us_per_atom_step": 1e6 * step_s / (replicas * len(ETHANOL))}


def neighbour_share(model: torch.nn.Module, replicas: int, device: torch.device, repeat: int = 10) -> dict:
    """ms of a radius-graph rebuild of the whole batch and of one force call, and their ratio."""
    state = state_from_atoms(replicas_of(replicas), device, torch.float32)
    fixed = with_fixed_pairs(inference_model(model), len(ETHANOL))
    timings = {}
    for name, fn in (
        ("radius_graph_ms", lambda: radius_graph(state.positions, model.r_max, state.molecule_index)),
        ("force_call_ms", lambda: compute_forces(state, fixed)),
    ):
        fn()
        sync(device)
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        sync(device)
        timings[name] = 1e3 * (time.perf_counter() - start) / repeat
    return {**timings, "rebuild_share_of_force_call": timings["radius_graph_ms"] / timings["force_call_ms"]}


def synthetic_data(folder: Path, frames: int = 200) -> Path:
    """Rattled ethanol frames with random labels: a training step's time does not depend on the values."""
    rng = np.random.default_rng(1)
    atoms_list = replicas_of(frames, seed=2)
    for atoms in atoms_list:
        atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal(-4200, 1)), forces=rng.normal(0, 1, (len(atoms), 3)))
    path = folder / "ethanol.xyz"
    write(path, atoms_list)
    return path


def training_structures_per_s(batch_size: int, device: str, folder: Path) -> float:
    """Structures per second of REMUL training steps (float32, the default model) at ``batch_size``."""
    config = load_config(
        BENCHMARKS.parent / "examples" / "rmd17_ethanol.yaml",
        [
            f"data.path={synthetic_data(folder)}",
            "data.e0s=average",
            "data.train=180",
            "data.valid=20",
            "data.off_equilibrium=null",
            f"train.batch_size={batch_size}",
            f"train.device={device}",
            f"output_dir={folder / 'run'}",
        ],
    )
    trainer = Trainer(config, progress=False)
    trainer.setup(overwrite=True)
    return batch_size / step_seconds(trainer, trainer.data.train[:batch_size], repeat=10)


def mace_ms_per_step(python: str, path: str | None, device: str, steps: int, replicas: list[int], folder: Path) -> dict:
    """An untrained MACE (mace_speed_helper.py's model) on ethanol, in its own process: ms per ASE step and
    µs per atom of one batched energy-and-forces call for each of ``replicas``.

    mace-torch pins e3nn 0.4.4, so it runs with ``python`` and ``path`` (a folder that mace-torch and
    its e3nn were installed into with ``pip install --target``) in front of ``PYTHONPATH``.
    """
    structure = folder / "ethanol_for_mace.xyz"
    write(structure, ETHANOL)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (path, os.environ.get("PYTHONPATH")) if p)}
    helper = Path(__file__).with_name("mace_speed_helper.py")
    out = subprocess.run(
        [python, str(helper), json.dumps({"ethanol (9 atoms)": str(structure)}), str(steps), device, json.dumps(replicas)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(args: argparse.Namespace, results: dict, save: Callable[[], None]) -> dict:
    """Fill ``results`` section by section, the issue's targets first, calling ``save`` after each:
    a run stopped at its time limit keeps what it measured."""
    device = torch.device(args.device)
    results.update({"device": args.device, "device_name": machine()["cuda"] if device.type == "cuda" else "cpu"})
    model = load_model(args.model, device=device).float()
    results["batched"] = {}
    for n in args.replicas:
        row = {"cuda_graph": batched_md(model, n, args.steps, True), "no_graph": batched_md(model, n, args.steps, False)}
        results["batched"][str(n)] = {**row, "neighbours": neighbour_share(model, n, device)}
        print(n, json.dumps(results["batched"][str(n)]), flush=True)
        save()
    with tempfile.TemporaryDirectory() as folder:
        for section in (ase_section, mace_section, training_section, egnn_section):
            results.update(section(args, Path(folder)))
            save()
    return results


def ase_section(args: argparse.Namespace, folder: Path) -> dict:
    """ms per ASE step of one ethanol, with the recorded force call and without."""
    out = {}
    for graph in (True, False):
        calculator = REMULCalculator(args.model, device=args.device, default_dtype="float32", cuda_graph=graph)
        out["ase_ms_per_step_ethanol" + ("" if graph else "_no_graph")] = atoms_ms_per_step(ETHANOL, calculator, args.ase_steps)
    return out


def mace_section(args: argparse.Namespace, folder: Path) -> dict:
    """MACE's ASE step and batched call (``--mace-python``), or why it did not run."""
    if not args.mace_python:
        return {}
    try:
        mace = mace_ms_per_step(args.mace_python, args.mace_path, args.device, args.ase_steps, args.mace_replicas, folder)
    except subprocess.CalledProcessError as error:  # keep the rest of the run
        return {"mace_error": error.stderr.strip().splitlines()[-1] if error.stderr.strip() else str(error)}
    return {
        "mace_version": mace["mace_version"],
        "mace_ase_ms_per_step_ethanol": mace["ms_per_step"]["ethanol (9 atoms)/float32"],
        "mace_batched_us_per_atom": mace["batched_us_per_atom_float32"],
    }


def training_section(args: argparse.Namespace, folder: Path) -> dict:
    return {"training_structures_per_s": {str(b): training_structures_per_s(b, args.device, folder) for b in args.train_batches}}


def egnn_section(args: argparse.Namespace, folder: Path) -> dict:
    if not args.egnn_model:
        return {}
    egnn = load_model(args.egnn_model, device=torch.device(args.device)).float()
    return {"egnn_batched": {str(n): batched_md(egnn, n, args.steps, True) for n in args.replicas if n <= args.egnn_max_replicas}}


def markdown(results: dict) -> str:
    lines = [
        f"Device: {results['device_name']}",
        "",
        "| replicas | µs/atom-step (CUDA graph) | µs/atom-step (no graph) | replica-steps/s (graph) | radius-graph rebuild / force call |",
        "|---|---|---|---|---|",
    ]
    for n, row in results.get("batched", {}).items():
        lines.append(
            f"| {n} | {row['cuda_graph']['us_per_atom_step']:.3f} | {row['no_graph']['us_per_atom_step']:.3f} | "
            f"{row['cuda_graph']['replica_steps_per_s']:.0f} | {100 * row['neighbours']['rebuild_share_of_force_call']:.1f}% |"
        )
    if "ase_ms_per_step_ethanol" in results:
        lines += [
            "",
            f"ASE step, one ethanol, float32: {results['ase_ms_per_step_ethanol']:.2f} ms "
            f"({results['ase_ms_per_step_ethanol_no_graph']:.2f} without the CUDA graph)",
        ]
    if "mace_ase_ms_per_step_ethanol" in results and "ase_ms_per_step_ethanol" in results:
        mace_ms = results["mace_ase_ms_per_step_ethanol"]
        lines.append(
            f"MACE ASE step, same molecule and device: {mace_ms:.2f} ms "
            f"(MACE / remul-ff: {mace_ms / results['ase_ms_per_step_ethanol']:.1f}x)"
        )
    for n, mace_us in results.get("mace_batched_us_per_atom", {}).items():
        ours = results["batched"].get(n, {}).get("cuda_graph", {}).get("us_per_atom_step")
        versus = f"; remul-ff's whole MD step {ours:.3f}, MACE / remul-ff {mace_us / ours:.1f}x" if ours else ""
        lines.append(f"MACE energy and forces of {n} replicas in one batch: {mace_us:.3f} µs/atom{versus}")
    if "mace_error" in results:
        lines.append(f"MACE did not run: {results['mace_error']}")
    if "egnn_batched" in results:
        lines.append(f"EGNN batched: {json.dumps(results['egnn_batched'])}")
    if "training_structures_per_s" in results:
        lines.append(f"Training structures/s by batch size: {json.dumps(results['training_structures_per_s'])}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--egnn-model")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 64, 512, 4096, 16384])
    parser.add_argument("--egnn-max-replicas", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=50, help="steps of the shorter timed MD run (the longer has twice as many)")
    parser.add_argument("--ase-steps", type=int, default=100)
    parser.add_argument("--train-batches", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--mace-python", help="a Python that imports mace-torch: also time MACE on the same device")
    parser.add_argument("--mace-path", help="a folder put in front of PYTHONPATH for MACE (pip install --target)")
    parser.add_argument("--mace-replicas", type=int, nargs="*", default=[64, 4096], help="batch sizes for MACE's batched call")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for gpu_speed.json and gpu_speed.md")
    parser.add_argument("--merge", type=Path, help="a gpu_speed.json to put under 'cuda' in results/md_speed.json (measures nothing)")
    args = parser.parse_args()
    if args.merge:
        return merge(args.merge)
    results = {"command": command_line(), "machine": machine()}
    args.out.mkdir(parents=True, exist_ok=True)
    save = lambda: (args.out / "gpu_speed.json").write_text(json.dumps(results, indent=2) + "\n")
    measure(args, results, save)
    save()
    (args.out / "gpu_speed.md").write_text(f"Command: `{results['command']}`\n\n" + markdown(results))


def merge(path: Path) -> None:
    """Put a GPU run's results under ``cuda`` in ``results/md_speed.json``, keeping its command and device,
    and write ``results/gpu_speed.md`` from them."""
    target = RESULTS / "md_speed.json"
    payload = json.loads(target.read_text())
    payload["cuda"] = json.loads(path.read_text())
    target.write_text(json.dumps(payload, indent=2) + "\n")
    cuda = payload["cuda"]  # its markdown too (a run stopped at its time limit wrote only the JSON)
    (RESULTS / "gpu_speed.md").write_text(f"Command: `{cuda['command']}`\n\n" + markdown(cuda))


if __name__ == "__main__":
    main()
