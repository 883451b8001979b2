"""The project's own DFT test sets, labelled at the data's level of theory, and the labeller's check.

Geometries come from GFN2-xTB Langevin MD (``remul_ff.data.generate``), started from the first
frame of the shared training set with a seed of their own, so no test frame is a shared frame.
Labels come from :mod:`remul_ff.data.labelling` with PySCF, cached per geometry in
``benchmarks/test_sets/cache/`` (committed: a killed or unfinished run goes on where it stopped).

Sets (``benchmarks/test_sets/<name>.xyz``, extended XYZ, eV and eV/Å):

* ``ethanol_500K``: 200 frames of 500 K MD, PBE/def2-SVP (rMD17's level of theory);
* ``acac_300K`` and ``acac_600K``: 100 frames each, PBE+D3(BJ)/def2-SVP (the acac data's).

``check`` first shows that the labeller reproduces the shared labels on 20 frames of each set
(every 50th ethanol frame, every 25th acac frame): force MAE, and the energy offset's mean and
spread (energies may differ by one constant). For acetylacetone it labels PBE once and adds D3
with both dampings, to show which one the data used.

Commands (repository root, one core each; ~7 s an ethanol frame, ~45 s an acac frame)::

    OMP_NUM_THREADS=1 python benchmarks/test_sets.py check
    OMP_NUM_THREADS=1 python benchmarks/test_sets.py make ethanol_500K acac_300K acac_600K

Writes ``benchmarks/results/labeller_check.{json,md}`` and the test sets.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import ase.io
import numpy as np
from perf._common import write_results

from remul_ff.data.generate import GenerateSettings, run_reference_md, write_extxyz
from remul_ff.data.labelling import PySCFLabeller, PySCFSettings, d3_correction, label_frames

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
HERE = Path(__file__).resolve().parent / "test_sets"
CACHE = HERE / "cache"


@dataclass
class TestSet:
    source: str  # shared training file whose first frame starts the MD
    temperature: float
    n_frames: int
    dispersion: str | None
    seed: int


SETS = {
    "ethanol_500K": TestSet("rmd17_ethanol/train.xyz", 500.0, 200, None, 101),
    "acac_300K": TestSet("acac/train_300K.xyz", 300.0, 100, "d3bj", 102),
    "acac_600K": TestSet("acac/train_300K.xyz", 600.0, 100, "d3bj", 103),
}
CHECKS = {"ethanol": ("rmd17_ethanol/train.xyz", 50), "acac": ("acac/train_300K.xyz", 25)}


def geometries(name: str) -> list:
    """The set's MD geometries, made once with GFN2-xTB and kept beside the labels."""
    path = HERE / f"{name}_geometries.xyz"
    if not path.exists():
        spec = SETS[name]
        start = ase.io.read(SHARED / spec.source, index=0)
        settings = GenerateSettings(
            temperature=spec.temperature, n_frames=spec.n_frames, sample_every=40, equilibration=2000, seed=spec.seed
        )
        write_extxyz(run_reference_md(start, settings), path, info={"source": "GFN2-xTB_Langevin", "seed": spec.seed})
    return [atoms for atoms in ase.io.read(path, index=":")]


def make(name: str) -> None:
    spec = SETS[name]
    labeller = PySCFLabeller(PySCFSettings(dispersion=spec.dispersion))
    frames = geometries(name)
    structures = label_frames(frames, labeller, CACHE / f"{name}.jsonl", desc=name)
    write_extxyz(structures, HERE / f"{name}.xyz", info={"level": labeller.signature.replace(" ", "_")})
    print(f"{name}: {len(structures)} frames labelled with {labeller.signature}")


def compare(frames: list, energies: np.ndarray, forces: list[np.ndarray]) -> dict:
    offsets = energies - np.array([a.get_potential_energy() for a in frames])
    errors = np.concatenate([np.abs(f - a.get_forces()).ravel() for f, a in zip(forces, frames)])
    return {
        "force_mae_meV_A": 1e3 * float(errors.mean()),
        "force_max_meV_A": 1e3 * float(errors.max()),
        "energy_offset_mean_meV": 1e3 * float(offsets.mean()),
        "energy_offset_spread_meV": 1e3 * float(offsets.max() - offsets.min()),
    }


def check() -> None:
    rows = {}
    for molecule, (source, every) in CHECKS.items():
        frames = ase.io.read(SHARED / source, index=f"::{every}")[:20]
        pbe = label_frames(frames, PySCFLabeller(), CACHE / f"check_{molecule}.jsonl", desc=f"check {molecule}")
        energies, forces = np.array([s.energy for s in pbe]), [s.forces for s in pbe]
        rows[f"{molecule} PBE/def2-SVP"] = compare(frames, energies, forces)
        if molecule == "acac":
            for damping in ("d3bj", "d3zero"):
                d3 = [d3_correction(a, "PBE", damping) for a in frames]
                rows[f"acac PBE+{damping}/def2-SVP"] = compare(
                    frames, energies + np.array([d[0] for d in d3]), [f + d[1] for f, d in zip(forces, d3)]
                )
    table = [
        "| labels | frames | force MAE (meV/Å) | largest force error | energy offset mean (meV) | offset spread (meV) |",
        "|---|---|---|---|---|---|",
    ]
    table += [
        f"| {k} | 20 | {v['force_mae_meV_A']:.2f} | {v['force_max_meV_A']:.1f} | {v['energy_offset_mean_meV']:.1f} "
        f"| {v['energy_offset_spread_meV']:.2f} |"
        for k, v in rows.items()
    ]
    note = (
        "PySCF labels of 20 shared frames (every 50th rMD17 ethanol frame, every 25th acac 300 K frame) against "
        "the shared labels. Energies may differ by one constant (other code, grid); the spread is what must be small."
    )
    write_results("labeller_check", {"rows": rows}, note + "\n\n" + "\n".join(table))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("check", "make"))
    parser.add_argument("sets", nargs="*", choices=sorted(SETS), default=[])
    args = parser.parse_args(argv)
    if args.action == "check":
        check()
    for name in args.sets:
        make(name)


if __name__ == "__main__":
    main(sys.argv[1:])
