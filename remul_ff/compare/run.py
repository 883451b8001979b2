"""Running a comparison: train or load each model, then measure accuracy, speed, MD stability and drift."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from ase.io import read

from remul_ff.compare.spec import (
    CompareSpec,
    MDProtocol,
    model_config,
    model_spec,
    stability_settings,
)
from remul_ff.config import ConfigError
from remul_ff.data.bonds import group_name, watched_bonds
from remul_ff.md import MDResult, parse_duration_fs, run_md
from remul_ff.md.analysis import (
    committee_warnings,
    distance_histogram,
    energy_drift_mev_per_atom_ps,
    failure_rate,
    first_bond_break,
    h_r_mae,
    stability_time_ps,
)
from remul_ff.md.monitor import Collapse, bond_reason
from remul_ff.models.committee import frame_deviations
from remul_ff.models.forces import predict
from remul_ff.models.runtime import ready_model
from remul_ff.training.data import prepare_data
from remul_ff.training.evaluate import evaluate, iterate_batches
from remul_ff.training.step import keeping_thread_count
from remul_ff.training.trainer import Trainer
from remul_ff.utils.devices import resolve_device


def _prepare_model(spec: CompareSpec, name: str, progress: bool) -> tuple[Path, list[dict]]:
    """Train (unless ``model_path`` is given) and return the model file and the learning curve."""
    path = (spec.models[name] or {}).get("model_path")
    if not path:
        config = model_config(spec, name)
        # A re-run after an interruption continues training (and stops at once if it had finished).
        resume = (Path(config.output_dir) / "checkpoint.pt").exists()
        with keeping_thread_count():
            Trainer(config, progress=progress).run(resume=resume, overwrite=not resume, extend_budget=False)
        path = Path(config.output_dir) / "model.pt"
    return Path(path), _learning_curve(Path(path).parent / "log.csv")


def _learning_curve(log: Path) -> list[dict]:
    """The training log written beside a model file, if there is one."""
    import csv

    return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(open(log))] if log.exists() else []


def _ms_per_step(
    model: torch.nn.Module, starts: list, spec: CompareSpec, thermostat: str = "nve", compile: bool = False, repeat: int = 50
) -> float:
    """Wall ms per MD step of ``starts`` as one batch, timed after a warm-up run (which also compiles)."""
    # No bond or temperature criterion while timing: a replica dropped mid-way would shrink the batch.
    settings = spec.md.engine_settings(
        total_time_fs=spec.md.timestep_fs * repeat,
        thermostat=thermostat,
        write_interval=0,
        compile=compile,
        bond_tolerance=1e9,
        max_temperature=1e12,
        check_interval=1,
        restart_every=0,
    )
    run_md(model, starts, settings, None, progress=False)
    return 1e3 * run_md(model, starts, settings, None, progress=False).wall_time_s / repeat


def _replica_starts(spec: CompareSpec, frames: list) -> list:
    """One starting frame per replica, spread over the held-out frames."""
    return [frames[k * len(frames) // spec.md.replicas].copy() for k in range(spec.md.replicas)]


def _parity(model, structures, device, dtype) -> tuple[list[float], list[float]]:
    ref, pred = [], []
    for batch in iterate_batches(structures, 32, device, dtype):
        ref.append(batch.forces.cpu().numpy().ravel())
        pred.append(predict(model, batch).forces.cpu().numpy().ravel())
    return np.concatenate(ref).tolist(), np.concatenate(pred).tolist()


def _run_stability_md(model, spec: CompareSpec, shared: SharedInputs, out: Path, progress: bool) -> MDResult:
    """The protocol's replicas, continued from ``out``'s restart file when there is one."""
    settings = stability_settings(spec.md)
    starts = _replica_starts(spec, shared.frames)
    for replica, atoms in enumerate(starts):
        _check_start_frame(atoms, replica, spec.md, shared.reference)
    return run_md(model, starts, settings, out, progress=progress, resume=True, reference_frames=shared.reference)


def _check_start_frame(atoms, replica: int, md: MDProtocol, reference_frames: list) -> None:
    """Refuse a protocol whose criterion counts a starting frame (a data frame) as broken before any MD."""
    found = _saved_frame_collapse([atoms], replica, md, reference_frames)
    if found:
        raise ConfigError(
            f"replica {replica} starts from a held-out data frame whose bond {found['bond']} is already "
            f"{found['deviation']:.2f} Å from its mean length in the training frames, more than md.bond_tolerance "
            f"({md.bond_tolerance} Å), so it would count as a collapse before any MD; raise md.bond_tolerance "
            "(Fu et al. 2023: 0.5 Å) or check the data."
        )


def _stability(model, spec: CompareSpec, shared: SharedInputs, out: Path, progress: bool) -> dict:
    """Stability of every replica, the failure rate with its interval, and h(r) before each collapse."""
    md = spec.md
    result = _run_stability_md(model, spec, shared, out, progress)
    collapses = {c.replica: asdict(c) for c in result.collapses}
    kept = []
    for r in range(md.replicas):
        replica_frames = read(out / f"replica_{r:03d}.traj", index=":")
        found = _saved_frame_collapse(replica_frames, r, md, shared.reference)
        if found and found["time_ps"] < collapses.get(r, {"time_ps": np.inf})["time_ps"]:
            collapses[r] = found
        end = found["step"] // md.frame_interval if found else len(replica_frames)
        kept += [a.positions for a in replica_frames[:end]]
    times = stability_time_ps([collapses.get(r, {}).get("time_ps") for r in range(md.replicas)], parse_duration_fs(md.time) / 1e3)
    h = distance_histogram(kept)[1]
    return {
        "stability_ps": times.tolist(),
        "collapse_events": [collapses[r] for r in sorted(collapses)],
        "stable_replicas": md.replicas - len(collapses),
        "h_r": h.tolist(),
        "h_r_mae": h_r_mae(h, shared.reference_hr),
        "replica_steps_per_s": result.replica_steps_per_s,
        **failure_rate(len(collapses), float(times.sum())),
    }


def _saved_frame_collapse(replica_frames: list, replica: int, md: MDProtocol, reference_frames: list) -> dict | None:
    """The bond criterion applied to the saved frames, as Fu et al. do it (mean data-set bond lengths).

    It agrees with the monitor that ran with the MD up to the frame interval, and also judges runs
    made before the monitor's bond search was fixed (it watched only bonds shorter than the sum of
    covalent radii, 2 to 4 of ethanol's 8 bonds in a 500 K frame).
    """
    first = replica_frames[0]
    bonds, groups, reference = watched_bonds(first, reference_frames)
    found = first_bond_break([a.positions for a in replica_frames], bonds, md.bond_tolerance, reference, groups)
    if found is None:
        return None
    frame, group, deviation = found
    name = group_name(first.get_chemical_symbols(), bonds[groups == group])
    step = frame * md.frame_interval
    reason = f"{bond_reason(name, deviation, reference[group])} (saved frame {frame})"
    return asdict(Collapse(replica, step, step * md.timestep_fs / 1e3, reason, name, deviation))


def _drift(spec: CompareSpec, path: Path, atoms, out: Path, reference: list = ()) -> dict:
    """NVE energy drift of one molecule in ``md.nve_dtype``; a finished or interrupted run is continued.

    ``reference``: the training frames, so that the run stops on the protocol's criterion (a proton
    moving between two oxygens, as the data show, does not stop it).
    """
    model = _protocol_model(spec, path, resolve_device(spec.train.device), getattr(torch, spec.md.nve_dtype))
    settings = spec.md.engine_settings(
        total_time_fs=parse_duration_fs(spec.md.nve_time),
        thermostat="nve",
        write_interval=0,
        thermo_interval=10 * (spec.md.mts_k if spec.md.forces == "mts" else 1),  # rows at the ends of cycles
        check_interval=1,
    )
    run_md(model, [atoms], settings, out, progress=False, resume=True, reference_frames=reference)
    import csv

    rows = list(csv.DictReader(open(out / "thermo.csv")))
    t = np.array([float(r["time_ps"]) for r in rows])
    e = np.array([float(r["e_tot_eV"] if "e_tot_eV" in r else r["e_tot"]) for r in rows])  # e_tot: before units were named
    return {
        "drift_meV_atom_ps": energy_drift_mev_per_atom_ps(t, e, len(atoms)) if len(t) > 1 else float("nan"),
        "nve_time_ps": t.tolist(),
        "nve_e_tot": e.tolist(),
    }


def compare_one(spec: CompareSpec, name: str, shared: SharedInputs, progress: bool) -> dict:
    """Every measurement for one model."""
    spec = model_spec(spec, name)
    data, frames = shared.data, shared.frames
    device = resolve_device(spec.train.device)
    path, curve = _prepare_model(spec, name, progress)
    model = _protocol_model(spec, path, device, torch.float64)
    held_out = data.test or data.valid
    report = evaluate(model, held_out, data.e0s, spec.evaluation_rotations, 32, device, torch.float64, seed=spec.md.seed)
    out = Path(spec.output_dir) / name
    report.update(
        model_path=str(path),
        learning_curve=curve,
        ms_per_step_float64=_ms_per_step(model, frames[:1], spec),
        ms_per_step_float32=_ms_per_step(_protocol_model(spec, path, device, torch.float32), frames[:1], spec),
    )
    report["parity_ref"], report["parity_pred"] = _parity(model, held_out[:20], device, torch.float64)
    md_model = _md_model(spec, path)
    report["ms_per_step_md_batch"] = _ms_per_step(
        md_model, _replica_starts(spec, frames), spec, spec.md.thermostat, spec.md.compile, repeat=400
    )
    report.update(_stability(md_model, spec, shared, out / "md", progress))
    report.update(_drift(spec, path, frames[0].copy(), out / "nve", shared.reference))
    report["md_protocol"] = asdict(spec.md)
    committee = (spec.models[name] or {}).get("committee")
    if committee:
        report["committee_warning"] = _committee_warning(spec, committee, out / "md", report["collapse_events"])
    return report


def _committee_warning(spec: CompareSpec, paths: list, md_dir: Path, collapses: list[dict]) -> dict:
    """How many of a model's collapses a committee's force deviation warned of, on its saved frames."""
    committee = ready_model(paths, resolve_device(spec.train.device), torch.float64)
    deviations = {r: frame_deviations(committee, read(md_dir / f"replica_{r:03d}.traj", index=":")) for r in range(spec.md.replicas)}
    frame_ps = spec.md.frame_interval * spec.md.timestep_fs / 1e3
    result = committee_warnings(deviations, collapses, frame_ps)
    return {
        **result,
        "committee": [str(p) for p in paths],
        "frame_ps": frame_ps,
        "deviations_eV_A": {str(r): d.tolist() for r, d in deviations.items()},
    }


def _md_model(spec: CompareSpec, path: Path) -> torch.nn.Module:
    return _protocol_model(spec, path, resolve_device(spec.train.device), getattr(torch, spec.md.dtype))


def _protocol_model(spec: CompareSpec, path: Path, device, dtype: torch.dtype) -> torch.nn.Module:
    """The model file as the protocol uses it: averaged over ``md.test_time_rotations`` rotations when set."""
    return ready_model(path, device, dtype, spec.md.test_time_rotations)


@dataclass
class SharedInputs:
    """What every model of a comparison shares.

    Attributes:
        data: The split data set.
        frames: Held-out structures (validation, then test) that MD replicas start from.
        reference: Training frames as ``Atoms``: their mean bond lengths are the collapse reference.
        reference_hr: h(r) of the training frames.
    """

    data: object
    frames: list
    reference: list
    reference_hr: np.ndarray


def _shared_inputs(spec: CompareSpec, progress: bool) -> SharedInputs:
    """The split data, the MD starting frames (held-out structures) and the references."""
    Path(spec.output_dir).mkdir(parents=True, exist_ok=True)
    data = prepare_data(spec.data, Path(spec.output_dir) / "splits.json", progress)
    frames = [s.to_atoms() for s in data.valid + data.test]
    reference = [s.to_atoms() for s in data.train]
    return SharedInputs(data, frames, reference, distance_histogram([s.positions for s in data.train])[1])


def run_long_stages(spec: CompareSpec, names: list[str], progress: bool = True) -> None:
    """Train and run the stability and NVE MD of ``names`` only, without measuring or reporting.

    Lets the long parts of a comparison run as separate jobs (one per model, at the same time); a
    later run over the whole spec finds them finished and writes the report.
    """
    unknown = [n for n in names if n not in spec.models]
    if unknown:
        raise ConfigError(f"the spec has no model named {', '.join(map(repr, unknown))}; it names {', '.join(spec.models)}.")
    shared = _shared_inputs(spec, progress)
    for name in names:
        path, _ = _prepare_model(spec, name, progress)
        own = model_spec(spec, name)
        _run_stability_md(_md_model(own, path), own, shared, Path(spec.output_dir) / name / "md", progress)
        _drift(own, path, shared.frames[0].copy(), Path(spec.output_dir) / name / "nve", shared.reference)


def run_compare(spec: CompareSpec, progress: bool = True) -> dict:
    """Run the whole comparison and write the report folder; returns the JSON payload."""
    out = Path(spec.output_dir)
    shared = _shared_inputs(spec, progress)
    start = time.perf_counter()
    results = {name: compare_one(spec, name, shared, progress) for name in spec.models}
    payload = {
        "command": " ".join(["remul-ff", *sys.argv[1:]]),
        "spec": asdict(spec),
        "reference_h_r": shared.reference_hr.tolist(),
        "temperature_K": spec.md.temperature,
        "training_budget_minutes": spec.train.max_minutes,
        "training_threads": spec.train.num_threads,
        "models": results,
        "pooled": pooled_ensembles(results),
        "wall_time_s": time.perf_counter() - start,
    }
    from remul_ff.compare.report import write_report

    write_report(payload, out)
    return payload


def update_report(spec: CompareSpec, names: list[str], progress: bool = True) -> dict:
    """Measure ``names`` and put them into the existing ``report.json`` beside the other models.

    For adding a model (or a second ensemble of one) to a finished comparison whose other models'
    trajectories are no longer on this machine (they are not committed): their reported numbers
    are kept as they are, and the command of this update is recorded beside the original one.
    """
    out = Path(spec.output_dir)
    report_file = out / "report.json"
    if not report_file.exists():
        raise ConfigError(f"--update-report needs an earlier report, but {report_file} does not exist; run the comparison without it.")
    import json

    payload = json.loads(report_file.read_text())
    payload.pop("table", None)
    run_long_stages(spec, names, progress)
    shared = _shared_inputs(spec, progress)
    for name in names:
        payload["models"][name] = compare_one(spec, name, shared, progress)
    payload["pooled"] = pooled_ensembles(payload["models"])
    payload["updates"] = [*payload.get("updates", []), " ".join(["remul-ff", *sys.argv[1:]])]
    from remul_ff.compare.report import write_report

    write_report(payload, out)
    return payload


def pooled_ensembles(results: dict) -> dict:
    """Failure rates over all ensembles of the same model file (e.g. a second set of replicas with
    another velocity seed), keyed by the first entry's name; models with one ensemble are left out.

    Independent replicas of one potential pool into one Poisson count: collapses and replica-ps add.
    """
    groups: dict[str, list[str]] = {}
    for name, r in results.items():
        groups.setdefault(str(Path(r["model_path"]).resolve()), []).append(name)
    pooled = {}
    for names in groups.values():
        if len(names) > 1 and all("replica_ps" in results[n] for n in names):
            collapses = sum(results[n]["collapses"] for n in names)
            pooled[names[0]] = {"ensembles": names, **failure_rate(collapses, sum(results[n]["replica_ps"] for n in names))}
    return pooled
