"""Progress bars in log files: separate lines, no carriage-return redraws."""

from __future__ import annotations

import io
import sys

from remul_ff.utils.progress import progress_bar


def test_progress_in_a_log_file_is_plain_lines(monkeypatch):
    log = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", log)
    for _ in progress_bar(range(5), desc="work", mininterval=0, miniters=1, delay=0):
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
    assert log.getvalue() == ""  # finished within 30 s: no line at all


def test_training_with_progress_writes_no_line_per_step_into_a_log(xtb_ethanol_file, tmp_path, monkeypatch, capsys, caplog):
    import logging

    from remul_ff.config import config_from_dict
    from remul_ff.training.trainer import Trainer

    config = config_from_dict(
        {
            "output_dir": str(tmp_path),
            "data": {"path": str(xtb_ethanol_file), "valid": 8},
            "model": {"width": 16, "depth": 1, "heads": 2},
            "train": {"epochs": 2, "batch_size": 2},
        }
    )
    caplog.set_level(logging.INFO, logger="remul_ff")
    Trainer(config, progress=True).run()  # 20 steps per epoch; pytest's stderr is not a terminal
    log = "".join(capsys.readouterr()) + caplog.text  # the bar on stderr, the epoch lines through logging
    assert "loss=" not in log and log.count("epoch 1:") == 1, log
