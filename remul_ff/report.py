"""Moved to :mod:`remul_ff.compare.report` (the comparison's report); this name keeps old imports working."""

from remul_ff.compare.report import *  # noqa: F403
from remul_ff.compare.report import PLOTS, plot_committee_warnings, write_report  # noqa: F401
