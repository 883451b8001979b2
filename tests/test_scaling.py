"""The compute-scaling sweep: FLOP counting, resumable sweep, power-law fits, report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from remul_ff.cli import main
from remul_ff.config import config_from_dict
from remul_ff.errors import ConfigError
from remul_ff.scaling.fit import PowerLaw, bootstrap_fits, crossings, fit_power_law, probability_below
from remul_ff.scaling.measure import step_flops
from remul_ff.scaling.sweep import RESULTS_FILE, load_scaling_spec, read_rows, run_sweep, sweep_points
from remul_ff.training.flops import FlopCounter
from remul_ff.training.trainer import Trainer


def test_power_law_fit_recovers_known_parameters():
    flops = np.geomspace(1e9, 1e13, 9)
    law = fit_power_law(flops, PowerLaw(4000.0, 0.3, 5.0)(flops))
    assert law.b == pytest.approx(0.3, rel=0.05)
    assert law.c == pytest.approx(5.0, abs=0.3)
    pure = fit_power_law(flops, PowerLaw(50.0, 0.1, 0.0)(flops), with_floor=False)
    assert (pure.a, pure.b, pure.c) == (pytest.approx(50.0, rel=1e-6), pytest.approx(0.1, rel=1e-6), 0.0)


def test_crossing_and_bootstrap_probability():
    flops = np.geomspace(1e9, 1e13, 200)
    steep, flat = PowerLaw(1e6, 0.5, 0.0), PowerLaw(100.0, 0.1, 0.0)  # cross at 1e10 FLOPs
    (cross,) = crossings(steep, flat, flops)
    assert cross == pytest.approx(1e10, rel=0.05)
    rng = np.random.default_rng(0)
    points = np.geomspace(1e9, 1e13, 8)
    noisy = [bootstrap_fits(points, law(points) * np.exp(rng.normal(0, 0.02, 8)), samples=50) for law in (steep, flat)]
    p = probability_below(*noisy, np.array([1e9, 1e13]))
    assert p[0] < 0.1 and p[1] > 0.9  # the steep law is above at low compute, below at high compute


def test_frontier_keeps_only_points_better_than_everything_cheaper():
    from remul_ff.scaling.report import frontier

    rows = [{"family": "f", "device": "cpu", "flops": f, "force_mae": m} for f, m in [(1, 50), (2, 60), (3, 40), (4, 45), (5, 30)]]
    rows.append({"family": "g", "device": "cpu", "flops": 0.5, "force_mae": 1.0})
    flops, loss = frontier(rows, "f", "cpu")
    assert flops.tolist() == [1, 3, 5] and loss.tolist() == [50, 40, 30]


def test_flop_counter_counts_forward_and_force_backward():
    layer = torch.nn.Linear(8, 16, dtype=torch.float64)
    x = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    with FlopCounter() as counter:
        y = layer(x).pow(2).sum()
    forward = counter.total
    assert forward == 2 * 4 * 8 * 16
    with FlopCounter() as counter:
        (grad,) = torch.autograd.grad(layer(x).pow(2).sum(), x, create_graph=True)
        grad.sum().backward()
    assert counter.total > 3 * forward  # forward, force pass, and the double backward
    assert y.requires_grad


def _config(data_file, out, mode="remul"):
    return config_from_dict(
        {
            "output_dir": str(out),
            "data": {"path": str(data_file), "valid": 4, "max_frames": 20},
            "model": {"kind": "transformer", "width": 16, "depth": 1, "heads": 2, "r_max": 4.0, "num_radial": 8},
            "loss": {"mode": mode},
            "train": {"epochs": 2, "batch_size": 4, "device": "cpu", "tensorboard": False, "eval_rotations": 1},
        }
    )


def test_measuring_step_flops_does_not_change_training(xtb_ethanol_file, tmp_path):
    """A run whose FLOPs are measured after each epoch ends with the same weights as one that is not."""
    plain = Trainer(_config(xtb_ethanol_file, tmp_path / "plain"), progress=False)
    plain.run()
    measured = Trainer(_config(xtb_ethanol_file, tmp_path / "measured"), progress=False)
    counts = []
    measured.epoch_end_hooks.append(lambda epoch: counts.append(step_flops(measured, measured.data.train[:4])))
    measured.run()
    assert len(counts) == 2 and counts[0] == counts[1] > 0
    for a, b in zip(plain.model.parameters(), measured.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _spec_file(tmp_path, data_file, **changes) -> str:
    spec = {
        "output_dir": str(tmp_path / "sweep"),
        "data": {"path": str(data_file), "valid": 4, "max_frames": 16},
        "train": {"batch_size": 4, "device": "cpu", "tensorboard": False, "eval_rotations": 1},
        "budgets": [1, 2],
        "sizes": {
            "transformer": {
                "S": {"width": 8, "depth": 1, "heads": 2, "r_max": 4.0, "num_radial": 4},
                "M": {"width": 16, "depth": 1, "heads": 2, "r_max": 4.0, "num_radial": 4},
            }
        },
        "families": {
            "remul_label": {"model": {"kind": "transformer"}, "loss": {"mode": "remul"}},
            "augment": {"model": {"kind": "transformer"}, "loss": {"mode": "augment"}},
        },
        **changes,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_sweep_rows_resume_and_report(xtb_ethanol_file, tmp_path):
    path = _spec_file(tmp_path, xtb_ethanol_file)
    spec = load_scaling_spec(path)
    assert len(run_sweep(spec, shard=(1, 2), progress=False)) == 4  # every second of the 8 points
    assert main(["scaling", path, "--no-progress"]) == 0  # trains the other shard, then reports
    rows = read_rows(spec)
    finals = [r for r in rows if r["final"]]
    assert len(finals) == len(sweep_points(spec)) == 8 and len(rows) == 4 * 3  # 1 + 2 epochs per (family, size)
    by_key = {(r["family"], r["size"], r["budget_epochs"]): r for r in finals}
    remul, augment = by_key[("remul_label", "M", 2)], by_key[("augment", "M", 2)]
    assert 1.7 < remul["flops"] / augment["flops"] < 2.3  # REMUL's rotated pass doubles the step
    assert by_key[("augment", "M", 2)]["flops"] == pytest.approx(2 * by_key[("augment", "M", 1)]["flops"])
    assert by_key[("augment", "M", 1)]["flops"] > 2 * by_key[("augment", "S", 1)]["flops"]
    assert run_sweep(spec, progress=False) == [] and len(read_rows(spec)) == len(rows)  # finished points are skipped
    report = json.loads((tmp_path / "sweep" / "fits.json").read_text())
    assert set(report["fits"]) == {"remul_label", "augment"} and report["command"].startswith("remul-ff scaling")
    assert set(report["speed"]["md_ms_per_step"]) == {"transformer/S", "transformer/M"}
    assert set(report["speed"]["train_ms_per_step"]) == {f"{f}/{s}" for f in ("remul_label", "augment") for s in "SM"}
    final = report["finals"]["augment"][0]
    assert final["quiet_train_s"] == pytest.approx(
        final["epoch"] * 3 * report["speed"]["train_ms_per_step"][f"augment/{final['size']}"] / 1e3
    )
    for name in ("report.md", "loss_vs_flops.png", "rotation_vs_flops.png", "pareto.png"):
        assert (tmp_path / "sweep" / name).stat().st_size > 0


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"budgets": [0]}, "budgets must be whole numbers"),
        ({"families": {"x": {"model": {"kind": "egnn"}}}}, "lists no sizes.egnn"),
        ({"families": {"x": {"model": {"kind": "transformer"}, "train": {}}}}, "may hold only 'model' and 'loss'"),
        ({"families": {"x": {"model": {"kind": "transformer"}, "loss": {"mode": "twirl"}}}}, "loss.mode"),
        ({"budget": [3]}, "unknown config key 'budget'"),
    ],
)
def test_bad_scaling_spec_is_one_sentence(tmp_path, xtb_ethanol_file, changes, words, capsys):
    path = _spec_file(tmp_path, xtb_ethanol_file, **changes)
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        load_scaling_spec(path)
    assert main(["scaling", path]) == 2
    assert words.split("'")[0] in capsys.readouterr().err
    assert not (tmp_path / "sweep" / RESULTS_FILE).exists()


def test_bad_shard_is_refused(tmp_path, xtb_ethanol_file, capsys):
    assert main(["scaling", _spec_file(tmp_path, xtb_ethanol_file), "--shard", "3/2"]) == 2
    assert "--shard 3/2" in capsys.readouterr().err


def test_report_only_before_any_run_is_refused_and_writes_nothing(tmp_path, xtb_ethanol_file, capsys):
    assert main(["scaling", _spec_file(tmp_path, xtb_ethanol_file), "--report-only"]) == 2
    assert "no finished cpu point" in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()
