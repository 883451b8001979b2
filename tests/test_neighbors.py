"""Batched radius graph: equal to brute force, to ASE, and across backends, including edge cases."""

from __future__ import annotations

import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list

from remul_ff.data.neighbors import available_backends, radius_graph, radius_graph_brute_force
from remul_ff.errors import DataError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def random_batch(sizes: list[int], seed: int, box: float = 6.0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    positions = torch.rand(sum(sizes), 3, generator=gen, dtype=torch.float64) * box
    molecule_index = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return positions, molecule_index


def ase_edges(positions: torch.Tensor, molecule_index: torch.Tensor, cutoff: float) -> set[tuple[int, int]]:
    """Edges from ASE's neighbour list, one molecule at a time (the independent reference)."""
    edges = set()
    for m in molecule_index.unique():
        atoms_idx = (molecule_index == m).nonzero().flatten().numpy()
        atoms = Atoms(positions=positions[atoms_idx].numpy(), numbers=[1] * len(atoms_idx))
        i, j = neighbor_list("ij", atoms, cutoff)
        edges |= {(int(atoms_idx[a]), int(atoms_idx[b])) for a, b in zip(i, j)}
    return edges


def as_set(edge_index: torch.Tensor) -> set[tuple[int, int]]:
    return {tuple(e) for e in edge_index.T.tolist()}


BATCHES = [([9] * 5, 0), ([1, 21, 1, 3, 15, 1], 1), ([1], 2), ([2, 2, 40, 9], 3), ([27] * 3 + [1] * 4, 4)]


@pytest.mark.parametrize("sizes,seed", BATCHES)
@pytest.mark.parametrize("backend", available_backends())
def test_matches_brute_force_and_ase(sizes, seed, backend):
    positions, molecule_index = random_batch(sizes, seed)
    edge_index, edge_vec = radius_graph(positions, 3.0, molecule_index, backend=backend)
    brute_index, brute_vec = radius_graph_brute_force(positions, 3.0, molecule_index)
    assert torch.equal(edge_index, brute_index)
    assert torch.equal(edge_vec, brute_vec)
    assert as_set(edge_index) == ase_edges(positions, molecule_index, 3.0)
    assert edge_index.shape[1] > 0 or sum(sizes) == 1


def test_backends_agree_exactly():
    if len(available_backends()) < 2:
        pytest.skip("torch-cluster is not installed; only one backend to compare")
    for sizes, seed in BATCHES:
        positions, molecule_index = random_batch(sizes, seed)
        a = radius_graph(positions, 2.5, molecule_index, backend="torch")
        b = radius_graph(positions, 2.5, molecule_index, backend="torch_cluster")
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("backend", available_backends())
def test_atoms_exactly_at_the_cutoff_are_excluded_like_ase(backend):
    positions = torch.tensor([[0.0, 0, 0], [2.0, 0, 0], [0, 1.999999, 0], [0, 0, 0.5]], dtype=torch.float64)
    edge_index, _ = radius_graph(positions, 2.0, backend=backend)
    assert as_set(edge_index) == ase_edges(positions, torch.zeros(4, dtype=torch.long), 2.0)
    assert (0, 1) not in as_set(edge_index) and (0, 2) in as_set(edge_index)


@pytest.mark.parametrize("backend", available_backends())
def test_dense_molecule_loses_no_neighbours(backend):
    """torch-cluster's default max_num_neighbors=32 would drop edges here; we must not."""
    positions, molecule_index = random_batch([60, 60], seed=5, box=1.0)
    edge_index, _ = radius_graph(positions, 10.0, molecule_index, backend=backend)
    assert edge_index.shape[1] == 2 * 60 * 59


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_runs_on_the_tensors_device_and_is_differentiable(device, dtype):
    positions, molecule_index = random_batch([9, 4, 1], seed=6)
    positions = positions.to(device, dtype).requires_grad_(True)
    edge_index, edge_vec = radius_graph(positions, 3.0, molecule_index.to(device))
    assert edge_index.device.type == device and edge_vec.dtype == dtype
    edge_vec.norm(dim=-1).sum().backward()
    assert positions.grad is not None and torch.isfinite(positions.grad).all()
    ref, _ = radius_graph_brute_force(positions.detach().cpu(), 3.0, molecule_index)
    assert torch.equal(edge_index.cpu(), ref)


def test_periodic_input_is_rejected():
    positions, molecule_index = random_batch([3], seed=0)
    with pytest.raises(DataError, match="periodic cells are not supported"):
        radius_graph(positions, 3.0, molecule_index, pbc=torch.tensor([[True, True, True]]))


def test_unsorted_molecule_index_is_rejected():
    positions, _ = random_batch([4], seed=0)
    with pytest.raises(ValueError, match="non-decreasing"):
        radius_graph(positions, 3.0, torch.tensor([0, 1, 0, 1]))


@pytest.mark.parametrize("backend", available_backends())
def test_pairs_cached_for_a_molecule_index_follow_its_changes(backend):
    """MD reuses one molecule_index tensor, so its pairs are cached: a change in place, or another
    tensor of the same length, must not reuse the old pairs."""
    positions, index = random_batch([5, 5], seed=5, box=3.0)
    first = radius_graph(positions, 4.0, index, backend)[0]
    assert as_set(first) == as_set(radius_graph_brute_force(positions, 4.0, index)[0])
    other = torch.tensor([0] * 3 + [1] * 7)
    assert as_set(radius_graph(positions, 4.0, other, backend)[0]) == as_set(radius_graph_brute_force(positions, 4.0, other)[0])
    index[3:5] = 0  # in place: the same tensor now describes other molecules
    assert as_set(radius_graph(positions, 4.0, index, backend)[0]) == as_set(radius_graph_brute_force(positions, 4.0, index)[0])
    unsorted = torch.tensor([0] * 5 + [1] * 5)
    radius_graph(positions, 4.0, unsorted, backend)
    unsorted[0] = 1
    with pytest.raises(ValueError, match="non-decreasing"):
        radius_graph(positions, 4.0, unsorted, backend)


def test_a_batch_too_large_for_free_memory_is_refused_in_one_sentence(monkeypatch):
    import remul_ff.data.neighbors as neighbors

    positions, index = random_batch([1500], seed=0, box=40.0)  # 2.25e6 candidate pairs
    monkeypatch.setattr(neighbors, "free_memory_bytes", lambda device: 10**9)
    with pytest.raises(
        DataError, match=r"needs about 1\.4 GB \(2,250,000 atom pairs; the largest molecule has 1500 atoms\) but only 1\.0 GB"
    ):
        radius_graph(positions, 3.0, index, backend="torch")
    monkeypatch.setattr(neighbors, "free_memory_bytes", lambda device: 10**10)
    assert radius_graph(positions, 3.0, index, backend="torch")[0].shape[1] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_memory_cached_by_the_allocator_counts_as_free_on_cuda():
    from remul_ff.data.neighbors import free_memory_bytes

    device = torch.device("cuda")
    before = free_memory_bytes(device)
    block = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    assert free_memory_bytes(device) <= before - 200 * 2**20  # held: not free
    del block  # back in the caching allocator: reusable by the next force call
    assert free_memory_bytes(device) >= before - 16 * 2**20


def test_a_layout_gives_the_same_edges_and_goes_with_its_molecule_index(ethanol_structures):
    """Pairs and sizes travel with the batch as a field (no cache keyed by tensor identity); a new
    molecule_index drops the layout that described the old one."""
    from remul_ff.data.batch import collate, concat_batches

    batch = collate(ethanol_structures[:3], every_pair=True)
    plain = radius_graph(batch.positions, 3.0, batch.molecule_index)
    laid_out = radius_graph(batch.positions, 3.0, batch.molecule_index, layout=batch.layout)
    assert torch.equal(plain[0], laid_out[0]) and torch.equal(plain[1], laid_out[1])
    assert batch.layout.largest == 9 and batch.layout.pairs.shape == (2, 3 * 9 * 8)
    assert batch.replace(positions=batch.positions + 1).layout is batch.layout
    assert batch.replace(molecule_index=torch.zeros_like(batch.molecule_index)).layout is None
    assert concat_batches(batch, batch.replace(molecule_index=batch.molecule_index)).layout is None
    assert torch.equal(batch.to(dtype=torch.float32).layout.sizes, torch.tensor([9, 9, 9]))
