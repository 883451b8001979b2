"""The ``remul-ff learn`` spec: where the loop starts, how it trains, simulates, selects, labels and stops.

A spec file (YAML; every section but ``data`` and ``train_config`` is optional)::

    output_dir: runs/learn_ethanol
    data: ethanol_50.xyz                  # labelled starting frames (extxyz, ASE formats, .npz)
    e0s: isolated_atoms.xyz               # as the training config's data.e0s
    train_config: examples/rmd17_ethanol.yaml
    train: {first_minutes: 10, round_minutes: 5, committee: 2}
    labeller: {kind: pyscf, xc: PBE, basis: def2-svp}
    check: {frames: 10, max_force_mae_meV_A: 3.0}
    md: {temperatures: [500], replicas: 64, time_fs: 2000}
    select: {window_fs: 100, max_per_round: 50}
    stop: {replica_ps: 1000, max_deviation: 0.3}
    budget: {max_rounds: 8, max_labels: 300}
    test: test_frames.xyz                 # optional: labelled frames never trained on
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from remul_ff.data.labelling import PySCFSettings
from remul_ff.errors import ConfigError
from remul_ff.schema import AT_LEAST_1, NON_NEGATIVE, POSITIVE, bounded, load_spec_section, one_of


@dataclass
class LearnTraining:
    """How each round trains.

    Attributes:
        first_minutes: Training budget of the first round's models (from random weights).
        round_minutes: Budget of each later round: fine-tuning from the last round's models.
        committee: Models trained per round (different seeds); two or more give the force
            deviation that selects uncertain frames. The first one runs the MD and is the result.
        valid: Validation share of the growing data set.
        overrides: ``--set``-style overrides of ``train_config`` (e.g. ``train.batch_size=16``).
    """

    first_minutes: float = bounded(10.0, *POSITIVE)
    round_minutes: float = bounded(5.0, *POSITIVE)
    committee: int = bounded(2, *AT_LEAST_1)
    valid: float = bounded(0.1, lambda v: 0 < v < 1, "in (0, 1)")
    overrides: list = field(default_factory=list)


@dataclass
class LearnLabeller(PySCFSettings):
    """The reference method: ``pyscf`` (the :class:`PySCFSettings` fields), ``xtb`` (GFN2-xTB) or ``ase``
    (``calculator``: ``"module:name"`` of an ASE calculator class or factory, e.g. another code's interface)."""

    kind: str = one_of("pyscf", "xtb", "ase")
    calculator: Union[str, None] = None


@dataclass
class LabellerCheck:
    """Label some starting frames first and compare with their own labels, before hours of labelling.

    Attributes:
        frames: Starting frames to label (0 skips the check and assumes no energy offset).
        max_force_mae_meV_A: The loop stops with a message when the force MAE is larger.
    """

    frames: int = 10
    max_force_mae_meV_A: float = 5.0


@dataclass
class LearnMD:
    """The MD that finds where the model fails (batched, one run per temperature and chunk).

    Attributes:
        temperatures: Thermostat temperatures, K.
        replicas: Replicas per chunk, started from random training frames.
        time_fs: Simulated time per replica and chunk.
        timestep_fs: Time step.
        thermostat: ``langevin``, ``nose-hoover`` or ``nve``.
        write_interval: Steps between saved frames (the candidates for labels).
        max_chunks: Chunks per temperature and round: a round that sees no collapse runs more, until
            ``stop.replica_ps`` is reached at that temperature or the chunks are spent.
    """

    temperatures: list = field(default_factory=lambda: [500.0])
    replicas: int = bounded(64, *AT_LEAST_1)
    time_fs: float = bounded(2000.0, *POSITIVE)
    timestep_fs: float = 0.5
    thermostat: str = "langevin"
    write_interval: int = bounded(20, *AT_LEAST_1)
    max_chunks: int = bounded(4, *AT_LEAST_1)


@dataclass
class LearnSelect:
    """Which simulated frames get labels.

    Attributes:
        window_fs: Before each collapse, the saved frames of this last stretch of the replica.
        max_deviation: Committee force deviation (eV/Å) above which a frame is uncertain.
        max_per_round: Frames labelled per round (collapse windows first, then the most uncertain).
        min_distance: A frame closer than this (Å, root mean square over sorted interatomic
            distances) to a training frame or to one already chosen is a duplicate.
        min_pair_distance: Frames with two atoms closer than this (Å) are past repair, not labelled.
        weight: Loss weight of a labelled frame relative to a starting frame.
        energy_weight: Extra factor on a labelled frame's energy error. Frames from just before a
            collapse lie eV above the data; a model that cannot fit them yet shifts every energy to
            meet them halfway (a constant offset on the test set), so their energies count less.
    """

    window_fs: float = 100.0
    max_deviation: float = 0.3
    max_per_round: int = bounded(50, *AT_LEAST_1)
    min_distance: float = 0.02
    min_pair_distance: float = 0.6
    weight: float = bounded(1.0, *NON_NEGATIVE)
    energy_weight: float = bounded(0.01, *NON_NEGATIVE)


@dataclass
class LearnStop:
    """When the loop is done: no collapse in ``replica_ps`` at every temperature, and (with a committee)
    no saved frame with a force deviation above ``max_deviation`` (eV/Å)."""

    replica_ps: float = bounded(1000.0, *POSITIVE)
    max_deviation: float = 0.3


@dataclass
class LearnBudget:
    """Limits that end the loop before it is done."""

    max_rounds: int = bounded(8, *AT_LEAST_1)
    max_labels: int = 300
    max_hours: float = 24.0


@dataclass
class LearnSpec:
    """A whole ``remul-ff learn`` run (see the module docstring)."""

    output_dir: str = "runs/learn"
    data: str = ""
    e0s: Union[str, dict] = "average"
    train_config: str = ""
    test: Union[str, None] = None
    seed: int = 0
    train: LearnTraining = field(default_factory=LearnTraining)
    labeller: LearnLabeller = field(default_factory=LearnLabeller)
    check: LabellerCheck = field(default_factory=LabellerCheck)
    md: LearnMD = field(default_factory=LearnMD)
    select: LearnSelect = field(default_factory=LearnSelect)
    stop: LearnStop = field(default_factory=LearnStop)
    budget: LearnBudget = field(default_factory=LearnBudget)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_learn_spec(path: str | Path, overrides: list[str] = ()) -> LearnSpec:
    """Read and check a learn spec; every problem is one :class:`ConfigError` sentence."""
    spec = load_spec_section(LearnSpec, path, list(overrides), "learn spec")
    for key in ("data", "train_config"):
        value = getattr(spec, key)
        if not value:
            raise ConfigError(f"the learn spec {path} has no '{key}'; give the path of the {key.replace('_', ' ')} file.")
        if not Path(value).is_file():
            raise ConfigError(f"the learn spec's {key} {value} is not a file; check the path (relative to where you run).")
    if not spec.md.temperatures or not all(isinstance(t, (int, float)) and t > 0 for t in spec.md.temperatures):
        raise ConfigError(f"learn spec key 'md.temperatures' must be a list of positive temperatures, but is {spec.md.temperatures!r}.")
    return spec
