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

import copy
import dataclasses
import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from remul_ff.config import Config, LossConfig
from remul_ff.data.batch import Structure
from remul_ff.errors import CheckpointError
from remul_ff.models import build_model, load_model
from remul_ff.models.common import ACCELERATOR_ALL_PAIRS_MAX_ATOMS
from remul_ff.models.transformer import has_direct_forces
from remul_ff.training import distributed
from remul_ff.training.checkpoint import (
    CHECKPOINT_KIND,
    copy_weights,
    load_file,
    model_payload,
    restore_progress,
    save_file,
    trainer_checkpoint,
    training_state,
)
from remul_ff.training.data import PreparedData, prepare_data
from remul_ff.training.evaluate import evaluate, validation_loss
from remul_ff.training.gradnorm import GradNorm
from remul_ff.training.guard import DivergenceGuard, roll_back_on_spike, stop_reason
from remul_ff.training.log import DIRECT_FORCES_LOG_COLUMNS, LOG_COLUMNS, TrainingLog, epoch_row
from remul_ff.training.run_folder import RUN_FILES, check_output_dir  # noqa: F401 (RUN_FILES re-exported)
from remul_ff.training.schedule import make_scheduler, step_scheduler
from remul_ff.training.step import EpochStats, LocalBatch, batch_losses, local_batch, trainable_parameters, training_views
from remul_ff.utils.devices import resolve_device
from remul_ff.utils.io import atomic_path, remove_stale_temporaries
from remul_ff.utils.progress import progress_bar

logger = logging.getLogger(__name__)

POSTFIX_EVERY = 10  # training steps between updates of the progress bar's loss


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
        # What setup() makes, listed here so that this is every attribute a Trainer has:
        self.data: PreparedData | None = None
        self.model = self.ema = self.training_model = self.forward_model = None  # nn.Modules
        self.optimizer = self.scheduler = self.gradnorm = self.guard = self.log = self.shuffle = self.good_state = None
        self.epoch, self.best, self.bad_epochs, self.wall, self.stage = 0, math.inf, 0, 0.0, 1
        self.budget_extension_s, self.fixed_pairs, self.extend_budget = 0.0, False, True

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
            self.ctx.barrier()
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
        distributed.check_global_batch(self.config.train.batch_size, self.ctx)
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
            self.good_state = copy.deepcopy(training_state(self))  # a first epoch that diverges returns here
        except Exception:
            if created and self.ctx.is_main:  # a run that failed before training leaves no folder behind
                shutil.rmtree(created, ignore_errors=True)
            raise

    def _prepare_data(self):
        if self.ctx.is_main:
            data = prepare_data(self.config.data, self.out / "splits.json", self.progress)
        self.ctx.barrier()
        return data if self.ctx.is_main else prepare_data(self.config.data, self.out / "splits.json", False)

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
            start, new_head = load_model(cfg.train.init_from, self.device, self.dtype), cfg.train.trainable == "direct_forces_head"
            copy_weights(start, self.model, cfg.train.init_from, cfg.model_kind, new_head, cfg.train.init_energy_reference == "data")
        self.fixed_pairs = self.device.type != "cpu" and max(len(s) for s in data.train) <= ACCELERATOR_ALL_PAIRS_MAX_ATOMS
        self.training_model, self.forward_model = training_views(self.model, self.fixed_pairs, self.ctx, self.device)
        columns = LOG_COLUMNS + (DIRECT_FORCES_LOG_COLUMNS if has_direct_forces(self.model) else [])
        self.log = TrainingLog(self.out, columns, cfg.train.tensorboard)
        self._build_optimisation()

    def _build_optimisation(self) -> None:
        cfg = self.config
        self.ema = copy.deepcopy(self.model).requires_grad_(False) if cfg.train.ema_decay > 0 else self.model
        parameters = trainable_parameters(self.model, cfg.train.trainable)
        self.optimizer = torch.optim.AdamW(parameters, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, cfg.train, self.run_progress)
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
        """The loss section with the current stage's energy and force weights (0 while only the direct head
        trains: the frozen energy's terms could change nothing and would cost a double backward)."""
        loss = self.config.loss
        if self.config.train.trainable == "direct_forces_head":
            return dataclasses.replace(loss, energy_weight=0.0, forces_weight=0.0)
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
        message = roll_back_on_spike(self, train_loss)
        if message:
            self._say(f"epoch {self.epoch}: {message}")

    def _should_stop(self) -> bool:
        reason = stop_reason(self.guard, self.bad_epochs, self.config.train.patience, self.wall, self.budget_s)
        if reason:
            self._say(reason)
        return reason is not None

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
        return local_batch(structures, self.ctx, self.device, self.dtype, self.fixed_pairs, self.config.loss)

    def _loss(self, local: LocalBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(total, L_task, L_equi)`` of this rank's share, each divided by the global counts."""
        task, equi = batch_losses(self.forward_model, local, self.loss_config, self.dtype, self.device)
        if self.loss_config.mode != "remul":  # augmentation or no symmetry: the task loss alone
            return task, task, equi
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
        val_loss = validation_loss(report, loss_cfg)
        epoch_time = train_time + time.perf_counter() - start
        # Rank 0's clock decides time-based schedules and stopping, so every rank agrees.
        self.wall = float(self._broadcast(torch.tensor(self.wall + epoch_time, dtype=torch.float64)))
        step_scheduler(self.scheduler, val_loss)
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

    def _log_row(self, stats: EpochStats, report: dict, val_loss: float, train_time: float, epoch_time: float) -> dict[str, float]:
        alpha, beta = self.weights()
        lr, speed = self.optimizer.param_groups[0]["lr"], len(self.data.train) / train_time
        row = epoch_row(self.epoch, stats.means(self.ctx), report, val_loss, (alpha, beta), lr, (epoch_time, self.wall), speed)
        if self.progress:
            logger.info(
                f"epoch {self.epoch}: val E MAE {row['val_energy_mae_meV']:.2f} meV, F MAE {row['val_forces_mae_meV_A']:.1f} meV/Å, "
                f"equi F rel {row['val_equi_forces_rel']:.3g}, alpha {alpha:.3f}, beta {beta:.3f}, {epoch_time:.1f} s"
            )
        return row

    def _save_checkpoint(self) -> None:
        if not self.ctx.is_main or (self.epoch % self.config.train.checkpoint_every and self.epoch < self.config.train.epochs):
            return
        save_file(trainer_checkpoint(self), self.out / "checkpoint.pt")

    def _resume(self) -> None:
        path = self.out / "checkpoint.pt"
        if not path.exists():
            raise CheckpointError(f"cannot resume: {path} does not exist; start the run without --resume.")
        restore_progress(self, load_file(path, CHECKPOINT_KIND))
        if self.wall >= self.budget_s and self.extend_budget:
            # The run stopped on its time budget; resuming it means "train longer": a new budget.
            self.budget_extension_s = self.wall
            self._say(f"the run had used its time budget; continuing for another {self.config.train.max_minutes:g} minutes")
        self.ctx.barrier()  # every rank has read the checkpoint before rank 0 rewrites the log
        if self.ctx.is_main:
            self.log.truncate(self.epoch)
            self._write_config()  # records a changed budget, epochs or device (RESUME_CHANGEABLE_KEYS)
        self._say(f"resumed from {path} at epoch {self.epoch}")

    def _write_config(self) -> None:
        with atomic_path(self.out / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(self.config.to_dict(), sort_keys=False))
