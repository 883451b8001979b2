"""Where is a potential wrong when MD breaks its bonds? (issue 12, diagnosis)

For each model (``NAME=model.pt``) on rMD17 ethanol frames:

* energy and radial force along a methyl C-H stretch (0.7-3.0 Å) and an O-H stretch, next to
  GFN2-xTB's curve (another level of theory: its *shape* is the reference, shifted to agree at
  the frame's own bond length);
* energy along a straight-line H transfer from the methyl carbon to the other carbon;
* the energy a rigid stretch needs to reach the collapse criterion (mean bond length + 0.5 Å) for
  every X-H bond of 50 training frames: a low tail means a low road to collapse;
* the rotational force error ``|F(Rx) - R F(x)| / |F(x)|`` on validation frames, on the
  stretched geometries, and on 900 K frames of the model's own MD (off-distribution);
* with ``--md DIR`` (a compare output folder), what each collapsed replica did in the last
  picosecond: the broken bond's length, the force on its lighter atom along the bond, and the
  temperature.

Writes ``diagnosis.json`` and PNGs into ``--out``; the command is recorded in the JSON.

    python benchmarks/stability/diagnose.py --data ../shared/data/rmd17_ethanol/train.xyz \\
        --out benchmarks/stability/diagnosis remul=... egnn=... [--md benchmarks/stability/rmd17_ethanol_500K]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from ase.io import read

from remul_ff.data.bonds import bond_lengths, mean_bond_lengths, molecular_bonds
from remul_ff.data.off_equilibrium import xtb_labels
from remul_ff.md import MDSettings, run_md
from remul_ff.models import load_model
from remul_ff.training.losses import random_rotations

STRETCH = np.linspace(0.7, 3.0, 47)
METHYL_C, METHYL_H, OXYGEN, HYDROXYL_H, OTHER_C = 1, 5, 2, 8, 0  # atom order of rMD17 ethanol


def energy_and_forces(model, geometries: np.ndarray, numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energies ``[G]`` (eV) and forces ``[G, n, 3]`` of geometries ``[G, n, 3]`` in one batch."""
    g, n = geometries.shape[:2]
    positions = torch.tensor(geometries.reshape(-1, 3), dtype=torch.float64, requires_grad=True)
    molecule = torch.arange(g).repeat_interleave(n)
    atomic = model(positions, torch.tensor(np.tile(numbers, g)), molecule)
    energy = torch.zeros(g, dtype=torch.float64).index_add_(0, molecule, atomic)
    (grad,) = torch.autograd.grad(energy.sum(), positions)
    return energy.detach().numpy(), -grad.numpy().reshape(g, n, 3)


def stretched(positions: np.ndarray, anchor: int, moved: int, lengths: np.ndarray) -> np.ndarray:
    """Copies of ``positions`` with atom ``moved`` at each of ``lengths`` from ``anchor`` (same direction)."""
    direction = positions[moved] - positions[anchor]
    direction /= np.linalg.norm(direction)
    out = np.repeat(positions[None], len(lengths), axis=0)
    out[:, moved] = positions[anchor] + lengths[:, None] * direction
    return out


def stretch_curve(model, frame, anchor: int, moved: int) -> dict:
    geometries = stretched(frame.positions, anchor, moved, STRETCH)
    energy, forces = energy_and_forces(model, geometries, frame.numbers)
    direction = (geometries[:, moved] - geometries[:, anchor]) / STRETCH[:, None]
    start = np.argmin(np.abs(STRETCH - frame.get_distance(anchor, moved)))
    return {
        "r": STRETCH.tolist(),
        "energy": (energy - energy[start]).tolist(),
        "radial_force": (forces[:, moved] * direction).sum(-1).tolist(),
    }


def xtb_stretch_curve(frame, anchor: int, moved: int) -> dict:
    geometries = stretched(frame.positions, anchor, moved, STRETCH)
    energy = np.array([xtb_labels(g, frame.numbers, "GFN2-xTB")[0] for g in geometries])
    start = np.argmin(np.abs(STRETCH - frame.get_distance(anchor, moved)))
    return {"r": STRETCH.tolist(), "energy": (energy - energy[start]).tolist()}


def transfer_curve(model, frame) -> dict:
    """Methyl H moved on a straight line to 1.1 Å from the other carbon, along the same direction."""
    start = frame.positions[METHYL_H]
    direction = (start - frame.positions[METHYL_C]) / np.linalg.norm(start - frame.positions[METHYL_C])
    end = frame.positions[OTHER_C] + 1.1 * direction
    t = np.linspace(0, 1, 21)
    geometries = np.repeat(frame.positions[None], len(t), axis=0)
    geometries[:, METHYL_H] = (1 - t[:, None]) * start + t[:, None] * end
    energy, _ = energy_and_forces(model, geometries, frame.numbers)
    return {"t": t.tolist(), "energy": (energy - energy[0]).tolist()}


def barriers_to_collapse(model, frames, bonds: np.ndarray, mean: np.ndarray) -> list[float]:
    """For each X-H bond of each frame: the highest energy on a rigid stretch to mean + 0.5 Å."""
    out = []
    for frame in frames:
        for b, (i, j) in enumerate(bonds):
            if 1 not in (frame.numbers[i], frame.numbers[j]):
                continue
            anchor, moved = (i, j) if frame.numbers[j] == 1 else (j, i)
            r0 = frame.get_distance(anchor, moved)
            energy, _ = energy_and_forces(
                model, stretched(frame.positions, anchor, moved, np.linspace(r0, mean[b] + 0.5, 12)), frame.numbers
            )
            out.append(float((energy - energy[0]).max()))
    return out


def rotational_error(model, geometries: np.ndarray, numbers: np.ndarray, rotations: int = 8) -> float:
    """Mean over geometries and rotations of ``|F(Rx) - R F(x)| / |F(x)|`` (Frobenius over atoms)."""
    _, forces = energy_and_forces(model, geometries, numbers)
    generator = torch.Generator().manual_seed(0)
    errors = []
    for R in random_rotations(rotations, torch.float64, "cpu", generator).numpy():
        _, rotated = energy_and_forces(model, geometries @ R.T, numbers)
        errors.append(np.linalg.norm(rotated - forces @ R.T, axis=(1, 2)) / np.linalg.norm(forces, axis=(1, 2)))
    return float(np.mean(errors))


def hot_frames(model, starts, temperature: float, out: Path) -> np.ndarray:
    """Frames of the model's own Langevin MD at ``temperature`` (8 replicas x 1 ps, every 20 fs)."""
    settings = MDSettings(
        temperature=temperature,
        timestep_fs=0.5,
        total_time_fs=1000,
        thermostat="langevin",
        friction=0.02,
        write_interval=40,
        thermo_interval=100,
        traj_format="traj",
        bond_tolerance=1e9,
        max_temperature=1e9,
    )
    run_md(model, [a.copy() for a in starts], settings, out, progress=False)
    frames = [a.positions for k in range(len(starts)) for a in read(out / f"replica_{k:03d}.traj", ":")[5:]]
    return np.stack(frames)


def before_collapse(md_root: Path, reference) -> list[dict]:
    """The last picosecond of every collapsed replica of a compare run (frames every frame_interval)."""
    report = json.loads((md_root / "report.json").read_text()) if (md_root / "report.json").exists() else None
    if report is None:
        return []
    md = report["spec"]["md"]
    frame_ps = md["frame_interval"] * md["timestep_fs"] / 1e3
    events = []
    for name, model in report["models"].items():
        for event in model.get("collapse_events", []):
            if event.get("bond"):
                events.append(_one_collapse(md_root / name / "md", name, event, reference, frame_ps))
    return events


def _one_collapse(md_dir: Path, name: str, event: dict, reference, frame_ps: float) -> dict:
    frames = read(md_dir / f"replica_{event['replica']:03d}.traj", ":")
    i, j = (int("".join(filter(str.isdigit, part))) for part in event["bond"].split("-"))
    moved, anchor = (j, i) if frames[0].numbers[j] <= frames[0].numbers[i] else (i, j)
    bonds = np.array([[anchor, moved]])
    mean = float(mean_bond_lengths(reference, np.array([[min(i, j), max(i, j)]]), frames[0].numbers)[0])
    lengths, radial = [], []
    for a in frames:
        direction = (a.positions[moved] - a.positions[anchor]) / a.get_distance(anchor, moved)
        lengths.append(float(bond_lengths(a.positions, bonds)[0]))
        radial.append(float(a.get_forces()[moved] @ direction))
    thermo = [r for r in csv.DictReader(open(md_dir / "thermo.csv")) if int(r["replica"]) == event["replica"]]
    return {
        "model": name,
        "replica": event["replica"],
        "time_ps": event["time_ps"],
        "bond": event["bond"],
        "mean_length": mean,
        "frame_time_ps": (np.arange(len(frames)) * frame_ps).tolist(),
        "frame_lengths": lengths,
        "frame_radial_force": radial,
        "thermo_time_ps": [float(r["time_ps"]) for r in thermo],
        "thermo_T": [float(r["temperature_K"]) for r in thermo],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", help="NAME=model.pt (none: only add --md's collapses to OUT/diagnosis.json)")
    parser.add_argument("--data", required=True, help="reference data (rMD17 ethanol extxyz)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--md", default=None, help="a compare output folder whose collapses to analyse")
    parser.add_argument("--hot-temperature", type=float, default=900.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames = read(args.data, ":")
    if not args.models:  # keep the model scans, add the collapses of a finished compare run
        result = json.loads((out / "diagnosis.json").read_text())
        result["before_collapse"] = before_collapse(Path(args.md), frames) if args.md else []
        result["command_before_collapse"] = " ".join(["python", *sys.argv])
        (out / "diagnosis.json").write_text(json.dumps(result, indent=1) + "\n")
        return plot(result, out)
    models = {name: load_model(path, "cpu", torch.float64) for name, path in (m.split("=", 1) for m in args.models)}
    result = {"command": " ".join(["python", *sys.argv]), "models": {}, "xtb": {}}
    result["xtb"]["ch_stretch"] = xtb_stretch_curve(frames[0], METHYL_C, METHYL_H)
    result["xtb"]["oh_stretch"] = xtb_stretch_curve(frames[0], OXYGEN, HYDROXYL_H)
    bonds = molecular_bonds(frames[0])
    mean = mean_bond_lengths(frames, bonds, frames[0].numbers)
    for name, model in models.items():
        result["models"][name] = diagnose_model(model, frames, bonds, mean, args.hot_temperature, out / f"hot_md_{name}")
        print(name, {k: v for k, v in result["models"][name].items() if not isinstance(v, (list, dict))})
    if args.md:
        result["before_collapse"] = before_collapse(Path(args.md), frames)
    (out / "diagnosis.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out)


def diagnose_model(model, frames, bonds, mean, hot_temperature: float, hot_dir: Path) -> dict:
    frame = frames[0]
    barriers = np.array(barriers_to_collapse(model, frames[::20], bonds, mean))
    numbers = frame.numbers
    on_data = np.stack([a.positions for a in frames[::20]])
    stretched_geometries = stretched(frame.positions, METHYL_C, METHYL_H, STRETCH[(STRETCH > 1.3) & (STRETCH < 2.0)])
    hot = hot_frames(model, frames[::125], hot_temperature, hot_dir)
    return {
        "ch_stretch": stretch_curve(model, frame, METHYL_C, METHYL_H),
        "oh_stretch": stretch_curve(model, frame, OXYGEN, HYDROXYL_H),
        "h_transfer": transfer_curve(model, frame),
        "barriers_eV": barriers.tolist(),
        "barrier_min_eV": float(barriers.min()),
        "barrier_p5_eV": float(np.percentile(barriers, 5)),
        "barrier_median_eV": float(np.median(barriers)),
        "rotation_error_data": rotational_error(model, on_data, numbers),
        "rotation_error_stretched_ch": rotational_error(model, stretched_geometries, numbers),
        f"rotation_error_md_{hot_temperature:.0f}K": rotational_error(model, hot, numbers),
        "hot_frames": len(hot),
    }


def plot(result: dict, out: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for key, ax, title in (("ch_stretch", axes[0], "methyl C1-H5 stretch"), ("oh_stretch", axes[1], "O2-H8 stretch")):
        ax.plot(result["xtb"][key]["r"], result["xtb"][key]["energy"], "k--", label="GFN2-xTB (shape)")
        for name, m in result["models"].items():
            ax.plot(m[key]["r"], m[key]["energy"], label=name)
        ax.set(xlabel="bond length (Å)", ylabel="E − E(frame) (eV)", title=title, ylim=(-0.5, 4))
        ax.legend(fontsize=8)
    for name, m in result["models"].items():
        axes[2].plot(m["h_transfer"]["t"], m["h_transfer"]["energy"], label=name)
    axes[2].set(xlabel="fraction of the way from C1 to C0", ylabel="E − E(start) (eV)", title="H5 transfer, straight line")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "scans.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, m in result["models"].items():
        ax.hist(m["barriers_eV"], bins=30, range=(0, 2.5), histtype="step", label=f"{name} (min {m['barrier_min_eV']:.2f} eV)")
    ax.set(xlabel="rigid-stretch energy to mean + 0.5 Å (eV)", ylabel="X-H bonds of 50 frames", title="Energy to the collapse criterion")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "barriers.png", dpi=110)
    plt.close(fig)
    if result.get("before_collapse"):
        plot_before_collapse(result["before_collapse"], out)


def plot_before_collapse(events: list[dict], out: Path) -> None:
    fig, axes = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    for e in events:
        label = f"{e['model']} r{e['replica']} {e['bond']} @ {e['time_ps']:.1f} ps"
        t = np.array(e["frame_time_ps"]) - e["time_ps"]
        axes[0].plot(t, np.array(e["frame_lengths"]) - e["mean_length"], label=label)
        axes[1].plot(t, e["frame_radial_force"], label=label)
        tt = np.array(e["thermo_time_ps"]) - e["time_ps"]
        axes[2].plot(tt, e["thermo_T"], label=label)
    axes[0].axhline(0.5, color="k", ls="--", lw=0.8)
    axes[0].set(ylabel="bond − mean (Å)", title="Collapsed replicas: the last picosecond")
    axes[1].set(ylabel="force on H along bond (eV/Å)")
    axes[2].set(ylabel="T (K)", xlabel="time relative to collapse (ps)", xlim=(-1.0, 0.05))
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "before_collapse.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
