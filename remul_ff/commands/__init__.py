"""The sub-commands of :mod:`remul_ff.cli` that need more than a few lines, one module each."""
