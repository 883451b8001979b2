"""Recording a function once as a CUDA graph and replaying it: one launch instead of hundreds.

Used by the MD engine (:mod:`remul_ff.md.graphs`) and the ASE calculator on CUDA. Code that wants
to be recorded must read nothing back from the device and keep its shapes; tests stand in a
recorder that replays by calling the function under a host-sync guard (``tests/host_sync.py``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

# Un-recorded runs before recording: lazy initialisation (cuBLAS handles, autograd's device
# threads, compiled kernels) must happen outside the recording, as torch's CUDA-graph notes ask.
WARMUP_CALLS = 3


class CudaGraphRecorder:
    """Records a function once in a ``torch.cuda.CUDAGraph`` and replays it."""

    def __init__(self) -> None:
        self.graph = torch.cuda.CUDAGraph()

    def warm_up(self, fn: Callable[[], None], calls: int = WARMUP_CALLS) -> None:
        """Run ``fn`` ``calls`` times on a side stream, as torch asks before a capture."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(calls):
                fn()
        torch.cuda.current_stream().wait_stream(stream)

    def record(self, fn: Callable[[], None]) -> None:
        """Record ``fn``'s kernels (nothing runs)."""
        with torch.cuda.graph(self.graph):
            fn()

    def replay(self) -> None:
        self.graph.replay()


class RecordingFailed(RuntimeError):
    """A function could not be recorded; the caller runs it directly from now on."""


def record(new_recorder: Callable[[], object], warm_up: Callable[[], None], body: Callable[[], None], what: str):
    """A recorder holding ``body``, recorded after ``warm_up`` calls.

    Raises :class:`RecordingFailed` after a warning that names ``what`` and the reason (the first
    line of torch's error: an operation that cannot be recorded, such as a copy from the host).
    """
    recorder = new_recorder()
    try:
        recorder.warm_up(warm_up)
        recorder.record(body)
    except RuntimeError as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        warnings.warn(f"remul-ff: {what} could not be recorded as a CUDA graph ({reason}); it runs without one.", stacklevel=3)
        raise RecordingFailed(reason) from error
    return recorder
