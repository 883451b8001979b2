"""Committees in MD: mean potential, force deviation per replica, flag or stop above a threshold."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch
from ase.build import molecule

from remul_ff.cli import main
from remul_ff.data.batch import Structure, collate
from remul_ff.md import MDSettings, run_md
from remul_ff.md.analysis import committee_warnings
from remul_ff.models import predict
from remul_ff.models.committee import Committee, frame_deviations, max_force_deviation
from tests.helpers import jittered_molecules, tiny_model


def two_members() -> list[torch.nn.Module]:
    return [tiny_model(), tiny_model(width=24)]  # different widths: different random potentials


def batch_of(frames):
    return collate([Structure(a.positions, a.numbers) for a in frames], dtype=torch.float64)


def test_committee_energy_and_forces_are_the_members_mean():
    members, batch = two_members(), batch_of(jittered_molecules("CH3CH2OH", 3) + [molecule("CH4")])
    each = [predict(m, batch) for m in members]
    mean = predict(Committee(members), batch)
    assert torch.allclose(mean.energy, (each[0].energy + each[1].energy) / 2, rtol=0, atol=1e-10)
    assert torch.allclose(mean.forces, (each[0].forces + each[1].forces) / 2, rtol=0, atol=1e-10)


def test_max_force_deviation_is_the_largest_per_atom_spread_of_each_molecule():
    members, batch = two_members(), batch_of(jittered_molecules("CH3CH2OH", 2) + [molecule("CH4")])
    f0, f1 = (predict(m, batch).forces for m in members)
    per_atom = torch.linalg.norm(f0 - f1, dim=-1) / 2  # two members: each is |F0 - F1| / 2 from the mean
    expected = torch.stack([per_atom[batch.molecule_index == k].max() for k in range(3)])
    assert torch.allclose(max_force_deviation(Committee(members), batch), expected, rtol=1e-12, atol=0)
    same = Committee([tiny_model(), tiny_model()])
    assert float(max_force_deviation(same, batch).abs().max()) == 0.0


def test_md_takes_the_deviation_in_its_own_split_cpu_calls_with_the_same_values(monkeypatch):
    import remul_ff.md.state as md_state
    from remul_ff.md.engine import _committee_deviation

    committee = Committee(two_members())
    frames = jittered_molecules("CH3CH2OH", 3) + [molecule("CH4"), molecule("H2O")]
    whole = max_force_deviation(committee, batch_of(frames))
    monkeypatch.setattr(md_state, "CPU_PAIRS_PER_CALL", 100)  # ethanol has 72 ordered pairs: several calls
    state = md_state.state_from_atoms(frames, "cpu", torch.float64)
    assert len(state.force_batches()) > 1
    assert torch.allclose(_committee_deviation(committee, state), whole, rtol=1e-12, atol=0)


def settings(**extra) -> MDSettings:
    return MDSettings(
        temperature=300, total_time_fs=10, thermostat="langevin", write_interval=0, thermo_interval=5, check_interval=5, **extra
    )


def test_stop_removes_every_replica_above_the_threshold_at_its_first_check(tmp_path):
    committee = Committee(two_members())
    starts = jittered_molecules("CH3CH2OH", 3)
    deviation = max_force_deviation(committee, batch_of(starts))
    threshold = float(deviation.min()) / 10  # every replica is above it from the start
    result = run_md(committee, starts, settings(max_force_deviation=threshold, on_deviation="stop"), tmp_path, progress=False)
    assert sorted(c.replica for c in result.collapses) == [0, 1, 2]
    assert all(c.step == 5 and "committee force deviation" in c.reason for c in result.collapses)
    assert json.loads((tmp_path / "uncertain.json").read_text()) == []


def test_flag_records_each_replica_once_and_logs_the_deviation(tmp_path):
    committee = Committee(two_members())
    starts = jittered_molecules("CH3CH2OH", 2)
    result = run_md(committee, starts, settings(max_force_deviation=1e-9), tmp_path, progress=False)
    assert result.collapses == [] and sorted(f.replica for f in result.flags) == [0, 1]
    assert all(f.step == 5 for f in result.flags)  # the first check, not again at the later ones
    assert len(json.loads((tmp_path / "uncertain.json").read_text())) == 2
    rows = list(csv.DictReader(open(tmp_path / "thermo.csv")))
    assert {r["step"] for r in rows} == {"0", "5", "10", "15", "20"}
    assert all(float(r["max_force_dev_eV_A"]) > 0 for r in rows)


def test_md_cli_runs_a_committee_and_needs_one_for_a_threshold(trained_model_file, tmp_path, capsys):
    out = tmp_path / "md"
    assert (
        main(
            [
                "md",
                str(trained_model_file),
                "ethanol",
                "-o",
                str(out),
                "--time",
                "5fs",
                "--committee",
                str(trained_model_file),
                "--max-force-deviation",
                "0.5",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "0 flagged as uncertain" in capsys.readouterr().out  # identical members never disagree
    assert "max_force_dev_eV_A" in (out / "thermo.csv").read_text().splitlines()[0]
    lonely = tmp_path / "lonely"
    assert main(["md", str(trained_model_file), "ethanol", "-o", str(lonely), "--max-force-deviation", "0.5"]) == 2
    assert "needs a committee" in capsys.readouterr().err and not lonely.exists()


@pytest.mark.parametrize(
    "extra, message",
    [({"max_force_deviation": -1.0}, "threshold"), ({"on_deviation": "warn"}, "must be one of flag, stop, but got 'warn'")],
)
def test_bad_deviation_settings_are_refused(extra, message):
    from remul_ff.errors import RemulError

    with pytest.raises(RemulError, match=message):
        settings(**extra).validate()


def test_flags_survive_a_resume_without_being_recorded_twice(tmp_path):
    committee, starts = Committee(two_members()), jittered_molecules("CH3CH2OH", 2)
    run_md(committee, starts, settings(max_force_deviation=1e-9, restart_every=5), tmp_path, progress=False)
    longer = dataclasses.replace(settings(max_force_deviation=1e-9, restart_every=5), total_time_fs=20)
    result = run_md(committee, starts, longer, tmp_path, progress=False, resume=True)
    assert sorted((f.replica, f.step) for f in result.flags) == [(0, 5), (1, 5)]


def test_a_restart_file_from_before_the_committee_settings_resumes(tmp_path):
    """Restart files written before a setting existed hold no value for it; that run used its default."""
    from remul_ff.md.engine import RESTART_FILE, RESTART_KIND
    from remul_ff.models.files import load_file, save_file

    model, starts = tiny_model(), jittered_molecules("CH3CH2OH", 2)
    run_md(model, starts, settings(restart_every=5), tmp_path, progress=False)
    payload = load_file(tmp_path / RESTART_FILE, RESTART_KIND)
    for name in ("max_force_deviation", "on_deviation"):
        del payload["run"][name]
    save_file(payload, tmp_path / RESTART_FILE)
    longer = dataclasses.replace(settings(restart_every=5), total_time_fs=20)
    assert run_md(model, starts, longer, tmp_path, progress=False, resume=True).n_steps == 40
    from remul_ff.errors import RemulError

    with pytest.raises(RemulError, match="on_deviation was 'flag' but is 'stop'"):
        run_md(model, starts, dataclasses.replace(longer, total_time_fs=30, on_deviation="stop"), tmp_path, progress=False, resume=True)


def test_committee_warnings_count_collapses_preceded_by_a_frame_above_the_healthy_threshold():
    healthy = {r: np.full(50, 0.1) + 0.001 * r for r in range(4)}  # 200 healthy frames, largest 0.103
    rising = np.r_[np.full(10, 0.1), np.linspace(0.2, 1.0, 5)]  # passes the threshold from frame 10
    quiet = np.full(15, 0.1)  # never does
    collapses = [{"replica": 4, "time_ps": 0.7, "reason": "C-H"}, {"replica": 5, "time_ps": 0.7, "reason": "C-C"}]
    result = committee_warnings({**healthy, 4: rising, 5: quiet}, collapses, frame_ps=0.05)
    assert result["threshold_eV_A"] == pytest.approx(np.percentile(np.concatenate(list(healthy.values())), 99.9))
    assert result["healthy_frames"] == 200 and (result["warned"], result["collapses"]) == (1, 2)
    warned, missed = result["events"]
    assert warned["warned"] and warned["lead_time_ps"] == pytest.approx(0.7 - 10 * 0.05)
    assert not missed["warned"] and missed["lead_time_ps"] is None
    assert result["median_lead_time_ps"] == pytest.approx(0.2)
    # frames at or after the collapse do not count as a warning
    late = committee_warnings({**healthy, 4: rising}, [{"replica": 4, "time_ps": 0.5, "reason": "C-H"}], frame_ps=0.05)
    assert late["warned"] == 0


def test_committee_warnings_without_a_healthy_replica_have_no_threshold():
    result = committee_warnings({0: np.ones(3)}, [{"replica": 0, "time_ps": 0.1, "reason": "C-H"}], frame_ps=0.05)
    assert result["threshold_eV_A"] is None and result["warned"] == 0 and result["median_lead_time_ps"] is None


def test_frame_deviations_match_max_force_deviation_in_chunks():
    committee, frames = Committee(two_members()), jittered_molecules("CH3CH2OH", 5)
    expected = max_force_deviation(committee, batch_of(frames)).numpy()
    assert np.allclose(frame_deviations(committee, frames, chunk=2), expected, rtol=1e-12, atol=0)


def test_committee_inference_copy_merges_each_member():
    from remul_ff.models.common import inference_model

    committee = Committee([tiny_model(), tiny_model(width=8)])
    merged = inference_model(committee)
    assert all(getattr(member, "merged_edge_proj", None) is not None for member in merged.members)
    assert not any(getattr(member, "merged_edge_proj", None) is not None for member in committee.members)
