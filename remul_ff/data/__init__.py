"""Data contract, readers, reference energies, splits, neighbour graphs and reference-data generation."""

from remul_ff.data.batch import AtomicBatch, Structure, collate
from remul_ff.data.e0s import fit_e0s_average, resolve_e0s
from remul_ff.data.neighbors import radius_graph
from remul_ff.data.readers import read_structures
from remul_ff.data.splits import split_indices

__all__ = [
    "AtomicBatch",
    "Structure",
    "collate",
    "fit_e0s_average",
    "radius_graph",
    "read_structures",
    "resolve_e0s",
    "split_indices",
]
