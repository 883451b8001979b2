"""Data-parallel training with torch.distributed (gloo, 2 CPU processes) equals one process with the
same global batch, writes one set of files, and resumes exactly."""

from __future__ import annotations

import csv
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from remul_ff.config import config_from_dict
from remul_ff.training.trainer import Trainer

pytestmark = pytest.mark.slow


def make_config(data_path, out, epochs: int = 3):
    return config_from_dict(
        {
            "output_dir": str(out),
            "data": {"path": str(data_path), "valid": 7},  # odd: the two shards differ in size
            "model": {"kind": "transformer", "width": 16, "depth": 1, "heads": 2, "r_max": 4.0, "num_radial": 6},
            "loss": {"mode": "remul", "weighting": "gradnorm"},
            "train": {
                "epochs": epochs,
                "batch_size": 8,
                "lr": 3e-3,
                "device": "cpu",
                "dtype": "float64",
                "eval_rotations": 2,
                "num_threads": 1,
            },
        }
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data_path: str, out: str, epochs: int, stop_after: int, resume: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    from remul_ff.training import distributed

    trainer = Trainer(make_config(data_path, out, epochs), progress=False)

    def stop(epoch: int) -> None:
        if epoch == stop_after:
            raise SystemExit(0)

    trainer.epoch_end_hooks.append(stop)
    try:
        trainer.run(resume=resume)
    except SystemExit:
        pass
    finally:
        distributed.shutdown()


def run_ddp(data_path, out, epochs: int = 3, stop_after: int = -1, resume: bool = False) -> None:
    mp.spawn(_worker, args=(2, free_port(), str(data_path), str(out), epochs, stop_after, resume), nprocs=2, join=True)


def log(out) -> list[dict]:
    return list(csv.DictReader(open(out / "log.csv")))


def assert_same_weights(a, b, atol: float = 1e-9) -> None:
    for key, value in a.items():
        if torch.is_tensor(value) and value.is_floating_point():
            torch.testing.assert_close(value, b[key], atol=atol, rtol=0, msg=key)


@pytest.fixture(scope="module")
def single(xtb_ethanol_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    torch.set_num_threads(1)
    Trainer(make_config(xtb_ethanol_file, out), progress=False).run()
    return out


def test_two_processes_equal_one_process_with_the_same_global_batch(xtb_ethanol_file, tmp_path, single):
    run_ddp(xtb_ethanol_file, tmp_path)
    ddp = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    one = torch.load(single / "checkpoint.pt", weights_only=True)
    assert_same_weights(one["model"], ddp["model"])
    torch.testing.assert_close(one["gradnorm"]["weights"], ddp["gradnorm"]["weights"], atol=1e-12, rtol=0)
    for a, b in zip(log(single), log(tmp_path)):
        for key in ("val_energy_mae_meV", "val_forces_mae_meV_A", "val_equi_forces_rel", "val_shen_percent", "train_loss", "alpha"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-7, abs=1e-12), key
    written = sorted(p.name for p in tmp_path.iterdir() if p.name != "tensorboard")  # that one is optional
    assert written == ["checkpoint.pt", "config.yaml", "log.csv", "model.pt", "splits.json"]


def test_resumed_ddp_run_continues_exactly(xtb_ethanol_file, tmp_path, single):
    run_ddp(xtb_ethanol_file, tmp_path, stop_after=1)
    assert len(log(tmp_path)) == 1
    run_ddp(xtb_ethanol_file, tmp_path, resume=True)
    assert [r["epoch"] for r in log(tmp_path)] == ["1", "2", "3"]
    assert_same_weights(
        torch.load(single / "checkpoint.pt", weights_only=True)["model"], torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]
    )
