"""The training loop. It knows the data contract, the losses and :func:`predict`, not the model's insides.

Outputs in ``config.output_dir`` (written by the main process only):

* ``config.yaml``: the resolved config of the run;
* ``splits.json``: the frame indices of each split;
* ``log.csv``: one row per epoch (losses, validation errors, equivariance, alpha, beta, lr, time);
* ``checkpoint.pt``: everything needed for ``--resume`` (written atomically every epoch);
* ``model.pt``: the best model by validation loss (EMA weights), the file the calculator loads.

Data parallelism (torchrun / SLURM, see :mod:`remul_ff.training.distributed`): ``batch_size`` is the
*global* batch. Every rank draws the same shuffle and the same rigid motions for the whole global
batch and works on its slice; losses are divided by the global counts, so the averaged gradient,
the GradNorm weights and every update equal those of one process with the whole batch.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from remul_ff.config import Config, LossConfig
from remul_ff.data.batch import AtomicBatch, Structure, device_batch
from remul_ff.errors import CheckpointError, ConfigError
from remul_ff.models import build_model, load_model, predict
from remul_ff.models.common import ACCELERATOR_ALL_PAIRS_MAX_ATOMS, with_fixed_pairs
from remul_ff.models.transformer import has_direct_forces, with_direct_forces
from remul_ff.training import distributed
from remul_ff.training.checkpoint import CHECKPOINT_KIND, FORMAT_VERSION, load_file, model_payload, save_file
from remul_ff.training.data import prepare_data
from remul_ff.training.evaluate import evaluate
from remul_ff.training.gradnorm import GradNorm
from remul_ff.training.guard import DivergenceGuard
from remul_ff.training.log import DIRECT_FORCES_LOG_COLUMNS, LOG_COLUMNS, TrainingLog
from remul_ff.training.losses import random_rigid_motion, remul_losses, rotate_batch, task_loss
from remul_ff.training.run_folder import RUN_FILES, check_output_dir  # noqa: F401 (RUN_FILES re-exported)
from remul_ff.utils.devices import resolve_device
from remul_ff.utils.io import atomic_path, remove_stale_temporaries
from remul_ff.utils.progress import progress_bar

logger = logging.getLogger(__name__)

POSTFIX_EVERY = 10  # training steps between updates of the progress bar's loss


@contextlib.contextmanager
def keeping_thread_count() -> Iterator[None]:
    """Restore torch's CPU thread count after the body: ``train.num_threads`` fixes a training
    budget's threads, and what runs after the training (MD, timings) keeps the caller's."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass
class LocalBatch:
    """This rank's molecules of a global batch, on the device.

    Attributes:
        batch: The molecules (the first one with weight 0 on a rank that got none).
        rows: Their rows in per-molecule draws made for the global batch.
        weight: 1, or 0 for the stand-in molecule.
        n_global: Molecules in the global batch.
        n_force_components: Force components in the global batch.
        equi: This rank's molecules whose moved copy enters ``L_equi``, when that is not all of
            them (``loss.equi_fraction`` below 1): the first ones of ``batch``.
        equi_counts: Molecules and force components of the global batch's share in ``L_equi``.
    """

    batch: AtomicBatch
    rows: slice
    weight: float
    n_global: int
    n_force_components: float
    equi: AtomicBatch | None = None
    equi_counts: tuple[float, float] | None = None


@dataclass
class EpochStats:
    """Training-loss sums of one epoch (summed over ranks before logging).

    The sums stay on the losses' device (float64) and are read once per epoch: a ``float()`` per
    step would wait for the GPU at every step.
    """

    sums: torch.Tensor | None = None
    steps: int = 0

    def add(self, loss: torch.Tensor, task: torch.Tensor, equi: torch.Tensor) -> None:
        values = torch.stack([loss, task, equi]).double()
        self.sums = values if self.sums is None else self.sums + values
        self.steps += 1

    def means(self, ctx: distributed.DistributedContext) -> dict[str, float]:
        totals = ctx.all_reduce(torch.zeros(3, dtype=torch.float64) if self.sums is None else self.sums.cpu())
        n = max(self.steps, 1)
        return {"train_loss": float(totals[0]) / n, "train_task": float(totals[1]) / n, "train_equi": float(totals[2]) / n}


def _shapes(state: dict) -> dict:
    return {k: tuple(v.shape) if torch.is_tensor(v) else None for k, v in state.items()}


class Trainer:
    """REMUL training of any energy-only model built by :func:`remul_ff.models.build_model`."""

    def __init__(self, config: Config, progress: bool = True) -> None:
        self.config = config
        self.out = Path(config.output_dir)
        self.device = resolve_device(config.train.device)
        self.dtype = getattr(torch, config.train.dtype)
        self.ctx = distributed.DistributedContext()
        self.progress = progress
        self.epoch_end_hooks: list[Callable[[int], None]] = []

    def run(self, resume: bool = False, overwrite: bool = False, extend_budget: bool = True) -> dict[str, float]:
        """Train (or continue training) and return the last log row.

        Args:
            resume: Continue the run in ``output_dir`` from its ``checkpoint.pt``.
            overwrite: Replace a run already in ``output_dir`` (without it, that is an error).
            extend_budget: When resuming a run that stopped on ``train.max_minutes``, grant it
                another ``max_minutes`` (``False``: it stays finished, as ``compare`` needs).
        """
        self.setup(resume, overwrite, extend_budget)
        if self.ctx.is_main:
            logger.info(
                f"training on {self.ctx.world_size} process(es), {self.device}: global batch {self.config.train.batch_size} "
                f"({self.config.train.batch_size // self.ctx.world_size} per process)"
            )
        try:
            row = self._loop()
            self._barrier()
        finally:
            # Drop DDP's reducer now: it holds the process group, and a group that outlives
            # destroy_process_group() aborts the interpreter at exit ("terminate called ...").
            self.forward_model = self.training_model
        return row

    def setup(self, resume: bool = False, overwrite: bool = False, extend_budget: bool = True) -> None:
        """Everything :meth:`run` does before the first epoch: output folder, data, model, optimiser,
        and the checkpoint when resuming (arguments as for :meth:`run`)."""
        self.extend_budget = extend_budget
        self.ctx, self.device = distributed.initialise(self.device)
        self.progress = self.progress and self.ctx.is_main
        if self.config.train.batch_size % self.ctx.world_size:
            raise ConfigError(
                f"train.batch_size ({self.config.train.batch_size}) is the global batch and must be divisible by the "
                f"{self.ctx.world_size} processes."
            )
        # the outermost folder this run creates (output_dir/runs/... may create several)
        created = next((p for p in [*reversed(self.out.absolute().parents), self.out.absolute()] if not p.exists()), None)
        if self.ctx.is_main:
            check_output_dir(self.config, resume, overwrite)
            self.out.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.out)  # left by a run killed mid-write
        try:
            self.data = self._prepare_data()
            self._build()
            self._resume() if resume else self._start_fresh()
            self.good_state = copy.deepcopy(self._training_state())  # a first epoch that diverges returns here
        except Exception:
            if created and self.ctx.is_main:  # a run that failed before training leaves no folder behind
                shutil.rmtree(created, ignore_errors=True)
            raise

    def _prepare_data(self):
        if self.ctx.is_main:
            data = prepare_data(self.config.data, self.out / "splits.json", self.progress)
        self._barrier()
        return data if self.ctx.is_main else prepare_data(self.config.data, self.out / "splits.json", False)

    def _barrier(self) -> None:
        if self.ctx.enabled:
            torch.distributed.barrier()

    def _build(self) -> None:
        cfg, data = self.config, self.data
        self.epoch, self.best, self.bad_epochs, self.wall = 0, math.inf, 0, 0.0
        self.budget_extension_s = 0.0  # wall time granted before the budget by resuming budget-stopped runs
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)
        torch.manual_seed(cfg.train.seed)
        self.model = build_model(cfg.model_kind, cfg.model_hyperparameters, data.elements, data.e0s, data.force_rms, data.energy_shift).to(
            self.device, self.dtype
        )
        if cfg.train.init_from:
            self._start_from(cfg.train.init_from)
        self.fixed_pairs = self.device.type != "cpu" and max(len(s) for s in data.train) <= ACCELERATOR_ALL_PAIRS_MAX_ATOMS
        # On an accelerator small molecules train over every same-molecule pair (a view sharing the
        # parameters): the same energies as pairs within r_max, whose distance filter is a host sync.
        self.training_model = with_fixed_pairs(self.model, ACCELERATOR_ALL_PAIRS_MAX_ATOMS) if self.fixed_pairs else self.model
        # A direct-force head trains beside the energy: the same call returns both.
        direct = has_direct_forces(self.model)
        self.forward_model = with_direct_forces(self.training_model) if direct else self.training_model
        columns = LOG_COLUMNS + (DIRECT_FORCES_LOG_COLUMNS if direct else [])
        self.log = TrainingLog(self.out, columns, cfg.train.tensorboard)
        if self.ctx.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # Double backward (force training) leaves some gradients with transposed strides; DDP
            # copies them into its buckets correctly and only warns about speed.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            self.forward_model = DistributedDataParallel(self.forward_model, device_ids=ids)
        self.ema = copy.deepcopy(self.model).requires_grad_(False) if cfg.train.ema_decay > 0 else self.model
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        self.scheduler = self._make_scheduler()
        use_gradnorm = cfg.loss.mode == "remul" and cfg.loss.weighting == "gradnorm"
        self.gradnorm = (
            GradNorm(cfg.loss.alpha, cfg.loss.beta, cfg.loss.gradnorm_restoring, cfg.loss.gradnorm_lr, self.device)
            if use_gradnorm
            else None
        )
        self.shuffle = torch.Generator().manual_seed(cfg.train.seed)
        self.guard = DivergenceGuard(cfg.train.spike_factor, max_rollbacks=cfg.train.max_rollbacks, lr_factor=cfg.train.rollback_lr_factor)
        self.good_state: dict | None = None  # the last good epoch's training state (set by setup), for a rollback
        self.stage = 1  # 2 once loss.stage_two_fraction of the run is left

    def _start_from(self, path: str) -> None:
        """Copy the weights of the model file ``path`` (``train.init_from``) into the new model."""
        start = load_model(path, self.device, self.dtype)
        same = type(start) is type(self.model) and start.elements.symbols() == self.model.elements.symbols()
        if not same or _shapes(start.state_dict()) != _shapes(self.model.state_dict()):
            raise ConfigError(
                f"train.init_from {path} is a {type(start).__name__} for {', '.join(start.elements.symbols())}, which does not "
                f"match this config's {self.config.model_kind} for {', '.join(self.model.elements.symbols())}; "
                "use the same model section and data elements, or drop init_from."
            )
        self.model.load_state_dict(start.state_dict())

    def _make_scheduler(self):
        train = self.config.train
        if train.scheduler == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, factor=0.5, patience=max(train.patience // 4, 1))
        if train.scheduler == "constant":
            return torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._cosine_factor)

    def _cosine_factor(self, epoch: int) -> float:
        """Cosine decay over the run's progress (:meth:`run_progress`)."""
        train = self.config.train
        return train.min_lr_ratio + (1 - train.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * self.run_progress(epoch)))

    def run_progress(self, epoch: int) -> float:
        """The run's progress in [0, 1]: epochs done or time budget used, whichever is further.

        Following the time budget as well makes runs with equal budgets comparable: each mode
        anneals fully, however many epochs it manages.
        """
        progress = epoch / max(self.config.train.epochs, 1)
        if math.isfinite(self.budget_s):
            progress = max(progress, self.wall / self.budget_s)
        return min(progress, 1.0)

    @property
    def loss_config(self) -> LossConfig:
        """The loss section with the current stage's energy and force weights."""
        loss = self.config.loss
        if self.stage == 1:
            return loss
        return dataclasses.replace(loss, energy_weight=loss.stage_two_energy_weight, forces_weight=loss.stage_two_forces_weight)

    def _maybe_enter_stage_two(self) -> None:
        """Switch to the stage-two weights when their share of the run is what is left."""
        fraction = self.config.loss.stage_two_fraction
        if self.stage == 2 or fraction <= 0 or self.run_progress(self.epoch) < 1 - fraction:
            return
        self.stage, self.best, self.bad_epochs = 2, math.inf, 0  # validation losses of the two stages differ in scale
        self.guard.history = []  # and so do training losses
        self._say(
            f"epoch {self.epoch}: stage two, energy weight {self.loss_config.energy_weight:g}, "
            f"forces weight {self.loss_config.forces_weight:g}; the best model is chosen among its epochs"
        )

    def _start_fresh(self) -> None:
        if not self.ctx.is_main:
            return
        self._write_config()
        self.log.start()

    # -- the loop -----------------------------------------------------------------------------

    def _loop(self) -> dict[str, float]:
        train_cfg, row = self.config.train, {}
        if self.epoch and self._should_stop():  # resumed a run that had already finished
            return row
        while self.epoch < train_cfg.epochs:
            self.epoch += 1
            start = time.perf_counter()
            stats = self._train_epoch()
            train_time = time.perf_counter() - start
            row = self._validate_and_log(stats, train_time)
            self._guard_against_divergence(row["train_loss"])
            self._maybe_enter_stage_two()
            self._save_checkpoint()
            for hook in self.epoch_end_hooks:
                hook(self.epoch)
            if self._should_stop():
                break
        return row

    @property
    def budget_s(self) -> float:
        """Wall-time budget in seconds: ``train.max_minutes``, moved on by each budget-extending resume."""
        minutes = self.config.train.max_minutes
        return self.budget_extension_s + 60 * minutes if minutes else math.inf

    def _guard_against_divergence(self, train_loss: float) -> None:
        """Roll back to the last good epoch with a smaller learning rate if this epoch's loss spiked."""
        if not self.guard.is_spike(train_loss):
            self.good_state = copy.deepcopy(self._training_state())
            return
        median = self.guard.running_median()
        self.guard.rollbacks += 1
        self._load_training_state(copy.deepcopy(self.good_state))
        self._scale_lr(self.guard.lr_factor)
        self.good_state = copy.deepcopy(self._training_state())  # a second spike returns here, step cut again
        self._say(
            f"epoch {self.epoch}: training loss {train_loss:.3g} spiked above {self.guard.factor:g}x its running "
            f"median {median:.3g}; rolled back to the last good epoch with the learning rate scaled by "
            f"{self.guard.lr_factor:g} (rollback {self.guard.rollbacks}/{self.guard.max_rollbacks})"
        )

    def _scale_lr(self, scale: float) -> None:
        """Scale the learning rate the restored state had (and its schedule's peak) by ``scale``."""
        for group in self.optimizer.param_groups:
            group["lr"] *= scale
        if hasattr(self.scheduler, "base_lrs"):  # LambdaLR; ReduceLROnPlateau works from the groups' lr
            self.scheduler.base_lrs = [lr * scale for lr in self.scheduler.base_lrs]

    def _should_stop(self) -> bool:
        train = self.config.train
        if self.guard.exhausted:
            self._say(
                f"stopping: the training loss diverged {self.guard.rollbacks} time(s) although the learning rate was "
                f"cut at each; model.pt keeps the best model so far; train again with a lower train.lr."
            )
            return True
        if self.bad_epochs >= train.patience:
            self._say(f"early stopping: no validation improvement for {train.patience} epochs")
            return True
        if self.wall >= self.budget_s:
            self._say(f"stopping: the time budget of {self.budget_s / 60:g} minutes is used up")
            return True
        return False

    def _say(self, message: str) -> None:
        if self.ctx.is_main:
            logger.info(message)

    def _global_batches(self) -> list[list[Structure]]:
        order = torch.randperm(len(self.data.train), generator=self.shuffle).tolist()
        size = self.config.train.batch_size
        return [[self.data.train[i] for i in order[s : s + size]] for s in range(0, len(order), size)]

    def _train_epoch(self) -> EpochStats:
        stats = EpochStats()
        self.model.train()
        batches = self._global_batches()
        bar = progress_bar(batches, desc=f"epoch {self.epoch}/{self.config.train.epochs}", disable=not self.progress, leave=False)
        for structures in bar:
            loss, task, equi = self.step(structures)
            stats.add(loss, task, equi)
            if self.progress and bar.n % POSTFIX_EVERY == 0:  # float() waits for the device: not every step
                bar.set_postfix(loss=f"{float(loss):.4g}", refresh=False)  # a redraw per step would flood log files
        return stats

    def step(self, structures: list[Structure]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimisation step on the global batch ``structures``: ``(loss, L_task, L_equi)``, detached."""
        return self._step_on(self._local_batch(structures))

    def _step_on(self, local: LocalBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The device's part of a step: with fixed pairs on an accelerator it reads nothing back."""
        loss, task, equi = self._loss(local)
        self.optimizer.zero_grad(set_to_none=True)
        # DDP averages gradients over ranks; the losses are already global sums, so undo the mean.
        (loss * self.ctx.world_size).backward()
        if self.config.train.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.clip_grad_norm)
        self.optimizer.step()
        self._update_ema()
        return loss.detach(), task.detach(), equi.detach()

    def _local_batch(self, structures: list[Structure]) -> LocalBatch:
        """This rank's share of the global batch, on the device, with what the step needs to know about it.

        A last global batch smaller than the number of ranks leaves some ranks without molecules;
        they run the first molecule with weight 0, because DDP needs every rank to join the
        gradient all-reduce. The result stays that of one process (no padding bias).
        """
        rows = slice(self.ctx.rank, None, self.ctx.world_size)
        mine, rows, weight = (structures[rows], rows, 1.0) if structures[rows] else (structures[:1], slice(0, 1), 0.0)
        batch = device_batch(mine, self.device, self.dtype, every_pair=self.fixed_pairs)
        local = LocalBatch(batch, rows, weight, len(structures), 3.0 * sum(len(s) for s in structures))
        fraction = self.config.loss.equi_fraction
        if self.config.loss.mode == "remul" and fraction < 1:
            # The global batch's first k molecules (at least one per rank that has molecules).
            k = min(len(structures), max(math.ceil(fraction * len(structures)), self.ctx.world_size))
            local_k = max(len(range(self.ctx.rank, k, self.ctx.world_size)), 1)
            local.equi = device_batch(mine[:local_k], self.device, self.dtype, every_pair=self.fixed_pairs)
            local.equi_counts = (float(k), 3.0 * sum(len(s) for s in structures[:k]))
        return local

    def _loss(self, local: LocalBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(total, L_task, L_equi)`` of this rank's share, each divided by the global counts."""
        loss_cfg = self.loss_config
        batch, rows, weight = local.batch, local.rows, local.weight
        counts = (float(local.n_global), local.n_force_components)
        if loss_cfg.mode != "none":  # one draw for the whole global batch, identical on every rank
            rotations, translations = random_rigid_motion(local.n_global, self.dtype, self.device)
        if loss_cfg.mode == "augment":
            batch = rotate_batch(batch, rotations[rows], translations[rows])
        if loss_cfg.mode != "remul":
            task = weight * task_loss(predict(self.forward_model, batch, training=True), batch).total(loss_cfg, *counts)
            return task, task, torch.zeros_like(task)
        task_terms, equi_terms = remul_losses(self.forward_model, batch, rotations[rows], translations[rows], loss_cfg.target, local.equi)
        task, equi = weight * task_terms.total(loss_cfg, *counts), weight * equi_terms.total(loss_cfg, *(local.equi_counts or counts))
        if self.gradnorm is not None:
            self.gradnorm.update([task, equi], self.model.shared_layer(), self.ctx.all_reduce)
            return self.gradnorm.weighted(task, equi), task, equi
        alpha, beta = self.weights()
        return alpha * task + beta * equi, task, equi

    def step_loss(self, structures: list[Structure]) -> torch.Tensor:
        """The loss of a training step on ``structures``, with its graph, without taking the step (for measurements)."""
        return self._loss(self._local_batch(structures))[0]

    def weights(self) -> tuple[float, float]:
        """Current ``(alpha, beta)``."""
        if self.gradnorm is not None:
            return self.gradnorm.alpha, self.gradnorm.beta
        return self.config.loss.alpha, self.config.loss.beta

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is self.model:
            return
        decay = self.config.train.ema_decay
        # One fused call for all parameters: a per-parameter loop costs a kernel launch each on a GPU.
        torch._foreach_lerp_(list(self.ema.parameters()), list(self.model.parameters()), 1.0 - decay)

    # -- validation, logging, checkpoints ----------------------------------------------------

    def _validate_and_log(self, stats: EpochStats, train_time: float) -> dict[str, float]:
        loss_cfg, train_cfg = self.loss_config, self.config.train
        start = time.perf_counter()
        report = evaluate(
            self.ema,
            self.data.valid,
            self.data.e0s,
            train_cfg.eval_rotations,
            2 * train_cfg.batch_size,
            self.device,
            self.dtype,
            loss_cfg.energy_weight,
            loss_cfg.forces_weight,
            seed=train_cfg.seed + self.epoch,
            shard=(self.ctx.rank, self.ctx.world_size),
        )
        val_loss = float(
            loss_cfg.energy_weight * (report["energy_per_atom_rmse_meV"] / 1e3) ** 2
            + loss_cfg.forces_weight * (report["forces_rmse_meV_A"] / 1e3) ** 2
        )
        epoch_time = train_time + time.perf_counter() - start
        # Rank 0's clock decides time-based schedules and stopping, so every rank agrees.
        self.wall = float(self._broadcast(torch.tensor(self.wall + epoch_time, dtype=torch.float64)))
        self._step_scheduler(val_loss)
        self._keep_if_best(val_loss)
        row = self._log_row(stats, report, val_loss, train_time, epoch_time)
        if self.ctx.is_main:
            self.log.append(row)
        return row

    def _keep_if_best(self, val_loss: float) -> None:
        """Write the EMA model to ``model.pt`` when its validation loss is the best so far."""
        if not val_loss < self.best:  # a NaN loss is never the best
            self.bad_epochs += 1
            return
        self.best, self.bad_epochs = val_loss, 0
        if self.ctx.is_main:
            payload = model_payload(
                self.ema, self.config.model_kind, self.data.elements, self.data.e0s, self.config.to_dict(), self.data.domain
            )
            save_file({**payload, "epoch": self.epoch}, self.out / "model.pt")

    def _broadcast(self, value: torch.Tensor) -> torch.Tensor:
        if self.ctx.enabled:
            torch.distributed.broadcast(value, src=0)
        return value

    def _step_scheduler(self, val_loss: float) -> None:
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(val_loss)
        else:
            self.scheduler.step()

    def _log_row(self, stats: EpochStats, report: dict, val_loss: float, train_time: float, epoch_time: float) -> dict[str, float]:
        alpha, beta = self.weights()
        row = {
            "epoch": self.epoch,
            **stats.means(self.ctx),
            "val_loss": val_loss,
            "val_energy_mae_meV": report["energy_mae_meV"],
            "val_forces_mae_meV_A": report["forces_mae_meV_A"],
            "val_equi_forces_rel": report.get("equi_forces_rel", float("nan")),
            "val_shen_percent": report.get("shen_task_percent", float("nan")),
            "alpha": alpha,
            "beta": beta,
            "lr": self.optimizer.param_groups[0]["lr"],
            "epoch_time_s": epoch_time,
            "wall_time_s": self.wall,
            "structures_per_s": len(self.data.train) / train_time,
        }
        if "direct_forces_mae_meV_A" in report:
            row["val_direct_forces_mae_meV_A"] = report["direct_forces_mae_meV_A"]
            row["val_equi_direct_forces_rel"] = report.get("equi_direct_forces_rel", float("nan"))
        if self.progress:
            logger.info(
                f"epoch {self.epoch}: val E MAE {row['val_energy_mae_meV']:.2f} meV, F MAE {row['val_forces_mae_meV_A']:.1f} meV/Å, "
                f"equi F rel {row['val_equi_forces_rel']:.3g}, alpha {alpha:.3f}, beta {beta:.3f}, {epoch_time:.1f} s"
            )
        return row

    def _save_checkpoint(self) -> None:
        if not self.ctx.is_main or (self.epoch % self.config.train.checkpoint_every and self.epoch < self.config.train.epochs):
            return
        save_file(self._checkpoint(), self.out / "checkpoint.pt")

    def _checkpoint(self) -> dict:
        """Everything ``--resume`` needs: the training state plus progress, random state and the data's facts."""
        return {
            "kind": CHECKPOINT_KIND,
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "wall": self.wall,
            "budget_extension_s": self.budget_extension_s,
            **self._training_state(),
            "guard": self.guard.state_dict(),
            "stage": self.stage,
            "rng_torch": torch.get_rng_state(),
            "rng_shuffle": self.shuffle.get_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "e0s": self.data.e0s,
            "elements": self.data.elements,
        }

    def _training_state(self) -> dict:
        """What a rollback restores: weights, EMA, optimiser, schedule and GradNorm's weights (live references)."""
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "gradnorm": None if self.gradnorm is None else self.gradnorm.state_dict(),
        }

    def _load_training_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.gradnorm is not None and state["gradnorm"] is not None:
            self.gradnorm.load_state_dict(state["gradnorm"])

    def _resume(self) -> None:
        path = self.out / "checkpoint.pt"
        if not path.exists():
            raise CheckpointError(f"cannot resume: {path} does not exist; start the run without --resume.")
        state = load_file(path, CHECKPOINT_KIND)
        self._load_training_state(state)
        if "guard" in state:  # checkpoints written before the guard start it afresh
            self.guard.load_state_dict(state["guard"])
        self.stage = state.get("stage", 1)
        torch.set_rng_state(state["rng_torch"])
        self.shuffle.set_state(state["rng_shuffle"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.epoch, self.best, self.bad_epochs, self.wall = state["epoch"], state["best"], state["bad_epochs"], state["wall"]
        self.budget_extension_s = state.get("budget_extension_s", 0.0)
        if self.wall >= self.budget_s and self.extend_budget:
            # The run stopped on its time budget; resuming it means "train longer": a new budget.
            self.budget_extension_s = self.wall
            self._say(f"the run had used its time budget; continuing for another {self.config.train.max_minutes:g} minutes")
        self._barrier()  # every rank has read the checkpoint before rank 0 rewrites the log
        if self.ctx.is_main:
            self.log.truncate(self.epoch)
            self._write_config()  # records a changed budget, epochs or device (RESUME_CHANGEABLE_KEYS)
        self._say(f"resumed from {path} at epoch {self.epoch}")

    def _write_config(self) -> None:
        with atomic_path(self.out / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(self.config.to_dict(), sort_keys=False))
