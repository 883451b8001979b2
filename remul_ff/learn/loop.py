"""``remul-ff learn``: active learning from a few labelled frames to a potential that survives its MD.

Each round: train a committee (the first round from random weights, later ones fine-tuned from the
last round's models) → batched MD at the spec's temperatures with the first model (more chunks while
it sees no collapse, up to the stop rule's replica-ps) → select frames (the stretch before each
collapse, then frames the committee disagrees on, without near-duplicates) → label them → add them to
the data → next round. The loop ends when the stop rule holds (no collapse in ``stop.replica_ps`` at
every temperature and no committee deviation above ``stop.max_deviation``) or a budget is spent.

Every stage's result goes to ``OUTPUT_DIR/state.json`` (atomically) before the next starts; training
resumes from its checkpoint, MD from its restart file and labelling from its cache, so a run killed at
any point continues where it was with ``remul-ff learn spec.yaml`` again. ``report.json`` and
``report.png`` say, per round, the labels, collapses per temperature with their exact interval, the
test accuracy and the CPU time of labelling, training and MD.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import ase.io
import numpy as np
import torch

from remul_ff.config import Config, load_config, parse_section
from remul_ff.data.batch import collate
from remul_ff.data.generate import write_extxyz
from remul_ff.data.labelling import PySCFSettings, label_frames, make_labeller
from remul_ff.data.readers import read_structures
from remul_ff.errors import DataError
from remul_ff.learn import report
from remul_ff.learn.select import Candidate, choose, collapse_windows, replica_frames
from remul_ff.learn.spec import LearnSpec
from remul_ff.md.engine import run_md
from remul_ff.md.monitor import Collapse
from remul_ff.md.settings import MDSettings
from remul_ff.models import load_model, predict
from remul_ff.models.committee import frame_deviations
from remul_ff.models.runtime import ready_model
from remul_ff.utils.io import atomic_path

logger = logging.getLogger(__name__)
STAGES = ("train", "md", "select", "label", "done")
MEV = 1000.0


def accuracy_on(model: torch.nn.Module, structures: list) -> dict:
    """Force MAE and RMSE, energy MAE and the mean energy offset (prediction minus label) on ``structures``."""
    from remul_ff.training.evaluate import evaluate

    result = evaluate(model, structures, {}, n_rotations=0)
    row = {k: result[k] for k in ("forces_mae_meV_A", "forces_rmse_meV_A", "energy_mae_meV")}
    row["energy_offset_meV"] = MEV * float(np.mean(predicted_energies(model, structures) - [s.energy for s in structures]))
    return row


def predicted_energies(model: torch.nn.Module, structures, batch_size: int = 64) -> np.ndarray:
    """The model's energies (eV) of ``structures``, on its device and dtype."""
    reference = next(model.parameters())
    out = []
    for start in range(0, len(structures), batch_size):
        batch = collate(structures[start : start + batch_size]).to(reference.device, reference.dtype)
        out.append(predict(model, batch, forces=False).energy.detach().cpu().double().numpy())
    return np.concatenate(out)


class LearnRun:
    """One ``remul-ff learn`` run in ``spec.output_dir``; :meth:`run` starts or continues it."""

    def __init__(self, spec: LearnSpec, progress: bool = True) -> None:
        self.spec, self.progress = spec, progress
        self.out = Path(spec.output_dir)
        self.state_path = self.out / "state.json"
        self.cache = self.out / "labels.jsonl"
        settings = PySCFSettings(**{f.name: getattr(spec.labeller, f.name) for f in dataclasses.fields(PySCFSettings)})
        self.labeller = make_labeller(spec.labeller.kind, settings, spec.labeller.calculator)
        self.initial = read_structures(spec.data)
        self.model_kind = load_config(spec.train_config, list(spec.train.overrides)).model_kind  # read once, checked up front
        self.state = self._load_state()

    @staticmethod
    def report_path(spec: LearnSpec) -> Path:
        """Where the run's ``report.json`` is."""
        return Path(spec.output_dir) / "report.json"

    # -- state -------------------------------------------------------------------------------

    def _load_state(self) -> dict:
        if self.state_path.exists():
            state = json.loads(self.state_path.read_text())
            started_with = parse_section(LearnSpec, state["spec"]).to_dict()  # keys added since take their defaults
            if json.loads(json.dumps(started_with)) != json.loads(json.dumps(self.spec.to_dict())):
                raise DataError(
                    f"{self.out} holds a learn run with another spec; use a new output_dir, or restore the spec it was started with."
                )
            return state
        return {"spec": self.spec.to_dict(), "check": None, "rounds": [], "finished": None}

    def _save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.state_path) as tmp:
            tmp.write_text(json.dumps(self.state, indent=1))
        report.write(self.out, self.state, self.labeller.signature, self.model_kind)

    def _round_dir(self, index: int) -> Path:
        return self.out / f"round_{index:02d}"

    def _cpu(self, entry: dict, what: str, start: float) -> None:
        entry["cpu_s"][what] = entry["cpu_s"].get(what, 0.0) + time.process_time() - start

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> dict:
        """Run rounds until the loop is finished; returns the state (also in ``state.json``)."""
        self._check_labeller()
        if not self.state["rounds"]:
            self._start_round(0, self.initial)
        while self.state["finished"] is None:
            entry = self.state["rounds"][-1]
            stages = {"train": self._train, "md": self._simulate, "select": self._select, "label": self._label, "done": self._next_round}
            stages[entry["stage"]](entry)
        logger.info(f"learn: finished ({self.state['finished']}); report in {self.report_path(self.spec)}")
        return self.state

    def _advance(self, entry: dict, stage: str) -> None:
        entry["stage"] = stage
        self._save()

    def _start_round(self, index: int, structures) -> None:
        folder = self._round_dir(index)
        write_extxyz(structures, folder / "data.xyz")
        self.state["rounds"].append(
            {"round": index, "stage": "train", "n_data": len(structures), "trained": [], "md": {}, "cpu_s": {}, "labels_added": 0}
        )
        self._save()

    # -- check the labeller once -------------------------------------------------------------

    def _check_labeller(self) -> None:
        if self.state["check"] is not None:
            return
        n = min(self.spec.check.frames, len(self.initial))
        if n == 0:
            self.state["check"] = {"frames": 0, "energy_offset_eV": 0.0}
            return self._save()
        start = time.process_time()
        picked = [self.initial[i] for i in np.linspace(0, len(self.initial) - 1, n).round().astype(int)]
        labelled = label_frames([s.to_atoms() for s in picked], self.labeller, self.cache, self.progress, "labeller check")
        errors = np.concatenate([np.abs(a.forces - b.forces).ravel() for a, b in zip(labelled, picked)])
        offsets = np.array([a.energy - b.energy for a, b in zip(labelled, picked)])
        check = {
            "frames": n,
            "force_mae_meV_A": float(MEV * errors.mean()),
            "energy_offset_eV": float(offsets.mean()),
            "energy_spread_meV": float(MEV * (offsets.max() - offsets.min())),
            "cpu_s": time.process_time() - start,
        }
        if check["force_mae_meV_A"] > self.spec.check.max_force_mae_meV_A:
            raise DataError(
                f"the labeller {self.labeller.signature} is {check['force_mae_meV_A']:.1f} meV/Å from the data's own forces on "
                f"{n} frames (check.max_force_mae_meV_A is {self.spec.check.max_force_mae_meV_A:g}): it is not the data's "
                "level of theory; choose the labeller that made the data, or raise the limit if you mean to mix them."
            )
        self.state["check"] = check
        self._save()

    # -- train -------------------------------------------------------------------------------

    def training_config(self, index: int, member: int) -> Config:
        """The config of committee member ``member`` in round ``index``."""
        train = self.spec.train
        previous = self._round_dir(index - 1) / f"model_{member}" / "model.pt"
        overrides = [
            *train.overrides,
            f"output_dir={self._round_dir(index) / f'model_{member}'}",
            f"data.path={self._round_dir(index) / 'data.xyz'}",
            f"data.valid={train.valid}",
            f"train.max_minutes={train.round_minutes if index else train.first_minutes}",
            f"train.seed={self.spec.seed + member}",
        ]
        config = load_config(self.spec.train_config, overrides)
        config.data.train, config.data.test, config.data.max_frames = None, 0.0, None
        config.data.e0s = self.spec.e0s
        config.train.init_from = str(previous) if index else None
        return config

    def _train(self, entry: dict) -> None:
        from remul_ff.training.trainer import Trainer

        for member in range(self.spec.train.committee):
            if member in entry["trained"]:
                continue
            start = time.process_time()
            config = self.training_config(entry["round"], member)
            resume = (Path(config.output_dir) / "checkpoint.pt").exists()
            Trainer(config, progress=self.progress).run(resume=resume, overwrite=not resume, extend_budget=False)
            self._cpu(entry, "training", start)
            entry["trained"].append(member)
            self._save()
        entry["test"] = self._test(entry)
        self._advance(entry, "md")

    def model_path(self, index: int, member: int = 0) -> Path:
        return self._round_dir(index) / f"model_{member}" / "model.pt"

    def _test(self, entry: dict) -> dict | None:
        if not self.spec.test:
            return None
        return accuracy_on(load_model(self.model_path(entry["round"])), read_structures(self.spec.test))

    # -- MD ----------------------------------------------------------------------------------

    def _simulate(self, entry: dict) -> None:
        model = ready_model(self.model_path(entry["round"]), dtype=torch.float32)
        for temperature in self.spec.md.temperatures:
            chunks = entry["md"].setdefault(f"{temperature:g}", [])
            while not self._md_done(chunks):
                start = time.process_time()
                chunks.append(self._md_chunk(model, entry, temperature, len(chunks)))
                self._cpu(entry, "md", start)
                self._save()
        self._advance(entry, "select")

    def _md_done(self, chunks: list[dict]) -> bool:
        collapses = sum(c["collapses"] for c in chunks)
        replica_ps = sum(c["replica_ps"] for c in chunks)
        return collapses > 0 or replica_ps >= self.spec.stop.replica_ps or len(chunks) >= self.spec.md.max_chunks

    def md_dir(self, index: int, temperature: float, chunk: int) -> Path:
        return self._round_dir(index) / f"md_{temperature:g}K_{chunk}"

    def _md_chunk(self, model, entry: dict, temperature: float, chunk: int) -> dict:
        md = self.spec.md
        seed = self.spec.seed * 100_000 + entry["round"] * 1000 + chunk
        settings = MDSettings(
            temperature=temperature,
            timestep_fs=md.timestep_fs,
            total_time_fs=md.time_fs,
            thermostat=md.thermostat,
            seed=seed,
            write_interval=md.write_interval,
            thermo_interval=md.write_interval,
            restart_every=max(md.write_interval, 1000 // md.write_interval * md.write_interval),
        )
        # Starts come from the starting data only: added frames are often stretched a bond's length from
        # its reference (the stretch before a collapse), which the monitor would count at the first step.
        picks = np.random.default_rng(seed).choice(len(self.initial), md.replicas, replace=len(self.initial) < md.replicas)
        out = self.md_dir(entry["round"], temperature, chunk)
        resume = (out / "restart.pt").exists()
        reference = [s.to_atoms() for s in self.initial[:200]]
        starts = [self.initial[i].to_atoms() for i in picks]
        result = run_md(model, starts, settings, out, self.progress, resume, reference, overwrite=not resume)
        collapses = [dataclasses.asdict(c) for c in result.collapses]
        return {"replica_ps": float(sum(result.stability_times_ps())), "collapses": len(collapses), "collapse_list": collapses}

    # -- select ------------------------------------------------------------------------------

    def _select(self, entry: dict) -> None:
        candidates = self._collapse_candidates(entry) + self._deviation_candidates(entry)
        if self._stable(entry):
            self.state["finished"] = "stable"
            return self._advance(entry, "done")
        limit = min(self.spec.select.max_per_round, self.spec.budget.max_labels - self._labels_total())
        reason = self._budget_spent(entry, limit)
        if reason:
            self.state["finished"] = reason
            return self._advance(entry, "done")
        known = [s.to_atoms() for s in read_structures(self._round_dir(entry["round"]) / "data.xyz")]
        chosen = choose(candidates, known, self.spec.select, limit)
        entry["selected"] = {reason: sum(c.reason == reason for c in chosen) for reason in ("collapse", "deviation")}
        with atomic_path(self._round_dir(entry["round"]) / "selected.xyz") as tmp:
            if chosen:
                ase.io.write(tmp, [c.atoms for c in chosen], format="extxyz")
        self._advance(entry, "label")

    def _collapse_candidates(self, entry: dict) -> list[Candidate]:
        md = self.spec.md
        window_steps = round(self.spec.select.window_fs / md.timestep_fs)
        out = []
        for temperature, chunks in entry["md"].items():
            for number, chunk in enumerate(chunks):
                collapses = [Collapse(**c) for c in chunk["collapse_list"]]
                out += collapse_windows(self.md_dir(entry["round"], float(temperature), number), collapses, md.write_interval, window_steps)
        return out

    def _deviation_candidates(self, entry: dict) -> list[Candidate]:
        """Saved frames whose committee force deviation is above ``select.max_deviation``; records the largest."""
        if self.spec.train.committee < 2:
            entry["max_deviation"] = None
            return []
        paths = [self.model_path(entry["round"], m) for m in range(self.spec.train.committee)]
        committee = ready_model(paths, dtype=torch.float32)
        frames = []
        for temperature, chunks in entry["md"].items():
            for number in range(len(chunks)):
                folder = self.md_dir(entry["round"], float(temperature), number)
                frames += [a for r in range(self.spec.md.replicas) for a in replica_frames(folder, r)]
        deviations = frame_deviations(committee, frames) if frames else np.zeros(0)
        entry["max_deviation"] = float(deviations.max()) if len(deviations) else 0.0
        threshold = self.spec.select.max_deviation
        return [Candidate(a, "deviation", float(d)) for a, d in zip(frames, deviations) if d > threshold]

    def _stable(self, entry: dict) -> bool:
        """The stop rule: no collapse in enough replica-ps at every temperature, and a confident committee."""
        for chunks in entry["md"].values():
            if sum(c["collapses"] for c in chunks) or sum(c["replica_ps"] for c in chunks) < self.spec.stop.replica_ps:
                return False
        deviation = entry.get("max_deviation")
        return deviation is None or deviation <= self.spec.stop.max_deviation

    def _labels_total(self) -> int:
        return sum(r["labels_added"] for r in self.state["rounds"])

    def _budget_spent(self, entry: dict, limit: int) -> str | None:
        cpu_hours = sum(sum(r["cpu_s"].values()) for r in self.state["rounds"]) / 3600
        if entry["round"] + 1 >= self.spec.budget.max_rounds:
            return "round budget spent"
        if limit <= 0:
            return "label budget spent"
        if cpu_hours >= self.spec.budget.max_hours:
            return "time budget spent"
        return None

    # -- label -------------------------------------------------------------------------------

    def _label(self, entry: dict) -> None:
        folder = self._round_dir(entry["round"])
        frames = ase.io.read(folder / "selected.xyz", ":") if (folder / "selected.xyz").stat().st_size else []
        start = time.process_time()
        labelled = label_frames(frames, self.labeller, self.cache, self.progress, f"round {entry['round']} labels", skip_failures=True)
        self._cpu(entry, "labelling", start)
        offset = self.state["check"]["energy_offset_eV"]
        for structure in labelled:
            structure.energy -= offset  # onto the data's energy scale, as the labeller check measured
            structure.weight, structure.energy_weight = self.spec.select.weight, self.spec.select.energy_weight
        entry["labels_added"] = len(labelled)
        entry["unlabellable"] = len(frames) - len(labelled)
        if labelled:
            write_extxyz(labelled, folder / "labelled.xyz")
        self._advance(entry, "done")

    def _next_round(self, entry: dict) -> None:
        """The next round's data: this round's and its new labels."""
        folder = self._round_dir(entry["round"])
        added = read_structures(folder / "labelled.xyz") if (folder / "labelled.xyz").exists() else []
        self._start_round(entry["round"] + 1, read_structures(folder / "data.xyz") + added)
