"""Old name of :mod:`remul_ff.integrations.remul`: importing it gives that module itself."""

import sys

from remul_ff.integrations import remul

sys.modules[__name__] = remul
