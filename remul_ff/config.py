"""Typed training configuration, parsed from YAML with helpful errors.

A config file has four sections plus the output folder::

    output_dir: runs/xtb_ethanol
    data:  {path: ..., e0s: average, valid: 0.1, ...}     # DataConfig
    model: {kind: transformer, width: 128, ...}            # kind + that model's config dataclass
    loss:  {mode: remul, weighting: gradnorm, ...}         # LossConfig
    train: {epochs: 100, batch_size: 16, lr: 1e-3, ...}    # TrainConfig

An unknown key is rejected with the closest valid key; a wrong type names the key, the expected
type and the value given. ``--set section.key=value`` overrides use the same checks.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from remul_ff.data.generate import GenerateSettings
from remul_ff.data.off_equilibrium import OffEquilibriumSettings
from remul_ff.errors import ConfigError


@dataclass
class GenerateConfig(GenerateSettings):
    """Reference data made with GFN2-xTB when ``data.path`` does not exist yet (see
    :class:`~remul_ff.data.generate.GenerateSettings` for the MD settings)."""

    molecule: str = "ethanol"
    n_frames: int = 300
    equilibration: int = 200


@dataclass
class DataConfig:
    """Where the data come from and how they are split.

    Attributes:
        path: Training data file (extxyz, ASE formats, MD17/rMD17 ``.npz``).
        format: Reader format; ``auto`` detects it from the file.
        energy_key: Energy label name in extxyz ``info`` / calculator results.
        forces_key: Forces label name in extxyz ``arrays`` / calculator results.
        e0s: ``average``, ``isolated``, ``zero``, an isolated-atoms file, or ``{symbol: eV}``.
        train: Training frames (fraction or count); ``null`` takes the rest.
        valid: Validation frames (fraction or count).
        test: Test frames (fraction or count).
        split_seed: Seed of the random split.
        max_frames: Read only the first frames (``null`` reads all).
        generate: Generate the data with GFN2-xTB when ``path`` is missing.
        off_equilibrium: Add distorted copies of training frames with Δ-GFN2-xTB labels (stretched
            and compressed bonds the data never visit; see
            :class:`~remul_ff.data.off_equilibrium.OffEquilibriumSettings`). ``null``: none.
    """

    path: str = ""
    format: str = "auto"
    energy_key: str = "energy"
    forces_key: str = "forces"
    e0s: Union[str, dict] = "average"
    train: Union[int, float, None] = None
    valid: Union[int, float] = 0.05
    test: Union[int, float] = 0.0
    split_seed: int = 0
    max_frames: Union[int, None] = None
    generate: Union[GenerateConfig, None] = None
    off_equilibrium: Union[OffEquilibriumSettings, None] = None


@dataclass
class LossConfig:
    """The REMUL objective ``alpha * L_task + beta * L_equi`` and its ablations.

    Attributes:
        mode: ``remul`` (task + equivariance loss), ``augment`` (rotate inputs and labels, no
            extra loss) or ``none`` (no symmetry at all).
        target: For ``remul``: compare the prediction on the rotated input with the rotated
            ``label`` or with the rotated ``prediction`` on the original input (label-free).
        weighting: ``fixed`` alpha/beta or ``gradnorm`` (Chen et al. 2018).
        alpha: Weight of the task loss (initial value under GradNorm).
        beta: Weight of the equivariance loss (initial value under GradNorm).
        equi_fraction: For ``remul``: the share of each batch whose rigidly moved copy enters
            ``L_equi`` (1, the paper's, moves every molecule; less saves part of the moved pass,
            which costs as much as the task's own).
        gradnorm_restoring: GradNorm's restoring-force exponent (its ``alpha``).
        gradnorm_lr: Learning rate of the GradNorm weights.
        energy_weight: Weight of the per-atom energy MSE (eV²/atom²).
        forces_weight: Weight of the force MSE ((eV/Å)²).
        direct_forces_weight: Weight of the direct forces' MSE ((eV/Å)²), for a model with
            ``direct_forces: true``; in ``remul`` mode the same weight applies to their
            equivariance term.
        stage_two_fraction: The last share of the run (of ``train.epochs`` or ``train.max_minutes``,
            whichever is further along) trained with the stage-two weights, as MACE's second stage
            does; the best model is then chosen among stage-two epochs. 0: one stage.
        stage_two_energy_weight: ``energy_weight`` in stage two.
        stage_two_forces_weight: ``forces_weight`` in stage two.
    """

    mode: str = "remul"
    target: str = "label"
    weighting: str = "fixed"
    alpha: float = 1.0
    beta: float = 1.0
    equi_fraction: float = 1.0
    gradnorm_restoring: float = 1.5
    gradnorm_lr: float = 0.025
    energy_weight: float = 1.0
    forces_weight: float = 10.0
    direct_forces_weight: float = 10.0
    stage_two_fraction: float = 0.0
    stage_two_energy_weight: float = 100.0
    stage_two_forces_weight: float = 10.0


@dataclass
class TrainConfig:
    """Optimisation settings.

    Attributes:
        epochs: Maximum number of epochs.
        batch_size: Molecules per optimisation step.
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        scheduler: ``cosine`` (to ``lr * min_lr_ratio`` over ``epochs`` or ``max_minutes``, whichever
            comes first), ``plateau`` or ``constant``.
        min_lr_ratio: Final learning rate of the cosine schedule, relative to ``lr``.
        ema_decay: Decay of the exponential moving average of weights (0 disables EMA).
        clip_grad_norm: Gradient-norm clipping threshold (0 disables it).
        spike_factor: An epoch whose mean training loss is not finite or above this multiple of the
            median of recent epochs rolls training back to the last good epoch with a smaller learning
            rate (:mod:`remul_ff.training.guard`; 0 disables it).
        max_rollbacks: Rollbacks after which training stops with a message.
        rollback_lr_factor: Learning-rate scale applied at each rollback (cumulative).
        patience: Early stopping after this many epochs without validation improvement.
        max_minutes: Wall-clock budget; training stops after the epoch that exceeds it.
        seed: Seed of weights, shuffling and rotations.
        device: ``auto``, ``cpu`` or ``cuda`` (``cuda:N``).
        dtype: ``float32`` or ``float64``.
        eval_rotations: Random rotations per validation structure for the equivariance error.
        checkpoint_every: Epochs between checkpoints.
        num_threads: CPU threads for torch (``null`` keeps torch's default); fixes CPU budgets.
        tensorboard: Also log every epoch's row to TensorBoard (``OUTPUT_DIR/tensorboard``) when
            the ``tensorboard`` package is installed.
        init_from: A ``model.pt`` whose weights start the run (fine-tuning; the same model section
            and elements); ``null`` starts from random weights.
    """

    epochs: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-6
    scheduler: str = "cosine"
    min_lr_ratio: float = 0.01
    ema_decay: float = 0.99
    clip_grad_norm: float = 10.0
    spike_factor: float = 10.0
    max_rollbacks: int = 5
    rollback_lr_factor: float = 0.5
    patience: int = 50
    max_minutes: Union[float, None] = None
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    eval_rotations: int = 4
    checkpoint_every: int = 1
    num_threads: Union[int, None] = None
    tensorboard: bool = True
    init_from: Union[str, None] = None


CHOICES = {
    "loss.mode": ("remul", "augment", "none"),
    "loss.target": ("label", "prediction"),
    "loss.weighting": ("fixed", "gradnorm"),
    "train.scheduler": ("cosine", "plateau", "constant"),
    "train.dtype": ("float32", "float64"),
    "model.radial_basis": ("bessel", "gaussian"),  # the keys of remul_ff.models.common.RADIAL_BASES
}


@dataclass
class Config:
    """A whole training run; ``model`` holds ``kind`` plus that model's hyperparameters."""

    output_dir: str = "runs/remul"
    data: DataConfig = field(default_factory=DataConfig)
    model: dict = field(default_factory=lambda: {"kind": "transformer"})
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def model_kind(self) -> str:
        """The model name (``transformer`` or ``egnn``)."""
        return self.model["kind"]

    @property
    def model_hyperparameters(self) -> dict:
        """The model section without ``kind``."""
        return {k: v for k, v in self.model.items() if k != "kind"}

    def to_dict(self) -> dict:
        """Plain nested dict (YAML/JSON/checkpoint friendly)."""
        return dataclasses.asdict(self)


def _type_name(tp: Any) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (Union, types.UnionType):
        names = " or ".join(_type_name(a) for a in args)
        return names + (" or null" if type(None) in typing.get_args(tp) else "")
    return "mapping" if tp is dict or dataclasses.is_dataclass(tp) else getattr(tp, "__name__", str(tp))


YAML11_MISSED_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are expected."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        section_error = None
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                # A mapping meant for a section: its own error (e.g. a misspelt key) says more.
                section_error = section_error or (exc if dataclasses.is_dataclass(option) and isinstance(value, dict) else None)
        if section_error is not None:
            raise section_error
    elif tp is type(None) and value is None:
        return None
    elif dataclasses.is_dataclass(tp):
        return parse_section(tp, value, key)
    elif tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif tp is float and isinstance(value, str) and YAML11_MISSED_FLOAT.fullmatch(value.strip()):
        return float(value)  # '1e-3': PyYAML (YAML 1.1) reads exponents without a dot as strings
    elif tp in (int, str, dict, list, bool) and isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"config key '{key}' expects {_type_name(tp)}, but got {value!r} ({type(value).__name__}).")


def reject_unknown(keys: list[str], valid: list[str], prefix: str) -> None:
    """Raise :class:`ConfigError` for the first of ``keys`` not in ``valid``, suggesting the closest valid key."""
    for key in keys:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            hint = f"did you mean '{prefix}{close[0]}'?" if close else f"valid keys are {', '.join(valid)}."
            raise ConfigError(f"unknown config key '{prefix}{key}'; {hint}")


def parse_section(cls: type, values: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``values``, rejecting unknown keys and wrong types."""
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{prefix or 'top level'}' must be a mapping, but got {values!r}.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    reject_unknown(list(values), names, f"{prefix}." if prefix else "")
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}.{key}" if prefix else key
        kwargs[key] = _coerce(value, hints[key], full)
        if full in CHOICES and kwargs[key] not in CHOICES[full]:
            raise ConfigError(f"config key '{full}' must be one of {', '.join(CHOICES[full])}, but got {value!r}.")
    return cls(**kwargs)


def _parse_model(values: Any) -> dict:
    from remul_ff.models import MODEL_CONFIGS

    if not isinstance(values, dict):
        raise ConfigError(f"config section 'model' must be a mapping, but got {values!r}.")
    kind = values.get("kind", "transformer")
    if kind not in MODEL_CONFIGS:
        raise ConfigError(f"config key 'model.kind' must be one of {', '.join(MODEL_CONFIGS)}, but got {kind!r}.")
    params = {k: v for k, v in values.items() if k != "kind"}
    return {"kind": kind, **dataclasses.asdict(parse_section(MODEL_CONFIGS[kind], params, "model"))}


# (key, test, what the value must be): numbers that parse but cannot train, checked before any work.
RANGES: list[tuple[str, Any, str]] = [
    ("train.epochs", lambda v: v >= 1, "at least 1"),
    ("train.batch_size", lambda v: v >= 1, "at least 1"),
    ("train.lr", lambda v: math.isfinite(v) and v > 0, "a positive number"),
    ("train.weight_decay", lambda v: math.isfinite(v) and v >= 0, "a number >= 0"),
    ("train.ema_decay", lambda v: 0 <= v < 1, "in [0, 1) (0 turns EMA off)"),
    ("train.min_lr_ratio", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("train.clip_grad_norm", lambda v: math.isfinite(v) and v >= 0, "a number >= 0 (0 turns clipping off)"),
    ("train.patience", lambda v: v >= 1, "at least 1"),
    ("train.max_minutes", lambda v: v is None or (math.isfinite(v) and v > 0), "a positive number of minutes or null"),
    ("train.eval_rotations", lambda v: v >= 0, "0 or more"),
    ("train.checkpoint_every", lambda v: v >= 1, "at least 1"),
    ("train.num_threads", lambda v: v is None or v >= 1, "at least 1 or null"),
    ("data.max_frames", lambda v: v is None or v >= 1, "at least 1 or null"),
    ("loss.energy_weight", lambda v: math.isfinite(v) and v >= 0, "a number >= 0"),
    ("loss.forces_weight", lambda v: math.isfinite(v) and v >= 0, "a number >= 0"),
    ("loss.alpha", lambda v: math.isfinite(v) and v >= 0, "a number >= 0"),
    ("loss.beta", lambda v: math.isfinite(v) and v >= 0, "a number >= 0"),
    ("model.r_max", lambda v: math.isfinite(v) and v > 0, "a positive distance in Å"),
    ("model.width", lambda v: v >= 1, "at least 1"),
    ("model.depth", lambda v: v >= 1, "at least 1"),
    ("model.heads", lambda v: v >= 1, "at least 1"),
    ("model.num_radial", lambda v: v >= 1, "at least 1"),
    ("model.envelope_p", lambda v: v >= 1, "at least 1 (the cutoff envelope's exponent; 6 is usual)"),
    ("model.ffn_multiplier", lambda v: v >= 1, "at least 1"),
    ("model.edge_width", lambda v: v is None or v >= 1, "at least 1 or null"),
    ("loss.gradnorm_restoring", lambda v: math.isfinite(v) and v >= 0, "a number >= 0"),
    ("loss.gradnorm_lr", lambda v: math.isfinite(v) and v > 0, "a positive number"),
    ("loss.stage_two_fraction", lambda v: 0 <= v < 1, "in [0, 1) (0: one stage)"),
    ("loss.stage_two_energy_weight", lambda v: math.isfinite(v) and v >= 0, "a number >= 0"),
    ("loss.stage_two_forces_weight", lambda v: math.isfinite(v) and v >= 0, "a number >= 0"),
    ("loss.equi_fraction", lambda v: 0 < v <= 1, "in (0, 1] (1 moves every molecule of a batch)"),
    ("train.spike_factor", lambda v: v == 0 or (math.isfinite(v) and v > 1), "above 1, or 0 to turn the guard off"),
    ("train.max_rollbacks", lambda v: v >= 0, "0 or more"),
    ("train.rollback_lr_factor", lambda v: 0 < v < 1, "in (0, 1)"),
]


def check_ranges(config: Config) -> None:
    """Raise :class:`ConfigError` for the first value outside its range (see ``RANGES``)."""
    sections = {
        "train": dataclasses.asdict(config.train),
        "data": dataclasses.asdict(config.data),
        "loss": dataclasses.asdict(config.loss),
        "model": config.model,
    }
    for key, test, must in RANGES:
        section, name = key.split(".")
        if name in sections[section] and not test(sections[section][name]):
            raise ConfigError(f"config key '{key}' must be {must}, but is {sections[section][name]!r}.")
    if config.data.off_equilibrium is not None:
        config.data.off_equilibrium.validate()
    width, heads = config.model.get("width"), config.model.get("heads")
    if heads and width and width % heads:
        raise ConfigError(
            f"config key 'model.width' ({width}) must be divisible by 'model.heads' ({heads}); try width {heads * max(width // heads, 1)}."
        )


def config_from_dict(values: dict) -> Config:
    """Parse a nested dict (e.g. loaded YAML) into a :class:`Config`, checking types and ranges."""
    if not isinstance(values, dict):
        raise ConfigError("the config file must contain a mapping of sections (data, model, loss, train).")
    values = dict(values)
    model = _parse_model(values.pop("model", {}))
    config = parse_section(Config, values)
    config.model = model
    check_ranges(config)
    return config


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` strings to a nested dict; values are parsed as YAML scalars."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.epochs=5.")
        key, raw = item.split("=", 1)
        node = values
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} goes inside '{part}', which is not a section.")
        node[leaf] = yaml.safe_load(raw)
    return values


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read a YAML config file, apply ``--set`` overrides, and validate everything."""
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"could not read the config file {path} ({exc.strerror}); check the path.") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"the config file {path} is not text (byte {exc.start} is not UTF-8); give a YAML config such as examples/xtb_ethanol.yaml."
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"the config file {path} is not valid YAML ({exc}).".replace("\n", " ")) from exc
    if not isinstance(values, dict):
        raise ConfigError(
            f"the config file {path} holds a {type(values).__name__}, not a mapping of sections "
            "(output_dir, data, model, loss, train); see examples/xtb_ethanol.yaml."
        )
    return config_from_dict(apply_overrides(values, list(overrides)))


def load_spec_section(cls: type, path: str | Path, overrides: list[str], what: str) -> Any:
    """Read a YAML spec (``what``: e.g. "compare spec"), apply ``--set`` overrides and parse it as ``cls``."""
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"could not read the {what} {path} ({exc}).".replace("\n", " ")) from exc
    return parse_section(cls, apply_overrides(values, list(overrides)))
