"""Package boundaries, read from the import statements (AST), not from the text: inference code
(calculators, MD, models, data) never depends on the training code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "remul_ff"


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` in ``path`` names (absolute, as written)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("subpackage", ["calculators", "md", "models", "data"])
def test_inference_code_does_not_import_training(subpackage):
    offenders = {
        p.name: sorted(m for m in imported_modules(p) if m.startswith("remul_ff.training")) for p in (PACKAGE / subpackage).glob("*.py")
    }
    offenders = {name: mods for name, mods in offenders.items() if mods}
    assert offenders == {}, f"{subpackage}/{offenders} import remul_ff.training; model files load from remul_ff.models"


def test_a_comment_naming_the_training_code_is_not_an_import(tmp_path):
    """The check reads imports: a docstring or comment that mentions remul_ff.training passes, an import fails."""
    text = tmp_path / "m.py"
    text.write_text('"""See remul_ff.training.trainer."""\n# remul_ff.training too\n')
    assert imported_modules(text) == set()
    text.write_text("def f():\n    from remul_ff.training.trainer import Trainer\n")
    assert "remul_ff.training.trainer" in imported_modules(text)
