"""``remul-ff md``: its options (defaults from :data:`~remul_ff.md.settings.COMMAND_LINE_MD_SETTINGS`) and the run."""

from __future__ import annotations

import argparse
from pathlib import Path

from remul_ff.errors import RemulError
from remul_ff.utils.io import check_output_path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("md", help="batched MD of many replicas with collapse detection")
    p.add_argument("model", help="model.pt written by remul-ff train")
    p.add_argument("structure", help="molecule name (e.g. ethanol), structure file, or data file whose frames start the replicas")
    p.add_argument("-o", "--output", required=True, help="output folder for trajectories and thermo.csv")
    p.add_argument("--replicas", type=int, default=1)
    _add_md_protocol_options(p)
    _add_md_output_options(p)
    _add_md_model_options(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _add_md_protocol_options(p: argparse.ArgumentParser) -> None:
    """Temperature, time step, time, thermostat, seed and forces, with COMMAND_LINE_MD_SETTINGS' defaults."""
    from remul_ff.md.settings import COMMAND_LINE_MD_SETTINGS, FORCE_MODES, THERMOSTATS

    d = COMMAND_LINE_MD_SETTINGS
    p.add_argument("--temperature", type=float, default=d.temperature, help=f"K (default {d.temperature:g})")
    p.add_argument("--timestep", type=float, default=d.timestep_fs, help=f"fs (default {d.timestep_fs:g})")
    p.add_argument(
        "--time",
        default=f"{d.total_time_fs / 1e3:g}ps",
        help=f"simulated time per replica with its unit, e.g. 300ps (default {d.total_time_fs / 1e3:g}ps)",
    )
    p.add_argument("--thermostat", default=d.thermostat, choices=list(THERMOSTATS))
    p.add_argument("--friction", type=float, default=d.friction, help=f"Langevin friction in 1/fs (default {d.friction:g})")
    p.add_argument("--tdamp", type=float, default=d.tdamp_fs, help="Nose-Hoover damping time in fs (default 100 steps)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--forces",
        default=d.forces,
        choices=list(FORCE_MODES),
        help="conservative: -dE/dx (default); mts: direct forces on inner steps, corrected every --mts-k steps; "
        "direct: direct forces only (no energy conservation). mts and direct need a model with model.direct_forces: true",
    )
    p.add_argument("--mts-k", type=int, default=d.mts_k, help=f"inner steps per multiple-time-step cycle (default {d.mts_k})")


def _add_md_output_options(p: argparse.ArgumentParser) -> None:
    """What is written and checked, how often, and where a run resumes."""
    from remul_ff.md.settings import COMMAND_LINE_MD_SETTINGS

    d = COMMAND_LINE_MD_SETTINGS
    p.add_argument(
        "--write-interval", type=int, default=d.write_interval, help=f"steps between saved frames (default {d.write_interval}; 0: none)"
    )
    p.add_argument(
        "--thermo-interval", type=int, default=d.thermo_interval, help=f"steps between thermo rows (default {d.thermo_interval})"
    )
    p.add_argument("--format", default=d.traj_format, choices=["traj", "extxyz"])
    p.add_argument(
        "--reference",
        default=None,
        metavar="DATA",
        help="data file whose mean bond lengths are the collapse reference (Fu et al.; default: the starting frame's)",
    )
    p.add_argument(
        "--check-interval", type=int, default=d.check_interval, help=f"steps between collapse checks (default {d.check_interval})"
    )
    p.add_argument(
        "--restart-every", type=int, default=d.restart_every, help=f"steps between restart files (default {d.restart_every}; 0: none)"
    )
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/restart.pt (same structure and options; --time may grow)")
    p.add_argument("--overwrite", action="store_true", help="replace the MD run already in OUTPUT")


def _add_md_model_options(p: argparse.ArgumentParser) -> None:
    """Device, dtype, compilation and the committee."""
    from remul_ff.md.settings import COMMAND_LINE_MD_SETTINGS, DEVIATION_ACTIONS

    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--compile", action="store_true", help="torch.compile the model (faster long runs; about a minute to compile)")
    p.add_argument(
        "--no-cuda-graph",
        dest="cuda_graph",
        action="store_false",
        help="on a CUDA device, run each step's kernels one by one instead of replaying a recorded CUDA graph",
    )
    p.add_argument(
        "--committee",
        action="append",
        default=[],
        metavar="MODEL",
        help="another model.pt (repeatable): MD runs on the committee's mean and logs its force deviation",
    )
    p.add_argument(
        "--max-force-deviation",
        type=float,
        default=None,
        metavar="EV_PER_A",
        help="with --committee: flag (or stop) a replica whose largest force deviation passes this, eV/Å",
    )
    p.add_argument(
        "--on-deviation",
        default=COMMAND_LINE_MD_SETTINGS.on_deviation,
        choices=list(DEVIATION_ACTIONS),
        help="flag: list it in uncertain.json and go on (default); stop: remove it from the run",
    )


def _starting_structures(source: str, replicas: int) -> list:
    """Replica k starts from frame k mod (number of frames) of ``source``."""
    import os

    from remul_ff.data.generate import load_molecule, read_frames

    frames = read_frames(source) if os.path.exists(source) else [load_molecule(source)]
    return [frames[k % len(frames)].copy() for k in range(replicas)]


def _check_resume_flags(args: argparse.Namespace) -> None:
    """--resume needs a restart file to continue from, and cannot go with --overwrite."""
    from remul_ff.md.engine import RESTART_FILE

    if args.resume and args.overwrite:
        raise RemulError("--resume and --overwrite contradict each other; pass one of them.")
    restart = Path(args.output) / RESTART_FILE
    if args.resume and not restart.is_file():
        raise RemulError(
            f"--resume found no {restart} to continue from (was the run started with --restart-every 0, "
            "or in another folder?); drop --resume to start a new run."
        )


def _md_settings(args: argparse.Namespace):
    """The :class:`~remul_ff.md.settings.MDSettings` the options ask for."""
    from remul_ff.md.settings import MDSettings, parse_duration_fs

    return MDSettings(
        temperature=args.temperature,
        timestep_fs=args.timestep,
        total_time_fs=parse_duration_fs(args.time),
        thermostat=args.thermostat,
        friction=args.friction,
        tdamp_fs=args.tdamp,
        seed=args.seed,
        write_interval=args.write_interval,
        thermo_interval=args.thermo_interval,
        traj_format=args.format,
        restart_every=args.restart_every,
        compile=args.compile,
        check_interval=args.check_interval,
        cuda_graph=args.cuda_graph,
        max_force_deviation=args.max_force_deviation,
        on_deviation=args.on_deviation,
        forces=args.forces,
        mts_k=args.mts_k,
    )


def run(args: argparse.Namespace) -> None:
    from remul_ff.data.generate import read_frames
    from remul_ff.integrations.remul import REMULCalculator
    from remul_ff.md.engine import run_md
    from remul_ff.models.committee import Committee
    from remul_ff.utils.devices import resolve_device

    if args.replicas < 1:
        raise RemulError("--replicas must be at least 1.")
    settings = _md_settings(args)
    settings.validate()
    _check_resume_flags(args)
    if args.max_force_deviation is not None and not args.committee:
        raise RemulError("--max-force-deviation needs a committee: add at least one more model with --committee.")
    check_output_path(args.output, "-o", folder=True)
    calculator = REMULCalculator([args.model, *args.committee], resolve_device(args.device), args.dtype)
    starts = _starting_structures(args.structure, args.replicas)
    for k, atoms in enumerate(starts):
        calculator.check_atoms(atoms, f"the starting structure of replica {k}")
    reference = read_frames(args.reference) if args.reference else ()
    model = Committee(calculator.models) if len(calculator.models) > 1 else calculator.model
    result = run_md(
        model,
        starts,
        settings,
        args.output,
        progress=not args.no_progress,
        resume=args.resume,
        reference_frames=reference,
        overwrite=args.overwrite,
    )
    stable = result.n_replicas - len(result.collapses)
    flagged = f"; {len(result.flags)} flagged as uncertain (uncertain.json)" if args.committee else ""
    print(
        f"{stable}/{result.n_replicas} replicas stable for {settings.total_time_fs / 1e3:g} ps{flagged}; "
        f"{result.replica_steps_per_s:.0f} replica-steps/s; output in {args.output}"
    )
