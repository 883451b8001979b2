"""Old name of :mod:`remul_ff.integrations.recorded`: importing it gives that module itself."""

import sys

from remul_ff.integrations import recorded

sys.modules[__name__] = recorded
