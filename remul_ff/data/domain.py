"""What a model saw in training: the element pairs and the shortest distance of each.

An unconstrained model can be wrong without warning outside its training data (see
``benchmarks/stability/README.md``). Recording the shortest distance per element pair at training
time lets the calculator say so when a structure goes well below it, or pairs elements that never
met in the data.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from ase.data import chemical_symbols

from remul_ff.geometry import pair_distances

# Warn below this fraction of the shortest training distance of a pair: 500 K MD barely goes below
# 0.9 of it, while a hydrogen pushed into a carbon (0.85 Å vs 1.0 Å) is already at 0.85.
SHORT_DISTANCE_FRACTION = 0.8
FAR_PAIRS_CUTOFF = 6.0  # Å: beyond this, large structures skip a pair (no model here looks that far)


def pair_name(z1: int, z2: int) -> str:
    """The pair's name, lighter element first (``"H-C"``, ``"C-O"``)."""
    a, b = sorted((int(z1), int(z2)))
    return f"{chemical_symbols[a]}-{chemical_symbols[b]}"


def pair_min_distances(positions: np.ndarray, numbers: np.ndarray) -> dict[str, float]:
    """Shortest distance (Å) per element pair in one structure (all pairs up to 256 atoms, else within 6 Å)."""
    if len(numbers) < 2:
        return {}
    i, j, d = pair_distances(positions, FAR_PAIRS_CUTOFF)
    low, high = np.minimum(numbers[i], numbers[j]), np.maximum(numbers[i], numbers[j])
    codes, inverse = np.unique(low * 119 + high, return_inverse=True)
    shortest = np.full(len(codes), np.inf)
    np.minimum.at(shortest, inverse, d)  # vectorised: training reads every frame
    return {pair_name(c // 119, c % 119): float(m) for c, m in zip(codes, shortest)}


def training_domain(structures: Iterable) -> dict[str, float]:
    """Shortest distance per element pair over ``structures`` (objects with ``positions`` and ``numbers``)."""
    domain: dict[str, float] = {}
    for s in structures:
        for name, dist in pair_min_distances(s.positions, s.numbers).items():
            domain[name] = min(domain.get(name, np.inf), dist)
    return domain


def outside_domain(positions: np.ndarray, numbers: np.ndarray, domain: dict[str, float]) -> list[str]:
    """One sentence per element pair of this structure that the training data did not cover."""
    messages = []
    for name, dist in sorted(pair_min_distances(positions, numbers).items()):
        if name not in domain:
            messages.append(f"the element pair {name} never occurs in the model's training data; its energies there are guesses.")
        elif dist < SHORT_DISTANCE_FRACTION * domain[name]:
            messages.append(
                f"two atoms of pair {name} are {dist:.2f} Å apart, well below the shortest {name} distance in "
                f"training ({domain[name]:.2f} Å); the model is extrapolating there."
            )
    return messages
