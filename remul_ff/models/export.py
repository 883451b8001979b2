"""A deployable model: energy and forces of one molecule as a ``torch.export`` program (``.pt2``).

The exported program needs only PyTorch to run, no remul-ff import::

    program = torch.export.load("model.pt2").module()
    energy, forces = program(positions, atomic_numbers)    # [n, 3] Å, [n] int64 -> eV (0-d), eV/Å [n, 3]

With ``aotinductor=True`` the program is compiled ahead of time into an AOTInductor package::

    program = torch._inductor.aoti_load_package("model_aoti.pt2")

Forces are ``-dE/dx`` inside the program. ``torch.export`` cannot trace ``torch.autograd.grad``
itself, so the energy-and-forces function is first traced by ``make_fx`` (which records the
backward pass as ordinary operations, as AOTAutograd does) and that graph is exported with a
symbolic atom count: one program serves molecules of any size. Interactions run over every
pair of atoms (the envelope zeroes pairs beyond ``r_max``), so the program has no data-dependent
shapes. Unknown elements cannot be reported from inside the program: check them before.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from remul_ff.data.batch import AtomicBatch
from remul_ff.errors import RemulError
from remul_ff.models.common import inference_model
from remul_ff.models.files import load_model
from remul_ff.models.forces import predict
from remul_ff.models.transformer import has_direct_forces, with_direct_forces
from remul_ff.utils.io import atomic_path

MAX_ATOMS = 100_000  # the exported program's declared upper bound on the atom count


def distinct_pairs(n: int, device: torch.device) -> torch.Tensor:
    """``[2, n (n - 1)]`` every ordered pair ``i != j`` of ``n`` atoms, sorted, by arithmetic only (no masks)."""
    k = torch.arange(n * (n - 1), device=device)
    i = torch.div(k, n - 1, rounding_mode="floor")
    j = k - i * (n - 1)
    return torch.stack([i, j + (j >= i).long()])


def pairs_within(positions: torch.Tensor, r_max: float) -> torch.Tensor:
    """``[2, E]`` the ordered pairs ``i != j`` closer than ``r_max`` (with a 1e-6 relative margin), sorted.

    Pairs beyond ``r_max`` have a zero envelope and add nothing to energy or forces; the margin
    keeps a pair that the model would place a rounding error inside the cutoff.
    """
    close = torch.cdist(positions, positions) < r_max * (1 + 1e-6)
    close.fill_diagonal_(False)
    return close.nonzero().T


class EnergyAndForces(nn.Module):
    """``(positions [n, 3], atomic_numbers [n]) -> (energy, forces [n, 3])`` of one molecule.

    With ``atomic``, the per-atom energies ``[n]`` come third (the calculator's compiled path), and
    for a model with a direct-force head its direct forces ``[n, 3]`` fourth (the same pass).
    An optional third input ``pairs`` ``[2, E]`` lists the interacting pairs (any superset of the
    pairs within ``r_max``); without it every pair of atoms interacts.
    """

    def __init__(self, model: nn.Module, atomic: bool = False) -> None:
        super().__init__()
        self.model = model
        self.atomic = atomic
        self.direct = atomic and has_direct_forces(model)

    def forward(self, positions: torch.Tensor, atomic_numbers: torch.Tensor, pairs: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        with torch.enable_grad():
            positions = positions.detach().requires_grad_(True)
            if pairs is None:
                pairs = distinct_pairs(positions.shape[0], positions.device)
            if self.direct:
                atomic, direct = self.model.energies_and_direct_forces(positions, atomic_numbers, pairs, None)
            else:
                atomic = self.model.energies_on_pairs(positions, atomic_numbers, pairs)
            energy = atomic.sum()
            (gradient,) = torch.autograd.grad(energy, positions)
        if self.direct:
            return energy.detach(), -gradient, atomic.detach(), direct.detach()
        return (energy.detach(), -gradient, atomic.detach()) if self.atomic else (energy.detach(), -gradient)


class EnergyAndDirectForces(nn.Module):
    """``(positions [n, 3], atomic_numbers [n]) -> (energy, direct forces [n, 3])`` of one molecule.

    One forward pass of a model with a direct-force head, no backward: the inner steps of multiple
    time stepping (:class:`~remul_ff.integrations.mts.MultipleTimeStepVerlet`). Inputs and the
    optional third input ``pairs`` as for :class:`EnergyAndForces`; with ``atomic`` the per-atom
    energies come third.
    """

    def __init__(self, model: nn.Module, atomic: bool = False) -> None:
        super().__init__()
        self.model = model
        self.atomic = atomic

    def forward(self, positions: torch.Tensor, atomic_numbers: torch.Tensor, pairs: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        if pairs is None:
            pairs = distinct_pairs(positions.shape[0], positions.device)
        atomic, direct = self.model.energies_and_direct_forces(positions, atomic_numbers, pairs, None)
        return (atomic.sum(), direct, atomic) if self.atomic else (atomic.sum(), direct)


def export_model(
    model_path: str | os.PathLike,
    output: str | os.PathLike,
    dtype: torch.dtype = torch.float64,
    example: tuple[torch.Tensor, torch.Tensor] | None = None,
    aotinductor: bool = False,
    direct_only: bool = False,
) -> Path:
    """Export ``model_path`` to ``output`` (``.pt2``) and check it against the model on ``example``.

    Args:
        model_path: A ``model.pt`` written by ``remul-ff train``.
        output: The ``.pt2`` file to write (atomically).
        dtype: Floating type of the program's inputs and weights.
        example: ``(positions, atomic_numbers)`` to trace with and to check; default: a chain
            of the model's elements.
        aotinductor: Compile the program ahead of time with AOTInductor (C++ kernels for this
            machine's CPU or GPU, a minute or more) into a package that
            ``torch._inductor.aoti_load_package`` (or libtorch's ``AOTIModelPackageLoader`` from C++)
            runs, as ``nequip-compile --mode aotinductor`` does.
        direct_only: Export the :class:`EnergyAndDirectForces` program instead (a model trained with
            ``model.direct_forces: true``): energy and direct forces, no backward pass.
    """
    model = inference_model(load_model(model_path, "cpu", dtype))
    if direct_only and not has_direct_forces(model):
        raise RemulError(f"{model_path} has no direct-force head (train with model.direct_forces: true); export it without --direct.")
    positions, numbers = example if example is not None else _example(model.elements.elements.tolist(), dtype)
    program = export_program(model, positions, numbers, direct_only=direct_only)
    with atomic_path(Path(output)) as tmp:
        if aotinductor:
            _compile_package(program, tmp, model, positions, numbers, direct_only=direct_only)
        else:
            torch.export.save(program, tmp)
    return Path(output)


def export_program(
    model: nn.Module,
    positions: torch.Tensor,
    numbers: torch.Tensor,
    atomic: bool = False,
    pairs: torch.Tensor | None = None,
    direct_only: bool = False,
):
    """The ``torch.export`` program of ``model`` (CPU, its dtype), traced on and checked against one example.

    With the example's ``pairs`` the program takes the pair list as a third input (symbolic pair count).
    ``direct_only``: the :class:`EnergyAndDirectForces` program.
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    model.elements.check(numbers)
    wrapper = (EnergyAndDirectForces(model, atomic) if direct_only else EnergyAndForces(model, atomic)).eval()
    inputs = (positions, numbers) if pairs is None else (positions, numbers, pairs)
    graph = make_fx(wrapper, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*inputs)
    atoms = torch.export.Dim("atoms", min=2, max=MAX_ATOMS)
    shapes = ({0: atoms}, {0: atoms}, {1: torch.export.Dim("pairs", min=2, max=MAX_ATOMS**2)})[: len(inputs)]
    program = torch.export.export(graph, inputs, dynamic_shapes=shapes, strict=False)
    _check_program(program.module(), model, *inputs, direct_only=direct_only)
    return program


class CompiledModel:
    """An AOTInductor package that takes the pair list, called with ``(positions, numbers)`` alone.

    Only pairs within ``r_max`` are computed (for 3BPA, 446 of 702), so the cost grows with the
    neighbours, not with the square of the atom count. Fewer than two such pairs (the program's
    lower bound) fall back to every pair: exact too, since far pairs contribute zero.
    """

    def __init__(self, package, r_max: float) -> None:
        self.package, self.r_max = package, r_max
        # The package's __call__ parses its input/output specs on every call (a visible share of a small
        # molecule's step); the loader's boxed_run takes and returns the flat tensors directly: the same program.
        self._run = getattr(getattr(package, "loader", None), "boxed_run", None)

    def __call__(self, positions: torch.Tensor, numbers: torch.Tensor, pairs: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Energy, forces and atomic energies; ``pairs`` (the ordered pairs within ``r_max``), when the caller has them."""
        if pairs is None:
            pairs = pairs_within(positions, self.r_max)
        if pairs.shape[1] < 2:
            pairs = distinct_pairs(positions.shape[0], positions.device)
        return tuple(self._run([positions, numbers, pairs])) if self._run is not None else self.package(positions, numbers, pairs)


def compiled_model(model: nn.Module, cache_dir: str | os.PathLike | None = None, direct_only: bool = False) -> CompiledModel:
    """``model`` (on the CPU) compiled by AOTInductor: ``(positions, numbers) -> (energy, forces, atomic energies)``
    (and the direct forces, for a model with a direct-force head); ``direct_only``: ``(energy, direct forces,
    atomic energies)`` without a backward pass.

    The package is cached under ``cache_dir`` (default ``$XDG_CACHE_HOME/remul-ff`` or
    ``~/.cache/remul-ff``) by :func:`package_digest`, so only the first use of a model file pays the
    compile (about a minute). Compiled with more than one torch thread, its kernels run in parallel on
    as many threads as the caller has; with one, they are serial.
    """
    dtype = next(model.parameters()).dtype
    digest = package_digest(model, "direct forces only" if direct_only else "given pairs")
    cache = Path(cache_dir) if cache_dir is not None else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "remul-ff"
    path = cache / f"{digest}.pt2"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        positions, numbers = _example(model.elements.elements.tolist(), dtype)
        pairs = pairs_within(positions, model.r_max)
        program = export_program(model, positions, numbers, atomic=True, pairs=pairs, direct_only=direct_only)
        with atomic_path(path) as tmp:
            _compile_package(program, tmp, model, positions, numbers, pairs, direct_only=direct_only)
    return CompiledModel(torch._inductor.aoti_load_package(str(path)), model.r_max)


def package_digest(model: nn.Module, program: str = "given pairs") -> str:
    """The cache key of ``model``'s compiled package: weights, dtype, torch version, which program, and whether it is parallel.

    Inductor writes OpenMP-parallel kernels only when torch has more than one thread at compile time;
    a package compiled in a one-thread process stays serial, so the two kinds are cached apart.
    """
    import hashlib
    import io

    buffer = io.BytesIO()
    torch.save(
        {
            "state": model.state_dict(),
            "hyper": repr(getattr(model, "config", None)),  # the hyperparameters' dataclass
            "dtype": str(next(model.parameters()).dtype),
            "torch": torch.__version__,
            "kind": type(model).__name__,
            "program": program,
            "parallel": torch.get_num_threads() > 1,
        },
        buffer,
    )
    return hashlib.sha256(buffer.getvalue()).hexdigest()[:20]


def _compile_package(
    program, path: Path, model: nn.Module, positions: torch.Tensor, numbers: torch.Tensor, *pairs: torch.Tensor, direct_only: bool = False
) -> None:
    """AOTInductor-compile ``program`` into the package ``path`` and check the compiled code too."""
    try:
        torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    except Exception as exc:  # a missing C++ compiler is the usual cause
        raise RemulError(
            f"AOTInductor could not compile the model ({type(exc).__name__}: {str(exc)[:200]}); "
            "it needs a C++ compiler (g++); export without --aotinductor instead."
        ) from exc
    _check_program(torch._inductor.aoti_load_package(str(path)), model, positions, numbers, *pairs, direct_only=direct_only)


def _check_program(
    program, model: nn.Module, positions: torch.Tensor, numbers: torch.Tensor, *pairs: torch.Tensor, direct_only: bool = False
) -> None:
    """Refuse to write a program whose energy or forces (direct ones: ``direct_only``) differ from the model's beyond rounding."""
    outputs = [t.detach() for t in program(positions, numbers, *pairs)]
    energy, forces = outputs[:2]
    batch = AtomicBatch(positions, numbers, torch.zeros_like(numbers), 1)
    reference = predict(with_direct_forces(model) if has_direct_forces(model) else model, batch)
    if direct_only:
        reference.forces = reference.direct_forces
    elif len(outputs) == 4:  # the direct forces beside the conservative ones
        forces, reference.forces = torch.cat([forces, outputs[3]]), torch.cat([reference.forces, reference.direct_forces])
    tolerance = 1e-10 if positions.dtype == torch.float64 else 1e-4
    energy_error = abs(float(energy) - float(reference.energy[0])) / max(abs(float(reference.energy[0])), 1.0)
    force_error = float((forces - reference.forces).abs().max()) / max(float(reference.forces.abs().max()), 1.0)
    if not energy_error < tolerance or not force_error < tolerance:
        raise RemulError(
            f"the exported program disagrees with the model (relative energy error {energy_error:.2e}, "
            f"force error {force_error:.2e}); please report this with the model file."
        )


def _example(elements: list[int], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """A zig-zag chain of at least five atoms, 1.3 Å apart, using every element the model knows."""
    numbers = (elements * 5)[: max(5, len(elements))]
    k = torch.arange(len(numbers), dtype=torch.float64)
    positions = torch.stack([1.1 * k, 0.6 * (k % 2), 0.1 * torch.sin(k)], dim=1)
    return positions.to(dtype), torch.tensor(numbers, dtype=torch.long)


__all__ = [
    "CompiledModel",
    "EnergyAndDirectForces",
    "EnergyAndForces",
    "compiled_model",
    "distinct_pairs",
    "export_model",
    "export_program",
    "package_digest",
    "pairs_within",
]
