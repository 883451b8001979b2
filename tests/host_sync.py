"""A CPU stand-in for ``torch.cuda.set_sync_debug_mode("error")``, to test sync-free code without a GPU.

On an accelerator, reading a tensor's value on the host (``item``, ``tolist``, ``bool``, a copy to
the CPU) or an operation whose output size depends on the values (``nonzero``, ``bincount``,
boolean-mask indexing, ``repeat_interleave`` without ``output_size``) makes the host wait for the
device. Inside :func:`forbid_host_sync` these calls raise :class:`HostSync` on any device, so a
CPU test catches the Python-level ones that CUDA's debug mode would flag.

:class:`ReplayingRecorder` stands in for :class:`remul_ff.utils.cuda_graphs.CudaGraphRecorder`: it
keeps the recorded function and calls it, under the guard, at each replay.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager

import pytest
import torch

SYNCING_METHODS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "nonzero", "bincount")
SYNCING_FUNCTIONS = ("bincount", "nonzero", "argwhere", "unique", "unique_consecutive", "masked_select")


class HostSync(AssertionError):
    """A call that would wait for the device."""


def _raiser(name: str, original, host: tuple[torch.Tensor, ...]):
    def refuse(*args, **kwargs):
        if args and any(args[0] is t for t in host):
            return original(*args, **kwargs)
        raise HostSync(f"{name} reads device values on the host")

    return refuse


def _checked_repeat_interleave(original):
    def repeat_interleave(*args, **kwargs):
        if kwargs.get("output_size") is None and any(isinstance(a, torch.Tensor) and a.numel() > 1 for a in args[1:2]):
            raise HostSync("repeat_interleave without output_size sizes its output on the host")
        return original(*args, **kwargs)

    return repeat_interleave


def _checked_getitem(original):
    def getitem(self, index):
        parts = index if isinstance(index, tuple) else (index,)
        if any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts):
            raise HostSync("indexing with a boolean mask sizes its output on the host")
        return original(self, index)

    return getitem


@contextmanager
def forbid_host_sync(host: Iterable[torch.Tensor] = ()):
    """Make the calls above raise :class:`HostSync` inside the ``with`` block.

    ``host``: tensors that live on the host on every device (an optimiser's step counts), whose
    methods may be called.
    """
    host = tuple(host)
    with pytest.MonkeyPatch.context() as patch:
        for name in SYNCING_METHODS:
            patch.setattr(torch.Tensor, name, _raiser(f"Tensor.{name}", getattr(torch.Tensor, name), host))
        for name in SYNCING_FUNCTIONS:
            patch.setattr(torch, name, _raiser(f"torch.{name}", getattr(torch, name), host))
        patch.setattr(torch, "repeat_interleave", _checked_repeat_interleave(torch.repeat_interleave))
        patch.setattr(torch.Tensor, "repeat_interleave", _checked_repeat_interleave(torch.Tensor.repeat_interleave))
        patch.setattr(torch.Tensor, "__getitem__", _checked_getitem(torch.Tensor.__getitem__))
        yield


class ReplayingRecorder:
    """Keeps the recorded function and runs it at each replay, where syncs are refused as in a capture."""

    def __init__(self) -> None:
        self.fn, self.warm_ups = None, 0

    def warm_up(self, fn, calls: int = 3) -> None:
        for _ in range(calls):
            fn()
        self.warm_ups += calls

    def record(self, fn) -> None:
        self.fn = fn  # a real recording runs nothing either

    def replay(self) -> None:
        with forbid_host_sync():
            self.fn()


class FailingRecorder(ReplayingRecorder):
    def record(self, fn) -> None:
        raise RuntimeError("operation not permitted when stream is capturing")
