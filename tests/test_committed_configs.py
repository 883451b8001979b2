"""Every config and spec committed in the repository validates, and the model files they name load.

These files are what users copy and what reproduces the committed benchmark results: a renamed
config key or a model file left out of a commit must fail here, not in a user's hands.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from remul_ff.compare import load_spec
from remul_ff.config import load_config
from remul_ff.errors import ConfigError
from remul_ff.models.files import load_model
from remul_ff.scaling.sweep import load_scaling_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
COMPARE_SPECS = sorted((ROOT / "benchmarks" / "stability").glob("spec*.yaml"))
SCALING_SPECS = sorted((ROOT / "benchmarks" / "scaling").glob("spec*.yaml"))
LEARN_SPECS = sorted((ROOT / "examples" / "learn").glob("*.yaml"))
# Specs whose models another committed script writes into the git-ignored runs/: (folder, script in the header).
MADE_ELSEWHERE = {"spec_rmd17_ethanol_short.yaml": ("runs/accuracy/", "python benchmarks/accuracy.py")}


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def test_the_repository_has_configs_and_specs():
    assert len(EXAMPLES) >= 2 and len(COMPARE_SPECS) >= 5 and len(SCALING_SPECS) >= 1


@pytest.mark.parametrize("path", EXAMPLES, ids=_ids(EXAMPLES))
def test_example_config_validates(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = load_config(path.relative_to(ROOT))
    assert config.model_kind in ("transformer", "egnn")


@pytest.mark.parametrize("path", COMPARE_SPECS, ids=_ids(COMPARE_SPECS))
def test_compare_spec_validates_and_its_model_files_load(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # specs name their files relative to the repository root
    if path.name in MADE_ELSEWHERE:
        folder, script = MADE_ELSEWHERE[path.name]
        assert script in path.read_text().split("output_dir:")[0], "the header must say which command makes the models"
        if not (ROOT / folder).is_dir():
            with pytest.raises(ConfigError, match=folder):
                load_spec(path.relative_to(ROOT))
            return
    spec = load_spec(path.relative_to(ROOT))
    model_paths = {entry["model_path"] for entry in spec.models.values() if entry and entry.get("model_path")}
    for model_path in sorted(model_paths):
        model = load_model(model_path, "cpu")
        assert sum(p.numel() for p in model.parameters()) > 0, model_path


@pytest.mark.parametrize("path", LEARN_SPECS, ids=_ids(LEARN_SPECS))
def test_learn_spec_validates(path, monkeypatch):
    """A learn spec's starting frames are made from ../shared by the command in its header."""
    import yaml

    from remul_ff.learn import load_learn_spec

    monkeypatch.chdir(ROOT)
    data = yaml.safe_load(path.read_text())["data"]
    assert "make_start.py" in path.read_text().split("output_dir:")[0], "the header must say how to make the starting frames"
    if not (ROOT / data).is_file():
        with pytest.raises(ConfigError, match=f"data {data} is not a file"):
            load_learn_spec(path.relative_to(ROOT))
        return
    spec = load_learn_spec(path.relative_to(ROOT))
    assert load_config(spec.train_config).model_kind in ("transformer", "egnn")


@pytest.mark.parametrize("path", SCALING_SPECS, ids=_ids(SCALING_SPECS))
def test_scaling_spec_validates(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = load_scaling_spec(path.relative_to(ROOT))
    assert spec.families and spec.budgets


def test_the_performance_suite_names_scripts_and_models_that_are_in_the_repository():
    """``benchmarks/perf/run.py`` reruns every speed benchmark; a moved script or model would skip it silently."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "perf" / "run.py"
    spec = importlib.util.spec_from_file_location("perf_suite", path)
    perf_suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(perf_suite)
    commands = perf_suite.suite("mace/bin/python", None)
    assert {"neighbors", "md_speed", "export_speed", "torchsim_speed", "mts_speed"} <= set(commands)
    root = path.parents[2]
    in_repository = {name: [str(root / a) for a in c if "shared" not in a] for name, c in commands.items()}
    lacking = {name: perf_suite.missing_inputs(c) for name, c in in_repository.items()}
    assert lacking == {name: [] for name in commands}
    assert "--mace-python" in commands["md_speed"] and "--pet-python" not in commands["md_speed"]
