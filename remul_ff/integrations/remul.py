"""ASE calculator for remul-ff models: ``atoms.calc = REMULCalculator("model.pt")``."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from torch import nn

from remul_ff.data.batch import MIN_INTERATOMIC_DISTANCE, Structure, check_molecule, collate
from remul_ff.data.domain import SHORT_DISTANCE_FRACTION, outside_domain, pair_name
from remul_ff.geometry import ALL_PAIRS_MAX_ATOMS
from remul_ff.integrations.recorded import RecordedForces, recordable
from remul_ff.models.forces import predict
from remul_ff.models.runtime import ready_members
from remul_ff.models.symmetrize import RotationAveraged
from remul_ff.models.transformer import has_direct_forces, with_direct_forces
from remul_ff.utils.cuda_graphs import CudaGraphRecorder, RecordingFailed
from remul_ff.utils.devices import resolve_device

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class OutOfDomainWarning(UserWarning):
    """A structure is outside what the model saw in training (element pair or distance)."""


def _check_unit_factor(name: str, factor) -> None:
    """A unit conversion factor must be a positive finite number (the size of the user's unit in eV or Å)."""
    try:
        valid = math.isfinite(float(factor)) and float(factor) > 0
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"{name} must be a positive number (the size of one of your units in eV or Å), not {factor!r}.")


class REMULCalculator(Calculator):
    """Energy, forces and per-atom energies of a trained remul-ff model, from one forward pass.

    The model runs in eval mode with frozen parameters, in its own dtype; torch's global default
    dtype is never changed. Given several models (a committee), the results are their mean, and
    ``results["energy_std"]`` (eV) and ``results["forces_std"]`` (``[n, 3]``, eV/Å) hold their
    standard deviation: a disagreement signal for structures unlike the training data.

    Args:
        model_path: A ``model.pt`` written by ``remul-ff train``, or a list of them for a committee
            (or pass ``model=``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... or ``"auto"`` (CUDA when there is one).
        default_dtype: ``"float64"`` (default, for MD and finite differences) or ``"float32"``.
        energy_units_to_eV: Factor from the model's energy unit to eV.
        length_units_to_A: Factor from the model's length unit to Å.
        model: An already built energy-only model (or a list), used instead of ``model_path``.
        compile: Run one model on the CPU through an AOTInductor-compiled program (C++ kernels)
            over the atom pairs within ``r_max`` (several times faster for small molecules:
            ``benchmarks/results/md_speed.md``). The first use of a model file compiles it
            (needs g++) and caches the package in ``~/.cache/remul-ff``; results
            equal the uncompiled model's to rounding.
        test_time_rotations: Average every model's energy over a group of 4, 12 or 24 rotations of
            the input (:mod:`remul_ff.models.symmetrize`): exactly invariant under them, closer to
            invariant under all, and that many times the cost per step (0: off).
        cuda_graph: On CUDA, record one model's force call per composition as a CUDA graph and
            replay it (:mod:`remul_ff.integrations.recorded`; molecules of up to 64 atoms, every
            atom pair fixed: the same results). Committees and rotation averages run plainly.
        forces: ``"conservative"`` (``-dE/dx``) or ``"direct"``: ``forces`` are then a direct-force
            head's (a model trained with ``model.direct_forces: true``), without a backward pass;
            they are no energy's gradient, so MD on them does not conserve energy
            (:class:`~remul_ff.integrations.mts.MultipleTimeStepVerlet` does, at nearly their cost).
            A model with that head also gives ``direct_forces`` on request, in either mode:
            ``calc.get_property("direct_forces", atoms)`` alone skips the backward pass.
        **kwargs: Passed on to :class:`ase.calculators.calculator.Calculator`.

    Making a calculator changes nothing outside it. Long MD in a Python program runs faster with
    :func:`remul_ff.utils.memory.keep_freed_memory` called once (the ``remul-ff`` program does).
    """

    implemented_properties = ["energy", "free_energy", "forces", "energies"]

    def __init__(
        self,
        model_path: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        device: str | torch.device = "cpu",
        default_dtype: str = "float64",
        energy_units_to_eV: float = 1.0,
        length_units_to_A: float = 1.0,
        model: nn.Module | Sequence[nn.Module] | None = None,
        compile: bool = False,
        test_time_rotations: int = 0,
        cuda_graph: bool = True,
        forces: str = "conservative",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if default_dtype not in DTYPES:
            raise ValueError(f"default_dtype must be 'float32' or 'float64', not {default_dtype!r}.")
        if (model_path is None) == (model is None):
            raise ValueError("give exactly one of model_path and model.")
        _check_unit_factor("energy_units_to_eV", energy_units_to_eV)
        _check_unit_factor("length_units_to_A", length_units_to_A)
        self.device = resolve_device(str(device))
        self.dtype = DTYPES[default_dtype]
        self.models = ready_members(self._source(model_path, model), self.device, self.dtype, test_time_rotations)
        self.model = self.models[0]  # elements and training domain come from the first member
        self.energy_units_to_eV = energy_units_to_eV
        self.length_units_to_A = length_units_to_A
        self.warned: set[str] = set()
        self._composition: _Composition | None = None  # made again only when the atomic numbers change
        self.force_mode, self.direct_model = self._direct_forces(forces)
        self.implemented_properties = type(self).implemented_properties + (["direct_forces"] if self.direct_model is not None else [])
        self.compiled = self._compile() if compile else None
        self.compiled_direct = self._compile(direct_only=True) if compile and self.direct_model is not None else None
        self.record_calls = cuda_graph and self.device.type == "cuda" and len(self.models) == 1 and not compile
        self.new_recorder = CudaGraphRecorder
        self._recorded: tuple[_Composition, RecordedForces | None] | None = None

    @staticmethod
    def _source(model_path, model):
        """What to load the models from: ``model_path`` (a file or a list of files), or ``model`` (loaded models only)."""
        if model is None:
            return model_path
        for member in [model] if isinstance(model, (nn.Module, str, os.PathLike)) else list(model):
            if isinstance(member, (str, os.PathLike)):
                raise ValueError(f"model= takes loaded models; give the file {str(member)!r} as the first argument instead.")
        return model

    def _direct_forces(self, forces: str) -> tuple[str, nn.Module | None]:
        """The force mode, and the model's view that returns direct forces (``None`` without a head)."""
        if forces not in ("conservative", "direct"):
            raise ValueError(f"forces must be 'conservative' or 'direct', not {forces!r}.")
        direct = len(self.models) == 1 and has_direct_forces(self.model)
        if forces == "direct" and not direct:
            raise ValueError("forces='direct' needs one model trained with model.direct_forces: true; use forces='conservative'.")
        if forces == "direct":
            warnings.warn(
                "remul-ff: MD on direct forces alone does not conserve energy (they are no energy's gradient); "
                "remul_ff.integrations.MultipleTimeStepVerlet is nearly as fast and conserves it.",
                stacklevel=3,
            )
        return forces, with_direct_forces(self.model) if direct else None

    def _compile(self, direct_only: bool = False):
        if len(self.models) > 1 or self.device.type != "cpu":
            raise ValueError("compile=True runs one model on the CPU; drop it for committees or GPUs.")
        if isinstance(self.model, RotationAveraged):
            raise ValueError("compile=True runs the plain model; drop it or test_time_rotations.")
        from remul_ff.models.export import compiled_model

        return compiled_model(self.model, direct_only=direct_only)

    def check_atoms(self, atoms: Atoms, where: str = "the structure") -> None:
        """Raise :class:`DataError` for periodic cells, no atoms, non-finite positions, coincident atoms and unknown elements.

        Also warns (:class:`OutOfDomainWarning`, once per kind) when the structure pairs elements,
        or brings atoms closer, than the training data did.
        """
        self._checked_distances(atoms, where)

    def _checked_distances(self, atoms: Atoms, where: str) -> np.ndarray | None:
        """:meth:`check_atoms`, returning the distances of the composition's pairs (``None`` above ``ALL_PAIRS_MAX_ATOMS``).

        One set of distances serves every check of a step and the compiled path's pair list.
        """
        check_molecule(atoms, where)
        positions = atoms.positions
        previous, composition = self._composition, self._composition_of(atoms.numbers)
        if composition.i is None:  # a large structure: a cell list finds the close pairs
            Structure(positions, atoms.numbers).check_min_distance(where)
            return None
        distances = np.linalg.norm(positions[composition.i] - positions[composition.j], axis=1)
        if len(distances) and distances.min() < MIN_INTERATOMIC_DISTANCE:
            Structure(positions, atoms.numbers).check_min_distance(where)  # raises, naming the pair
        self._warn_outside_training_domain(atoms, distances, composition, first=composition is not previous)
        return distances

    def _composition_of(self, numbers: np.ndarray) -> _Composition:
        """The cached :class:`_Composition` of ``numbers``; a new one checks the elements first."""
        if self._composition is None or numbers.tobytes() != self._composition.key:  # MD keeps it: once per run
            for member in self.models:
                member.elements.check(torch.as_tensor(numbers))
            self._composition = _Composition.of(numbers, getattr(self.model, "training_domain", None), self.length_units_to_A)
        return self._composition

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """What changed since the last calculation (ASE's contract), by exact comparison.

        ASE's own test compares every array with ``np.allclose``; an MD step reads three properties,
        and those tests were a large share of a compiled small-molecule step. Exact equality differs from
        ASE's ``atol=1e-15`` only in counting a sub-1e-15 Å move as a change (one more model call,
        never a stale result).
        """
        if self.atoms is None:
            return list(all_changes)
        old, watched = self.atoms, set(all_changes) - set(self.ignored_changes)
        changed = [p for p in ("cell", "pbc") if p in watched and not np.array_equal(getattr(old, p), getattr(atoms, p))]
        watched -= {"cell", "pbc"}
        changed += sorted(watched & (set(old.arrays) ^ set(atoms.arrays)))
        return changed + [
            p for p in sorted(watched & set(old.arrays) & set(atoms.arrays)) if not np.array_equal(old.arrays[p], atoms.arrays[p])
        ]

    def _warn_outside_training_domain(self, atoms: Atoms, distances: np.ndarray, composition: _Composition, first: bool) -> None:
        """Warn, once per kind of problem, when the structure leaves what the model saw in training.

        The full test (element pairs never seen, short distances) runs on a composition's first
        structure; after that a comparison of the distances with per-pair limits, every call.
        """
        if composition.limits is None:  # no training domain recorded
            return
        if first or (distances < composition.limits).any():
            domain = self.model.training_domain
            self._warn(outside_domain(atoms.positions / self.length_units_to_A, atoms.numbers, domain))

    def _warn(self, messages: list[str]) -> None:
        for message in messages:
            key = message.split(" are ")[0] if "apart" in message else message  # one warning per short pair, not per distance
            if key not in self.warned:
                self.warned.add(key)
                warnings.warn(f"remul-ff: {message}", OutOfDomainWarning, stacklevel=4)

    def calculate(self, atoms: Atoms | None = None, properties: list[str] | None = None, system_changes=all_changes) -> None:
        """Compute every implemented property with a single model call (direct forces alone: no backward pass)."""
        super().calculate(atoms, properties, system_changes)
        distances = self._checked_distances(self.atoms, "the structure")
        # Centred in float64 first: float32 far from the origin rounds the interatomic vectors.
        positions = (self.atoms.positions - self.atoms.positions.mean(0)) / self.length_units_to_A
        self.results = self._results(self._predictions(positions, distances, *self._wanted(properties)))

    def _predictions(self, positions: np.ndarray, distances: np.ndarray | None, direct: bool, conservative: bool) -> list[tuple]:
        """Each member's prediction tuple (see :meth:`_results`) by the cheapest path that gives what is asked."""
        if not direct or (conservative and self.compiled is not None):  # the compiled program adds direct forces itself
            return self._predict(positions, distances)
        if conservative or self.compiled_direct is None or len(positions) < 2:
            return [self._predict_direct(positions, conservative)]
        pairs = None if distances is None else self._composition.pairs_within(distances, self.model.r_max * self.length_units_to_A)
        energy, forces, atomic = self.compiled_direct(torch.from_numpy(positions).to(self.dtype), self._composition.numbers, pairs)
        return [(energy, None, atomic, forces)]

    def _wanted(self, properties: list[str] | None) -> tuple[bool, bool]:
        """Whether this call computes ``(direct forces, conservative forces)``."""
        if self.direct_model is None:
            return False, True
        if self.force_mode == "direct":
            return True, False
        asked = set(properties or ["forces"])
        if "direct_forces" in asked:
            return True, "forces" in asked
        return True, True  # the direct head's share of a full call is small

    def _predict_direct(self, positions: np.ndarray, conservative: bool) -> tuple[torch.Tensor, ...]:
        """``(energy, forces or None, atomic energies, direct forces)`` from the direct-force view."""
        batch = collate([Structure(positions, self._composition.numbers.numpy())], dtype=self.dtype).to(self.device)
        p = predict(self.direct_model, batch, forces=conservative)
        return p.energy[0], p.forces, p.atomic_energies, p.direct_forces

    def _predict(self, positions: np.ndarray, distances: np.ndarray | None) -> list[tuple[torch.Tensor, ...]]:
        """``(energy, forces [n, 3], atomic energies [n])`` of each committee member, in model units (the
        compiled program of a model with a direct-force head adds its direct forces)."""
        numbers = self._composition.numbers
        if self.compiled is not None and len(numbers) >= 2:  # the compiled program needs at least two atoms
            pairs = None if distances is None else self._composition.pairs_within(distances, self.model.r_max * self.length_units_to_A)
            return [self.compiled(torch.from_numpy(positions).to(self.dtype), numbers, pairs)]
        recorded = self._recorded_call(positions) if self.record_calls else None
        if recorded is not None:
            return [recorded(positions)]
        batch = collate([Structure(positions, numbers.numpy())], dtype=self.dtype).to(self.device)
        return [(p.energy[0], p.forces, p.atomic_energies) for p in (predict(member, batch) for member in self.models)]

    def _recorded_call(self, positions: np.ndarray) -> RecordedForces | None:
        """The current composition's recorded force call (``None`` where it cannot be recorded)."""
        composition = self._composition
        if self._recorded is None or self._recorded[0] is not composition:
            self._recorded = (composition, self._record(composition, positions))
        return self._recorded[1]

    def _record(self, composition: _Composition, positions: np.ndarray) -> RecordedForces | None:
        if not recordable(self.model, len(composition.numbers)):
            return None
        try:
            return RecordedForces(self.model, composition.numbers.numpy(), positions, self.dtype, self.device, self.new_recorder)
        except RecordingFailed:
            self.record_calls = False  # warned once; plain calls from now on
            return None

    def _results(self, predictions: list[tuple[torch.Tensor, ...]]) -> dict:
        """ASE's results (eV, eV/Å): the committee's mean, and its spread when there are several members.

        A prediction is ``(energy, forces, atomic energies)``, or from the direct-force view
        ``(energy, forces or None, atomic energies, direct forces)``.
        """
        eV, eV_per_A = self.energy_units_to_eV, self.energy_units_to_eV / self.length_units_to_A
        energies = np.array([float(p[0]) for p in predictions]) * eV
        atomic = np.stack([p[2].detach().cpu().double().numpy() for p in predictions]) * eV
        energy = float(energies.mean())
        results = {"energy": energy, "free_energy": energy, "energies": atomic.mean(0)}
        if len(predictions[0]) > 3:  # one model, seen through its direct-force view
            results["direct_forces"] = predictions[0][3].detach().cpu().double().numpy() * eV_per_A
        if self.force_mode == "direct":
            results["forces"] = results["direct_forces"]
        if predictions[0][1] is None or self.force_mode == "direct":
            return results
        forces = np.stack([p[1].detach().cpu().double().numpy() for p in predictions]) * eV_per_A
        results["forces"] = forces.mean(0)
        if len(predictions) > 1:
            results["energy_std"] = float(energies.std())
            results["forces_std"] = forces.std(0)
        return results


@dataclass
class _Composition:
    """What stays fixed while the atoms move (MD keeps the composition), made once per list of atomic numbers.

    Up to :data:`ALL_PAIRS_MAX_ATOMS` atoms the checks look at every pair ``i < j`` (``i``, ``j``);
    ``limits`` holds each pair's distance (in the structure's length unit) below which the model is
    outside its training domain (0 for element pairs never seen in training: they are reported once).
    """

    key: bytes
    numbers: torch.Tensor  # [n] int64, the model's input
    i: np.ndarray | None = None
    j: np.ndarray | None = None
    limits: np.ndarray | None = None

    @classmethod
    def of(cls, numbers: np.ndarray, domain: dict | None, length_units_to_A: float) -> _Composition:
        composition = cls(numbers.tobytes(), torch.as_tensor(numbers, dtype=torch.long).clone())
        if len(numbers) > ALL_PAIRS_MAX_ATOMS:  # all pairs would need n^2 memory; these structures are not domain-checked yet
            return composition
        composition.i, composition.j = np.triu_indices(len(numbers), 1)
        if domain:
            names = [pair_name(a, b) for a, b in zip(numbers[composition.i], numbers[composition.j])]
            composition.limits = np.array([SHORT_DISTANCE_FRACTION * domain.get(n, 0.0) for n in names]) * length_units_to_A
        return composition

    def pairs_within(self, distances: np.ndarray, cutoff: float) -> torch.Tensor:
        """``[2, E]`` the ordered pairs ``i != j`` closer than ``cutoff`` (1e-6 relative margin), sorted by ``i``, then ``j``.

        The same pairs, in the same order, as :func:`~remul_ff.models.export.pairs_within` finds
        from the positions; here from the distances the checks already computed.
        """
        close = distances < cutoff * (1 + 1e-6)
        n, i, j = len(self.numbers), self.i[close], self.j[close]
        codes = np.sort(np.concatenate([i * n + j, j * n + i]))
        return torch.from_numpy(np.stack([codes // n, codes % n]))
