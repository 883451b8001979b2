"""Energy-only potentials, the one force wrapper (:func:`predict`) and model files (:func:`load_model`)."""

from __future__ import annotations

import dataclasses

from torch import nn

from remul_ff.models.common import e0_list
from remul_ff.models.egnn import EGNN, EGNNConfig
from remul_ff.models.files import MODEL_FILE_KIND, load_model, model_from_payload
from remul_ff.models.forces import Prediction, predict
from remul_ff.models.runtime import EnergyModel, ModelSource, ready_members, ready_model
from remul_ff.models.transformer import REMULTransformer, TransformerConfig

MODEL_CONFIGS = {"transformer": TransformerConfig, "egnn": EGNNConfig}
MODEL_CLASSES = {"transformer": REMULTransformer, "egnn": EGNN}


def build_model(
    kind: str, hyperparameters: dict, elements: list[int], e0s: dict[int, float], scale: float = 1.0, shift: float = 0.0
) -> nn.Module:
    """Build a model by name from plain hyperparameters (as stored in config files and checkpoints).

    Args:
        kind: Model name, a key of :data:`MODEL_CLASSES`.
        hyperparameters: Fields of that model's config dataclass.
        elements: Atomic numbers the model supports.
        e0s: Reference energy per element in eV.
        scale: Initial per-element energy scale (eV).
        shift: Initial per-element energy shift (eV per atom).
    """
    config = MODEL_CONFIGS[kind](**hyperparameters)
    return MODEL_CLASSES[kind](config, sorted(elements), e0_list(elements, e0s), scale, shift)


def hyperparameters(model: nn.Module) -> dict:
    """The plain-dict config that :func:`build_model` needs to rebuild ``model``."""
    return dataclasses.asdict(model.config)


__all__ = [
    "EGNN",
    "EGNNConfig",
    "EnergyModel",
    "MODEL_CLASSES",
    "MODEL_FILE_KIND",
    "ModelSource",
    "Prediction",
    "REMULTransformer",
    "TransformerConfig",
    "build_model",
    "hyperparameters",
    "load_model",
    "model_from_payload",
    "predict",
    "ready_members",
    "ready_model",
]
