"""Progress bars in log files: separate lines, no carriage-return redraws."""

from __future__ import annotations

import io
import sys

from remul_ff.utils.progress import progress_bar


def test_progress_in_a_log_file_is_plain_lines(monkeypatch):
    log = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", log)
    for _ in progress_bar(range(5), desc="work", mininterval=0, miniters=1):
        pass
    text = log.getvalue()
    assert "\r" not in text
    lines = text.strip().splitlines()
    assert len(lines) >= 2 and lines[-1].startswith("work: 100%") and "5/5" in lines[-1]


def test_progress_in_a_log_file_is_sparse_by_default(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    for _ in progress_bar(range(1000), desc="work"):
        pass
    assert len(log.getvalue().strip().splitlines()) <= 3  # start, end: nothing in between within 30 s
