"""`remul-ff generate` with real GFN2-xTB labels, and the CLI's handling of bad input."""

from __future__ import annotations

import numpy as np

from remul_ff.cli import main
from remul_ff.data.readers import read_structures


def test_generate_ten_frames_with_xtb(tmp_path, capsys):
    out = tmp_path / "ethanol.xyz"
    code = main(
        ["generate", "ethanol", "-o", str(out), "--n-frames", "10", "--sample-every", "2", "--equilibration", "2", "--temperature", "300"]
    )
    assert code == 0
    frames = read_structures(out)
    assert len(frames) == 10
    assert all(len(f) == 9 for f in frames)
    energies = np.array([f.energy for f in frames])
    # GFN2-xTB ethanol sits near -310 eV; frames differ because the MD moves.
    assert np.all((energies > -320) & (energies < -300)) and np.ptp(energies) > 1e-3
    assert np.abs(frames[-1].forces).max() > 0.01
    assert not list(tmp_path.glob(".*tmp*"))


def test_unknown_molecule_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "x.xyz"
    assert main(["generate", "unobtainium", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unobtainium" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_broken_structure_file_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.xyz"
    bad.write_text("3\n\nH 0 0 0\nH 0 0\n")
    assert main(["generate", str(bad), "-o", str(tmp_path / "out.xyz")]) == 2
    assert "could not read the structure file" in capsys.readouterr().err
    assert not (tmp_path / "out.xyz").exists()


def test_generate_failure_midway_leaves_no_partial_file(tmp_path, monkeypatch, capsys):
    from remul_ff.data import generate

    def fail(*args, **kwargs):
        raise generate.DataError("MD frame 3 has NaN or infinite forces; remove or fix that frame.")

    monkeypatch.setattr(generate.Structure, "validate", fail)
    out = tmp_path / "out.xyz"
    assert main(["generate", "H2O", "-o", str(out), "--n-frames", "2", "--sample-every", "1", "--equilibration", "0"]) == 2
    assert "NaN" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
