"""``remul-ff evaluate``: accuracy and equivariance of a model on a data file."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from remul_ff.errors import RemulError
from remul_ff.utils.io import check_output_path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="accuracy and equivariance of a trained model on a data file")
    p.add_argument("model", help="model.pt written by remul-ff train")
    p.add_argument("data", help="labelled data file (extxyz, ASE formats, MD17/rMD17 .npz)")
    p.add_argument("--format", default="auto", help="data format (default: detect)")
    p.add_argument("--energy-key", default="energy")
    p.add_argument("--forces-key", default="forces")
    p.add_argument("--index", default=":", help="frames to use, e.g. ':100' (default all)")
    p.add_argument("--rotations", type=int, default=32, help="random rotations K per structure (default 32)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--seed", type=int, default=0, help="seed of the random rotations")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument(
        "--split",
        choices=["train", "valid", "test"],
        default=None,
        help="only the frames of this split of the model's run (splits.json beside model.pt)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    import json

    import torch

    from remul_ff.data.readers import read_structures
    from remul_ff.models.files import MODEL_FILE_KIND, load_file, model_from_payload
    from remul_ff.training.evaluate import evaluate, format_report
    from remul_ff.utils.devices import resolve_device
    from remul_ff.utils.io import atomic_path

    if args.rotations < 0 or args.batch_size < 1:
        raise RemulError(f"--rotations must be 0 or more and --batch-size at least 1 (got {args.rotations} and {args.batch_size}).")
    if args.json:
        check_output_path(args.json, "--json")
    device, dtype = resolve_device(args.device), getattr(torch, args.dtype)
    payload = load_file(args.model, MODEL_FILE_KIND)
    model = model_from_payload(payload, args.model, device, dtype)
    structures = read_structures(args.data, args.format, args.energy_key, args.forces_key, args.index)
    if args.split:
        structures = _split_of_run(structures, args)
    model.elements.check(torch.as_tensor([int(z) for s in structures for z in set(s.numbers)]))
    _warn_unseen_pairs(model.training_domain, structures)
    loss = payload["training_config"].get("loss", {})
    report = evaluate(
        model,
        structures,
        payload["e0s"],
        args.rotations,
        args.batch_size,
        device,
        dtype,
        loss.get("energy_weight", 1.0),
        loss.get("forces_weight", 10.0),
        seed=args.seed,
    )
    print(format_report(report))
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")


def _warn_unseen_pairs(domain: dict[str, float], structures: list) -> None:
    """Warn (as ``md`` and the calculator do) when the data pair elements that never met in training."""
    from remul_ff.data.domain import training_domain
    from remul_ff.integrations import OutOfDomainWarning

    unseen = sorted(set(training_domain(structures)) - set(domain)) if domain else []
    if unseen:
        warnings.warn(
            f"remul-ff: the element pairs {', '.join(unseen)} in these data never occur in the model's training "
            "data; its errors there say nothing about its accuracy on data like its own.",
            OutOfDomainWarning,
            stacklevel=2,
        )


def _split_of_run(structures: list, args: argparse.Namespace) -> list:
    """The frames of ``args.split`` in the ``splits.json`` written beside the model by its training run."""

    from remul_ff.data.splits import load_splits

    path = Path(args.model).parent / "splits.json"
    if args.index != ":":
        raise RemulError("--split and --index both choose frames; pass only one of them.")
    if not path.exists():
        raise RemulError(
            f"--split needs {path}, written by the model's training run; evaluate without --split or give that run's model.pt."
        )
    indices = load_splits(path)[args.split]
    if not indices:
        raise RemulError(f"the {args.split} split in {path} is empty; choose another --split.")
    if max(indices) >= len(structures):
        raise RemulError(
            f"{path} names frames up to {max(indices, default=-1)}, but {args.data} has {len(structures)}: "
            "give the data file the model was trained on."
        )
    return [structures[i] for i in indices]
