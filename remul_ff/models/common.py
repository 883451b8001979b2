"""Building blocks shared by the potentials: element tables, radial bases, cutoff envelope, energy head."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import torch
from ase.data import chemical_symbols
from torch import nn

from remul_ff.data.neighbors import MoleculeLayout, all_pairs, largest_molecule, radius_graph
from remul_ff.errors import DataError

PAIR_MODES = ("auto", "radius", "all")
# "auto" takes every same-molecule pair up to this molecule size (see AtomwiseEnergyModel.pairs).
AUTO_ALL_PAIRS_MAX_ATOMS = 16
# MD on an accelerator takes every pair up to this size (with_fixed_pairs): 3BPA's 27 atoms have 702
# ordered pairs, 446 of them within 5 Å. A launch-bound GPU step should not notice the extra pairs,
# but does wait for a host sync (an assumption: no GPU has timed this choice yet).
ACCELERATOR_ALL_PAIRS_MAX_ATOMS = 64


def scatter_sum(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Sum rows of ``values`` into ``size`` buckets given by ``index`` (first dimension)."""
    out = torch.zeros((size,) + values.shape[1:], dtype=values.dtype, device=values.device)
    return out.index_add_(0, index, values)


def scatter_max(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Largest of the values (``[n]``) in each of ``size`` buckets given by ``index`` (``-inf`` if empty)."""
    out = torch.full((size,), -math.inf, dtype=values.dtype, device=values.device)
    return out.scatter_reduce_(0, index, values, reduce="amax")


class ElementTable(nn.Module):
    """Maps atomic numbers to contiguous species indices, with a readable error for unknown elements."""

    def __init__(self, elements: Sequence[int]) -> None:
        super().__init__()
        lookup = torch.full((119,), -1, dtype=torch.long)
        lookup[torch.as_tensor(sorted(elements))] = torch.arange(len(elements))
        self.register_buffer("elements", torch.as_tensor(sorted(elements), dtype=torch.long))
        self.register_buffer("lookup", lookup)

    def __len__(self) -> int:
        return int(self.elements.numel())

    def symbols(self) -> list[str]:
        """Chemical symbols of the known elements."""
        return [chemical_symbols[int(z)] for z in self.elements]

    def check(self, atomic_numbers: torch.Tensor) -> None:
        """Raise :class:`DataError` naming unknown elements and the ones the model knows."""
        unknown = sorted({int(z) for z in atomic_numbers.unique() if z < 0 or z > 118 or self.lookup[z] < 0})
        if unknown:
            names = ", ".join(chemical_symbols[z] if 0 < z < 119 else str(z) for z in unknown)
            raise DataError(
                f"the model was not trained on {names}; it knows only {', '.join(self.symbols())}, "
                "so train a model on data that contains these elements."
            )

    def forward(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """Species index of each atom (``-1`` for unknown elements; call :meth:`check` first)."""
        return self.lookup[atomic_numbers]


class BesselBasis(nn.Module):
    """``sqrt(2/r_max) sin(n π r / r_max) / r`` for ``n = 1..num_basis`` (DimeNet, NequIP)."""

    def __init__(self, r_max: float, num_basis: int) -> None:
        super().__init__()
        self.r_max = float(r_max)
        self.register_buffer("frequencies", torch.arange(1, num_basis + 1) * math.pi / r_max)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """``[E, num_basis]`` basis values for distances ``r`` of shape ``[E]``."""
        return math.sqrt(2.0 / self.r_max) * torch.sin(self.frequencies * r[:, None]) / r[:, None]


class GaussianBasis(nn.Module):
    """Gaussians on an even grid over ``[0, r_max]``, width equal to the spacing."""

    def __init__(self, r_max: float, num_basis: int) -> None:
        super().__init__()
        self.register_buffer("centres", torch.linspace(0.0, r_max, num_basis))
        self.width = r_max / (num_basis - 1)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """``[E, num_basis]`` basis values."""
        return torch.exp(-0.5 * ((r[:, None] - self.centres) / self.width) ** 2)


RADIAL_BASES = {"bessel": BesselBasis, "gaussian": GaussianBasis}


def polynomial_envelope(r: torch.Tensor, r_max: float, p: int = 6) -> torch.Tensor:
    """Smooth cutoff that goes to 0 at ``r_max`` with zero first and second derivatives (DimeNet).

    Multiplying every edge contribution by it keeps energy *and* forces continuous when an
    atom crosses the cutoff.
    """
    u = r / r_max
    value = 1 - (p + 1) * (p + 2) / 2 * u**p + p * (p + 2) * u ** (p + 1) - p * (p + 1) / 2 * u ** (p + 2)
    return value * (u < 1)


class AtomicEnergyHead(nn.Module):
    """Per-element scale and shift of a network's per-atom output, plus the fixed E0s.

    ``E_i = scale[Z_i] * y_i + shift[Z_i] + E0[Z_i]``. Scale and shift start from data statistics
    (force RMS and mean per-atom interaction energy) and are trained; E0s stay fixed.

    E0s are added in float64 even when the network runs in float32: total energies of
    ~10^4 eV have a float32 resolution of ~1 meV, coarser than the accuracy we train for. They are
    kept as plain floats (the module's extra state) so that ``model.to(float32)`` cannot round them;
    the float64 buffer ``e0`` is rebuilt from them after every move, so no call copies them to the
    device and traced or exported graphs see an ordinary buffer.
    """

    def __init__(self, e0s: Sequence[float], scale: float = 1.0, shift: float = 0.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((len(e0s),), float(scale)))
        self.shift = nn.Parameter(torch.full((len(e0s),), float(shift)))
        self.e0s = [float(e) for e in e0s]
        self.register_buffer("e0", torch.tensor(self.e0s, dtype=torch.float64), persistent=False)

    def get_extra_state(self) -> dict[str, list[float]]:
        return {"e0s": self.e0s}

    def set_extra_state(self, state: dict[str, list[float]]) -> None:
        self.e0s = [float(e) for e in state["e0s"]]
        self.e0 = torch.tensor(self.e0s, dtype=torch.float64, device=self.scale.device)

    def _apply(self, fn, recurse: bool = True):
        """Move like any module, but rebuild ``e0`` in float64 from the exact values after a dtype change."""
        super()._apply(fn, recurse)
        self.e0 = torch.tensor(self.e0s, dtype=torch.float64, device=self.scale.device)
        return self

    def forward(self, y: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """``[n]`` float64 atomic energies in eV from raw outputs ``y`` ``[n]``."""
        e0 = self.e0[species]
        return (self.scale[species] * y + self.shift[species]).double() + e0


class AtomwiseEnergyModel(nn.Module):
    """Shared part of the potentials: element table, embedding, per-atom readout MLP and energy head.

    Subclasses build their interaction layers and call :meth:`atomic_energies` on the final atom
    features. The readout's hidden layer is the last layer every loss shares (GradNorm's ``W``).
    """

    def init_common(self, width: int, elements: list[int], e0s: list[float], scale: float, shift: float) -> None:
        """Create the modules shared by every potential (call from ``__init__``)."""
        self.elements = ElementTable(elements)
        self.embedding = nn.Embedding(len(elements), width)
        self.readout_hidden = nn.Linear(width, width)
        self.readout_out = nn.Linear(width, 1)
        self.head = AtomicEnergyHead(e0s, scale, shift)
        self.pair_mode = "radius"

    def pairs(
        self, positions: torch.Tensor, molecule_index: torch.Tensor, layout: MoleculeLayout | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``edge_index`` and ``edge_vec`` of the interactions, by ``self.pair_mode``.

        ``radius``: pairs closer than ``r_max`` (:func:`radius_graph`). ``all``: every pair of the
        same molecule (:func:`all_pairs`); the envelope is exactly zero from ``r_max`` on, so the
        extra pairs add nothing, while shapes stop depending on positions. ``auto``: ``all`` for
        molecules of up to :data:`AUTO_ALL_PAIRS_MAX_ATOMS` atoms, where nearly every pair is inside
        the cutoff anyway, else ``radius``. ``layout`` (``molecule_index``'s, if known) saves finding
        the molecule sizes and pairs again.
        """
        mode = self.pair_mode
        if mode == "auto":
            mode = "all" if largest_molecule(molecule_index, layout) <= AUTO_ALL_PAIRS_MAX_ATOMS else "radius"
        if mode == "all":
            return all_pairs(positions, molecule_index, layout)
        return radius_graph(positions, self.r_max, molecule_index, layout=layout)

    def atomic_energies(self, h: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """``[n]`` float64 atomic energies in eV from final atom features ``h``."""
        y = self.readout_out(torch.nn.functional.silu(self.readout_hidden(h)))
        return self.head(y.squeeze(-1), species)

    def shared_layer(self) -> torch.Tensor:
        """The last layer that every loss shares; GradNorm balances gradient norms here."""
        return self.readout_hidden.weight

    def for_inference(self) -> nn.Module:
        """A frozen model that computes the same energies with fewer operations (here: itself).

        Subclasses whose layers can be merged once the weights stop changing return a merged copy;
        the calculator, the MD engine and the exporters run that copy. Never train it.
        """
        return self


def with_fixed_pairs(model: nn.Module, largest_molecule_atoms: int) -> nn.Module:
    """A shallow copy of ``model`` that interacts over every same-molecule pair (``pair_mode="all"``).

    The radius graph's distance filter sizes its output on the host, one host-device sync per force
    call; every pair of a molecule is fixed for an MD run (computed once) and gives the same energies,
    since the envelope is zero beyond ``r_max``. Models without ``pair_mode`` and molecules above
    :data:`ACCELERATOR_ALL_PAIRS_MAX_ATOMS` atoms (``n^2`` pairs) get ``model`` back unchanged.
    """
    if not hasattr(model, "pair_mode") or largest_molecule_atoms > ACCELERATOR_ALL_PAIRS_MAX_ATOMS:
        return model
    fixed = copy.copy(model)  # the caller's model keeps its own pair mode
    fixed.pair_mode = "all"
    return fixed


def inference_model(model: nn.Module) -> nn.Module:
    """``model.for_inference()`` where the model has it (any module may be given), else ``model``."""
    return model.for_inference() if hasattr(model, "for_inference") else model


def e0_list(elements: Sequence[int], e0s: Mapping[int, float]) -> list[float]:
    """E0s ordered like the element table (sorted atomic numbers); missing elements get 0."""
    return [float(e0s.get(int(z), 0.0)) for z in sorted(elements)]
