"""Power-law fits ``loss = a * C**(-b) + c`` with bootstrap intervals, and comparisons between fits.

The fit is least squares in log(loss): for each floor ``c`` on a grid below the smallest loss, the
rest is a straight line in log-log, solved exactly; the ``c`` with the smallest residual wins.
Intervals come from refitting resampled points (bootstrap), which also gives, at each compute, how
often one family's curve lies below another's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOOR_GRID = 64  # floors tried between 0 and just below the smallest loss


@dataclass
class PowerLaw:
    """``loss = a * C**(-b) + c`` (C in FLOPs)."""

    a: float
    b: float
    c: float

    def __call__(self, flops: np.ndarray | float) -> np.ndarray:
        return self.a * np.asarray(flops, dtype=float) ** (-self.b) + self.c


def _line_fit(log_c: np.ndarray, log_y: np.ndarray) -> tuple[float, float, float]:
    """Slope, intercept and squared residual of a least-squares line."""
    design = np.stack([log_c, np.ones_like(log_c)], axis=1)
    (slope, intercept), *_ = np.linalg.lstsq(design, log_y, rcond=None)
    return float(slope), float(intercept), float(np.sum((design @ [slope, intercept] - log_y) ** 2))


def fit_power_law(flops: np.ndarray, loss: np.ndarray, with_floor: bool = True) -> PowerLaw:
    """The best ``a * C**(-b) + c`` through the points (``c = 0`` without ``with_floor``)."""
    flops, loss = np.asarray(flops, dtype=float), np.asarray(loss, dtype=float)
    if len(flops) < 2 or np.ptp(np.log(flops)) == 0:
        raise ValueError("a power law needs at least two points at different compute.")
    floors = np.linspace(0.0, 0.98 * loss.min(), FLOOR_GRID) if with_floor and len(flops) > 3 else np.zeros(1)
    best = None
    for c in floors:
        slope, intercept, _ = _line_fit(np.log(flops), np.log(loss - c))
        law = PowerLaw(float(np.exp(intercept)), -slope, float(c))
        residual = float(np.sum((np.log(law(flops)) - np.log(loss)) ** 2))
        if best is None or residual < best[0]:
            best = (residual, law)
    return best[1]


def bootstrap_fits(flops: np.ndarray, loss: np.ndarray, samples: int = 500, seed: int = 0) -> list[PowerLaw]:
    """Fits to ``samples`` resamplings (with replacement) of the points."""
    rng = np.random.default_rng(seed)
    flops, loss = np.asarray(flops, dtype=float), np.asarray(loss, dtype=float)
    fits = []
    for _ in range(samples):
        pick = rng.integers(0, len(flops), len(flops))
        if np.ptp(np.log(flops[pick])) > 0:
            fits.append(fit_power_law(flops[pick], loss[pick]))
    return fits


def interval(values: list[float] | np.ndarray, level: float = 0.95) -> list[float]:
    """The central ``level`` percentile interval."""
    tail = 50 * (1 - level)
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


def probability_below(fits_a: list[PowerLaw], fits_b: list[PowerLaw], flops: np.ndarray) -> np.ndarray:
    """At each compute, the fraction of paired bootstrap fits where family A's loss is below B's."""
    n = min(len(fits_a), len(fits_b))
    below = [fa(flops) < fb(flops) for fa, fb in zip(fits_a[:n], fits_b[:n])]
    return np.mean(below, axis=0)


def crossings(law_a: PowerLaw, law_b: PowerLaw, flops: np.ndarray) -> list[float]:
    """Computes (within ``flops``, a sorted grid) where the two fitted curves cross."""
    sign = np.sign(law_a(flops) - law_b(flops))
    change = np.nonzero(sign[:-1] * sign[1:] < 0)[0]
    return [float(np.sqrt(flops[k] * flops[k + 1])) for k in change]
