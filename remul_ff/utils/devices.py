"""Turning a device name from a config, the command line or the calculator into a ``torch.device``."""

from __future__ import annotations

import torch

from remul_ff.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; an unavailable CUDA device is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but no CUDA device is available; use 'cpu' or 'auto'.")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(
            f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s); "
            "use 'cuda' or 'cuda:N' with a smaller N."
        )
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {name!r} is not supported; use 'auto', 'cpu', 'cuda' or 'cuda:N'.")
    return device
