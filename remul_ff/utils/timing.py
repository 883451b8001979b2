"""One timer for every speed the package and its benchmarks measure."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_seconds(fn: Callable[[], object], repeat: int = 20, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeat`` calls after ``warmup`` untimed calls.

    On a machine with CUDA each call is bracketed by a synchronisation, so that the time is the
    work's and not the launch's.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        _synchronise()
        start = time.perf_counter()
        fn()
        _synchronise()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _synchronise() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
