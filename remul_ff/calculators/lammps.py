"""Old name of :mod:`remul_ff.integrations.lammps`: importing it gives that module itself."""

import sys

from remul_ff.integrations import lammps

sys.modules[__name__] = lammps
