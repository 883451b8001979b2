"""The ``remul-ff compare`` spec: shared data and budget, the models, and the MD protocol (Fu et al. 2023)."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path

from remul_ff.config import Config, ConfigError, DataConfig, TrainConfig, config_from_dict, load_spec_section, parse_section, reject_unknown
from remul_ff.md import MDSettings, parse_duration_fs
from remul_ff.models.symmetrize import GROUP_ORDERS
from remul_ff.schema import AT_LEAST_1, bounded, one_of, same_as

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

    temperature: float = same_as(MDSettings, "temperature", 500.0)
    timestep_fs: float = same_as(MDSettings, "timestep_fs")
    time: str = "300ps"
    thermostat: str = same_as(MDSettings, "thermostat", "nose-hoover")
    replicas: int = bounded(5, *AT_LEAST_1)
    bond_tolerance: float = same_as(MDSettings, "bond_tolerance")
    max_temperature: float | None = same_as(MDSettings, "max_temperature")
    nve_time: str = "5ps"
    nve_dtype: str = one_of("float64", "float32")
    frame_interval: int = bounded(100, *AT_LEAST_1)
    check_interval: int = same_as(MDSettings, "check_interval", 10)
    restart_every: int = same_as(MDSettings, "restart_every", 10000)
    seed: int = same_as(MDSettings, "seed")
    dtype: str = one_of("float64", "float32")
    compile: bool = same_as(MDSettings, "compile")
    test_time_rotations: int = bounded(
        0, lambda v: v in (0, *GROUP_ORDERS), f"0 (off) or a rotation group's size, {', '.join(map(str, GROUP_ORDERS))}"
    )
    forces: str = same_as(MDSettings, "forces")
    mts_k: int = same_as(MDSettings, "mts_k")

    def engine_settings(self, **changes) -> MDSettings:
        """The MD engine's settings: the protocol's values of the fields both have, then ``changes``."""
        own = {f.name for f in dataclasses.fields(self)}
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(MDSettings) if f.name in own}
        return MDSettings(**{**shared, **changes})


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


def stability_settings(md: MDProtocol) -> MDSettings:
    """The engine's settings for the protocol's stability run."""
    total = parse_duration_fs(md.time)
    return md.engine_settings(total_time_fs=total, write_interval=md.frame_interval, thermo_interval=md.frame_interval, traj_format="traj")
