"""The old name of :mod:`remul_ff.integrations`, kept so that code written against it goes on working.

``remul_ff.calculators.X`` is the very module ``remul_ff.integrations.X`` (not a copy), so classes and
``isinstance`` checks agree whichever name imported them.
"""

from remul_ff.integrations import MultipleTimeStepVerlet, OutOfDomainWarning, REMULCalculator

__all__ = ["MultipleTimeStepVerlet", "OutOfDomainWarning", "REMULCalculator"]
