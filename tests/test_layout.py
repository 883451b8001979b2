"""Package boundaries, read from the import statements (AST), not from the text: inference code
(integrations, MD, models, data) never depends on the training code. And every object's attributes
are made by its constructor, so that reading ``__init__`` tells what an object holds."""

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


@pytest.mark.parametrize("subpackage", ["integrations", "calculators", "md", "models", "data"])
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


# Methods that build a new object's state, as __init__ does (a base class's shared constructor part).
INIT_METHODS = {"__init__", "__post_init__", "init_common"}


def attributes_made_after_construction(source: str) -> dict[str, set[str]]:
    """Per class, the ``self.x = ...`` attributes first made outside its constructors and not declared
    in its body (a dataclass field or an annotation)."""
    found = {}
    for cls in (n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef)):
        assignments = [n for n in cls.body if isinstance(n, (ast.AnnAssign, ast.Assign))]
        declared = {getattr(t, "id", None) for n in assignments for t in (n.targets if isinstance(n, ast.Assign) else [n.target])}
        made = {"init": set(), "later": set()}
        for method in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
            for node in ast.walk(method):
                if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and getattr(node.value, "id", "") == "self":
                    made["init" if method.name in INIT_METHODS else "later"].add(node.attr)
        if late := made["later"] - made["init"] - declared:
            found[cls.name] = late
    return found


def test_every_attribute_is_made_in_the_constructor():
    late = {}
    for path in PACKAGE.rglob("*.py"):
        for cls, attrs in attributes_made_after_construction(path.read_text()).items():
            late[f"{path.relative_to(PACKAGE.parent)}:{cls}"] = attrs
    # ASE's Calculator base class makes ``results``; ``e0`` is a buffer that loading replaces.
    assert late == {"remul_ff/integrations/remul.py:REMULCalculator": {"results"}, "remul_ff/models/common.py:AtomicEnergyHead": {"e0"}}


def test_an_attribute_made_later_is_found():
    source = "class A:\n    def __init__(self):\n        self.a = 1\n    def run(self):\n        self.a, self.b = 2, 3\n"
    assert attributes_made_after_construction(source) == {"A": {"b"}}


MAX_FILE_LINES, MAX_FUNCTION_LINES, MAX_README_LINES = 400, 40, 250


def long_functions(source: str) -> list[str]:
    """``name (lines)`` of every function in ``source`` longer than :data:`MAX_FUNCTION_LINES`, docstring included."""
    nodes = (n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return [f"{n.name} ({n.end_lineno - n.lineno + 1})" for n in nodes if n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]


def test_files_and_functions_stay_short_and_readme_stays_a_users_page():
    long_files = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
    assert long_files == {}
    assert {str(p.relative_to(PACKAGE)): f for p in PACKAGE.rglob("*.py") if (f := long_functions(p.read_text()))} == {}
    assert len((PACKAGE.parent / "README.md").read_text().splitlines()) <= MAX_README_LINES


def test_a_long_function_is_found():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert long_functions(f"def short():\n    return 1\n\n\ndef long():\n{body}\n") == [f"long ({MAX_FUNCTION_LINES + 1})"]
