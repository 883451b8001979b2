"""The training log: ``log.csv`` (one row per epoch, written by rank 0) and its optional TensorBoard mirror."""

from __future__ import annotations

import csv
from pathlib import Path

from remul_ff.utils.io import atomic_path

LOG_COLUMNS = [
    "epoch",
    "train_loss",
    "train_task",
    "train_equi",
    "val_loss",
    "val_energy_mae_meV",
    "val_forces_mae_meV_A",
    "val_equi_forces_rel",
    "val_shen_percent",
    "alpha",
    "beta",
    "lr",
    "epoch_time_s",
    "wall_time_s",
    "structures_per_s",
]
# Logged after LOG_COLUMNS for a model with a direct-force head.
DIRECT_FORCES_LOG_COLUMNS = ["val_direct_forces_mae_meV_A", "val_equi_direct_forces_rel"]


def epoch_row(
    epoch: int,
    train_means: dict[str, float],
    report: dict,
    val_loss: float,
    weights: tuple[float, float],
    lr: float,
    times: tuple[float, float],
    structures_per_s: float,
) -> dict[str, float]:
    """One epoch's log row: training-loss means, the validation ``report`` (of
    :func:`~remul_ff.training.evaluate.evaluate`), ``(alpha, beta)``, and ``(epoch time, wall time)`` in s."""
    row = {
        "epoch": epoch,
        **train_means,
        "val_loss": val_loss,
        "val_energy_mae_meV": report["energy_mae_meV"],
        "val_forces_mae_meV_A": report["forces_mae_meV_A"],
        "val_equi_forces_rel": report.get("equi_forces_rel", float("nan")),
        "val_shen_percent": report.get("shen_task_percent", float("nan")),
        "alpha": weights[0],
        "beta": weights[1],
        "lr": lr,
        "epoch_time_s": times[0],
        "wall_time_s": times[1],
        "structures_per_s": structures_per_s,
    }
    if "direct_forces_mae_meV_A" in report:
        row["val_direct_forces_mae_meV_A"] = report["direct_forces_mae_meV_A"]
        row["val_equi_direct_forces_rel"] = report.get("equi_direct_forces_rel", float("nan"))
    return row


class TrainingLog:
    """``log.csv`` of a run folder, with ``columns`` in that order; rows go to TensorBoard too when asked.

    Args:
        folder: The run folder.
        columns: The log's columns (:data:`LOG_COLUMNS`, plus :data:`DIRECT_FORCES_LOG_COLUMNS` for
            a model with a direct-force head).
        tensorboard: Mirror each row to ``folder/tensorboard`` (when the tensorboard package is installed).
    """

    def __init__(self, folder: Path, columns: list[str], tensorboard: bool = False) -> None:
        self.path, self.columns = folder / "log.csv", columns
        self.tensorboard = tensorboard
        self.writer = None  # made at the first row: the tensorboard package is optional and slow to import

    def start(self) -> None:
        """A new log with the header alone (atomically)."""
        with atomic_path(self.path) as tmp:
            tmp.write_text(",".join(self.columns) + "\n")

    def append(self, row: dict[str, float]) -> None:
        """Write one epoch's row (and mirror it)."""
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, self.columns).writerow(row)
        if self.tensorboard:
            self._mirror(row)

    def truncate(self, last_epoch: int) -> None:
        """Drop rows after ``last_epoch`` (a run killed between its log row and its checkpoint)."""
        rows = list(csv.DictReader(open(self.path))) if self.path.exists() else []
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, self.columns)
                writer.writeheader()
                writer.writerows(r for r in rows if int(r["epoch"]) <= last_epoch)

    def _mirror(self, row: dict[str, float]) -> None:
        if self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # not installed: the log.csv row is all there is
                self.tensorboard = False
                return
            self.writer = SummaryWriter(str(self.path.parent / "tensorboard"))
        for key, value in row.items():
            if key != "epoch":
                self.writer.add_scalar(key, value, int(row["epoch"]))
        self.writer.flush()
