"""Batched radius graphs: every pair of atoms of the same molecule closer than a cutoff.

The whole batch is processed at once on the tensors' own device, with no Python loop over
molecules. Two backends give the *same* edge set in the same order:

* ``"torch_cluster"``: ``torch_cluster.radius_graph``, used automatically when installed;
* ``"torch"``: pure PyTorch; it enumerates only same-molecule pairs (``Σ n_m²`` of them, not
  ``n²``), which suits MD17-scale molecules.

Conventions (shared with ``ase.neighborlist.neighbor_list``): a pair is an edge when
``|r_j - r_i| < cutoff`` (strictly), there are no self-loops, both directions are present, and
edges are sorted by ``(i, j)``. ``edge_index[0]`` is the centre atom ``i``, ``edge_index[1]`` the
neighbour ``j``, and ``edge_vec = positions[j] - positions[i]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from remul_ff.errors import DataError

try:  # optional extra: pip install remul-ff[cluster]
    import torch_cluster
except ImportError:  # pragma: no cover - depends on the environment
    torch_cluster = None

BACKENDS = ("auto", "torch", "torch_cluster")
# Memory of a force call per same-molecule candidate pair, measured with the transformer on CPU
# (1998 atoms in one molecule: 4.0e6 pairs, 2.7 GB); used to refuse a structure before the
# allocation fails or the process is killed.
BYTES_PER_CANDIDATE_PAIR = 600
MEMORY_CHECK_FROM_PAIRS = 1_000_000


def available_backends() -> list[str]:
    """Backends usable in this environment."""
    return ["torch"] + (["torch_cluster"] if torch_cluster is not None else [])


@torch.compiler.disable  # custom kernels and data-dependent shapes; compiled models call it eagerly
def radius_graph(
    positions: torch.Tensor,
    cutoff: float,
    molecule_index: torch.Tensor | None = None,
    backend: str = "auto",
    pbc: torch.Tensor | None = None,
    layout: MoleculeLayout | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All same-molecule pairs closer than ``cutoff``.

    Args:
        positions: ``[n, 3]`` coordinates in Å.
        cutoff: Cutoff radius in Å (strict inequality).
        molecule_index: ``[n]`` non-decreasing molecule index of each atom; ``None`` means one molecule.
        backend: ``"auto"``, ``"torch"`` or ``"torch_cluster"``.
        pbc: Optional ``[m, 3]`` periodic flags; any ``True`` raises, since periodic images are
            not supported yet.
        layout: ``molecule_index``'s :class:`MoleculeLayout`, if known: its pairs (or largest molecule)
            are the candidates, so that nothing about ``molecule_index`` is found again.

    Returns:
        ``edge_index`` ``[2, E]`` (int64, centre then neighbour) and ``edge_vec`` ``[E, 3]``
        (``positions[j] - positions[i]``, differentiable with respect to ``positions``).
    """
    if pbc is not None and bool(torch.as_tensor(pbc).any()):
        raise DataError("periodic cells are not supported yet; use non-periodic molecules (pbc=False).")
    if molecule_index is None:
        molecule_index = torch.zeros(positions.shape[0], dtype=torch.long, device=positions.device)
    if layout is None:
        _check_sorted(molecule_index)
    edge_index = _pairs(positions.detach(), float(cutoff), molecule_index, _resolve_backend(backend), layout)
    return edge_index, edge_vectors(positions, edge_index)


def edge_vectors(positions: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """``[E, 3]`` ``positions[j] - positions[i]`` for every edge ``(i, j)``, differentiable in ``positions``."""
    return positions.index_select(0, edge_index[1]) - positions.index_select(0, edge_index[0])


def _resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown neighbour backend {backend!r}; use one of {BACKENDS}.")
    if backend == "auto":
        return "torch_cluster" if torch_cluster is not None else "torch"
    if backend == "torch_cluster" and torch_cluster is None:
        raise ValueError("the torch_cluster backend needs torch-cluster: pip install 'remul-ff[cluster]'.")
    return backend


@dataclass(frozen=True)
class MoleculeLayout:
    """What depends only on a batch's ``molecule_index``, worked out once and carried with it.

    :class:`~remul_ff.data.batch.AtomicBatch` holds one (``batch.layout``), made on the host when the
    batch is collated, moved with it and joined with it, so that models on an accelerator read
    nothing back to find molecule sizes or pairs; the MD state keeps one per force call while its
    replicas stay the same. Code that has none passes ``None`` and everything is found from
    ``molecule_index`` again (a few host syncs).

    Attributes:
        sizes: ``[m]`` atoms per molecule.
        largest: Atoms in the largest molecule (0 for an empty batch).
        pairs: ``[2, Σ n_m (n_m - 1)]`` every ordered pair ``(i, j)``, ``i != j``, of the same molecule,
            sorted by ``(i, j)`` (:func:`all_pairs`; also the candidates of :func:`radius_graph`), or
            ``None`` when not asked for (``n^2`` memory).
    """

    sizes: torch.Tensor
    largest: int
    pairs: torch.Tensor | None = None

    @classmethod
    def of(cls, molecule_index: torch.Tensor, n_molecules: int, every_pair: bool = False) -> MoleculeLayout:
        """The layout of ``molecule_index`` (non-decreasing, else ``ValueError``); ``every_pair`` adds :attr:`pairs`."""
        _check_sorted(molecule_index)
        sizes = torch.bincount(molecule_index, minlength=n_molecules)
        largest = int(sizes.max()) if sizes.numel() else 0
        return cls(sizes, largest, _distinct_pairs(molecule_index) if every_pair else None)

    def with_pairs(self, molecule_index: torch.Tensor) -> MoleculeLayout:
        """This layout (of ``molecule_index``) with :attr:`pairs` listed."""
        return self if self.pairs is not None else MoleculeLayout(self.sizes, self.largest, _distinct_pairs(molecule_index))

    def to(self, device: torch.device | str | None, non_blocking: bool = False) -> MoleculeLayout:
        """A copy on ``device`` (from pinned memory without waiting when ``non_blocking``)."""

        def move(value: torch.Tensor | None) -> torch.Tensor | None:
            if value is None:
                return None
            return (value.pin_memory() if non_blocking else value).to(device, non_blocking=non_blocking)

        return MoleculeLayout(move(self.sizes), self.largest, move(self.pairs))

    def joined(self, other: MoleculeLayout, first_atoms: int) -> MoleculeLayout:
        """The layout of a batch of this one's molecules followed by ``other``'s (``first_atoms`` atoms come first)."""
        pairs = None if self.pairs is None or other.pairs is None else torch.cat([self.pairs, other.pairs + first_atoms], dim=1)
        return MoleculeLayout(torch.cat([self.sizes, other.sizes]), max(self.largest, other.largest), pairs)


def _check_sorted(molecule_index: torch.Tensor) -> None:
    if molecule_index.numel() > 1 and bool((molecule_index[1:] < molecule_index[:-1]).any()):
        raise ValueError("molecule_index must be non-decreasing: the atoms of each molecule must be contiguous.")


def _pairs(
    positions: torch.Tensor, cutoff: float, molecule_index: torch.Tensor, backend: str, layout: MoleculeLayout | None
) -> torch.Tensor:
    if positions.shape[0] == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=positions.device)
    if layout is not None and layout.pairs is not None:  # a superset of the edges: the filter keeps the same ones
        candidates = layout.pairs
    elif backend == "torch_cluster":
        candidates = _torch_cluster_candidates(positions, cutoff, molecule_index, layout)
    else:
        candidates = same_molecule_pairs(molecule_index)
    return _filter_and_sort(positions, cutoff, candidates)


def same_molecule_pairs(molecule_index: torch.Tensor) -> torch.Tensor:
    """``[2, Σ n_m²]`` every ordered pair ``(i, j)`` of atoms in the same molecule, self-pairs included.

    Each atom ``i`` is repeated once per atom of its molecule; the partner ``j`` runs over that
    molecule's contiguous block, found from an arange offset by segment starts.
    """
    device = molecule_index.device
    n_mol = int(molecule_index.max()) + 1
    counts = torch.bincount(molecule_index, minlength=n_mol)
    check_pair_memory(int((counts * counts).sum()), int(counts.max()), device)
    starts = torch.cumsum(counts, 0) - counts
    per_atom = counts[molecule_index]
    centre = torch.repeat_interleave(torch.arange(molecule_index.shape[0], device=device), per_atom)
    segment_start = torch.repeat_interleave(torch.cumsum(per_atom, 0) - per_atom, per_atom)
    offset = torch.arange(centre.shape[0], device=device) - segment_start
    neighbour = starts[molecule_index[centre]] + offset
    return torch.stack([centre, neighbour])


@torch.compiler.disable
def all_pairs(
    positions: torch.Tensor, molecule_index: torch.Tensor, layout: MoleculeLayout | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ordered pair ``(i, j)``, ``i != j``, of atoms in the same molecule, sorted by ``(i, j)``; no cutoff.

    For models that weight every edge term by an envelope that is exactly zero from ``r_max`` on,
    these pairs give the result of :func:`radius_graph` to rounding, with no distance filter: the
    edge count depends only on ``molecule_index``, so shapes stay fixed during MD (one compile,
    CUDA graphs, export), and they come from ``layout`` when it holds them (found once per batch).
    Returns ``edge_index`` ``[2, Σ n_m (n_m - 1)]`` and ``edge_vec`` as :func:`radius_graph` does.
    """
    if layout is not None and layout.pairs is not None:
        edge_index = layout.pairs
    else:
        _check_sorted(molecule_index)
        edge_index = _distinct_pairs(molecule_index)
    return edge_index, edge_vectors(positions, edge_index)


def _distinct_pairs(molecule_index: torch.Tensor) -> torch.Tensor:
    pairs = same_molecule_pairs(molecule_index)
    return pairs[:, pairs[0] != pairs[1]]


@torch.compiler.disable
def largest_molecule(molecule_index: torch.Tensor, layout: MoleculeLayout | None = None) -> int:
    """Atoms in the largest molecule: ``layout``'s, or found from ``molecule_index`` (one host sync)."""
    if layout is not None:
        return layout.largest
    return int(torch.bincount(molecule_index).max()) if molecule_index.numel() else 0


def check_pair_memory(pairs: int, largest: int, device: torch.device) -> None:
    """Raise :class:`DataError` when ``pairs`` same-molecule pairs would not fit in the free memory of ``device``."""
    if pairs < MEMORY_CHECK_FROM_PAIRS:
        return
    need, free = pairs * BYTES_PER_CANDIDATE_PAIR, free_memory_bytes(device)
    if free is not None and need > free:
        raise DataError(
            f"a force call on this batch needs about {need / 1e9:.1f} GB ({pairs:,} atom pairs; the largest "
            f"molecule has {largest} atoms) but only {free / 1e9:.1f} GB are free; use fewer replicas per "
            "batch, split the structure into molecules, or a machine with more memory."
        )


def free_memory_bytes(device: torch.device) -> int | None:
    """Memory this process can still allocate on ``device``, in bytes, or ``None`` if unknown.

    CUDA: the driver's free count plus what PyTorch's caching allocator holds unused (a previous
    force call's blocks are reused, so they count as free); CPU: Linux's MemAvailable.
    """
    if device.type == "cuda":
        cached_unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(torch.cuda.mem_get_info(device)[0]) + int(cached_unused)
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def _torch_cluster_candidates(
    positions: torch.Tensor, cutoff: float, molecule_index: torch.Tensor, layout: MoleculeLayout | None
) -> torch.Tensor:
    # No molecule has more neighbours than atoms, so this bound can never drop an edge.
    max_neighbours = largest_molecule(molecule_index, layout)
    # torch_cluster's own float comparison may differ from ours at the cutoff, so ask for a
    # slightly larger radius and apply the exact criterion afterwards.
    pairs = torch_cluster.radius_graph(
        positions,
        r=cutoff * (1 + 1e-5) + 1e-6,
        batch=molecule_index,
        loop=False,
        max_num_neighbors=max_neighbours,
        flow="target_to_source",
    )
    return pairs


def _filter_and_sort(positions: torch.Tensor, cutoff: float, pairs: torch.Tensor) -> torch.Tensor:
    vec = positions[pairs[1]] - positions[pairs[0]]
    keep = ((vec * vec).sum(-1) < cutoff * cutoff) & (pairs[0] != pairs[1])
    pairs = pairs[:, keep]
    order = torch.argsort(pairs[0] * positions.shape[0] + pairs[1])
    return pairs[:, order]


def radius_graph_brute_force(
    positions: torch.Tensor, cutoff: float, molecule_index: torch.Tensor | None = None, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference implementation: test all ``n²`` pairs of the batch. For tests and benchmarks only.

    Rows are processed ``chunk`` at a time only to bound memory; every pair is still tested.
    """
    n = positions.shape[0]
    if molecule_index is None:
        molecule_index = torch.zeros(n, dtype=torch.long, device=positions.device)
    found = []
    for first in range(0, n, chunk):
        rows = torch.arange(first, min(first + chunk, n), device=positions.device)
        vec = positions[None, :, :] - positions[rows, None, :]
        mask = (molecule_index[rows, None] == molecule_index[None, :]) & ((vec * vec).sum(-1) < cutoff * cutoff)
        mask &= rows[:, None] != torch.arange(n, device=positions.device)[None, :]
        local = mask.nonzero().T
        found.append(torch.stack([rows[local[0]], local[1]]))
    edge_index = torch.cat(found, dim=1)
    return edge_index, positions[edge_index[1]] - positions[edge_index[0]]
