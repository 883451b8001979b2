"""Allows ``python -m remul_ff`` (and ``torchrun -m remul_ff``)."""

from remul_ff.cli import main

raise SystemExit(main())
