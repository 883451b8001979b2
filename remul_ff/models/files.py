"""Model files (and the file format that checkpoints share): ``state_dict`` + config + format version.

Loading a ``model.pt`` — its kind, hyperparameters, elements, E0s, training domain, weights,
dtype and device — lives here and only here; the calculator, the MD engine, ``compare`` and any
integration import it from :mod:`remul_ff.models`. Never pickled modules.

Both file kinds load with ``torch.load(..., weights_only=True)`` and are written atomically
(temporary file, then rename), so a run killed mid-write keeps its previous file intact. Each file
carries a SHA-256 checksum of its tensors' bytes: damage inside the weights still unpickles, so
without it a flipped byte would give a model that loads and predicts nonsense without a word.

* a **checkpoint** (``checkpoint.pt``) holds everything to resume training exactly;
* a **model file** (``model.pt``) holds what the calculator needs: model kind, hyperparameters,
  elements, E0s and weights.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from remul_ff.errors import CheckpointError
from remul_ff.utils.io import atomic_path

FORMAT_VERSION = 1
MODEL_FILE_KIND = "remul-ff-model"
CHECKPOINT_FILE_KIND = "remul-ff-checkpoint"  # a training run's resumable state (checkpoint.pt), written by the trainer
CHECKSUM_KEY = "tensor_sha256"


def save_file(payload: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` with a checksum of its tensors to a temporary file beside ``path``, then rename it onto ``path``."""
    with atomic_path(path) as tmp:
        torch.save({**payload, CHECKSUM_KEY: tensor_checksum(payload)}, tmp)


def tensor_checksum(payload: Any) -> str:
    """SHA-256 of every tensor's dtype, shape and bytes in ``payload`` (nested dicts, lists, tuples), in order."""
    digest = hashlib.sha256()
    for tensor in _tensors(payload):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _tensors(value: Any):
    if torch.is_tensor(value):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key != CHECKSUM_KEY:
                yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def load_file(path: str | os.PathLike, kind: str) -> dict[str, Any]:
    """Load a file written by :func:`save_file` with ``weights_only=True`` and check its kind and version."""
    path = Path(path)
    if path.is_dir():
        inside = f" (such as {path / 'model.pt'})" if (path / "model.pt").is_file() else ""
        raise CheckpointError(f"{path} is a folder; give the path of a file inside it{inside}.")
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; give the path of a file written by 'remul-ff train'.")
    if path.suffix == ".pt2":
        raise CheckpointError(
            f"{path} is an exported program ('remul-ff export'), which LAMMPS, C++ and torch.export "
            "run; remul-ff commands and the ASE calculator take the model.pt it was exported from."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a readable remul-ff file ({type(exc).__name__}); it may be corrupt or truncated, "
            "so re-export it or use an earlier checkpoint."
        ) from exc
    if not isinstance(payload, dict) or payload.get("kind") != kind:
        found = payload.get("kind") if isinstance(payload, dict) else type(payload).__name__
        if found == CHECKPOINT_FILE_KIND and kind == MODEL_FILE_KIND:  # the usual mix-up: both lie in a run's folder
            model = path.with_name("model.pt")
            instead = (
                f"use {model}"
                if model.is_file()
                else "training writes model.pt beside it when it ends ('remul-ff train --resume' finishes a stopped run)"
            )
            raise CheckpointError(f"{path} is a training checkpoint, not a model file; {instead}.")
        raise CheckpointError(f"{path} is a {found!r} file, not a {kind!r} file; check which file you passed.")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {payload.get('format_version')}, but this remul-ff reads version "
            f"{FORMAT_VERSION}; use the remul-ff version that wrote it."
        )
    _check_checksum(payload, path)
    return payload


def _check_checksum(payload: dict[str, Any], path: Path) -> None:
    """Refuse a file whose tensors changed since it was written (files from before checksums pass)."""
    recorded = payload.pop(CHECKSUM_KEY, None)
    if recorded is not None and recorded != tensor_checksum(payload):
        raise CheckpointError(
            f"{path} is corrupt: its weights do not match the checksum written with them; "
            "use an earlier copy or checkpoint, or train again."
        )


def model_payload(
    model: nn.Module, kind: str, elements: list[int], e0s: dict[int, float], config: dict, domain: dict[str, float] | None = None
) -> dict[str, Any]:
    """The content of an exported model file (``domain``: see :mod:`remul_ff.data.domain`)."""
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
        "training_domain": {str(k): float(v) for k, v in (domain or {}).items()},
    }


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64) -> nn.Module:
    """Rebuild a model from an exported model file, in eval mode with frozen parameters.

    Args:
        path: A ``model.pt`` written by ``remul-ff train``.
        device: Where to put the model.
        dtype: Floating-point dtype of the weights.
    """
    return model_from_payload(load_file(path, MODEL_FILE_KIND), path, device, dtype)


def model_from_payload(
    payload: dict[str, Any], path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64
) -> nn.Module:
    """Rebuild the model held by an already loaded model file (see :func:`load_model`)."""
    model = _build_described_model(payload, path)
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} has no weights (state_dict); the file is damaged, so export the model again.")
    _check_weights(state, model, path)
    model.load_state_dict(state)
    model.training_domain = dict(payload.get("training_domain") or {})  # empty for files from before it was recorded
    model.to(device=device, dtype=dtype).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def _build_described_model(payload: dict[str, Any], path: str | os.PathLike) -> nn.Module:
    """The model the file describes, or one sentence on which part of the description is damaged."""
    from remul_ff.models import MODEL_CLASSES, build_model  # the package imports this module

    kind = payload.get("model_kind")
    if kind not in MODEL_CLASSES:
        raise CheckpointError(
            f"{path} describes a model of kind {kind!r}, but remul-ff knows only "
            f"{', '.join(sorted(MODEL_CLASSES))}; the file is damaged or from another program."
        )
    try:
        return build_model(kind, payload["hyperparameters"], payload["elements"], payload["e0s"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{path} has a damaged model description ({type(exc).__name__}: {exc}); export the model again from its training run."
        ) from exc


def _check_weights(state: dict[str, Any], model: nn.Module, path: str | os.PathLike) -> None:
    """Refuse weights that do not fit the model or are not finite (a diverged training run)."""
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    tensors = [k for k, v in expected.items() if torch.is_tensor(v) and k in state]  # skips extra (non-tensor) state
    wrong = [k for k in tensors if not torch.is_tensor(state[k]) or state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise CheckpointError(
            f"the weights in {path} do not fit the model they describe ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(wrong)} of the wrong shape, e.g. {first!r}); the file is corrupt."
        )
    bad = [k for k in tensors if state[k].is_floating_point() and not bool(torch.isfinite(state[k]).all())]
    if bad:
        raise CheckpointError(
            f"{path} holds NaN or infinite weights (in {bad[0]}), so training diverged; "
            "use an earlier checkpoint or retrain with a lower learning rate."
        )
