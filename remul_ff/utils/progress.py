"""Progress bars that suit both a terminal and a log file.

On a terminal this is a plain tqdm bar. When stderr is not a terminal (a batch job, ``nohup``,
``| tee``), tqdm would write a carriage-return redraw many times a second into one endless log
line; there the bar is redrawn at most every ``LOG_INTERVAL_S`` seconds, each time as its own line, and
a bar that finishes within ``LOG_INTERVAL_S`` writes nothing.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


class _LineWriter:
    """A file-like wrapper that turns tqdm's carriage-return redraws into separate lines."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``, as plain periodic lines when stderr is not a terminal."""
    if not sys.stderr.isatty():
        # delay: a bar that finishes within the interval (a short epoch) writes no line at all
        kwargs = {"file": _LineWriter(sys.stderr), "mininterval": LOG_INTERVAL_S, "delay": LOG_INTERVAL_S, "ascii": True, **kwargs}
    return tqdm(iterable, **kwargs)
