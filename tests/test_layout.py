"""Package boundaries: inference code (calculators, MD) never depends on the training code."""

from __future__ import annotations

from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "remul_ff"


@pytest.mark.parametrize("subpackage", ["calculators", "md", "models", "data"])
def test_inference_code_does_not_import_training(subpackage):
    offenders = [p.name for p in (PACKAGE / subpackage).glob("*.py") if "remul_ff.training" in p.read_text()]
    assert offenders == [], f"{subpackage}/{offenders} import remul_ff.training; model files load from remul_ff.models"
