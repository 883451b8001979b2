"""Command-line interface: ``remul-ff generate | train | evaluate``.

Every sub-command maps user errors (:class:`~remul_ff.errors.RemulError`) to one line on stderr
and exit code 2; outputs are written atomically, so a failed command leaves no partial file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from remul_ff.errors import RemulError

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
        temperature=args.temperature, timestep=args.timestep, n_frames=args.n_frames,
        sample_every=args.sample_every, equilibration=args.equilibration, seed=args.seed,
    )
    if settings.n_frames < 1 or settings.sample_every < 1 or settings.timestep <= 0:
        raise RemulError("--n-frames and --sample-every must be at least 1 and --timestep positive.")
    frames = run_reference_md(load_molecule(args.molecule), settings)
    write_extxyz(frames, args.output)
    print(f"wrote {len(frames)} frames to {args.output}")


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_generate]


def build_parser() -> argparse.ArgumentParser:
    """The ``remul-ff`` argument parser with all sub-commands."""
    parser = argparse.ArgumentParser(prog="remul-ff", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``remul-ff`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except RemulError as exc:
        print(f"remul-ff {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"remul-ff {args.command}: interrupted.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
