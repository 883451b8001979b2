"""ASE calculators."""

from remul_ff.calculators.remul import OutOfDomainWarning, REMULCalculator

__all__ = ["OutOfDomainWarning", "REMULCalculator"]
