"""Counting FLOPs of a training step, for compute-scaling studies (``remul-ff scaling``).

``torch.utils.flop_counter.FlopCounterMode`` cannot be used here: its per-module tracker installs
autograd hooks that fail inside ``torch.autograd.grad`` on leaf positions ("A leaf node was passed
to _will_engine_execute_node"), which is how forces are computed. This mode uses the same per-op
formulas (``flop_registry``: matrix products, convolutions, attention) without the tracker.
Elementwise work is not counted, as in FlopCounterMode and in the scaling literature.
"""

from __future__ import annotations

from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry


class FlopCounter(TorchDispatchMode):
    """Sums the FLOPs of every op run while it is active (forward, backward and double backward).

    Example:
        >>> with FlopCounter() as counter:
        ...     loss.backward()
        >>> counter.total
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += int(formula(*args, **kwargs, out_val=out))
        return out
