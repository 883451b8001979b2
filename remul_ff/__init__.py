"""remul-ff: unconstrained transformer force fields trained with the REMUL equivariance loss."""

from remul_ff.errors import RemulError

__version__ = "0.1.0"

__all__ = ["RemulError", "__version__"]
