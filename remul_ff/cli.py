"""Command-line interface: ``remul-ff generate | label | train | evaluate | md | export | compare | scaling``
(the longer sub-commands live in :mod:`remul_ff.commands`).

Every sub-command maps user errors (:class:`~remul_ff.errors.RemulError`) to one line on stderr
and exit code 2; outputs are written atomically, so a failed command leaves no partial file.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import shlex
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence

from remul_ff.commands import evaluate as evaluate_command
from remul_ff.commands import learn as learn_command
from remul_ff.commands import md as md_command
from remul_ff.commands import train as train_command
from remul_ff.commands.train import training_summary  # noqa: F401 (its home was here)
from remul_ff.errors import RemulError
from remul_ff.utils.io import check_output_path

EXIT_USER_ERROR = 2


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="label frames of a GFN2-xTB Langevin MD run (reference data, no download)")
    p.add_argument("molecule", help="molecule name for ase.build.molecule (e.g. ethanol, CH3CH2OH) or a structure file")
    p.add_argument("-o", "--output", required=True, help="extended XYZ file to write")
    p.add_argument("--n-frames", type=int, default=100, help="frames to write (default 100)")
    p.add_argument("--temperature", type=float, default=500.0, help="Langevin temperature in K (default 500)")
    p.add_argument("--timestep", type=float, default=0.5, help="time step in fs (default 0.5)")
    p.add_argument("--sample-every", type=int, default=20, help="MD steps between saved frames (default 20)")
    p.add_argument("--equilibration", type=int, default=100, help="MD steps before the first frame (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_generate)


def _run_generate(args: argparse.Namespace) -> None:
    from remul_ff.data.generate import GenerateSettings, load_molecule, run_reference_md, write_extxyz

    settings = GenerateSettings(
        temperature=args.temperature,
        timestep=args.timestep,
        n_frames=args.n_frames,
        sample_every=args.sample_every,
        equilibration=args.equilibration,
        seed=args.seed,
    )
    if settings.n_frames < 1 or settings.sample_every < 1 or settings.equilibration < 0:
        raise RemulError("--n-frames and --sample-every must be at least 1 and --equilibration 0 or more.")
    if not (math.isfinite(settings.timestep) and settings.timestep > 0):
        raise RemulError(f"--timestep must be a positive number of fs, but is {settings.timestep}.")
    if not (math.isfinite(settings.temperature) and settings.temperature > 0):
        raise RemulError(f"--temperature must be a positive number of K, but is {settings.temperature}.")
    check_output_path(args.output, "-o")
    frames = run_reference_md(load_molecule(args.molecule), settings)
    write_extxyz(frames, args.output)
    print(f"wrote {len(frames)} frames to {args.output}")


def _add_label(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("label", help="label structures with DFT (PySCF, optional D3) or GFN2-xTB; cached and resumable")
    p.add_argument("structures", help="structure file (any ASE format; every frame is labelled)")
    p.add_argument("-o", "--output", required=True, help="extended XYZ file to write")
    p.add_argument("--method", choices=("pyscf", "xtb"), default="pyscf", help="labeller (default pyscf)")
    p.add_argument("--xc", default="PBE", help="PySCF functional (default PBE)")
    p.add_argument("--basis", default="def2-svp", help="PySCF basis set (default def2-svp)")
    p.add_argument("--dispersion", choices=("d3bj", "d3zero"), default=None, help="add Grimme D3 with this damping")
    p.add_argument("--density-fit", action="store_true", help="density fitting (faster, slightly different labels)")
    p.add_argument(
        "--cache",
        default=None,
        help="label cache (JSON lines; default OUTPUT.cache.jsonl): a rerun after a kill labels only what is missing",
    )
    p.set_defaults(func=_run_label)


def _run_label(args: argparse.Namespace) -> None:
    from remul_ff.data.generate import read_frames, write_extxyz
    from remul_ff.data.labelling import PySCFSettings, label_frames, make_labeller

    check_output_path(args.output, "-o")
    frames = read_frames(args.structures)
    settings = PySCFSettings(xc=args.xc, basis=args.basis, dispersion=args.dispersion, density_fit=args.density_fit)
    labeller = make_labeller(args.method, settings)
    cache = args.cache or f"{args.output}.cache.jsonl"
    structures = label_frames(frames, labeller, cache)
    write_extxyz(structures, args.output)
    print(f"wrote {len(structures)} frames labelled with {labeller.signature} to {args.output} (cache: {cache})")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a model as a torch.export program (.pt2) that runs with PyTorch alone")
    p.add_argument("model", help="model.pt written by remul-ff train")
    p.add_argument("-o", "--output", required=True, help="the .pt2 file to write")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument(
        "--aotinductor",
        action="store_true",
        help="compile ahead of time with AOTInductor (needs g++; a minute or more); load the package "
        "with torch._inductor.aoti_load_package",
    )
    p.add_argument(
        "--direct",
        action="store_true",
        help="export the energy and direct forces (no backward pass) of a model trained with model.direct_forces: true",
    )
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> None:
    import torch

    from remul_ff.models.export import export_model

    if not args.output.endswith(".pt2"):
        raise RemulError(f"-o {args.output} should end in .pt2, the extension of torch.export programs.")
    check_output_path(args.output, "-o")
    path = export_model(args.model, args.output, getattr(torch, args.dtype), aotinductor=args.aotinductor, direct_only=args.direct)
    loader = f"torch._inductor.aoti_load_package('{path}')" if args.aotinductor else f"torch.export.load('{path}').module()"
    forces = "direct_forces" if args.direct else "forces"
    print(f"wrote {path}: energy, {forces} = {loader}(positions, atomic_numbers), one molecule in Å, eV and eV/Å")


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="train/load several potentials and compare accuracy, speed and MD stability")
    p.add_argument("spec", help="YAML comparison spec (see remul_ff/compare/spec.py)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--model",
        dest="models",
        action="append",
        default=[],
        metavar="NAME",
        help="only train and run the stability MD of this model (repeatable), e.g. one job per model "
        "at the same time; a later run without --model writes the report",
    )
    p.add_argument(
        "--update-report",
        action="store_true",
        help="with --model: measure these models and add them to the existing report.json, keeping the "
        "other models' reported numbers (for a model added after the report was written)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_compare)


def _run_compare(args: argparse.Namespace) -> None:
    from remul_ff.compare import load_spec, run_compare, run_long_stages, update_report

    spec = load_spec(args.spec, args.overrides)
    if args.update_report:
        if not args.models:
            raise RemulError("--update-report needs --model NAME for each model to add to the report.")
        update_report(spec, args.models, progress=not args.no_progress)
        print(f"added {', '.join(args.models)} to {spec.output_dir}/report.md")
        return
    if args.models:
        run_long_stages(spec, args.models, progress=not args.no_progress)
        print(f"training and MD of {', '.join(args.models)} done; run without --model to write the report")
        return
    run_compare(spec, progress=not args.no_progress)
    print(f"report written to {spec.output_dir}/report.md")


def _add_scaling(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scaling", help="compute-scaling sweep: model families x sizes x training budgets, fits and plots")
    p.add_argument("spec", help="YAML sweep spec (see remul_ff/scaling/sweep.py)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--shard",
        default="1/1",
        metavar="K/N",
        help="train only every N-th point, starting at the K-th "
        "(one process per shard; finished points are skipped, so shards may also run in later sessions)",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: the spec's train.device); rows record it")
    p.add_argument("--report-only", action="store_true", help="write the report from the results so far, train nothing")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_scaling)


def _run_scaling(args: argparse.Namespace) -> None:
    from remul_ff.scaling.report import write_scaling_report
    from remul_ff.scaling.sweep import device_name, finished_points, load_scaling_spec, parse_shard, run_sweep, sweep_points

    spec = load_scaling_spec(args.spec, args.overrides)
    shard = parse_shard(args.shard)
    device = device_name(spec, args.device)
    if not args.report_only:
        run_sweep(spec, shard, args.device, progress=not args.no_progress)
    left = len(sweep_points(spec)) - len(finished_points(spec, device))
    if left and not args.report_only:
        print(f"this shard is done; {left} point(s) of other shards are still to train, then run with --report-only")
        return
    structure = _first_frame(spec.data)
    write_scaling_report(spec, "remul-ff " + shlex.join(args.argv), structure, device)
    print(f"report written to {spec.output_dir}/report.md")


def _first_frame(data):
    """The first frame of the data set, the molecule the speed of each model size is timed on."""
    from remul_ff.data.readers import read_structures

    return read_structures(data.path, data.format, data.energy_key, data.forces_key, index="0:1")[0].to_atoms()


class _UsageError(Exception):
    """A wrong command line, reported in one line like every other user error."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a wrong option in one sentence instead of the usage block."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        raise _UsageError(f"{self.prog}: error: {message}; see '{self.prog} --help'.")


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_generate,
    _add_label,
    train_command.add_parser,
    evaluate_command.add_parser,
    md_command.add_parser,
    learn_command.add_parser,
    _add_export,
    _add_compare,
    _add_scaling,
]


def build_parser() -> argparse.ArgumentParser:
    """The ``remul-ff`` argument parser with all sub-commands."""
    parser = _Parser(prog="remul-ff", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def _one_line_warnings(command: str, default: Callable) -> Callable:
    """A ``warnings.showwarning`` that prints remul-ff's own warnings as one line, like its errors.

    Python's format adds the file, line and source of the ``warn`` call, which tell a user nothing;
    other libraries' warnings keep it.
    """

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message)
        if not text.startswith("remul-ff: "):
            return default(message, category, filename, lineno, file, line)
        print(f"remul-ff {command}: warning: {text.removeprefix('remul-ff: ')}", file=sys.stderr if file is None else file)

    return show


@contextlib.contextmanager
def _messages_on_stdout() -> Iterator[None]:
    """Print the library's log messages (``logging``, logger ``remul_ff``, INFO and up) on stdout, as plain lines.

    The library only logs; a Python user decides where its messages go (``logging.basicConfig(level="INFO")``).
    """
    library = logging.getLogger("remul_ff")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level, propagate = library.level, library.propagate
    library.addHandler(handler)
    library.setLevel(logging.INFO)
    library.propagate = False  # once is enough, whatever the root logger does
    try:
        yield
    finally:
        library.removeHandler(handler)
        library.setLevel(level)
        library.propagate = propagate


def console() -> int:
    """The ``remul-ff`` program (and ``python -m remul_ff``): :func:`main` in a process of its own.

    Only a process of its own may change process-wide settings: it keeps freed memory for reuse, since
    every MD step frees and allocates the same buffers (:func:`remul_ff.utils.memory.keep_freed_memory`;
    ``REMUL_FF_KEEP_FREED_MEMORY=0`` opts out). :func:`main`, called from Python, changes nothing.
    """
    from remul_ff.utils.memory import keep_freed_memory

    keep_freed_memory()
    return main()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``remul-ff`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USER_ERROR
    args.argv = argv  # for reports that print the command that made them
    try:
        with warnings.catch_warnings(), _messages_on_stdout():  # both restored afterwards (main may be called from Python)
            warnings.showwarning = _one_line_warnings(args.command, warnings.showwarning)
            args.func(args)
    except RemulError as exc:
        print(f"remul-ff {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:  # e.g. the disk filled up or permissions changed while running
        print(
            f"remul-ff {args.command}: error: could not access {exc.filename or 'a file'} ({exc.strerror or exc}); "
            "check the path, its permissions and free space.",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"remul-ff {args.command}: interrupted.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
