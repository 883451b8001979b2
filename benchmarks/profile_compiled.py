"""Where does the compiled single-molecule program spend its time? (issue 13, 3BPA below 30x MACE)

Compiles the calculator's AOTInductor program (merged inference copy, float32, pair list as input)
with Inductor's ``cpp.enable_kernel_profile``, so that each generated C++ kernel shows up in
``torch.profiler`` next to the matrix products it calls (``aoti_torch_cpu_addmm_out``/``mm_out``),
runs it ``--calls`` times on the first frame of the given structure with ``--threads`` torch threads,
and reports the self time per call of each kernel kind. Page faults are avoided first
(``keep_freed_memory``), as in the calculator.

Usage::

    python profile_compiled.py stability/3bpa_300K/remul_offeq/model.pt ../../shared/data/3bpa/train_300K.xyz
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from inference_merge import first_frame
from perf._common import write_results
from torch.profiler import profile

from remul_ff.models.export import _example, export_program, pairs_within
from remul_ff.models.files import load_model
from remul_ff.utils.memory import keep_freed_memory


def profiled_package(model: torch.nn.Module, directory: Path):
    """The calculator's program of ``model``, compiled with per-kernel profiling records."""
    positions, numbers = _example(model.elements.elements.tolist(), torch.float32)
    program = export_program(model, positions, numbers, atomic=True, pairs=pairs_within(positions, model.r_max))
    path = directory / "profiled.pt2"
    torch._inductor.aoti_compile_and_package(program, package_path=str(path), inductor_configs={"cpp.enable_kernel_profile": True})
    return torch._inductor.aoti_load_package(str(path))


def kind(name: str) -> str:
    """Group the generated kernels: matrix products, kernels with a scatter (index_add), other fused kernels."""
    if name.startswith("aoti_torch_cpu_"):
        return name.removeprefix("aoti_torch_cpu_")
    if name.startswith("graph_"):
        return "fused kernel with index_add (serial)" if "index_add" in name else "other fused kernel"
    return f"ATen {name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("xyz")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, "cpu", torch.float32).for_inference()
    positions, numbers = first_frame(Path(args.xyz))
    pairs = pairs_within(positions, model.r_max)
    with tempfile.TemporaryDirectory() as tmp:
        run = profiled_package(model, Path(tmp)).loader.boxed_run
        for _ in range(20):
            run([positions, numbers, pairs])
        with profile() as prof:
            for _ in range(args.calls):
                run([positions, numbers, pairs])
    kinds: dict[str, float] = {}
    for event in prof.key_averages():
        kinds[kind(event.key)] = kinds.get(kind(event.key), 0.0) + event.self_cpu_time_total / args.calls
    total = sum(kinds.values())
    rows = sorted(kinds.items(), key=lambda item: -item[1])
    results = {
        "atoms": len(numbers),
        "pairs": int(pairs.shape[1]),
        "threads": args.threads,
        "us_per_call": dict(rows),
        "slowest_kernels_us": {
            e.key: e.self_cpu_time_total / args.calls for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]
        },
    }
    table = [
        f"{len(numbers)} atoms, {results['pairs']} pairs within r_max, {args.threads} thread(s), "
        f"self time per call under the profiler: {total:.0f} µs",
        "",
        "| kind | µs per call | share |",
        "|---|---|---|",
    ]
    table += [f"| {name} | {us:.0f} | {100 * us / total:.0f}% |" for name, us in rows if us >= 1]
    write_results(f"profile_compiled_{len(numbers)}atoms", results, "\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
