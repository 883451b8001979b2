"""ASE calculators."""

from remul_ff.calculators.mts import MultipleTimeStepVerlet
from remul_ff.calculators.remul import OutOfDomainWarning, REMULCalculator

__all__ = ["MultipleTimeStepVerlet", "OutOfDomainWarning", "REMULCalculator"]
