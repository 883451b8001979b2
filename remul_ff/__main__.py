"""Allows ``python -m remul_ff`` (and ``torchrun -m remul_ff``)."""

from remul_ff.cli import console

raise SystemExit(console())
