"""Every Python snippet in README.md and docs/*.md runs as written, in a folder laid out as after the main job."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SNIPPETS = [(doc, code) for doc in DOCUMENTS for code in re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)]


def test_the_readme_has_python_snippets():
    assert sum(doc.name == "README.md" for doc, _ in SNIPPETS) >= 2


@pytest.mark.parametrize("document, snippet", SNIPPETS, ids=[f"{doc.stem}{k}" for k, (doc, _) in enumerate(SNIPPETS)])
def test_readme_snippet_runs(document, snippet, trained_model_file, direct_model_file, xtb_ethanol_file, tmp_path, monkeypatch):
    for run, model in (("xtb_ethanol", trained_model_file), ("xtb_ethanol_direct", direct_model_file)):
        (tmp_path / "runs" / run).mkdir(parents=True)
        shutil.copy(model, tmp_path / "runs" / run / "model.pt")
    (tmp_path / "data").mkdir()
    shutil.copy(xtb_ethanol_file, tmp_path / "data" / "xtb_ethanol.xyz")
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, f"{document.name} snippet", "exec"), {"__name__": "readme_snippet"})
