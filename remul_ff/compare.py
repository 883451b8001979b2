"""``remul-ff compare spec.yaml``: train (or load) several potentials on the same data and compare
accuracy, equivariance, speed, MD stability and energy drift side by side.

Re-running a spec after an interruption continues where it stopped: training resumes from its
checkpoint and MD from its restart files, so the 300 ps protocol can span several jobs.

A spec::

    output_dir: reports/ethanol
    data: {path: ..., e0s: ..., train: 950, valid: 50}        # DataConfig, shared by all models
    train: {max_minutes: 30, epochs: 1000}                      # TrainConfig, the same budget for all
    models:                                                     # name -> overrides (or model_path)
      remul: {model: {kind: transformer}, loss: {mode: remul}, md: {time: 50ps}}   # md: this model's own MD
      egnn:  {model: {kind: egnn}, loss: {mode: none}}
      other: {model_path: runs/other/model.pt, committee: [a/model.pt, b/model.pt]}   # see below
    md: {temperature: 500, timestep_fs: 0.5, time: 300ps, replicas: 5}   # Fu et al. 2023 defaults

A model's ``committee`` (two or more model files) is evaluated on that model's saved MD frames:
the report says how many of its collapses the committee's force deviation warned of, and how early
(:func:`~remul_ff.md.analysis.committee_warnings`).

Writes ``report.md`` (one table, models as columns), ``report.json`` (every number in the table
and the curves behind the plots) and PNG plots into ``output_dir``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from ase.io import read

from remul_ff.config import Config, ConfigError, DataConfig, TrainConfig, config_from_dict, load_spec_section, parse_section, reject_unknown
from remul_ff.data.bonds import group_name, watched_bonds
from remul_ff.md import MDResult, MDSettings, parse_duration_fs, run_md
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
from remul_ff.md.settings import FORCE_MODES, THERMOSTATS
from remul_ff.models import load_model
from remul_ff.models.committee import Committee, frame_deviations
from remul_ff.models.forces import predict
from remul_ff.models.symmetrize import GROUP_ORDERS, with_test_time_rotations
from remul_ff.schema import AT_LEAST_1, bounded, one_of
from remul_ff.training.data import prepare_data
from remul_ff.training.evaluate import evaluate, iterate_batches
from remul_ff.training.trainer import Trainer, keeping_thread_count
from remul_ff.utils.devices import resolve_device

MODEL_ENTRY_KEYS = ("model_path", "md", "committee")  # a model entry's own keys, besides training-config sections
DEFAULT_MODELS = {
    # The transformer's default recipe includes off-equilibrium frames: without them it breaks bonds
    # in 500 K MD (benchmarks/stability/README.md).
    "remul": {"model": {"kind": "transformer"}, "loss": {"mode": "remul"}, "data": {"off_equilibrium": {"fraction": 0.2, "weight": 0.01}}},
    "egnn": {"model": {"kind": "egnn"}, "loss": {"mode": "none"}},
}


GROUP_SIZES = ", ".join(map(str, GROUP_ORDERS))


@dataclass
class MDProtocol:
    """The stability protocol; defaults follow Fu et al. 2023 for MD17.

    Attributes:
        temperature: Nosé–Hoover target temperature, K.
        timestep_fs: Time step, fs.
        time: Simulated time per replica (e.g. ``300ps``).
        thermostat: ``nose-hoover``, ``langevin`` or ``nve``.
        replicas: Replicas per model, started from the held-out data frames (cycled if fewer).
        bond_tolerance: Collapse when a bond deviates by more than this from its mean length over
            the training frames, Å (Fu et al. 2023).
        max_temperature: Collapse above this temperature, K (``None``: ``max(10 T, 1000 K)``, a
            guard against runaway heating far above the thermal noise of a small molecule).
        nve_time: Length of the NVE run used for the energy drift (e.g. ``50ps``).
        nve_dtype: ``float64`` or ``float32`` for that NVE run (float32 rounding drifts by itself).
        frame_interval: Steps between frames kept for h(r) (and between thermo rows); the saved
            frames are checked for broken bonds too, as Fu et al. do.
        check_interval: Steps between the collapse monitor's checks during the MD (a break is
            dated to the check that sees it, at most this many steps late).
        restart_every: Steps between MD restart files; a re-run of the same spec continues from them.
        seed: Seed of initial velocities.
        dtype: ``float32`` or ``float64`` for the stability and NVE runs (accuracy is always
            evaluated in float64).
        compile: ``torch.compile`` the models for the stability and NVE runs (see ``MDSettings``).
        test_time_rotations: Use the model averaged over a group of 4, 12 or 24 rotations
            (:mod:`remul_ff.models.symmetrize`) in every measurement: accuracy, timings, MD (0: off).
        forces: ``conservative``, ``mts`` or ``direct`` in the stability, NVE and timing runs
            (:class:`~remul_ff.md.settings.MDSettings`; the last two need a direct-force head).
        mts_k: Inner steps per multiple-time-step cycle.
    """

    temperature: float = 500.0
    timestep_fs: float = 0.5
    time: str = "300ps"
    thermostat: str = one_of(*THERMOSTATS, default="nose-hoover")
    replicas: int = bounded(5, *AT_LEAST_1)
    bond_tolerance: float = 0.5
    max_temperature: float | None = None
    nve_time: str = "5ps"
    nve_dtype: str = one_of("float64", "float32")
    frame_interval: int = 100
    check_interval: int = 10
    restart_every: int = 10000
    seed: int = 0
    dtype: str = one_of("float64", "float32")
    compile: bool = False
    test_time_rotations: int = bounded(
        0, lambda v: v in (0, *GROUP_ORDERS), f"0 (off) or a rotation group's size, {', '.join(map(str, GROUP_ORDERS))}"
    )
    forces: str = one_of(*FORCE_MODES)
    mts_k: int = 4


@dataclass
class CompareSpec:
    """A whole comparison (see the module docstring)."""

    output_dir: str = "reports/compare"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    models: dict = field(default_factory=lambda: dict(DEFAULT_MODELS))
    md: MDProtocol = field(default_factory=MDProtocol)
    evaluation_rotations: int = 32


def load_spec(path: str | Path, overrides: list[str] = ()) -> CompareSpec:
    """Read and validate a comparison spec; each model's overrides are checked as a training config."""
    spec = load_spec_section(CompareSpec, path, overrides, "compare spec")
    if not spec.models:
        raise ConfigError(
            f"the compare spec {path} names no models; add at least one under 'models:' "
            "(e.g. models: {{remul: {{model: {{kind: transformer}}}}}})."
        )
    for name, entry in spec.models.items():
        if entry is not None and not isinstance(entry, dict):
            raise ConfigError(f"models.{name} must be a mapping of config sections (or model_path), but is {entry!r}.")
        # a model's entry: training-config sections plus its own keys (e.g. 'kind' belongs under 'model:')
        reject_unknown(list(entry or {}), [f.name for f in dataclasses.fields(Config)] + list(MODEL_ENTRY_KEYS), f"models.{name}.")
        model_config(spec, name)  # fail early on a bad model section
        model_path = (entry or {}).get("model_path")
        if model_path and not Path(model_path).is_file():
            raise ConfigError(f"models.{name}.model_path {model_path} does not exist; give the path of a file written by 'remul-ff train'.")
        _check_committee((entry or {}).get("committee"), name)
        _check_protocol(model_spec(spec, name).md, name)
    return spec


def _check_committee(paths, name: str) -> None:
    """A committee is a list of two or more existing model files (or absent)."""
    if paths is None:
        return
    if not isinstance(paths, list) or len(paths) < 2:
        raise ConfigError(f"models.{name}.committee must be a list of two or more model files, but is {paths!r}.")
    missing = [p for p in paths if not Path(str(p)).is_file()]
    if missing:
        raise ConfigError(
            f"models.{name}.committee names {', '.join(map(str, missing))}, which does not exist; give files written by 'remul-ff train'."
        )


def _check_protocol(md: MDProtocol, name: str) -> None:
    """Refuse an MD protocol that cannot run before any model is trained."""
    stability_settings(md).validate()
    parse_duration_fs(md.nve_time)


def model_spec(spec: CompareSpec, name: str) -> CompareSpec:
    """``spec`` with the model's own ``md`` overrides (e.g. a longer run for the model to be trusted).

    Rates are per replica-ps with their intervals, so models may get different amounts of MD; the
    temperature, time step and collapse criterion should stay the same for a fair comparison.
    """
    overrides = (spec.models[name] or {}).get("md") or {}
    if not overrides:
        return spec
    md = parse_section(MDProtocol, {**asdict(spec.md), **overrides}, f"models.{name}.md")
    return dataclasses.replace(spec, md=md)


def model_config(spec: CompareSpec, name: str) -> Config:
    """The training config of one model: shared data and budget, plus the model's own overrides."""
    entry = dict(spec.models[name] or {})
    for key in MODEL_ENTRY_KEYS:
        entry.pop(key, None)
    values = {"output_dir": str(Path(spec.output_dir) / name), "data": asdict(spec.data), "train": asdict(spec.train)}
    for section, extra in entry.items():
        values[section] = {**values.get(section, {}), **extra} if isinstance(extra, dict) else extra
    try:
        return config_from_dict(values)
    except ConfigError as exc:
        raise ConfigError(f"models.{name}: {exc}") from exc


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
    settings = MDSettings(
        temperature=spec.md.temperature,
        timestep_fs=spec.md.timestep_fs,
        total_time_fs=spec.md.timestep_fs * repeat,
        thermostat=thermostat,
        write_interval=0,
        compile=compile,
        bond_tolerance=1e9,
        max_temperature=1e12,
        forces=spec.md.forces,
        mts_k=spec.md.mts_k,
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


def stability_settings(md: MDProtocol) -> MDSettings:
    """The engine's settings for the protocol's stability run."""
    return MDSettings(
        temperature=md.temperature,
        timestep_fs=md.timestep_fs,
        total_time_fs=parse_duration_fs(md.time),
        thermostat=md.thermostat,
        seed=md.seed,
        write_interval=md.frame_interval,
        thermo_interval=md.frame_interval,
        bond_tolerance=md.bond_tolerance,
        max_temperature=md.max_temperature,
        traj_format="traj",
        restart_every=md.restart_every,
        compile=md.compile,
        check_interval=md.check_interval,
        forces=md.forces,
        mts_k=md.mts_k,
    )


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
    settings = MDSettings(
        temperature=spec.md.temperature,
        timestep_fs=spec.md.timestep_fs,
        total_time_fs=parse_duration_fs(spec.md.nve_time),
        thermostat="nve",
        seed=spec.md.seed,
        write_interval=0,
        thermo_interval=10 * (spec.md.mts_k if spec.md.forces == "mts" else 1),  # rows at the ends of cycles
        compile=spec.md.compile,
        restart_every=spec.md.restart_every,
        forces=spec.md.forces,
        mts_k=spec.md.mts_k,
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
    committee = Committee([load_model(p, resolve_device(spec.train.device), torch.float64) for p in paths])
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
    return with_test_time_rotations(load_model(path, device, dtype), spec.md.test_time_rotations)


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
    from remul_ff.report import write_report

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
    from remul_ff.report import write_report

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
