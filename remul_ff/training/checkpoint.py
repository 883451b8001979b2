"""Checkpoints and exported models: ``state_dict`` + config + format version, never pickled modules.

Both file kinds load with ``torch.load(..., weights_only=True)`` and are written atomically
(temporary file, then rename), so a run killed mid-write keeps its previous file intact.

* a **checkpoint** (``checkpoint.pt``) holds everything to resume training exactly;
* a **model file** (``model.pt``) holds what the calculator needs: model kind, hyperparameters,
  elements, E0s and weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from remul_ff.errors import CheckpointError
from remul_ff.utils.io import atomic_path

FORMAT_VERSION = 1
MODEL_FILE_KIND = "remul-ff-model"
CHECKPOINT_KIND = "remul-ff-checkpoint"


def save_file(payload: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it onto ``path``."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_file(path: str | os.PathLike, kind: str) -> dict[str, Any]:
    """Load a file written by :func:`save_file` with ``weights_only=True`` and check its kind and version."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; give the path of a file written by 'remul-ff train'.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a readable remul-ff file ({type(exc).__name__}); it may be corrupt or truncated, "
            "so re-export it or use an earlier checkpoint."
        ) from exc
    if not isinstance(payload, dict) or payload.get("kind") != kind:
        found = payload.get("kind") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is a {found!r} file, not a {kind!r} file; check which file you passed.")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {payload.get('format_version')}, but this remul-ff reads version "
            f"{FORMAT_VERSION}; use the remul-ff version that wrote it."
        )
    return payload


def model_payload(model: nn.Module, kind: str, elements: list[int], e0s: dict[int, float], config: dict) -> dict[str, Any]:
    """The content of an exported model file."""
    from remul_ff.models import hyperparameters

    return {
        "kind": MODEL_FILE_KIND,
        "format_version": FORMAT_VERSION,
        "model_kind": kind,
        "hyperparameters": hyperparameters(model),
        "elements": [int(z) for z in elements],
        "e0s": {int(z): float(e) for z, e in e0s.items()},
        "state_dict": {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in model.state_dict().items()},
        "training_config": config,
    }


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64) -> nn.Module:
    """Rebuild a model from an exported model file, in eval mode with frozen parameters.

    Args:
        path: A ``model.pt`` written by ``remul-ff train``.
        device: Where to put the model.
        dtype: Floating-point dtype of the weights.
    """
    return model_from_payload(load_file(path, MODEL_FILE_KIND), path, device, dtype)


def model_from_payload(payload: dict[str, Any], path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64) -> nn.Module:
    """Rebuild the model held by an already loaded model file (see :func:`load_model`)."""
    from remul_ff.models import build_model

    model = build_model(payload["model_kind"], payload["hyperparameters"], payload["elements"], payload["e0s"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"the weights in {path} do not fit the model they describe ({exc}); the file is corrupt.") from exc
    model.to(device=device, dtype=dtype).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model
