"""Do Inductor's CPU options speed up the compiled single-molecule program? (issue 13, 3BPA below 30x MACE)

The calculator's compiled path (``REMULCalculator(..., compile=True)``) is an AOTInductor package
compiled with Inductor's defaults. This script compiles the same program (the merged inference copy,
float32, the pair list as input) with

* ``freezing``: weights folded in as constants (oneDNN weight prepacking on the CPU);
* ``max_autotune``: Inductor's C++ GEMM templates benchmarked against ATen's ``mm`` per product;
* both;
* ``serial``: Inductor's defaults compiled for one thread (``cpp.threads`` 1, what a package compiled
  in a one-thread process gets: no OpenMP regions; the others are compiled for every core),

and times them interleaved with the default package (alternating blocks, medians over blocks) on the
first frame of 3BPA (27 atoms) and of rMD17 ethanol (9 atoms), with 1 and 2 torch threads.
Compiling takes minutes (max-autotune the longest); the packages are kept in ``--cache`` so a second
run only times. Autotuning benchmarks on this machine, so compile on a quiet machine too.

Usage::

    python benchmarks/aoti_options.py --ethanol-model stability/rmd17_ethanol_500K/remul_offeq_f02/model.pt \\
        --3bpa-model stability/3bpa_300K/remul_offeq/model.pt [--options serial --out aoti_threads]
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import torch
from inference_merge import DATA, first_frame, interleaved_ms
from perf._common import write_results

from remul_ff.models.export import _example, export_program, pairs_within
from remul_ff.models.files import load_model

OPTIONS = {
    "default": {},
    "freezing": {"freezing": True},
    "max_autotune": {"max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN"},
    "freezing + max_autotune": {"freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN"},
    "serial": {"cpp.threads": 1},
}
# Inductor writes parallel kernels for as many threads as torch has at compile time (one: none at all),
# so every package but "serial" is compiled for all cores, whatever the compiling process was given.
PARALLEL = {"cpp.threads": os.cpu_count() or 1}


def packages(model: torch.nn.Module, cache: Path, tag: str, names: list[str]) -> dict:
    """One loaded AOTInductor package of ``model`` per option set, compiled into ``cache`` unless already there."""
    program = None
    loaded = {}
    for name in names:
        options = {**PARALLEL, **OPTIONS[name]}
        path = cache / f"{tag}_{name.replace(' + ', '_')}_threads{options['cpp.threads']}.pt2"
        if not path.is_file():
            if program is None:  # traced once, on the exporter's example chain
                positions, numbers = _example(model.elements.elements.tolist(), torch.float32)
                program = export_program(model, positions, numbers, atomic=True, pairs=pairs_within(positions, model.r_max))
            torch._inductor.aoti_compile_and_package(program, package_path=str(path), inductor_configs=options)
        loaded[name] = torch._inductor.aoti_load_package(str(path))
    return loaded


def time_molecule(model_path: str, xyz: Path, cache: Path, tag: str, blocks: int, names: list[str]) -> dict:
    """Interleaved ms per call of each package with 1 and 2 threads, and the largest force difference to the default."""
    positions, numbers = first_frame(xyz)
    model = load_model(model_path, "cpu", torch.float32).for_inference()
    pairs = pairs_within(positions, model.r_max)
    digest = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()[:12]  # a package per model file and torch
    programs = packages(model, cache, f"{tag}_{digest}_{torch.__version__}", names)
    forces = {name: p(positions, numbers, pairs)[1] for name, p in programs.items()}
    entry = {"atoms": len(numbers), "max_force_difference_eV_A": {n: float((f - forces["default"]).abs().max()) for n, f in forces.items()}}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        calls = {name: (lambda p=p: p(positions, numbers, pairs)) for name, p in programs.items()}
        entry[f"threads_{threads}"] = interleaved_ms(calls, blocks, 100)
    return entry


def markdown(results: dict) -> str:
    names = list(results["options"])
    rows = ["| molecule | threads | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for molecule, entry in results["molecules"].items():
        for threads in (1, 2):
            t = entry[f"threads_{threads}"]
            rows.append(f"| {molecule} | {threads} | " + " | ".join(f"{t[n]['median_ms']:.2f}" for n in names) + " |")
    return "ms per call of the compiled program (medians over interleaved blocks of 100 calls):\n\n" + "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ethanol-model", required=True)
    parser.add_argument("--3bpa-model", dest="bpa_model", required=True)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/remul_ff_aoti_options"))
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--options", nargs="+", choices=list(OPTIONS), default=list(OPTIONS), help="which packages (default: all)")
    parser.add_argument("--out", default="aoti_options", help="results/<out>.{json,md} (default aoti_options)")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys(["default", *args.options]))  # the default is the reference of the force differences
    molecules = {
        "3BPA (27 atoms)": time_molecule(args.bpa_model, DATA / "3bpa" / "train_300K.xyz", args.cache, "3bpa", args.blocks, names),
        "ethanol (9 atoms)": time_molecule(
            args.ethanol_model, DATA / "rmd17_ethanol" / "train.xyz", args.cache, "ethanol", args.blocks, names
        ),
    }
    results = {"options": {n: {**PARALLEL, **OPTIONS[n]} for n in names}, "molecules": molecules}
    write_results(args.out, results, markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
