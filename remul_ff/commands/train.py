"""``remul-ff train``: the options, the run, and the summary printed after it."""

from __future__ import annotations

import argparse
from pathlib import Path

from remul_ff.errors import RemulError
from remul_ff.utils.io import check_output_path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a potential from a YAML config")
    p.add_argument("config", help="YAML config file (see examples/)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=5 (repeatable)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUTPUT_DIR/checkpoint.pt (a run stopped by train.max_minutes gets another max_minutes)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the run already in OUTPUT_DIR")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from remul_ff.config import load_config
    from remul_ff.training import distributed
    from remul_ff.training.trainer import Trainer

    config = load_config(args.config, args.overrides)
    check_output_path(config.output_dir, "output_dir", folder=True)
    try:
        trainer = Trainer(config, progress=not args.no_progress)
        if args.resume and args.overwrite:
            raise RemulError("--resume and --overwrite contradict each other; pass one of them.")
        trainer.run(resume=args.resume, overwrite=args.overwrite)
    finally:
        distributed.shutdown()
    if trainer.ctx.is_main:
        print(training_summary(config.output_dir, config.data.path))


def training_summary(output_dir: str, data_path: str) -> str:
    """What a finished run produced and what to run next, from its ``log.csv``."""
    import csv

    out = Path(output_dir)
    rows = list(csv.DictReader(open(out / "log.csv")))
    if not rows or not (out / "model.pt").exists():
        return f"no epoch finished, so no model was written to {out}/model.pt."
    best = _row_of_model(out / "model.pt", rows)
    rotation = float(best["val_equi_forces_rel"]) if best["val_equi_forces_rel"] not in ("", "nan") else float("nan")
    direct = f", direct force MAE {float(best['val_direct_forces_mae_meV_A']):.2f} meV/Å" if "val_direct_forces_mae_meV_A" in best else ""
    return (
        f"best model (epoch {best['epoch']} of {rows[-1]['epoch']}) written to {out}/model.pt: validation energy MAE "
        f"{float(best['val_energy_mae_meV']):.2f} meV, force MAE {float(best['val_forces_mae_meV_A']):.2f} meV/Å{direct}, "
        f"relative rotational force error {rotation:.2e}.\nnext: remul-ff evaluate {out}/model.pt {data_path}  |  "
        f"remul-ff md {out}/model.pt {data_path} -o {out}/md --replicas 8 --time 10ps --reference {data_path}"
    )


def _row_of_model(path, rows: list[dict]) -> dict:
    """The log row of the epoch ``model.pt`` holds (files from before it was recorded: the lowest validation
    loss; with a second stage the scale of that loss changes, so only the recorded epoch is sure)."""
    import torch

    epoch = torch.load(path, map_location="cpu", weights_only=True).get("epoch")
    return next((r for r in rows if int(r["epoch"]) == epoch), None) or min(rows, key=lambda r: float(r["val_loss"]))
