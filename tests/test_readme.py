"""Every Python snippet in README.md runs as written, in a folder laid out as after the main job."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_snippets():
    assert len(SNIPPETS) >= 2


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"snippet{k}" for k in range(len(SNIPPETS))])
def test_readme_snippet_runs(snippet, trained_model_file, direct_model_file, xtb_ethanol_file, tmp_path, monkeypatch):
    for run, model in (("xtb_ethanol", trained_model_file), ("xtb_ethanol_direct", direct_model_file)):
        (tmp_path / "runs" / run).mkdir(parents=True)
        shutil.copy(model, tmp_path / "runs" / run / "model.pt")
    (tmp_path / "data").mkdir()
    shutil.copy(xtb_ethanol_file, tmp_path / "data" / "xtb_ethanol.xyz")
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md snippet", "exec"), {"__name__": "readme_snippet"})
