"""Old name of :mod:`remul_ff.integrations.mts`: importing it gives that module itself."""

import sys

from remul_ff.integrations import mts

sys.modules[__name__] = mts
