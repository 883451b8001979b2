"""A training run's folder: refuse to start over an earlier run unless told to, and let ``--resume``
continue only the run that is there (same config, apart from how long and where it trains)."""

from __future__ import annotations

from pathlib import Path

import yaml

from remul_ff.config import Config, config_from_dict
from remul_ff.errors import ConfigError, RemulError
from remul_ff.utils.io import check_output_path

RUN_FILES = ("config.yaml", "log.csv", "checkpoint.pt", "model.pt")
DERIVED_FILES = ("splits.json", "off_equilibrium.xyz")  # reused when present, so stale after --overwrite
RESUME_FIXED_SECTIONS = ("data", "model", "loss", "train")
# How long and where a run trains may change on --resume; the new values apply and config.yaml records
# them. Every other key shapes the optimisation, so a change would be half-applied (the optimiser's
# saved learning rate wins over a new train.lr): those need a new run.
RESUME_CHANGEABLE_KEYS = {"train": {"epochs", "max_minutes", "patience", "device", "num_threads", "checkpoint_every", "tensorboard"}}


def check_output_dir(config: Config, resume: bool, overwrite: bool) -> None:
    """Refuse to start over an existing run unless told to, and to resume a run with another model or data.

    With ``overwrite``, the files that a fresh run would otherwise reuse (splits, cached frames) go.
    """
    out = Path(config.output_dir)
    check_output_path(out, "output_dir", folder=True)
    present = [name for name in RUN_FILES if (out / name).exists()]
    if resume:
        _check_same_run(config, out / "config.yaml")
    elif present and not overwrite:
        raise ConfigError(
            f"{out} already holds a training run ({', '.join(present)}); pass --resume to continue it, "
            "--overwrite to replace it, or set another output_dir."
        )
    elif overwrite:
        for name in RUN_FILES + DERIVED_FILES:
            (out / name).unlink(missing_ok=True)


def _check_same_run(config: Config, saved_path: Path) -> None:
    """``--resume`` continues the saved run: its model and data sections must not have changed."""
    if not saved_path.exists():
        return  # the checkpoint check in Trainer._resume gives the sentence
    saved, now = yaml.safe_load(saved_path.read_text()) or {}, config.to_dict()
    try:  # a run saved before a key was added used that key's default
        saved = config_from_dict(saved).to_dict()
    except RemulError:
        pass  # a key since removed or renamed: compare what was written
    for section in RESUME_FIXED_SECTIONS:
        keys = set(saved.get(section, {})) | set(now[section])
        changed = sorted(
            k for k in keys - RESUME_CHANGEABLE_KEYS.get(section, set()) if saved.get(section, {}).get(k) != now[section].get(k)
        )
        if changed:
            key = changed[0]
            free = sorted(RESUME_CHANGEABLE_KEYS.get(section, ()))
            allowed = f" (only {', '.join(free)} may change)" if free else ""
            raise ConfigError(
                f"cannot resume: {section}.{key} is {now[section].get(key)!r} now but was "
                f"{saved.get(section, {}).get(key)!r} in {saved_path}; resume with the same {section} "
                f"section{allowed}, or start a new run in another output_dir."
            )
