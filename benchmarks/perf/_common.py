"""Helpers shared by the benchmark scripts: timing, machine description and result files."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import torch

from remul_ff.utils.memory import keep_freed_memory
from remul_ff.utils.timing import median_seconds  # noqa: F401 (the benchmarks time with it)

# The benchmarks time what the remul-ff program runs, which keeps freed memory for reuse (cli.console).
keep_freed_memory()

RESULTS = Path(__file__).resolve().parents[1] / "results"  # benchmarks/results, shared with the studies


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        # other processes compete for the cores when this is above 0 (timings are then upper bounds)
        "load_average_1min_at_write": os.getloadavg()[0],
    }


def command_line() -> str:
    """The command that produced the results, as a user would type it."""
    return "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])


def write_results(name: str, payload: dict, markdown: str, command: str | None = None, machine_info: dict | None = None) -> None:
    """Write ``results/<name>.json`` and ``results/<name>.md``, both stating the command.

    ``command`` and ``machine_info`` default to this run's; a script that only re-derives part of earlier
    results passes the earlier run's, so that the file keeps saying what measured it.
    """
    RESULTS.mkdir(exist_ok=True)
    payload = {"command": command or command_line(), "machine": machine_info or machine(), **payload}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    header = f"Command: `{payload['command']}`\n\nMachine: {payload['machine']}\n\n"
    (RESULTS / f"{name}.md").write_text(header + markdown)
