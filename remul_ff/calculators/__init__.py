"""ASE calculators."""

from remul_ff.calculators.remul import REMULCalculator

__all__ = ["REMULCalculator"]
