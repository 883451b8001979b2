"""``remul-ff learn``: the loop runs to a report, resumes without redoing work, selects sensibly and
refuses bad specs and mismatched labellers in one sentence; ``train.init_from`` fine-tunes."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
import torch
import yaml
from ase.build import molecule

from remul_ff.cli import main
from remul_ff.data.readers import read_structures
from remul_ff.errors import ConfigError, DataError
from remul_ff.learn import LearnRun, load_learn_spec
from remul_ff.learn.select import Candidate, choose, collapse_windows, distance_fingerprint
from remul_ff.learn.spec import LearnSelect
from remul_ff.md.monitor import Collapse
from tests.helpers import jittered_molecules

TRAIN_CONFIG = {
    "output_dir": "unused",
    "data": {"path": "unused", "valid": 0.1},
    "model": {"kind": "transformer", "width": 16, "depth": 1, "heads": 2, "r_max": 4.0, "num_radial": 8},
    "loss": {"mode": "augment"},
    "train": {"epochs": 2, "batch_size": 8, "eval_rotations": 0, "device": "cpu", "tensorboard": False},
}


EGNN = {"kind": "egnn", "width": 16, "depth": 2, "r_max": 4.0, "num_radial": 8}


def write_spec(tmp_path, xtb_ethanol_file, model: dict | None = None, **sections) -> str:
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({**TRAIN_CONFIG, "model": model or TRAIN_CONFIG["model"]}))
    spec = {
        "output_dir": str(tmp_path / "learn"),
        "data": str(xtb_ethanol_file),
        "train_config": str(tmp_path / "train.yaml"),
        "train": {"first_minutes": 1, "round_minutes": 1, "committee": 2},
        "labeller": {"kind": "xtb"},
        "check": {"frames": 2, "max_force_mae_meV_A": 1.0},  # xTB labelled these frames: it must agree
        "md": {"temperatures": [2000], "replicas": 4, "time_fs": 40, "write_interval": 4, "max_chunks": 1},
        "select": {"max_per_round": 3, "max_deviation": 0.0, "min_pair_distance": 0.3, "energy_weight": 0.2},
        "stop": {"replica_ps": 1000},
        "budget": {"max_rounds": 2},
        **sections,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.mark.parametrize("kind", ["transformer", pytest.param("egnn", marks=pytest.mark.slow)])
def test_loop_runs_rounds_and_reports_them(tmp_path, xtb_ethanol_file, kind):
    spec = write_spec(tmp_path, xtb_ethanol_file, model=EGNN if kind == "egnn" else None)
    state = LearnRun(load_learn_spec(spec), progress=False).run()
    report = json.loads((tmp_path / "learn" / "report.json").read_text())
    assert state["finished"] == "round budget spent"
    assert report["labeller"] == "tblite:GFN2-xTB" and report["model"] == kind
    assert report["labeller_check"]["force_mae_meV_A"] < 0.1  # same method, same frames (to the file's digits)
    first, second = report["rounds"]
    assert first["labels_added"] == 3 and second["labels_total"] == 3  # max_deviation 0: every frame is uncertain
    assert second["n_data"] == first["n_data"] + 3
    # the added frames enter the next round's data with the spec's loss weights, the starting frames with 1
    weights = [(s.weight, s.energy_weight) for s in read_structures(tmp_path / "learn" / "round_01" / "data.xyz")]
    assert weights[-3:] == [(1.0, 0.2)] * 3 and set(weights[:-3]) == {(1.0, 1.0)}
    for row in report["rounds"]:
        assert row["temperatures"]["2000"]["replica_ps"] > 0 and row["cpu_hours"] > 0
    # MD starts from the starting frames only, never from added frames (stretched bonds count as collapses)
    start_frames = {tuple(np.round(distance_fingerprint(a), 4)) for a in ase.io.read(xtb_ethanol_file, ":")}
    for md_dir in (tmp_path / "learn").glob("round_*/md_*"):
        first = ase.io.read(md_dir / "replica_000.traj", 0)
        assert tuple(np.round(distance_fingerprint(first), 4)) in start_frames
        assert set(row["cpu_hours_split"]) >= {"training", "md"}
    assert (tmp_path / "learn" / "report.png").stat().st_size > 0


def test_killed_run_continues_without_redoing_finished_stages(tmp_path, xtb_ethanol_file, monkeypatch):
    spec = load_learn_spec(write_spec(tmp_path, xtb_ethanol_file, budget={"max_rounds": 1}))
    calls = {"md": 0}

    def killed_md(*args, **kwargs):
        calls["md"] += 1
        raise KeyboardInterrupt  # as kill: nothing after this point runs

    monkeypatch.setattr("remul_ff.learn.loop.run_md", killed_md)
    with pytest.raises(KeyboardInterrupt):
        LearnRun(spec, progress=False).run()
    model = tmp_path / "learn" / "round_00" / "model_1" / "model.pt"
    trained_at = model.stat().st_mtime_ns
    monkeypatch.undo()
    trainings = []
    monkeypatch.setattr("remul_ff.training.trainer.Trainer.run", lambda self, **kw: trainings.append(kw))
    state = LearnRun(spec, progress=False).run()
    assert calls["md"] == 1 and trainings == []  # both members were trained before the kill
    assert model.stat().st_mtime_ns == trained_at
    assert state["rounds"][0]["md"]["2000"][0]["replica_ps"] > 0


def test_labeller_far_from_the_data_is_refused_before_any_training(tmp_path, xtb_ethanol_file, capsys):
    spec = write_spec(tmp_path, xtb_ethanol_file, labeller={"kind": "ase", "calculator": "ase.calculators.emt:EMT"})
    with pytest.raises(DataError, match="not the data's level of theory"):
        LearnRun(load_learn_spec(spec), progress=False).run()
    assert not (tmp_path / "learn" / "round_00").exists()
    assert main(["learn", spec, "--no-progress"]) == 2
    assert "meV/Å from the data's own forces" in capsys.readouterr().err


@pytest.mark.parametrize(
    "change, message",
    [
        ({"md": {"temperatures": []}}, "md.temperatures"),
        ({"labeller": {"kind": "gaussian"}}, "labeller.kind"),
        ({"data": "missing.xyz"}, "is not a file"),
        ({"stop": {"replica_pss": 3}}, "did you mean 'stop.replica_ps'"),
    ],
)
def test_bad_spec_is_one_sentence(tmp_path, xtb_ethanol_file, change, message):
    with pytest.raises(ConfigError, match=message):
        load_learn_spec(write_spec(tmp_path, xtb_ethanol_file, **change))


def test_collapse_window_takes_the_frames_just_before_the_collapse(tmp_path):
    import ase.io

    frames = jittered_molecules("CH3CH2OH", 10, seed=3)
    for i, atoms in enumerate(frames):
        atoms.info["index"] = i
    ase.io.write(tmp_path / "replica_002.traj", frames)
    collapse = Collapse(replica=2, step=70, time_ps=0.035, reason="test")
    window = collapse_windows(tmp_path, [collapse], write_interval=10, window_steps=30)
    # frames at steps 40, 50, 60 (not 70, the broken one), latest first
    np.testing.assert_allclose([c.atoms.positions for c in window], [frames[i].positions for i in (6, 5, 4)])
    assert all(c.reason == "collapse" for c in window)


def test_choose_skips_duplicates_and_broken_frames_and_keeps_priority():
    base = molecule("CH3CH2OH")
    rotated = base.copy()
    rotated.rotate(70, "z")
    rotated.positions = rotated.positions[::-1].copy()  # a permuted, rotated copy: the same structure
    rotated.numbers = rotated.numbers[::-1].copy()
    distinct = jittered_molecules("CH3CH2OH", 3, seed=5, scale=0.1)
    broken = base.copy()
    broken.positions[1] = broken.positions[0] + [0.2, 0, 0]
    candidates = [
        Candidate(distinct[0], "deviation", 0.5),
        Candidate(distinct[1], "deviation", 0.9),
        Candidate(broken, "collapse"),
        Candidate(rotated, "collapse"),
        Candidate(distinct[2], "collapse"),
    ]
    chosen = choose(candidates, known=[base], settings=LearnSelect(min_distance=0.02, min_pair_distance=0.6), limit=3)
    assert [c.atoms for c in chosen] == [distinct[2], distinct[1], distinct[0]]
    assert len(choose(candidates, [base], LearnSelect(), limit=1)) == 1


def test_init_from_starts_from_the_given_weights(tmp_path, xtb_ethanol_file, trained_model_file):
    from remul_ff.config import config_from_dict
    from remul_ff.models import load_model
    from remul_ff.training.trainer import Trainer

    start = load_model(trained_model_file, dtype=torch.float32)
    model = dict(start.config.__dict__, kind="transformer")
    data = {"path": str(xtb_ethanol_file), "valid": 8}
    train = {"init_from": str(trained_model_file), "device": "cpu"}
    config = config_from_dict({"output_dir": str(tmp_path / "ft"), "data": data, "model": model, "train": train})
    trainer = Trainer(config, progress=False)
    trainer.setup()
    for name, value in start.state_dict().items():
        torch.testing.assert_close(trainer.model.state_dict()[name], value)
    config.model["width"] = 16
    config.output_dir = str(tmp_path / "ft2")
    with pytest.raises(ConfigError, match="does not match this config's transformer"):
        Trainer(config, progress=False).setup()


def test_init_from_another_level_of_theory_takes_this_datas_energy_zero(tmp_path, xtb_ethanol_file, trained_model_file):
    """``train.init_energy_reference: data`` (xTB pretraining, then DFT): E0s and shift from this data, the rest from the start."""
    from remul_ff.config import config_from_dict
    from remul_ff.models import load_model
    from remul_ff.training.trainer import Trainer

    start = load_model(trained_model_file, dtype=torch.float32)
    model = dict(start.config.__dict__, kind="transformer")
    data = {"path": str(xtb_ethanol_file), "valid": 8, "e0s": {"H": -13.0, "C": -1030.0, "O": -2040.0}}
    train = {"init_from": str(trained_model_file), "device": "cpu", "init_energy_reference": "data"}
    trainer = Trainer(config_from_dict({"output_dir": str(tmp_path / "ft"), "data": data, "model": model, "train": train}), progress=False)
    trainer.setup()
    assert trainer.model.head.e0s == [-13.0, -1030.0, -2040.0] != start.head.e0s
    assert not torch.allclose(trainer.model.head.shift, start.head.shift)
    for name, value in start.state_dict().items():
        if name not in ("head.shift", "head._extra_state"):
            torch.testing.assert_close(trainer.model.state_dict()[name], value)


def test_md_starts_from_the_starting_frames_not_the_added_ones(tmp_path, xtb_ethanol_file, monkeypatch):
    from remul_ff.data.generate import write_extxyz
    from tests.helpers import labelled

    run = LearnRun(load_learn_spec(write_spec(tmp_path, xtb_ethanol_file)), progress=False)
    added = labelled(jittered_molecules("CH3CH2OH", 200, seed=9, scale=0.3))  # stretched, as before a collapse
    write_extxyz(added, tmp_path / "learn" / "round_00" / "data.xyz")
    seen = []

    class Result:
        collapses = []

        def stability_times_ps(self):
            return [0.04] * len(seen[-1])

    monkeypatch.setattr("remul_ff.learn.loop.run_md", lambda model, starts, *a, **k: seen.append(starts) or Result())
    run._md_chunk(None, {"round": 0}, 2000.0, 0)
    initial = {tuple(np.round(distance_fingerprint(s.to_atoms()), 6)) for s in run.initial}
    assert len(seen[0]) == 4 and all(tuple(np.round(distance_fingerprint(a), 6)) in initial for a in seen[0])
