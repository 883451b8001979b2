"""Old name of :mod:`remul_ff.integrations.torchsim`: importing it gives that module itself."""

import sys

from remul_ff.integrations import torchsim

sys.modules[__name__] = torchsim
