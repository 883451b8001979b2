"""Command-line interface: ``remul-ff generate | label | train | evaluate | md | export | compare | scaling``.

Every sub-command maps user errors (:class:`~remul_ff.errors.RemulError`) to one line on stderr
and exit code 2; outputs are written atomically, so a failed command leaves no partial file.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

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
    from remul_ff.data.labelling import PySCFLabeller, PySCFSettings, label_frames, xtb_labeller

    check_output_path(args.output, "-o")
    frames = read_frames(args.structures)
    if args.method == "xtb":
        labeller = xtb_labeller()
    else:
        settings = PySCFSettings(xc=args.xc, basis=args.basis, dispersion=args.dispersion, density_fit=args.density_fit)
        labeller = PySCFLabeller(settings)
    cache = args.cache or f"{args.output}.cache.jsonl"
    structures = label_frames(frames, labeller, cache)
    write_extxyz(structures, args.output)
    print(f"wrote {len(structures)} frames labelled with {labeller.signature} to {args.output} (cache: {cache})")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a potential from a YAML config")
    p.add_argument("config", help="YAML config file (see examples/)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=5 (repeatable)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUTPUT_DIR/checkpoint.pt (a run stopped by train.max_minutes gets another max_minutes)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the run already in OUTPUT_DIR")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> None:
    from remul_ff.config import load_config
    from remul_ff.training import distributed
    from remul_ff.training.trainer import Trainer

    config = load_config(args.config, args.overrides)
    check_output_path(config.output_dir, "output_dir", folder=True)
    try:
        trainer = Trainer(config, progress=not args.no_progress)
        if args.resume and args.overwrite:
            raise RemulError("--resume and --overwrite contradict each other; pass one of them.")
        trainer.run(resume=args.resume, overwrite=args.overwrite)
    finally:
        distributed.shutdown()
    if trainer.ctx.is_main:
        print(training_summary(config.output_dir, config.data.path))


def training_summary(output_dir: str, data_path: str) -> str:
    """What a finished run produced and what to run next, from its ``log.csv``."""
    import csv
    from pathlib import Path

    out = Path(output_dir)
    rows = list(csv.DictReader(open(out / "log.csv")))
    if not rows or not (out / "model.pt").exists():
        return f"no epoch finished, so no model was written to {out}/model.pt."
    best = _row_of_model(out / "model.pt", rows)
    rotation = float(best["val_equi_forces_rel"]) if best["val_equi_forces_rel"] not in ("", "nan") else float("nan")
    return (
        f"best model (epoch {best['epoch']} of {rows[-1]['epoch']}) written to {out}/model.pt: validation energy MAE "
        f"{float(best['val_energy_mae_meV']):.2f} meV, force MAE {float(best['val_forces_mae_meV_A']):.2f} meV/Å, "
        f"relative rotational force error {rotation:.2e}.\nnext: remul-ff evaluate {out}/model.pt {data_path}  |  "
        f"remul-ff md {out}/model.pt {data_path} -o {out}/md --replicas 8 --time 10ps --reference {data_path}"
    )


def _row_of_model(path, rows: list[dict]) -> dict:
    """The log row of the epoch ``model.pt`` holds (files from before it was recorded: the lowest validation
    loss; with a second stage the scale of that loss changes, so only the recorded epoch is sure)."""
    import torch

    epoch = torch.load(path, map_location="cpu", weights_only=True).get("epoch")
    return next((r for r in rows if int(r["epoch"]) == epoch), None) or min(rows, key=lambda r: float(r["val_loss"]))


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="accuracy and equivariance of a trained model on a data file")
    p.add_argument("model", help="model.pt written by remul-ff train")
    p.add_argument("data", help="labelled data file (extxyz, ASE formats, MD17/rMD17 .npz)")
    p.add_argument("--format", default="auto", help="data format (default: detect)")
    p.add_argument("--energy-key", default="energy")
    p.add_argument("--forces-key", default="forces")
    p.add_argument("--index", default=":", help="frames to use, e.g. ':100' (default all)")
    p.add_argument("--rotations", type=int, default=32, help="random rotations K per structure (default 32)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--seed", type=int, default=0, help="seed of the random rotations")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument(
        "--split",
        choices=["train", "valid", "test"],
        default=None,
        help="only the frames of this split of the model's run (splits.json beside model.pt)",
    )
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> None:
    import json

    import torch

    from remul_ff.data.readers import read_structures
    from remul_ff.models.files import MODEL_FILE_KIND, load_file, model_from_payload
    from remul_ff.training.evaluate import evaluate, format_report
    from remul_ff.utils.devices import resolve_device
    from remul_ff.utils.io import atomic_path

    if args.rotations < 0 or args.batch_size < 1:
        raise RemulError(f"--rotations must be 0 or more and --batch-size at least 1 (got {args.rotations} and {args.batch_size}).")
    if args.json:
        check_output_path(args.json, "--json")
    device, dtype = resolve_device(args.device), getattr(torch, args.dtype)
    payload = load_file(args.model, MODEL_FILE_KIND)
    model = model_from_payload(payload, args.model, device, dtype)
    structures = read_structures(args.data, args.format, args.energy_key, args.forces_key, args.index)
    if args.split:
        structures = _split_of_run(structures, args)
    model.elements.check(torch.as_tensor([int(z) for s in structures for z in set(s.numbers)]))
    _warn_unseen_pairs(model.training_domain, structures)
    loss = payload["training_config"].get("loss", {})
    report = evaluate(
        model,
        structures,
        payload["e0s"],
        args.rotations,
        args.batch_size,
        device,
        dtype,
        loss.get("energy_weight", 1.0),
        loss.get("forces_weight", 10.0),
        seed=args.seed,
    )
    print(format_report(report))
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")


def _warn_unseen_pairs(domain: dict[str, float], structures: list) -> None:
    """Warn (as ``md`` and the calculator do) when the data pair elements that never met in training."""
    from remul_ff.calculators import OutOfDomainWarning
    from remul_ff.data.domain import training_domain

    unseen = sorted(set(training_domain(structures)) - set(domain)) if domain else []
    if unseen:
        warnings.warn(
            f"remul-ff: the element pairs {', '.join(unseen)} in these data never occur in the model's training "
            "data; its errors there say nothing about its accuracy on data like its own.",
            OutOfDomainWarning,
            stacklevel=2,
        )


def _split_of_run(structures: list, args: argparse.Namespace) -> list:
    """The frames of ``args.split`` in the ``splits.json`` written beside the model by its training run."""
    from pathlib import Path

    from remul_ff.data.splits import load_splits

    path = Path(args.model).parent / "splits.json"
    if args.index != ":":
        raise RemulError("--split and --index both choose frames; pass only one of them.")
    if not path.exists():
        raise RemulError(
            f"--split needs {path}, written by the model's training run; evaluate without --split or give that run's model.pt."
        )
    indices = load_splits(path)[args.split]
    if not indices:
        raise RemulError(f"the {args.split} split in {path} is empty; choose another --split.")
    if max(indices) >= len(structures):
        raise RemulError(
            f"{path} names frames up to {max(indices, default=-1)}, but {args.data} has {len(structures)}: "
            "give the data file the model was trained on."
        )
    return [structures[i] for i in indices]


def _add_md(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("md", help="batched MD of many replicas with collapse detection")
    p.add_argument("model", help="model.pt written by remul-ff train")
    p.add_argument("structure", help="molecule name (e.g. ethanol), structure file, or data file whose frames start the replicas")
    p.add_argument("-o", "--output", required=True, help="output folder for trajectories and thermo.csv")
    p.add_argument("--replicas", type=int, default=1)
    _add_md_protocol_options(p)
    _add_md_output_options(p)
    _add_md_model_options(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_md)


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


def _run_md(args: argparse.Namespace) -> None:
    from remul_ff.calculators.remul import REMULCalculator
    from remul_ff.data.generate import read_frames
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
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> None:
    import torch

    from remul_ff.models.export import export_model

    if not args.output.endswith(".pt2"):
        raise RemulError(f"-o {args.output} should end in .pt2, the extension of torch.export programs.")
    check_output_path(args.output, "-o")
    path = export_model(args.model, args.output, getattr(torch, args.dtype), aotinductor=args.aotinductor)
    loader = f"torch._inductor.aoti_load_package('{path}')" if args.aotinductor else f"torch.export.load('{path}').module()"
    print(f"wrote {path}: energy, forces = {loader}(positions, atomic_numbers), one molecule in Å, eV and eV/Å")


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="train/load several potentials and compare accuracy, speed and MD stability")
    p.add_argument("spec", help="YAML comparison spec (see remul_ff/compare.py)")
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
    _add_train,
    _add_evaluate,
    _add_md,
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
        with warnings.catch_warnings():  # restores Python's own display afterwards (main may be called from Python)
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
