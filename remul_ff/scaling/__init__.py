"""Compute-scaling study (``remul-ff scaling``): sweep, power-law fits and report."""

from remul_ff.scaling.sweep import ScalingSpec, load_scaling_spec, run_sweep

__all__ = ["ScalingSpec", "load_scaling_spec", "run_sweep"]
