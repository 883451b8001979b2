"""The compute-scaling sweep: families × model sizes × training budgets, one training run each.

A spec (YAML) names the shared data and optimiser settings, the training budgets (epochs), the
model sizes per model kind, and the families (a model kind plus a loss section)::

    output_dir: benchmarks/scaling/rmd17_ethanol
    data:  {path: ../shared/data/rmd17_ethanol/train.xyz, train: 950, valid: 50}
    train: {batch_size: 8, lr: 0.002, num_threads: 1}
    budgets: [3, 10, 30]
    sizes:
      transformer: {S: {width: 32, depth: 2, heads: 4}, L: {width: 128, depth: 3, heads: 8}}
      egnn: {S: {width: 32, depth: 2}}
    families:
      remul_label: {model: {kind: transformer}, loss: {mode: remul, target: label}}
      egnn: {model: {kind: egnn}, loss: {mode: none}}

Each (family, size, budget) point trains in ``output_dir/runs/<family>/<size>/e<budget>`` with the
cosine schedule over its own budget, so the last row of every run is a fully annealed model. The
FLOPs of a training step are counted once per run (:func:`remul_ff.scaling.measure.step_flops`, averaged over a few
batches) and multiplied by the structures seen, so the compute axis does not depend on how busy
the machine was; wall time is recorded beside it. When a run finishes, one JSON row per epoch
(validation errors along the way) is appended to ``output_dir/results.jsonl`` under a file lock.
Finished points are skipped, an interrupted run resumes from its checkpoint, and ``shard`` splits
the points between processes or sessions.
"""

from __future__ import annotations

import csv
import fcntl
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from remul_ff.config import DataConfig, TrainConfig, config_from_dict, load_spec_section
from remul_ff.errors import ConfigError
from remul_ff.scaling.measure import step_flops
from remul_ff.training.step import keeping_thread_count
from remul_ff.training.trainer import Trainer
from remul_ff.utils.devices import resolve_device
from remul_ff.utils.io import atomic_path

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
FLOPS_FILE = "flops.json"
FLOP_BATCHES = 4  # batches whose FLOPs are averaged (pair counts vary a little between conformers)


@dataclass
class ScalingSpec:
    """A whole sweep (see the module docstring).

    Attributes:
        output_dir: Where runs, ``results.jsonl`` and the report go.
        data: The data set, shared by every run.
        train: Optimiser settings shared by every run; ``epochs`` is replaced by each budget.
        budgets: Training budgets in epochs; each (family, size) is trained once per budget.
        sizes: Per model kind, named hyperparameter sets (``{transformer: {S: {width: 32}}}``).
        families: Per family, the ``model`` (with ``kind``) and ``loss`` sections of its runs.
        reference: Optional outside point for the accuracy/speed plot: ``name``, ``ms_per_step``,
            ``force_mae`` (meV/Å) and ``note`` (where the numbers come from).
    """

    output_dir: str = "reports/scaling"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    budgets: list = field(default_factory=lambda: [3, 10, 30])
    sizes: dict = field(default_factory=dict)
    families: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Point:
    """One training run of the sweep."""

    family: str
    size: str
    budget: int

    @property
    def key(self) -> str:
        return f"{self.family}/{self.size}/e{self.budget}"


def load_scaling_spec(path: str | Path, overrides: list[str] = ()) -> ScalingSpec:
    """Read and validate a sweep spec: every point's training config is checked before any work."""
    spec = load_spec_section(ScalingSpec, path, overrides, "scaling spec")
    if not spec.families or not spec.budgets:
        raise ConfigError(f"the scaling spec {path} needs at least one family and one budget (epochs).")
    if not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in spec.budgets):
        raise ConfigError(f"budgets must be whole numbers of epochs, at least 1, but are {spec.budgets!r}.")
    for point in sweep_points(spec):
        point_config(spec, point)
    return spec


def _family_kind(spec: ScalingSpec, family: str) -> str:
    entry = spec.families[family]
    if not isinstance(entry, dict) or not isinstance(entry.get("model", {}), dict):
        raise ConfigError(f"families.{family} must be a mapping with 'model' (and 'loss') sections.")
    kind = entry.get("model", {}).get("kind", "transformer")
    if not spec.sizes.get(kind):
        raise ConfigError(f"families.{family} is a {kind} model, but the spec lists no sizes.{kind}; add its sizes.")
    return kind


def sweep_points(spec: ScalingSpec) -> list[Point]:
    """Every point, largest budget first within a (family, size): a shard then mixes cheap and dear runs."""
    return [
        Point(family, size, budget)
        for family in spec.families
        for size in spec.sizes[_family_kind(spec, family)]
        for budget in sorted(spec.budgets, reverse=True)
    ]


def point_config(spec: ScalingSpec, point: Point):
    """The training config of one point: shared data and optimiser, the family's sections, the size."""
    entry = dict(spec.families[point.family])
    unknown = set(entry) - {"model", "loss"}
    if unknown:
        raise ConfigError(f"families.{point.family} may hold only 'model' and 'loss', not {', '.join(sorted(unknown))}.")
    size = spec.sizes[_family_kind(spec, point.family)][point.size]
    train = {**asdict(spec.train), "epochs": point.budget, "patience": point.budget + 1}
    values = {
        "output_dir": str(run_dir(spec, point)),
        "data": asdict(spec.data),
        "train": train,
        "model": {**entry.get("model", {}), **size},
        "loss": entry.get("loss", {}),
    }
    try:
        return config_from_dict(values)
    except ConfigError as exc:
        raise ConfigError(f"family {point.family!r}, size {point.size!r}: {exc}") from exc


def run_dir(spec: ScalingSpec, point: Point) -> Path:
    return Path(spec.output_dir) / "runs" / point.family / point.size / f"e{point.budget}"


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` (1-based) as ``(K - 1, N)``."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like K/N (e.g. 1/2), not {text!r}.") from None
    if not 1 <= k <= n:
        raise ConfigError(f"--shard {text}: K must be between 1 and N.")
    return k - 1, n


def run_sweep(spec: ScalingSpec, shard: tuple[int, int] = (0, 1), device: str | None = None, progress: bool = True) -> list[Point]:
    """Train every unfinished point of this shard and append its rows; returns the points trained."""
    done = finished_points(spec, device_name(spec, device))
    mine = [p for k, p in enumerate(sweep_points(spec)) if k % shard[1] == shard[0] and p.key not in done]
    for point in mine:
        if progress:
            logger.info(f"scaling: training {point.key}")
        rows = train_point(spec, point, device, progress)
        append_rows(Path(spec.output_dir) / RESULTS_FILE, rows)
    return mine


def device_name(spec: ScalingSpec, device: str | None) -> str:
    """``cpu`` or ``cuda`` for the rows: GPU points are kept apart from CPU points."""
    return resolve_device(device or spec.train.device).type


def finished_points(spec: ScalingSpec, device: str) -> set[str]:
    """Keys of the points whose rows (on ``device``) are already in the results file."""
    return {f"{r['family']}/{r['size']}/e{r['budget_epochs']}" for r in read_rows(spec) if r["final"] and r["device"] == device}


def read_rows(spec: ScalingSpec) -> list[dict]:
    path = Path(spec.output_dir) / RESULTS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def train_point(spec: ScalingSpec, point: Point, device: str | None, progress: bool) -> list[dict]:
    """Train (or finish training) one point and return its rows."""
    config = point_config(spec, point)
    if device:
        config.train.device = device
    out = Path(config.output_dir)
    trainer = Trainer(config, progress=progress)
    trainer.epoch_end_hooks.append(lambda epoch: _record_flops(trainer, out))
    resume = (out / "checkpoint.pt").exists()
    with keeping_thread_count():
        trainer.run(resume=resume, overwrite=not resume, extend_budget=False)
    return point_rows(spec, point, out, trainer)


def _record_flops(trainer: Trainer, out: Path) -> None:
    """FLOPs per training structure, measured once (after the first epoch: shapes, not weights, count)."""
    path = out / FLOPS_FILE
    if path.exists():
        return
    structures = trainer.data.train
    size = trainer.config.train.batch_size
    batches = [structures[k * size : (k + 1) * size] for k in range(min(FLOP_BATCHES, len(structures) // size or 1))]
    per_structure = sum(step_flops(trainer, b) for b in batches) / sum(len(b) for b in batches)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"flops_per_structure": per_structure, "batch_size": size}))


def point_rows(spec: ScalingSpec, point: Point, out: Path, trainer: Trainer) -> list[dict]:
    """One row per logged epoch, with cumulative FLOPs and training seconds."""
    per_structure = json.loads((out / FLOPS_FILE).read_text())["flops_per_structure"]
    n_train = len(trainer.data.train)
    log = list(csv.DictReader(open(out / "log.csv")))
    base = {
        "family": point.family,
        "size": point.size,
        "budget_epochs": point.budget,
        "device": trainer.device.type,
        "kind": trainer.config.model_kind,
        "loss_mode": trainer.config.loss.mode,
        "loss_target": trainer.config.loss.target,
        "params": sum(p.numel() for p in trainer.model.parameters()),
        "flops_per_step": per_structure * trainer.config.train.batch_size,
    }
    rows, seconds = [], 0.0
    for k, entry in enumerate(log):
        seconds += n_train / float(entry["structures_per_s"])  # training time only, without validation
        rows.append(
            {
                **base,
                "epoch": int(entry["epoch"]),
                "final": k == len(log) - 1,
                "flops": per_structure * n_train * int(entry["epoch"]),
                "wall_s": seconds,
                "force_mae": float(entry["val_forces_mae_meV_A"]),
                "energy_mae": float(entry["val_energy_mae_meV"]),
                "rotation_error": _finite(entry["val_equi_forces_rel"]),
            }
        )
    return rows


def _finite(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def append_rows(path: Path, rows: list[dict]) -> None:
    """Append ``rows`` as JSON lines in one locked write, so that parallel shards never interleave."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row) + "\n" for row in rows)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(text)
        handle.flush()
        fcntl.flock(handle, fcntl.LOCK_UN)
