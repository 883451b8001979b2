"""``remul-ff learn``: rounds of training, MD, selection and labelling until the MD is stable."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("learn", help="active learning: train, run MD, label where it fails, repeat until stable")
    p.add_argument("spec", help="learn spec (YAML; see examples/learn/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a spec value (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from remul_ff.learn import LearnRun, load_learn_spec

    spec = load_learn_spec(args.spec, args.overrides)
    state = LearnRun(spec, progress=not args.no_progress).run()
    report = json.loads((LearnRun.report_path(spec)).read_text())
    last = report["rounds"][-1]
    rows = ", ".join(f"{t} K: {r['collapses']} collapses in {r['replica_ps']:.0f} replica-ps" for t, r in last["temperatures"].items())
    print(
        f"learn finished ({state['finished']}) after {len(report['rounds'])} round(s), {last['labels_total']} labels; "
        f"last round {rows}; model {spec.output_dir}/round_{last['round']:02d}/model_0/model.pt; report {LearnRun.report_path(spec)}"
    )
