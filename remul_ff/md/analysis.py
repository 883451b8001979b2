"""Analysis of MD runs: stability time, bond breaks in saved frames, h(r) and its MAE, NVE energy drift,
temperature statistics, committee warnings."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from remul_ff.data.bonds import group_lengths
from remul_ff.geometry import all_pair_distances

H_R_BINS = 500
H_R_RANGE = (0.0, 10.0)


def stability_time_ps(collapse_times_ps: Sequence[float | None], total_time_ps: float) -> np.ndarray:
    """Time until collapse for each replica, or ``total_time_ps`` for replicas that never collapsed."""
    return np.array([total_time_ps if t is None else float(t) for t in collapse_times_ps])


def first_bond_break(
    frames: Sequence[np.ndarray], bonds: np.ndarray, tolerance: float, reference: np.ndarray | None = None, groups: np.ndarray | None = None
) -> tuple[int, int, float] | None:
    """The first frame in which a bond deviates more than ``tolerance`` Å from its reference length.

    Args:
        frames: Positions ``[n, 3]`` Å of one replica, in time order.
        bonds: ``[B, 2]`` atom indices of the bonds to watch.
        tolerance: Largest allowed deviation, Å.
        reference: ``[G]`` reference lengths, Å (Fu et al.: the mean over the data set); ``None``
            takes the lengths in frame 0.
        groups: ``[B]`` group of each bond (0 .. G-1), whose shortest member is compared with the
            reference (:func:`~remul_ff.data.bonds.watched_bonds`); ``None``: one group per bond.

    Returns:
        ``(frame index, group index, deviation Å)``, or ``None`` when every group stays within tolerance.
    """
    if len(frames) == 0 or len(bonds) == 0:
        return None
    groups = np.arange(len(bonds)) if groups is None else np.asarray(groups)
    lengths = group_lengths(np.asarray(frames, dtype=np.float64), bonds, groups)
    deviation = np.abs(lengths - (lengths[0] if reference is None else np.asarray(reference)))
    broken = np.nonzero((deviation > tolerance).any(axis=1))[0]
    if len(broken) == 0:
        return None
    frame = int(broken[0])
    bond = int(np.argmax(deviation[frame]))
    return frame, bond, float(deviation[frame, bond])


def poisson_rate_ci(events: int, exposure: float, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) confidence interval of a Poisson rate: ``events`` seen in ``exposure``.

    The bounds are the means ``mu`` at which seeing ``events`` or more (lower) and ``events`` or
    fewer (upper) has probability ``(1 - confidence) / 2``, divided by ``exposure``; they use the
    regularised incomplete gamma function, ``P(X <= k; mu) = Q(k + 1, mu)``. For zero events the
    lower bound is 0 and the upper one is ``-ln((1 - confidence) / 2) / exposure`` (3.69 at 95%).
    """
    if events < 0 or exposure <= 0:
        raise ValueError(f"need events >= 0 and exposure > 0, got {events} and {exposure}.")
    tail = (1.0 - confidence) / 2
    upper = _solve_increasing(lambda mu: 1.0 - _gammaincc(events + 1, mu), 1.0 - tail)
    lower = 0.0 if events == 0 else _solve_increasing(lambda mu: 1.0 - _gammaincc(events, mu), tail)
    return lower / exposure, upper / exposure


def _gammaincc(a: float, x: float) -> float:
    import torch

    return float(torch.special.gammaincc(torch.tensor(float(a), dtype=torch.float64), torch.tensor(float(x), dtype=torch.float64)))


def _solve_increasing(f, target: float) -> float:
    """``x >= 0`` with ``f(x) = target`` for an increasing ``f``, by bisection to 1e-12 relative."""
    low, high = 0.0, 1.0
    while f(high) < target:
        high *= 2
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if f(mid) < target else (low, mid)
        if high - low <= 1e-12 * high:
            break
    return 0.5 * (low + high)


def failure_rate(collapse_count: int, replica_ps: float, per: float = 1000.0) -> dict:
    """Collapses per ``per`` replica-ps with its exact 95% Poisson interval (report.json fields)."""
    low, high = poisson_rate_ci(collapse_count, replica_ps)
    return {
        "replica_ps": replica_ps,
        "collapses": collapse_count,
        "failure_rate_per_1000_replica_ps": per * collapse_count / replica_ps,
        "ci95": [per * low, per * high],
    }


def distance_histogram(
    frames: Sequence[np.ndarray], bins: int = H_R_BINS, r_range: tuple[float, float] = H_R_RANGE
) -> tuple[np.ndarray, np.ndarray]:
    """h(r): normalised histogram of all interatomic distances in ``frames`` (each ``[n, 3]`` Å).

    Returns:
        Bin centres (Å) and the density (integrates to 1 over ``r_range``; distances outside are
        ignored).
    """
    distances = []
    for positions in frames:
        distances.append(all_pair_distances(np.asarray(positions, dtype=np.float64)))
    all_distances = np.concatenate(distances) if distances else np.zeros(0)
    density, edges = np.histogram(all_distances, bins=bins, range=r_range, density=True)
    return 0.5 * (edges[1:] + edges[:-1]), density


def h_r_mae(h: np.ndarray, h_reference: np.ndarray) -> float:
    """MAE between two h(r) densities on the same (even) bins: the mean over bins of ``|h - h_ref|``."""
    return float(np.mean(np.abs(np.asarray(h) - np.asarray(h_reference))))


def energy_drift_mev_per_atom_ps(time_ps: np.ndarray, total_energy_ev: np.ndarray, n_atoms: int) -> float:
    """Slope of a linear fit of total (or conserved) energy against time, in meV/atom/ps."""
    slope, _ = np.polyfit(np.asarray(time_ps, dtype=float), np.asarray(total_energy_ev, dtype=float), 1)
    return float(1e3 * slope / n_atoms)


def temperature_stats(temperatures: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of a temperature series, K."""
    temperatures = np.asarray(temperatures, dtype=float)
    return float(temperatures.mean()), float(temperatures.std())


def committee_warnings(
    deviations: dict[int, np.ndarray], collapses: Sequence[dict], frame_ps: float, false_alarm_percent: float = 0.1
) -> dict:
    """Does a committee's force deviation rise above its alarm threshold before each collapse?

    The threshold is the ``100 - false_alarm_percent`` percentile of the deviation over the saved
    frames of the replicas that never collapsed (so ``false_alarm_percent`` of healthy frames pass
    it); a collapse is warned when an earlier frame of its replica passes it, and the lead time is
    how long before the collapse the first such frame came.

    Args:
        deviations: Replica index -> ``[frames]`` committee force deviation of each saved frame, eV/Å
            (frame ``k`` at ``k * frame_ps``).
        collapses: ``{"replica", "time_ps", "reason"}`` of every collapse.
        frame_ps: Simulated time between saved frames, ps.
        false_alarm_percent: Share of healthy frames allowed above the threshold, %.

    Returns:
        ``threshold_eV_A`` (``None`` when every replica collapsed: no healthy frame sets it),
        ``healthy_frames``, ``warned`` (count), ``collapses`` (count), ``median_lead_time_ps`` and one
        event per collapse.
    """
    collapsed = {c["replica"] for c in collapses}
    healthy = [np.asarray(d) for r, d in deviations.items() if r not in collapsed]
    frames = int(sum(d.size for d in healthy))
    threshold = float(np.percentile(np.concatenate(healthy), 100 - false_alarm_percent)) if frames else None
    events = [_warning_event(c, np.asarray(deviations[c["replica"]]), threshold, frame_ps) for c in collapses]
    leads = [e["lead_time_ps"] for e in events if e["warned"]]
    return {
        "threshold_eV_A": threshold,
        "false_alarm_percent": false_alarm_percent,
        "healthy_frames": frames,
        "warned": len(leads),
        "collapses": len(events),
        "median_lead_time_ps": float(np.median(leads)) if leads else None,
        "events": events,
    }


def _warning_event(collapse: dict, deviations: np.ndarray, threshold: float | None, frame_ps: float) -> dict:
    """One collapse: was a frame before it above ``threshold``, and how long before?"""
    times = np.arange(len(deviations)) * frame_ps
    before = times < collapse["time_ps"]
    over = np.nonzero((deviations > threshold) & before)[0] if threshold is not None else np.zeros(0, dtype=int)
    return {
        "replica": collapse["replica"],
        "collapse_ps": collapse["time_ps"],
        "reason": collapse["reason"],
        "warned": bool(over.size),
        "lead_time_ps": float(collapse["time_ps"] - times[over[0]]) if over.size else None,
        "deviation_last_frames_eV_A": deviations[before][-5:].tolist(),
    }
