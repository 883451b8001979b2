"""The problems a new user met (issue 40), each answered by one clear sentence or fixed."""

from __future__ import annotations

import pytest
import torch

from remul_ff.errors import CheckpointError
from remul_ff.models.files import MODEL_FILE_KIND, load_model, model_payload, save_file
from tests.helpers import tiny_model


def write_model_file(path, model=None):
    model = model or tiny_model()
    e0s = dict(zip([1, 6, 7, 8], model.head.e0s))
    save_file(model_payload(model, "transformer", [1, 6, 7, 8], e0s, {}), path)
    return path


def flip_bytes_inside(path, tensor: torch.Tensor, count: int = 64) -> None:
    """Invert ``count`` bytes in the middle of ``tensor``'s stored bytes in ``path``."""
    data = bytearray(path.read_bytes())
    stored = tensor.detach().contiguous().view(torch.uint8).numpy().tobytes()
    start = data.find(stored)
    assert start > 0, "the tensor's bytes must lie in the file uncompressed"
    middle = start + len(stored) // 2
    data[middle : middle + count] = bytes(b ^ 0xFF for b in data[middle : middle + count])
    path.write_bytes(bytes(data))


def test_model_file_with_flipped_weight_bytes_is_refused(tmp_path):
    model = tiny_model()
    path = write_model_file(tmp_path / "model.pt", model)
    assert torch.equal(load_model(path).head.scale, model.head.scale)  # intact: loads
    flip_bytes_inside(path, model.blocks[0].ffn[0].weight)
    with pytest.raises(CheckpointError, match="corrupt: its weights do not match the checksum"):
        load_model(path)


def test_file_without_checksum_still_loads(tmp_path):
    """Model files written before checksums existed stay readable."""
    model = tiny_model()
    path = tmp_path / "old.pt"
    torch.save(model_payload(model, "transformer", [1, 6, 7, 8], dict(zip([1, 6, 7, 8], model.head.e0s)), {}), path)
    assert load_model(path)(
        torch.zeros(2, 3).double() + torch.tensor([[0.0, 0, 0], [1.0, 0, 0]]), torch.tensor([1, 8]), torch.zeros(2, dtype=torch.long)
    ).shape == (2,)
    assert MODEL_FILE_KIND == torch.load(path, weights_only=True)["kind"]


def test_committee_of_models_from_different_levels_of_theory_is_refused(tmp_path):
    from remul_ff.integrations import REMULCalculator
    from remul_ff.models.committee import Committee

    dft = write_model_file(tmp_path / "dft.pt")
    xtb_model = tiny_model()
    xtb_model.head.set_extra_state({"e0s": [-10.7, -48.8, -71.0, -103.2]})  # GFN2-xTB-like isolated atoms
    xtb = write_model_file(tmp_path / "xtb.pt", xtb_model)
    with pytest.raises(
        CheckpointError, match=r"dft.pt and .*xtb.pt cannot form a committee: their isolated-atom energies of O differ by 1.93e\+03 eV"
    ):
        REMULCalculator([dft, xtb])
    with pytest.raises(CheckpointError, match="different levels of theory"):
        Committee([load_model(dft), load_model(xtb)])
    assert len(REMULCalculator([dft, write_model_file(tmp_path / "same.pt", tiny_model(width=32))]).models) == 2


def test_committee_of_models_for_different_elements_is_refused(tmp_path):
    from remul_ff.models import build_model
    from remul_ff.models.committee import Committee

    chno = load_model(write_model_file(tmp_path / "a.pt"))
    cho = build_model("transformer", {"width": 16, "depth": 1, "heads": 2}, [1, 6, 8], {1: -13.6, 6: -1025.0, 8: -2035.0})
    with pytest.raises(CheckpointError, match=r"know different elements \(H, C, N, O and H, C, O\)"):
        Committee([chno, cho.double()])


def test_md_given_an_exported_program_says_what_it_is(trained_model_file, tmp_path, capsys):
    from remul_ff.cli import main

    program = tmp_path / "model.pt2"
    assert main(["export", str(trained_model_file), "-o", str(program)]) == 0
    capsys.readouterr()
    assert main(["md", str(program), "ethanol", "-o", str(tmp_path / "md"), "--time", "5fs"]) == 2
    err = capsys.readouterr().err
    assert "is an exported program ('remul-ff export')" in err and "take the model.pt it was exported from" in err
    assert "corrupt" not in err and not (tmp_path / "md").exists()


def test_resume_with_a_changed_learning_rate_is_refused_and_a_longer_budget_is_recorded(xtb_ethanol_file, tmp_path, capsys):
    import yaml

    from remul_ff.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(
        f"output_dir: {tmp_path / 'run'}\ndata: {{path: {xtb_ethanol_file}, valid: 8}}\n"
        "model: {width: 16, depth: 1, heads: 2}\ntrain: {epochs: 1, batch_size: 8}\n"
    )
    assert main(["train", str(config), "--no-progress"]) == 0
    log = (tmp_path / "run" / "log.csv").read_text()
    assert main(["train", str(config), "--resume", "--no-progress", "--set", "train.lr=1e-2"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume: train.lr is 0.01 now but was 0.001" in err and "only checkpoint_every, device, epochs" in err
    assert main(["train", str(config), "--resume", "--no-progress", "--set", "loss.beta=2"]) == 2
    assert "cannot resume: loss.beta is 2.0 now but was 1.0" in capsys.readouterr().err
    assert (tmp_path / "run" / "log.csv").read_text() == log
    assert main(["train", str(config), "--resume", "--no-progress", "--set", "train.epochs=2"]) == 0
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["epochs"] == 2
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 3


def test_md_with_more_replicas_than_open_files_runs_and_writes_the_same_bytes(trained_model_file, tmp_path, monkeypatch):
    import resource

    from remul_ff.md import MDSettings, output, run_md
    from tests.helpers import jittered_molecules

    model = load_model(trained_model_file)
    starts = jittered_molecules("CH3CH2OH", 160, seed=3, scale=0.02)
    settings = MDSettings(temperature=300, total_time_fs=2.0, timestep_fs=0.5, write_interval=2, restart_every=0)
    run_md(model, starts, settings, tmp_path / "kept_open", progress=False)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))  # 160 replicas cannot each hold a file open
    try:
        monkeypatch.setattr(output, "MAX_OPEN_TRAJECTORIES", 4)
        run_md(model, starts, settings, tmp_path / "pooled", progress=False)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    for rid in (0, 5, 159):
        name = f"replica_{rid:03d}.traj"
        assert (tmp_path / "pooled" / name).read_bytes() == (tmp_path / "kept_open" / name).read_bytes()
    assert len(list((tmp_path / "pooled").glob("replica_*.traj"))) == 160


def test_md_into_a_folder_with_replica_files_only_needs_overwrite(trained_model_file, tmp_path, capsys):
    from remul_ff.cli import main

    out = tmp_path / "md"
    out.mkdir()
    (out / "replica_000.traj").write_bytes(b"")  # left by a run that failed while creating its files
    assert main(["md", str(trained_model_file), "ethanol", "-o", str(out), "--time", "2fs"]) == 2
    assert "already holds an MD run (replica_000.traj and other replica files); pass --resume" in capsys.readouterr().err
    assert main(["md", str(trained_model_file), "ethanol", "-o", str(out), "--time", "2fs", "--overwrite", "--no-progress"]) == 0


def test_evaluate_warns_about_element_pairs_the_model_never_saw(trained_model_file, tmp_path, capsys):
    from remul_ff.cli import main
    from remul_ff.data.generate import write_extxyz
    from tests.helpers import jittered_molecules, xtb_labelled

    peroxide = tmp_path / "h2o2.xyz"  # H and O only, but an O-O bond: ethanol has one oxygen
    write_extxyz(xtb_labelled(jittered_molecules("H2O2", 2)), peroxide)
    assert main(["evaluate", str(trained_model_file), str(peroxide)]) == 0
    assert "the element pairs O-O in these data never occur in the model's training data" in capsys.readouterr().err


def test_scaling_with_a_missing_data_file_leaves_no_folders(tmp_path, capsys):
    from remul_ff.cli import main
    from tests.test_scaling import _spec_file

    spec = _spec_file(tmp_path, tmp_path / "missing.xyz")
    assert main(["scaling", spec, "--no-progress"]) == 2
    assert "missing.xyz does not exist" in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()


def test_md_command_line_defaults_are_the_documented_settings():
    import dataclasses

    from remul_ff.cli import build_parser
    from remul_ff.md.settings import COMMAND_LINE_MD_SETTINGS, MDSettings, parse_duration_fs

    args = build_parser().parse_args(["md", "model.pt", "ethanol", "-o", "out"])
    options = {
        "temperature": "temperature",
        "timestep_fs": "timestep",
        "thermostat": "thermostat",
        "friction": "friction",
        "tdamp_fs": "tdamp",
        "seed": "seed",
        "write_interval": "write_interval",
        "thermo_interval": "thermo_interval",
        "traj_format": "format",
        "check_interval": "check_interval",
        "restart_every": "restart_every",
        "on_deviation": "on_deviation",
        "max_force_deviation": "max_force_deviation",
        "compile": "compile",
        "cuda_graph": "cuda_graph",
    }
    for field, option in options.items():
        assert getattr(args, option) == getattr(COMMAND_LINE_MD_SETTINGS, field), field
    assert parse_duration_fs(args.time) == COMMAND_LINE_MD_SETTINGS.total_time_fs
    # only what the docstring of COMMAND_LINE_MD_SETTINGS explains differs from the Python API's defaults
    differs = {f.name for f in dataclasses.fields(MDSettings) if getattr(MDSettings(), f.name) != getattr(COMMAND_LINE_MD_SETTINGS, f.name)}
    assert differs == {"check_interval", "restart_every", "total_time_fs"}


def test_md_settings_import_without_torch():
    import subprocess
    import sys

    code = "import sys, remul_ff.md.settings, remul_ff.cli; remul_ff.cli.build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_importing_remul_ff_leaves_the_matplotlib_backend_alone():
    import subprocess
    import sys

    code = (
        "import matplotlib; matplotlib.use('svg'); import remul_ff.compare.report, remul_ff.scaling.report, remul_ff.cli; "
        "print(matplotlib.get_backend())"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "svg"
