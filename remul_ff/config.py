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
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from remul_ff.data.generate import GenerateSettings
from remul_ff.data.off_equilibrium import OffEquilibriumSettings
from remul_ff.errors import ConfigError
from remul_ff.schema import (  # noqa: F401 (apply_overrides, load_spec_section, reject_unknown: their home was here)
    AT_LEAST_1,
    AT_LEAST_1_OR_NULL,
    NON_NEGATIVE,
    POSITIVE,
    apply_overrides,
    bounded,
    load_spec_section,
    one_of,
    parse_section,
    reject_unknown,
)


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
    max_frames: Union[int, None] = bounded(None, *AT_LEAST_1_OR_NULL)
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
        reflections: Also mirror half the moved molecules (``augment``, and REMUL's moved copy): an
            improper rotation, the inversion ``r -> -r`` times a random rotation. A molecule's energy is
            the same for its mirror image and its forces mirror with it, so the symmetry learned is
            O(3), as the parity-aware features of MACE and NequIP have it built in. No extra cost.
        gradnorm_restoring: GradNorm's restoring-force exponent (its ``alpha``).
        gradnorm_lr: Learning rate of the GradNorm weights.
        energy_weight: Weight of the per-atom energy MSE (eV²/atom²).
        forces_weight: Weight of the force MSE ((eV/Å)²).
        direct_forces_weight: Weight of the direct forces' MSE ((eV/Å)²), for a model with
            ``direct_forces: true``; in ``remul`` mode the same weight applies to their
            equivariance term.
        direct_forces_target: What the direct forces learn: the ``labels`` (DFT forces) or the model's
            own ``conservative`` forces ``-dE/dx`` (held fixed in the loss). Multiple time stepping
            corrects the direct forces by (conservative - direct) every k-th step, so a head that
            reproduces the conservative forces leaves a smaller slow force and drifts less.
        stage_two_fraction: The last share of the run (of ``train.epochs`` or ``train.max_minutes``,
            whichever is further along) trained with the stage-two weights, as MACE's second stage
            does; the best model is then chosen among stage-two epochs. 0: one stage.
        stage_two_energy_weight: ``energy_weight`` in stage two.
        stage_two_forces_weight: ``forces_weight`` in stage two.
    """

    mode: str = one_of("remul", "augment", "none")
    target: str = one_of("label", "prediction")
    weighting: str = one_of("fixed", "gradnorm")
    alpha: float = bounded(1.0, *NON_NEGATIVE)
    beta: float = bounded(1.0, *NON_NEGATIVE)
    equi_fraction: float = bounded(1.0, lambda v: 0 < v <= 1, "in (0, 1] (1 moves every molecule of a batch)")
    reflections: bool = False
    gradnorm_restoring: float = bounded(1.5, *NON_NEGATIVE)
    gradnorm_lr: float = bounded(0.025, *POSITIVE)
    energy_weight: float = bounded(1.0, *NON_NEGATIVE)
    forces_weight: float = bounded(10.0, *NON_NEGATIVE)
    direct_forces_weight: float = 10.0
    direct_forces_target: str = one_of("labels", "conservative")
    stage_two_fraction: float = bounded(0.0, lambda v: 0 <= v < 1, "in [0, 1) (0: one stage)")
    stage_two_energy_weight: float = bounded(100.0, *NON_NEGATIVE)
    stage_two_forces_weight: float = bounded(10.0, *NON_NEGATIVE)


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
        trainable: ``all`` parameters, or only the ``direct_forces_head`` (with ``init_from``: fits a
            direct-force head to a trained model whose energies and conservative forces stay as they were).
        init_energy_reference: With ``init_from``: ``start`` keeps its energy zero (E0s and per-element
            shift); ``data`` takes this data's, as fine-tuning across levels of theory (a model pretrained on
            GFN2-xTB labels, then trained on DFT) must: their total energies differ by eV per atom.
    """

    epochs: int = bounded(100, *AT_LEAST_1)
    batch_size: int = bounded(16, *AT_LEAST_1)
    lr: float = bounded(1e-3, *POSITIVE)
    weight_decay: float = bounded(1e-6, *NON_NEGATIVE)
    scheduler: str = one_of("cosine", "plateau", "constant")
    min_lr_ratio: float = bounded(0.01, lambda v: 0 <= v <= 1, "in [0, 1]")
    ema_decay: float = bounded(0.99, lambda v: 0 <= v < 1, "in [0, 1) (0 turns EMA off)")
    clip_grad_norm: float = bounded(10.0, lambda v: math.isfinite(v) and v >= 0, "a number >= 0 (0 turns clipping off)")
    spike_factor: float = bounded(10.0, lambda v: v == 0 or (math.isfinite(v) and v > 1), "above 1, or 0 to turn the guard off")
    max_rollbacks: int = bounded(5, lambda v: v >= 0, "0 or more")
    rollback_lr_factor: float = bounded(0.5, lambda v: 0 < v < 1, "in (0, 1)")
    patience: int = bounded(50, *AT_LEAST_1)
    max_minutes: Union[float, None] = bounded(
        None, lambda v: v is None or (math.isfinite(v) and v > 0), "a positive number of minutes or null"
    )
    seed: int = 0
    device: str = "auto"
    dtype: str = one_of("float32", "float64")
    eval_rotations: int = bounded(4, lambda v: v >= 0, "0 or more")
    checkpoint_every: int = bounded(1, *AT_LEAST_1)
    num_threads: Union[int, None] = bounded(None, *AT_LEAST_1_OR_NULL)
    tensorboard: bool = True
    init_from: Union[str, None] = None
    trainable: str = one_of("all", "direct_forces_head")
    init_energy_reference: str = one_of("start", "data")


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


def _parse_model(values: Any) -> dict:
    from remul_ff.models import MODEL_CONFIGS

    if not isinstance(values, dict):
        raise ConfigError(f"config section 'model' must be a mapping, but got {values!r}.")
    kind = values.get("kind", "transformer")
    if kind not in MODEL_CONFIGS:
        raise ConfigError(f"config key 'model.kind' must be one of {', '.join(MODEL_CONFIGS)}, but got {kind!r}.")
    params = {k: v for k, v in values.items() if k != "kind"}
    return {"kind": kind, **dataclasses.asdict(parse_section(MODEL_CONFIGS[kind], params, "model"))}


def check_model_shape(config: Config) -> None:
    """``model.width`` divisible by ``model.heads``, the one check that spans two fields."""
    width, heads = config.model.get("width"), config.model.get("heads")
    if heads and width and width % heads:
        raise ConfigError(
            f"config key 'model.width' ({width}) must be divisible by 'model.heads' ({heads}); try width {heads * max(width // heads, 1)}."
        )


def check_head_fit(config: Config) -> None:
    """A run that trains only the direct-force head needs that head and a trained model to fit it to."""
    if config.train.trainable != "direct_forces_head":
        return
    if not config.model.get("direct_forces"):
        raise ConfigError("config key 'train.trainable' is direct_forces_head, but the model has none; set model.direct_forces: true.")
    if not config.train.init_from:
        raise ConfigError(
            "config key 'train.trainable' is direct_forces_head, which fits the head to a trained model; name it in train.init_from."
        )


def check_something_trains(config: Config) -> None:
    """Loss weights that leave nothing to learn (in either stage) are a mistake, not a run."""
    direct = config.model.get("direct_forces") and config.loss.direct_forces_weight > 0
    loss = config.loss
    for stage, weights in (
        ("", (loss.energy_weight, loss.forces_weight)),
        ("stage_two_", (loss.stage_two_energy_weight, loss.stage_two_forces_weight)),
    ):
        if stage and not loss.stage_two_fraction:
            continue
        if not direct and not any(weights):
            raise ConfigError(
                f"config keys 'loss.{stage}energy_weight' and 'loss.{stage}forces_weight' are both 0, "
                "so nothing would be trained; make one positive."
            )


def config_from_dict(values: dict) -> Config:
    """Parse a nested dict (e.g. loaded YAML) into a :class:`Config`, checking types and ranges."""
    if not isinstance(values, dict):
        raise ConfigError("the config file must contain a mapping of sections (data, model, loss, train).")
    values = dict(values)
    model = _parse_model(values.pop("model", {}))
    config = parse_section(Config, values)
    config.model = model
    if config.data.off_equilibrium is not None:
        config.data.off_equilibrium.validate()
    check_model_shape(config)
    check_head_fit(config)
    check_something_trains(config)
    return config


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
