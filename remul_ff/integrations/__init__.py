"""Where remul-ff meets other codes: the ASE calculator, multiple time stepping for ASE, torch-sim and LAMMPS."""

from remul_ff.integrations.mts import MultipleTimeStepVerlet
from remul_ff.integrations.remul import OutOfDomainWarning, REMULCalculator

__all__ = ["MultipleTimeStepVerlet", "OutOfDomainWarning", "REMULCalculator"]
