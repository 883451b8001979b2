"""ASE calculator for remul-ff models: ``atoms.calc = REMULCalculator("model.pt")``."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from torch import nn

from remul_ff.data.batch import Structure, collate
from remul_ff.data.domain import SHORT_DISTANCE_FRACTION, outside_domain, pair_name
from remul_ff.errors import DataError
from remul_ff.models.common import inference_model
from remul_ff.models.forces import predict
from remul_ff.models.files import load_models

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class OutOfDomainWarning(UserWarning):
    """A structure is outside what the model saw in training (element pair or distance)."""


class REMULCalculator(Calculator):
    """Energy, forces and per-atom energies of a trained remul-ff model, from one forward pass.

    The model runs in eval mode with frozen parameters, in its own dtype; torch's global default
    dtype is never changed. Given several models (a committee), the results are their mean, and
    ``results["energy_std"]`` (eV) and ``results["forces_std"]`` (``[n, 3]``, eV/Å) hold their
    standard deviation: a disagreement signal for structures unlike the training data.

    Args:
        model_path: A ``model.pt`` written by ``remul-ff train``, or a list of them for a committee
            (or pass ``model=``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        default_dtype: ``"float64"`` (default, for MD and finite differences) or ``"float32"``.
        energy_units_to_eV: Factor from the model's energy unit to eV.
        length_units_to_A: Factor from the model's length unit to Å.
        model: An already built energy-only model (or a list), used instead of ``model_path``.
        compile: Run one model on the CPU through an AOTInductor-compiled program (C++ kernels)
            over the atom pairs within ``r_max`` (ethanol: 1.91 ms per ASE MD step against 8.90,
            ``benchmarks/results/md_speed.md``). The first use of a model file compiles it
            (about a minute, needs g++) and caches the package in ``~/.cache/remul-ff``; results
            equal the uncompiled model's to rounding.
        **kwargs: Passed on to :class:`ase.calculators.calculator.Calculator`.
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
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if default_dtype not in DTYPES:
            raise ValueError(f"default_dtype must be 'float32' or 'float64', not {default_dtype!r}.")
        if (model_path is None) == (model is None):
            raise ValueError("give exactly one of model_path and model.")
        self.device = torch.device(device)
        self.dtype = DTYPES[default_dtype]
        if model is None:
            model = load_models(model_path, self.device, self.dtype)
        members = [model] if isinstance(model, nn.Module) else list(model)
        if not members:
            raise ValueError("a committee needs at least one model.")
        # inference copies: the transformer's merges its edge layers (same energies, fewer operations)
        self.models = [inference_model(m.to(self.device, self.dtype).eval().requires_grad_(False)) for m in members]
        self.model = self.models[0]  # elements and training domain come from the first member
        self.energy_units_to_eV = energy_units_to_eV
        self.length_units_to_A = length_units_to_A
        self.warned: set[str] = set()
        # MD keeps the composition: the element check and the domain test's pair limits are made once
        # per list of atomic numbers (the key), and remade only when it changes
        self._composition: bytes | None = None
        self._domain_limits: tuple | None = None  # pair indices i, j and their shortest allowed distances
        self.compiled = self._compile() if compile else None

    def _compile(self):
        if len(self.models) > 1 or self.device.type != "cpu":
            raise ValueError("compile=True runs one model on the CPU; drop it for committees or GPUs.")
        from remul_ff.models.export import compiled_model

        return compiled_model(self.model)

    def check_atoms(self, atoms: Atoms, where: str = "the structure") -> None:
        """Raise :class:`DataError` for periodic cells, non-finite positions, coincident atoms and unknown elements.

        Also warns (:class:`OutOfDomainWarning`, once per kind) when the structure pairs elements,
        or brings atoms closer, than the training data did.
        """
        if atoms.pbc.any():
            raise DataError(f"{where} is periodic (pbc={atoms.pbc.tolist()}), which remul-ff does not support yet; "
                            "for a molecule in a dummy box set atoms.pbc = False (pbc=\"F F F\" in extxyz).")
        if not np.all(np.isfinite(atoms.positions)):
            raise DataError(f"{where} has NaN or infinite positions; the simulation has probably blown up.")
        Structure(atoms.positions, atoms.numbers).check_min_distance(where)
        if atoms.numbers.tobytes() != self._composition:
            for member in self.models:
                member.elements.check(torch.as_tensor(atoms.numbers))
            self._composition, self._domain_limits = atoms.numbers.tobytes(), None
        self._warn_outside_training_domain(atoms)

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """What changed since the last calculation (ASE's contract), by exact comparison.

        ASE's own test compares every array with ``np.allclose``; an MD step reads three properties,
        and those tests took ~0.5 ms of a ~4 ms compiled ethanol step. Exact equality differs from
        ASE's ``atol=1e-15`` only in counting a sub-1e-15 Å move as a change (one more model call,
        never a stale result).
        """
        if self.atoms is None:
            return list(all_changes)
        old, watched = self.atoms, set(all_changes) - set(self.ignored_changes)
        changed = [p for p in ("cell", "pbc") if p in watched and not np.array_equal(getattr(old, p), getattr(atoms, p))]
        watched -= {"cell", "pbc"}
        changed += sorted(watched & (set(old.arrays) ^ set(atoms.arrays)))
        return changed + [p for p in sorted(watched & set(old.arrays) & set(atoms.arrays))
                          if not np.array_equal(old.arrays[p], atoms.arrays[p])]

    def _warn_outside_training_domain(self, atoms: Atoms) -> None:
        """Warn, once per kind of problem, when the structure leaves what the model saw in training."""
        domain = getattr(self.model, "training_domain", None)
        if not domain or len(atoms) < 2 or len(atoms) > 256:  # all-pairs test; large structures are not checked yet
            return
        if self._domain_limits is None:  # a new composition (check_atoms reset it)
            i, j = np.triu_indices(len(atoms), 1)
            names = [pair_name(a, b) for a, b in zip(atoms.numbers[i], atoms.numbers[j])]
            limits = np.array([SHORT_DISTANCE_FRACTION * domain.get(n, np.inf) for n in names])
            self._domain_limits = (i, j, limits)
            self._warn(outside_domain(atoms.positions / self.length_units_to_A, atoms.numbers, domain))
        i, j, limits = self._domain_limits
        positions = atoms.positions / self.length_units_to_A
        if (np.linalg.norm(positions[i] - positions[j], axis=1) < limits).any():  # the cheap test, every call
            self._warn(outside_domain(positions, atoms.numbers, domain))

    def _warn(self, messages: list[str]) -> None:
        for message in messages:
            key = message.split(" are ")[0] if "apart" in message else message  # one warning per short pair, not per distance
            if key not in self.warned:
                self.warned.add(key)
                warnings.warn(f"remul-ff: {message}", OutOfDomainWarning, stacklevel=4)

    def calculate(self, atoms: Atoms | None = None, properties: list[str] | None = None, system_changes=all_changes) -> None:
        """Compute every implemented property with a single model call."""
        super().calculate(atoms, properties, system_changes)
        self.check_atoms(self.atoms)
        # Centred in float64 first: float32 far from the origin rounds the interatomic vectors.
        positions = (self.atoms.positions - self.atoms.positions.mean(0)) / self.length_units_to_A
        predictions = self._predict(positions, self.atoms.numbers)
        energies = torch.stack([p[0] for p in predictions]).double() * self.energy_units_to_eV
        forces = torch.stack([p[1] for p in predictions]).double().cpu() * (self.energy_units_to_eV / self.length_units_to_A)
        atomic = torch.stack([p[2] for p in predictions]).double().cpu() * self.energy_units_to_eV
        energy = float(energies.mean())
        self.results = {"energy": energy, "free_energy": energy, "forces": forces.mean(0).numpy(), "energies": atomic.mean(0).numpy()}
        if len(self.models) > 1:
            self.results["energy_std"] = float(energies.std(unbiased=False))
            self.results["forces_std"] = forces.std(0, unbiased=False).numpy()

    def _predict(self, positions: np.ndarray, numbers: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(energy, forces [n, 3], atomic energies [n])`` of each committee member, in model units."""
        if self.compiled is not None and len(numbers) >= 2:  # the compiled program needs at least two atoms
            return [self.compiled(torch.tensor(positions, dtype=self.dtype), torch.as_tensor(numbers, dtype=torch.long))]
        batch = collate([Structure(positions, numbers)], dtype=self.dtype).to(self.device)
        return [(p.energy[0], p.forces, p.atomic_energies) for p in (predict(member, batch) for member in self.models)]
