"""Accuracy and equivariance measures of a model on labelled structures.

Accuracy: energy MAE/RMSE (total, meV, and per atom, meV/atom) and force MAE/RMSE (meV/Å,
overall and per element).

Equivariance, over ``K`` random rotations ``R_k`` per structure:

* label-free error ``E_R ||f(Rx) - R f(x)||``: for energies the mean ``|E(Rx) - E(x)|`` (meV),
  for forces the mean Frobenius norm per structure (meV/Å); *relative* values divide by the mean
  ``|E(x) - ΣE0|`` (the interaction energy; the E0 part is huge and exactly invariant) and the mean
  ``||F(x)||``. The relative energy error is meaningful with isolated-atom E0s (then ``E - ΣE0``
  is the atomisation energy); ``average`` E0s fitted on one molecule make the mean of
  ``E - ΣE0`` zero and this ratio large, so read the absolute value there;
* the decomposition of Shen et al.: the twirled prediction ``f̄(x) = (1/K) Σ_k R_k⁻¹ f(R_k x)``,
  ``L_total`` = mean loss of ``R_k⁻¹ f(R_k x)`` against the labels, ``L_mean`` = loss of ``f̄``, and
  ``L_equiv = L_total - L_mean``, which for squared errors is the variance of the back-rotated
  predictions around their mean. ``percent = 100 L_equiv / L_total`` is the share of the loss that
  is caused by imperfect symmetry. It is reported for the energy term, the force term and the
  weighted task loss.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from ase.data import chemical_symbols
from torch import nn

from remul_ff.config import LossConfig
from remul_ff.data.batch import AtomicBatch, Structure, collate
from remul_ff.geometry import random_rotations, rotate_vectors
from remul_ff.models.common import scatter_sum
from remul_ff.models.forces import predict
from remul_ff.models.transformer import has_direct_forces, with_direct_forces

MEV = 1000.0


def iterate_batches(
    structures: Sequence[Structure], batch_size: int, device: torch.device | str, dtype: torch.dtype
) -> Iterator[AtomicBatch]:
    """Consecutive batches of ``structures`` on ``device`` in ``dtype``."""
    for start in range(0, len(structures), batch_size):
        yield collate(structures[start : start + batch_size]).to(device, dtype)


class _Sums(defaultdict):
    """Running sums keyed by name; ``mean(a, b)`` divides two of them."""

    def __init__(self) -> None:
        super().__init__(float)

    def add(self, key: str, value: torch.Tensor | float) -> None:
        self[key] += float(value)

    def mean(self, key: str, count: str) -> float:
        return self[key] / max(self[count], 1.0)


def _accuracy_sums(sums: _Sums, batch: AtomicBatch, energy: torch.Tensor, forces: torch.Tensor) -> None:
    n_atoms = batch.atoms_per_molecule
    de = (energy - batch.energy).detach()
    df = (forces - batch.forces).detach().double()
    sums.add("e_abs", de.abs().sum())
    sums.add("e_sq", de.square().sum())
    sums.add("ea_abs", (de / n_atoms).abs().sum())
    sums.add("ea_sq", (de / n_atoms).square().sum())
    sums.add("n_mol", batch.n_molecules)
    for z in batch.atomic_numbers.unique().tolist():
        mask = batch.atomic_numbers == z
        sums.add(f"f_abs_{z}", df[mask].abs().sum())
        sums.add(f"f_sq_{z}", df[mask].square().sum())
        sums.add(f"n_f_{z}", 3 * int(mask.sum()))


def _accuracy_report(sums: _Sums) -> dict[str, object]:
    elements = sorted(int(k[6:]) for k in sums if k.startswith("f_abs_"))
    f_abs = sum(sums[f"f_abs_{z}"] for z in elements)
    f_sq = sum(sums[f"f_sq_{z}"] for z in elements)
    n_f = sum(sums[f"n_f_{z}"] for z in elements)
    return {
        "energy_mae_meV": MEV * sums.mean("e_abs", "n_mol"),
        "energy_rmse_meV": float(MEV * np.sqrt(sums.mean("e_sq", "n_mol"))),
        "energy_per_atom_mae_meV": MEV * sums.mean("ea_abs", "n_mol"),
        "energy_per_atom_rmse_meV": float(MEV * np.sqrt(sums.mean("ea_sq", "n_mol"))),
        "forces_mae_meV_A": MEV * f_abs / max(n_f, 1),
        "forces_rmse_meV_A": float(MEV * np.sqrt(f_sq / max(n_f, 1))),
        "forces_per_element": {
            chemical_symbols[z]: {
                "mae_meV_A": MEV * sums.mean(f"f_abs_{z}", f"n_f_{z}"),
                "rmse_meV_A": float(MEV * np.sqrt(sums.mean(f"f_sq_{z}", f"n_f_{z}"))),
            }
            for z in elements
        },
    }


def _equivariance_sums(sums: _Sums, model: nn.Module, batch: AtomicBatch, base, e0_sum: torch.Tensor, table: torch.Tensor) -> None:
    """Accumulate label-free errors and the Shen decomposition over the rotations ``table`` ``[m, K, 3, 3]``."""
    n_atoms, n_rotations = batch.atoms_per_molecule, table.shape[1]
    energies, forces = [], []
    for k in range(n_rotations):
        per_atom = table[:, k].to(batch.device, batch.dtype)[batch.molecule_index]
        rotated = predict(model, batch.replace(positions=rotate_vectors(batch.positions, per_atom)))
        energies.append(rotated.energy.detach())
        forces.append(rotate_vectors(rotated.forces.detach(), per_atom.transpose(1, 2)))  # R⁻¹ f(Rx)
        sums.add("eq_e_abs", (rotated.energy.detach() - base.energy.detach()).abs().sum())
        df = rotated.forces.detach() - rotate_vectors(base.forces.detach(), per_atom)
        sums.add("eq_f_abs", _per_molecule_norms(df, batch))
        if base.direct_forces is not None:
            sums.add("eq_d_abs", _per_molecule_norms(rotated.direct_forces - rotate_vectors(base.direct_forces, per_atom), batch))
            sums.add("ref_d", _per_molecule_norms(base.direct_forces, batch))  # once per rotation, as ref_f
    sums.add("eq_n", n_rotations * batch.n_molecules)
    sums.add("ref_e", (base.energy.detach() - e0_sum).abs().sum() * n_rotations)
    sums.add("ref_f", _per_molecule_norms(base.forces, batch) * n_rotations)
    if batch.energy is None or batch.forces is None:
        return
    e_stack, f_stack = torch.stack(energies), torch.stack(forces).double()
    sums.add("shen_e_total", (((e_stack - batch.energy) / n_atoms).square()).sum() / n_rotations)
    sums.add("shen_e_mean", (((e_stack.mean(0) - batch.energy) / n_atoms).square()).sum())
    sums.add("shen_f_total", (f_stack - batch.forces.double()).square().sum() / n_rotations)
    sums.add("shen_f_mean", (f_stack.mean(0) - batch.forces.double()).square().sum())
    sums.add("shen_n_e", batch.n_molecules)
    sums.add("shen_n_f", batch.forces.numel())


def _per_molecule_norms(vectors: torch.Tensor, batch: AtomicBatch) -> torch.Tensor:
    """Σ over molecules of the Frobenius norm of each molecule's rows of ``vectors`` ``[n, 3]``."""
    return scatter_sum(vectors.detach().double().square().sum(-1), batch.molecule_index, batch.n_molecules).sqrt().sum()


def _direct_sums(sums: _Sums, batch: AtomicBatch, direct: torch.Tensor, conservative: torch.Tensor) -> None:
    df = (direct - batch.forces).detach().double()
    sums.add("d_abs", df.abs().sum())
    sums.add("d_sq", df.square().sum())
    sums.add("n_d", df.numel())
    gap = (direct - conservative).detach().double()  # the slow force of multiple time stepping
    sums.add("d_c_abs", gap.abs().sum())
    sums.add("d_c_sq", gap.square().sum())


def _equivariance_report(sums: _Sums, energy_weight: float, forces_weight: float) -> dict[str, float]:
    report = {
        "equi_energy_abs_meV": MEV * sums.mean("eq_e_abs", "eq_n"),
        "equi_energy_rel": sums["eq_e_abs"] / max(sums["ref_e"], 1e-30),
        "equi_forces_abs_meV_A": MEV * sums.mean("eq_f_abs", "eq_n"),
        "equi_forces_rel": sums["eq_f_abs"] / max(sums["ref_f"], 1e-30),
    }
    if sums["ref_d"]:
        report["equi_direct_forces_abs_meV_A"] = MEV * sums.mean("eq_d_abs", "eq_n")
        report["equi_direct_forces_rel"] = sums["eq_d_abs"] / sums["ref_d"]
    if sums["shen_n_e"]:
        parts = {
            "energy": (sums.mean("shen_e_total", "shen_n_e"), sums.mean("shen_e_mean", "shen_n_e")),
            "forces": (sums.mean("shen_f_total", "shen_n_f"), sums.mean("shen_f_mean", "shen_n_f")),
        }
        total = energy_weight * parts["energy"][0] + forces_weight * parts["forces"][0]
        mean = energy_weight * parts["energy"][1] + forces_weight * parts["forces"][1]
        parts["task"] = (total, mean)
        for name, (l_total, l_mean) in parts.items():
            report[f"shen_{name}_L_total"] = l_total
            # A variance, so never negative; for an exactly equivariant model rounding gives -0.
            l_mean = min(l_mean, l_total)
            report[f"shen_{name}_L_equiv"] = l_total - l_mean
            report[f"shen_{name}_percent"] = 100.0 * (l_total - l_mean) / max(l_total, 1e-30)
    return report


def evaluate(
    model: nn.Module,
    structures: Sequence[Structure],
    e0s: dict[int, float],
    n_rotations: int = 32,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
    energy_weight: float = 1.0,
    forces_weight: float = 10.0,
    seed: int = 0,
    shard: tuple[int, int] = (0, 1),
) -> dict[str, object]:
    """Accuracy (when labels exist) and equivariance measures of ``model`` on ``structures``.

    A model with a direct-force head also gets ``direct_forces_mae_meV_A`` and ``_rmse_``, their rotational
    error ``equi_direct_forces_rel`` and ``direct_minus_conservative_mae_meV_A`` (multiple time stepping's slow force).

    Args:
        model: Energy-only model on ``device`` in ``dtype``; ``structures``: what to evaluate.
        e0s: Reference energies, used for the relative energy equivariance error.
        n_rotations: ``K``, random rotations per structure (0 skips the equivariance measures).
        batch_size: Structures per forward pass.
        energy_weight, forces_weight: Weights of the task loss in the Shen decomposition.
        seed: Seed of the rotations (a private generator; torch's global RNG is not touched).
        shard: ``(rank, world_size)``: this process evaluates structures ``rank::world_size`` and
            the sums of all processes are combined, so each structure counts exactly once and
            every rank gets the single-process result.
    """
    table = _rotation_table(len(structures), n_rotations, seed)
    rank, world = shard
    indices, sums = list(range(rank, len(structures), world)), _Sums()
    labelled = all(s.energy is not None and s.forces is not None for s in structures)
    model = with_direct_forces(model) if has_direct_forces(model) else model
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        batch = collate([structures[i] for i in chunk]).to(device, dtype)
        _add_batch(sums, model, batch, labelled, e0s, table[chunk] if n_rotations > 0 else None)
    sums = _combine(sums, world) if world > 1 else sums
    return _report(sums, len(structures), n_rotations, labelled, (energy_weight, forces_weight))


def validation_loss(report: dict[str, object], loss: LossConfig) -> float:
    """The loss that chooses the best epoch: the training loss's terms on an :func:`evaluate` report
    (per-atom energy and force RMSE; the direct forces' against their ``loss.direct_forces_target``)."""
    value = (
        loss.energy_weight * (report["energy_per_atom_rmse_meV"] / 1e3) ** 2 + loss.forces_weight * (report["forces_rmse_meV_A"] / 1e3) ** 2
    )
    if "direct_forces_rmse_meV_A" in report:
        key = "direct_minus_conservative_rmse_meV_A" if loss.direct_forces_target == "conservative" else "direct_forces_rmse_meV_A"
        value += loss.direct_forces_weight * (report[key] / 1e3) ** 2
    return float(value)


def _rotation_table(n_structures: int, n_rotations: int, seed: int) -> torch.Tensor:
    """``[n_structures, n_rotations, 3, 3]`` random rotations from a private generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return random_rotations(n_structures * n_rotations, torch.float64, "cpu", generator).view(n_structures, n_rotations, 3, 3)


def _report(sums: _Sums, n_structures: int, n_rotations: int, labelled: bool, weights: tuple[float, float]) -> dict[str, object]:
    """The report of :func:`evaluate` from its (combined) sums."""
    report: dict[str, object] = {"n_structures": n_structures, "n_rotations": n_rotations}
    if labelled:
        report.update(_accuracy_report(sums))
        if sums["n_d"]:
            report["direct_forces_mae_meV_A"] = MEV * sums.mean("d_abs", "n_d")
            report["direct_forces_rmse_meV_A"] = float(MEV * np.sqrt(sums.mean("d_sq", "n_d")))
            report["direct_minus_conservative_mae_meV_A"] = MEV * sums.mean("d_c_abs", "n_d")
            report["direct_minus_conservative_rmse_meV_A"] = float(MEV * np.sqrt(sums.mean("d_c_sq", "n_d")))
    if n_rotations > 0:
        report.update(_equivariance_report(sums, *weights))
    return report


def _add_batch(sums: _Sums, model: nn.Module, batch: AtomicBatch, labelled: bool, e0s: dict[int, float], rotations) -> None:
    """Add one batch's accuracy (when ``labelled``) and, with ``rotations``, equivariance sums."""
    base = predict(model, batch)
    if labelled:
        _accuracy_sums(sums, batch, base.energy, base.forces)
        if base.direct_forces is not None:
            _direct_sums(sums, batch, base.direct_forces, base.forces)
    if rotations is not None:
        _equivariance_sums(sums, model, batch, base, _e0_sums(batch, e0s), rotations)


def _e0_sums(batch, e0s: dict[int, float]) -> torch.Tensor:
    """``[m]`` each molecule's sum of isolated-atom energies (elements missing from ``e0s`` count 0)."""
    per_atom = torch.tensor([e0s.get(int(z), 0.0) for z in batch.atomic_numbers], dtype=torch.float64, device=batch.device)
    return scatter_sum(per_atom, batch.molecule_index, batch.n_molecules)


def _combine(sums: _Sums, world: int) -> _Sums:
    """Add up the sums of every rank (their keys may differ: per-element keys depend on the shard)."""
    gathered: list[dict] = [None] * world
    torch.distributed.all_gather_object(gathered, dict(sums))
    total = _Sums()
    for part in gathered:
        for key, value in part.items():
            total.add(key, value)
    return total


def format_report(report: dict[str, object]) -> str:
    """A plain-text table of an :func:`evaluate` report."""
    lines = [f"structures: {report['n_structures']}"]
    if "energy_mae_meV" in report:
        lines += [
            "quantity                     MAE        RMSE",
            f"energy (meV)            {report['energy_mae_meV']:9.3f}  {report['energy_rmse_meV']:9.3f}",
            f"energy per atom (meV)   {report['energy_per_atom_mae_meV']:9.3f}  {report['energy_per_atom_rmse_meV']:9.3f}",
            f"forces (meV/Å)          {report['forces_mae_meV_A']:9.3f}  {report['forces_rmse_meV_A']:9.3f}",
        ]
        for symbol, values in report["forces_per_element"].items():
            lines.append(f"  forces on {symbol:<2} (meV/Å)   {values['mae_meV_A']:9.3f}  {values['rmse_meV_A']:9.3f}")
    if "direct_forces_mae_meV_A" in report:
        lines += [
            f"direct forces (meV/Å)   {report['direct_forces_mae_meV_A']:9.3f}  {report['direct_forces_rmse_meV_A']:9.3f}",
            f"  direct - conservative {report['direct_minus_conservative_mae_meV_A']:9.3f}",
        ]
    if "equi_forces_rel" in report:
        lines += [
            f"equivariance over K={report['n_rotations']} rotations      absolute      relative",
            f"  energy |E(Rx) - E(x)|          {report['equi_energy_abs_meV']:9.4f} meV  {report['equi_energy_rel']:9.3e}",
            f"  forces ||F(Rx) - R F(x)||      {report['equi_forces_abs_meV_A']:9.4f} meV/Å {report['equi_forces_rel']:9.3e}",
        ]
    if "shen_task_percent" in report:
        lines.append("Shen et al. decomposition       L_total      L_equiv   percent")
        for name in ("energy", "forces", "task"):
            lines.append(
                f"  {name:<8}                  {report[f'shen_{name}_L_total']:10.3e}  "
                f"{report[f'shen_{name}_L_equiv']:10.3e}  {report[f'shen_{name}_percent']:6.2f}%"
            )
    return "\n".join(lines)
