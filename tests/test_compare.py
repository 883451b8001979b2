"""A tiny end-to-end `remul-ff compare`: every report file, and the JSON matching the Markdown table."""

from __future__ import annotations

import json

import pytest
import torch
from ase.build import molecule
from ase.io import read

from remul_ff.cli import main
from remul_ff.compare import MDProtocol, _saved_frame_collapse
from remul_ff.compare.report import PLOTS
from remul_ff.compare.spec import stability_settings
from remul_ff.models.files import MODEL_FILE_KIND, load_file, save_file


def _tiny_spec(tmp_path, data_file) -> tuple:
    spec = tmp_path / "spec.yaml"
    out = tmp_path / "report"
    spec.write_text(f"""
output_dir: {out}
data: {{path: {data_file}, valid: 6, test: 6}}
train: {{epochs: 2, batch_size: 8, device: cpu, eval_rotations: 0}}
models:
  remul: {{model: {{kind: transformer, width: 16, depth: 1, heads: 2}}, loss: {{mode: remul}}}}
  egnn: {{model: {{kind: egnn, width: 16, depth: 2}}, loss: {{mode: none}}, md: {{time: 15fs}}}}
md: {{temperature: 300, time: 25fs, replicas: 2, nve_time: 10fs, frame_interval: 10, restart_every: 10}}
evaluation_rotations: 2
""")
    return spec, out


def test_tiny_compare_produces_every_report_file(xtb_ethanol_file, tmp_path, capsys):
    spec, out = _tiny_spec(tmp_path, xtb_ethanol_file)
    assert main(["compare", str(spec), "--no-progress"]) == 0
    for name in ("report.md", "report.json", *PLOTS):
        assert (out / name).stat().st_size > 0, name
    payload = json.loads((out / "report.json").read_text())
    markdown = (out / "report.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| |"))
    assert header == "| | remul | egnn |"
    for label, values in payload["table"].items():
        assert f"| {label} | {values['remul']} | {values['egnn']} |" in markdown
    assert payload["table"]["Stable replicas"]["egnn"].endswith("/2")
    assert float(payload["table"]["Force equivariance error (relative)"]["egnn"]) < 1e-8
    # egnn has its own, shorter MD; rates are per replica-ps with their exact interval
    egnn, remul = payload["models"]["egnn"], payload["models"]["remul"]
    assert egnn["md_protocol"]["time"] == "15fs" and remul["md_protocol"]["time"] == "25fs"
    assert "Models with their own amount of MD: egnn: 2 x 15fs." in markdown
    for model, total in ((egnn, 0.030), (remul, 0.050)):
        assert model["replica_ps"] == pytest.approx(sum(model["stability_ps"])) and model["replica_ps"] <= total + 1e-12
        assert model["collapses"] == len(model["collapse_events"]) == 2 - model["stable_replicas"]
        low, high = model["ci95"]
        assert low <= model["failure_rate_per_1000_replica_ps"] < high
    assert payload["temperature_K"] == 300 and "training_budget_minutes" in payload


def test_compare_rejects_a_bad_model_section(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("models:\n  remul: {model: {kind: transformer, widht: 8}}\n")
    assert main(["compare", str(spec)]) == 2
    assert "did you mean 'model.width'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "md, message",
    [("{timestep_fs: -0.5}", "config key 'md.timestep_fs' must be a positive number"), ("{thermostat: berendsen}", "md.thermostat")],
)
def test_compare_checks_the_md_protocol_with_the_engine_ranges(tmp_path, capsys, md, message):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"md: {md}\n")
    assert main(["compare", str(spec)]) == 2
    assert message in capsys.readouterr().err


def test_protocol_settings_reach_the_engine():
    protocol = MDProtocol(temperature=450.0, thermostat="langevin", bond_tolerance=0.4, mts_k=2, seed=7, time="1ps")
    settings = stability_settings(protocol)
    got = (settings.temperature, settings.thermostat, settings.bond_tolerance, settings.mts_k, settings.seed)
    assert got == (450.0, "langevin", 0.4, 2, 7)
    assert settings.total_time_fs == 1000.0 and settings.write_interval == protocol.frame_interval == settings.thermo_interval


def test_model_jobs_run_separately_and_the_report_reuses_their_md(xtb_ethanol_file, tmp_path, capsys):
    spec, out = _tiny_spec(tmp_path, xtb_ethanol_file)
    assert main(["compare", str(spec), "--model", "egnn", "--no-progress"]) == 0
    trajectory = out / "egnn" / "md" / "replica_000.traj"
    assert (out / "egnn" / "model.pt").exists() and trajectory.exists()
    assert not (out / "remul").exists() and not (out / "report.md").exists()
    before = trajectory.read_bytes()
    assert main(["compare", str(spec), "--no-progress"]) == 0
    assert trajectory.read_bytes() == before  # finished MD is read back, not run again
    assert (out / "report.md").exists()


def test_compare_rejects_an_unknown_model_name(xtb_ethanol_file, tmp_path, capsys):
    spec, _ = _tiny_spec(tmp_path, xtb_ethanol_file)
    assert main(["compare", str(spec), "--model", "mace"]) == 2
    assert "no model named 'mace'; it names remul, egnn" in capsys.readouterr().err


def test_stability_also_judges_the_saved_frames():
    """A bond that breaks between monitor checks (or in a run made by an older monitor) still ends the replica."""
    frames = [molecule("CH3CH2OH") for _ in range(4)]
    frames[2].set_distance(2, 3, 1.6, fix=0)  # O-H stretched by 0.63 Å in saved frame 2
    md = MDProtocol(frame_interval=10, timestep_fs=0.5)
    found = _saved_frame_collapse(frames, 7, md, [])
    assert (found["replica"], found["step"], found["time_ps"]) == (7, 20, pytest.approx(0.01))
    assert found["bond"] == "O2-H3" and found["deviation"] == pytest.approx(0.63, abs=0.01)
    assert _saved_frame_collapse(frames[:2], 7, md, []) is None


def test_saved_frames_are_judged_against_the_mean_bond_length_of_the_reference_data():
    """Fu et al.: the reference is the data set's mean bond length, not the starting frame's."""
    start = molecule("CH3CH2OH")
    start.set_distance(2, 3, 1.30, fix=0)  # the run starts from an O-H stretched to 1.30 Å
    later = start.copy()
    later.set_distance(2, 3, 1.55, fix=0)  # 0.25 Å from the start, 0.58 Å from the mean below
    reference = [molecule("CH3CH2OH") for _ in range(3)]
    for atoms, length in zip(reference, (0.95, 0.97, 0.99)):
        atoms.set_distance(2, 3, length, fix=0)
    md = MDProtocol(frame_interval=10, timestep_fs=0.5)
    assert _saved_frame_collapse([start, later], 0, md, []) is None
    found = _saved_frame_collapse([start, later], 0, md, reference)  # frame 0 is 0.33 Å off: not yet broken
    assert found["bond"] == "O2-H3" and found["step"] == 10
    assert found["deviation"] == pytest.approx(0.58, abs=1e-6) and "reference 0.97 Å" in found["reason"]


def test_ensembles_of_one_model_file_pool_into_one_rate(tmp_path):
    from remul_ff.compare import pooled_ensembles
    from remul_ff.md.analysis import failure_rate

    model = tmp_path / "model.pt"
    results = {
        "a": {"model_path": str(model), **failure_rate(1, 1500.0)},
        "a_seed1": {"model_path": str(tmp_path / "." / "model.pt"), **failure_rate(0, 1600.0)},
        "other": {"model_path": str(tmp_path / "other.pt"), **failure_rate(2, 100.0)},
    }
    pooled = pooled_ensembles(results)
    assert list(pooled) == ["a"] and pooled["a"]["ensembles"] == ["a", "a_seed1"]
    assert (pooled["a"]["replica_ps"], pooled["a"]["collapses"]) == (3100.0, 1)
    assert pooled["a"]["ci95"] == failure_rate(1, 3100.0)["ci95"]
    assert pooled["a"]["ci95"][1] < results["a"]["ci95"][1]  # more replica-ps, a tighter bound


def test_update_report_adds_a_second_ensemble_and_keeps_the_other_models(xtb_ethanol_file, tmp_path, capsys):
    import shutil

    spec, out = _tiny_spec(tmp_path, xtb_ethanol_file)
    assert main(["compare", str(spec), "--no-progress"]) == 0
    before = json.loads((out / "report.json").read_text())
    shutil.rmtree(out / "egnn" / "md")  # trajectories are not committed: a later machine lacks them
    spec.write_text(
        spec.read_text().replace(
            "md: {temperature", f"  remul_seed1: {{model_path: {out / 'remul' / 'model.pt'}, md: {{seed: 1}}}}\nmd: {{temperature"
        )
    )
    assert main(["compare", str(spec), "--model", "remul_seed1", "--update-report", "--no-progress"]) == 0
    after = json.loads((out / "report.json").read_text())
    assert list(after["models"]) == ["remul", "egnn", "remul_seed1"]
    assert after["models"]["egnn"] == before["models"]["egnn"]  # kept as reported, not re-run
    assert not (out / "egnn" / "md").exists()
    pooled = after["pooled"]["remul"]
    assert pooled["ensembles"] == ["remul", "remul_seed1"]
    assert pooled["replica_ps"] == pytest.approx(before["models"]["remul"]["replica_ps"] + after["models"]["remul_seed1"]["replica_ps"])
    markdown = (out / "report.md").read_text()
    assert "Updated (models added" in markdown and "| remul | remul, remul_seed1 |" in markdown


def test_update_report_without_a_report_is_one_sentence(xtb_ethanol_file, tmp_path, capsys):
    spec, out = _tiny_spec(tmp_path, xtb_ethanol_file)
    assert main(["compare", str(spec), "--update-report", "--no-progress"]) == 2
    assert "--update-report needs --model" in capsys.readouterr().err
    assert main(["compare", str(spec), "--model", "egnn", "--update-report", "--no-progress"]) == 2
    assert "needs an earlier report" in capsys.readouterr().err
    assert not out.exists()  # refused before any training or MD


def _trained_model_spec(tmp_path, data_file, models: str, md: str, rotations: int) -> tuple:
    """A spec of already trained models (``models``: YAML lines under ``models:``) with a short 300 K MD."""
    spec, out = tmp_path / "spec.yaml", tmp_path / "report"
    spec.write_text(f"""
output_dir: {out}
data: {{path: {data_file}, valid: 6, test: 6}}
train: {{device: cpu}}
models:{models}
md: {{temperature: 300, frame_interval: 5, restart_every: 10, {md}}}
evaluation_rotations: {rotations}
""")
    return spec, out


def test_a_models_committee_is_judged_on_its_saved_md_frames(trained_model_file, xtb_ethanol_file, tmp_path, capsys):
    other = tmp_path / "other.pt"  # a second member: the same model with perturbed weights
    payload = load_file(trained_model_file, MODEL_FILE_KIND)
    generator = torch.Generator().manual_seed(0)
    payload["state_dict"] = {
        k: v + 0.05 * torch.randn(v.shape, generator=generator, dtype=v.dtype) if torch.is_tensor(v) and v.is_floating_point() else v
        for k, v in payload["state_dict"].items()
    }
    save_file(payload, other)
    spec, out = _trained_model_spec(
        tmp_path,
        xtb_ethanol_file,
        f"""
  remul: {{model_path: {trained_model_file}, committee: [{trained_model_file}, {other}]}}""",
        "time: 30fs, replicas: 3, nve_time: 10fs, bond_tolerance: 0.3",
        rotations=2,
    )
    assert main(["compare", str(spec), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    remul = report["models"]["remul"]
    warning = remul["committee_warning"]
    for replica in range(3):
        saved = read(out / "remul" / "md" / f"replica_{replica:03d}.traj", index=":")
        assert len(warning["deviations_eV_A"][str(replica)]) == len(saved)
        assert min(warning["deviations_eV_A"][str(replica)]) > 0  # the members differ
    assert warning["collapses"] == remul["collapses"] and len(warning["events"]) == remul["collapses"]
    assert [e["replica"] for e in warning["events"]] == [c["replica"] for c in remul["collapse_events"]]
    cell = report["table"]["Collapses a committee warned of (median lead)"]["remul"]
    assert cell.startswith(f"{warning['warned']}/{warning['collapses']}")
    markdown = (out / "report.md").read_text()
    assert "## Committee warnings" in markdown and (out / "committee_warning.png").stat().st_size > 0


@pytest.mark.parametrize(
    "committee, message",
    [
        ("[{model}]", "must be a list of two or more model files"),
        ("{model}", "must be a list of two or more model files"),
        ("[{model}, none.pt]", "names none.pt, which does not exist"),
    ],
)
def test_compare_refuses_a_bad_committee(trained_model_file, tmp_path, capsys, committee, message):
    spec = tmp_path / "spec.yaml"
    entry = committee.format(model=trained_model_file)
    spec.write_text(f"models:\n  remul: {{model_path: {trained_model_file}, committee: {entry}}}\n")
    assert main(["compare", str(spec)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_compare_refuses_a_criterion_that_breaks_the_starting_frames(trained_model_file, xtb_ethanol_file, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"""
output_dir: {tmp_path / "report"}
data: {{path: {xtb_ethanol_file}, valid: 6, test: 6}}
models:
  remul: {{model_path: {trained_model_file}}}
md: {{time: 5fs, replicas: 2, bond_tolerance: 0.001}}
""")
    assert main(["compare", str(spec), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "replica 0 starts from a held-out data frame whose bond" in err and "raise md.bond_tolerance" in err
    assert not (tmp_path / "report" / "remul" / "md" / "replica_000.traj").exists()


@pytest.mark.slow
def test_a_model_used_with_test_time_rotations_is_measured_averaged(trained_model_file, xtb_ethanol_file, tmp_path, capsys):
    spec, out = _trained_model_spec(
        tmp_path,
        xtb_ethanol_file,
        f"""
  plain: {{model_path: {trained_model_file}}}
  averaged: {{model_path: {trained_model_file}, md: {{test_time_rotations: 24}}}}""",
        "time: 10fs, replicas: 2, nve_time: 5fs",
        rotations=4,
    )
    assert main(["compare", str(spec), "--no-progress"]) == 0
    models = json.loads((out / "report.json").read_text())["models"]
    plain, averaged = models["plain"], models["averaged"]
    assert averaged["md_protocol"]["test_time_rotations"] == 24 and plain["md_protocol"]["test_time_rotations"] == 0
    assert averaged["equi_forces_rel"] < 0.5 * plain["equi_forces_rel"]
    assert averaged["forces_mae_meV_A"] != plain["forces_mae_meV_A"]


def test_compare_refuses_a_rotation_count_that_is_no_group(trained_model_file, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"models:\n  remul: {{model_path: {trained_model_file}, md: {{test_time_rotations: 8}}}}\n")
    assert main(["compare", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "'models.remul.md.test_time_rotations' must be 0 (off) or a rotation group's size, 4, 12, 24, but is 8" in err
