"""The scaling report: fits per family, compute-optimal sizes, REMUL vs augmentation, and plots.

Written to the sweep's ``output_dir``: ``fits.json``, ``report.md``, ``loss_vs_flops.png``,
``rotation_vs_flops.png``, ``pareto.png``, and ``speed.json`` (ms per ASE MD step of each model
size and ms per training step of each family and size, measured once on a quiet machine and
reused: the sweep's own wall times depend on what else shared the machine).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import matplotlib
import numpy as np

from remul_ff.errors import ConfigError
from remul_ff.scaling.fit import bootstrap_fits, crossings, fit_power_law, interval, probability_below
from remul_ff.scaling.measure import step_seconds
from remul_ff.scaling.sweep import RESULTS_FILE, ScalingSpec, point_config, read_rows, run_dir, sweep_points
from remul_ff.training.step import keeping_thread_count
from remul_ff.training.trainer import Trainer
from remul_ff.utils.io import atomic_path
from remul_ff.utils.plotting import subplots

SPEED_FILE = "speed.json"
COMPARISONS = [
    ("remul_label", "augment"),
    ("remul_prediction", "augment"),
    ("remul_label", "none"),
    ("augment", "none"),
    ("augment", "egnn"),
    ("remul_label", "egnn"),
]


def frontier(rows: list[dict], family: str, device: str) -> tuple[np.ndarray, np.ndarray]:
    """The compute-optimal points of ``family``: every logged point (any size, budget or epoch)
    whose force MAE is lower than that of every point with less compute (Hoffmann et al.'s approach 1)."""
    picked = sorted((r for r in rows if r["family"] == family and r["device"] == device), key=lambda r: r["flops"])
    flops, loss, best = [], [], np.inf
    for r in picked:
        if r["force_mae"] < best:
            best = r["force_mae"]
            flops.append(r["flops"])
            loss.append(best)
    return np.array(flops, dtype=float), np.array(loss, dtype=float)


def family_fit(flops: np.ndarray, loss: np.ndarray) -> dict:
    """The fit of one family with bootstrap 95% intervals of its parameters."""
    law = fit_power_law(flops, loss)
    boot = bootstrap_fits(flops, loss)
    return {
        "a": law.a,
        "b": law.b,
        "c": law.c,
        "points": len(flops),
        "frontier_flops": flops.tolist(),
        "frontier_loss": loss.tolist(),
        "b_ci95": interval([f.b for f in boot]),
        "c_ci95": interval([f.c for f in boot]),
        "flops_range": [float(flops.min()), float(flops.max())],
        "_law": law,
        "_boot": boot,
    }


def compute_optimal(rows: list[dict], family: str, device: str, levels: np.ndarray) -> list[dict]:
    """At each compute level, the size (and run) with the lowest loss reached within that compute,
    counting the validation points along the way of every run."""
    picked = [r for r in rows if r["family"] == family and r["device"] == device]
    out = []
    for level in levels:
        within = [r for r in picked if r["flops"] <= level * (1 + 1e-9)]
        best = min(within, key=lambda r: r["force_mae"]) if within else None
        out.append(
            best
            and {
                "flops": float(level),
                "size": best["size"],
                "budget_epochs": best["budget_epochs"],
                "epoch": best["epoch"],
                "force_mae": best["force_mae"],
            }
        )
    return out


def compare_families(fits: dict) -> list[dict]:
    """For each pair of families: where the fits cross, and P(A below B), over the compute both cover."""
    out = []
    for a, b in COMPARISONS:
        if a not in fits or b not in fits:
            continue
        low = max(fits[a]["flops_range"][0], fits[b]["flops_range"][0])
        high = min(fits[a]["flops_range"][1], fits[b]["flops_range"][1])
        if low < high:
            grid = np.geomspace(low, high, 200)
            out.append(
                {
                    "a": a,
                    "b": b,
                    "crossings_flops": crossings(fits[a]["_law"], fits[b]["_law"], grid),
                    "flops": grid.tolist(),
                    "a_minus_b_meV_A": (fits[a]["_law"](grid) - fits[b]["_law"](grid)).tolist(),
                    "p_a_below_b": probability_below(fits[a]["_boot"], fits[b]["_boot"], grid).tolist(),
                }
            )
    return out


def measure_speed(spec: ScalingSpec, structure) -> dict:
    """MD ms per step of each (kind, size), training ms per step of each (family, size), steps per epoch."""
    with keeping_thread_count():  # MD is timed with the caller's threads, not train.num_threads
        train_ms, steps_per_epoch = measure_training_speed(spec)
    return {"md_ms_per_step": measure_md_speed(spec, structure), "train_ms_per_step": train_ms, "steps_per_epoch": steps_per_epoch}


def measure_training_speed(spec: ScalingSpec) -> tuple[dict, int]:
    """Median ms per training step of each (family, size) on a fresh model (shapes, not weights, set
    the time), taken here on a quiet machine: the sweep's own times depend on what else ran."""
    import math
    import tempfile

    out, steps = {}, 0
    for point in (p for p in sweep_points(spec) if p.budget == min(spec.budgets)):
        config = point_config(spec, point)
        with tempfile.TemporaryDirectory() as folder:
            config.output_dir = folder
            trainer = Trainer(config, progress=False)
            trainer.setup(overwrite=True)
            out[f"{point.family}/{point.size}"] = 1e3 * step_seconds(trainer, trainer.data.train[: config.train.batch_size])
            steps = math.ceil(len(trainer.data.train) / config.train.batch_size)
    return out, steps


def measure_md_speed(spec: ScalingSpec, structure, steps: int = 200) -> dict:
    """ms per ASE velocity-Verlet step (float32, one molecule) of each (kind, size), from any of its runs."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from remul_ff.integrations import REMULCalculator

    speed = {}
    for point in sweep_points(spec):
        key = f"{_kind(spec, point.family)}/{point.size}"
        model = run_dir(spec, point) / "model.pt"
        if key in speed or not model.exists():
            continue
        atoms = structure.copy()
        atoms.calc = REMULCalculator(model, default_dtype="float32")
        dyn = VelocityVerlet(atoms, 0.5 * units.fs)
        dyn.run(10)
        start = time.perf_counter()
        dyn.run(steps)
        speed[key] = 1e3 * (time.perf_counter() - start) / steps
    return speed


def trained_sizes(spec: ScalingSpec) -> set[str]:
    """``kind/size`` of every model size with at least one trained model file."""
    return {f"{_kind(spec, p.family)}/{p.size}" for p in sweep_points(spec) if (run_dir(spec, p) / "model.pt").exists()}


def _kind(spec: ScalingSpec, family: str) -> str:
    return (spec.families[family].get("model") or {}).get("kind", "transformer")


def load_or_measure_speed(spec: ScalingSpec, structure) -> dict:
    path = Path(spec.output_dir) / SPEED_FILE
    if path.exists():
        speed = json.loads(path.read_text())
        if {"md_ms_per_step", "train_ms_per_step", "steps_per_epoch"} <= set(speed) and trained_sizes(spec) <= set(speed["md_ms_per_step"]):
            return speed  # delete the file to measure again (on a quiet machine)
    speed = measure_speed(spec, structure)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(speed, indent=1) + "\n")
    return speed


def build_report(spec: ScalingSpec, speed: dict, device: str = "cpu") -> dict:
    """Everything the report shows, from the results file."""
    rows = read_rows(spec)
    families = [f for f in spec.families if len(frontier(rows, f, device)[0]) >= 2]
    fits = {f: family_fit(*frontier(rows, f, device)) for f in families}
    all_flops = np.array([r["flops"] for r in rows if r["device"] == device])
    levels = np.geomspace(all_flops.min(), all_flops.max(), 6) if len(all_flops) else np.zeros(0)
    return {
        "device": device,
        "rows": len(rows),
        "fits": fits,
        "compute_levels": levels.tolist(),
        "compute_optimal": {f: compute_optimal(rows, f, device, levels) for f in families},
        "comparisons": compare_families(fits),
        "speed": speed,
        "reference": spec.reference,
        "finals": {
            f: [with_quiet_time(r, speed) for r in rows if r["family"] == f and r["final"] and r["device"] == device] for f in families
        },
        "curves": [r for r in rows if r["device"] == device],
    }


def with_quiet_time(row: dict, speed: dict) -> dict:
    """``row`` plus ``quiet_train_s``: its training steps at the step time measured on a quiet machine."""
    ms = speed["train_ms_per_step"].get(f"{row['family']}/{row['size']}")
    quiet = None if ms is None else row["epoch"] * speed["steps_per_epoch"] * ms / 1e3
    return {**row, "quiet_train_s": quiet}


def _public(report: dict) -> dict:
    """The report without the fit objects (for JSON)."""
    fits = {f: {k: v for k, v in fit.items() if not k.startswith("_")} for f, fit in report["fits"].items()}
    return {**{k: v for k, v in report.items() if k not in ("fits", "curves")}, "fits": fits}


def write_scaling_report(spec: ScalingSpec, command: str, structure, device: str = "cpu") -> dict:
    """Fits, tables and plots of the sweep so far, written to ``spec.output_dir``."""
    out = Path(spec.output_dir)
    if not any(r["final"] and r["device"] == device for r in read_rows(spec)):
        raise ConfigError(f"no finished {device} point in {out / RESULTS_FILE} yet; run the sweep (without --report-only) first.")
    report = build_report(spec, load_or_measure_speed(spec, structure), device)
    public = {"command": command, **_public(report)}
    plot_loss(report, spec, out / "loss_vs_flops.png")
    plot_rotation(report, spec, out / "rotation_vs_flops.png")
    plot_pareto(report, spec, out / "pareto.png")
    with atomic_path(out / "fits.json") as tmp:
        tmp.write_text(json.dumps(public, indent=1) + "\n")
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(markdown(public, spec))
    return public


# -- plots -------------------------------------------------------------------------------------


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _colours(spec: ScalingSpec) -> dict:
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    return {f: cycle[k % len(cycle)] for k, f in enumerate(spec.families)}


def plot_loss(report: dict, spec: ScalingSpec, path: Path) -> None:
    """Force MAE vs FLOPs (log-log): learning curves faint, annealed runs as dots, fits as lines."""
    colours = _colours(spec)
    fig, ax = subplots(figsize=(6.5, 4.5))
    for family, fit in report["fits"].items():
        for run in {(r["size"], r["budget_epochs"]) for r in report["curves"] if r["family"] == family}:
            curve = sorted(
                (r for r in report["curves"] if r["family"] == family and (r["size"], r["budget_epochs"]) == run), key=lambda r: r["flops"]
            )
            ax.plot([r["flops"] for r in curve], [r["force_mae"] for r in curve], color=colours[family], alpha=0.15, lw=0.8)
        finals = report["finals"][family]
        ax.scatter([r["flops"] for r in finals], [r["force_mae"] for r in finals], color=colours[family], s=14, zorder=3, facecolors="none")
        ax.scatter(fit["frontier_flops"], fit["frontier_loss"], color=colours[family], s=8, zorder=3)
        grid = np.geomspace(*fit["flops_range"], 50)
        ax.plot(grid, fit["_law"](grid), color=colours[family], label=f"{family}: b={fit['b']:.2f}")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="training compute (FLOPs)",
        ylabel="validation force MAE (meV/Å)",
        title="Loss vs compute (circles: annealed runs; dots: frontier; lines: fits)",
    )
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_rotation(report: dict, spec: ScalingSpec, path: Path) -> None:
    """Relative rotational force error vs FLOPs (annealed runs)."""
    colours = _colours(spec)
    fig, ax = subplots(figsize=(6, 4))
    for family, finals in report["finals"].items():
        points = [(r["flops"], r["rotation_error"]) for r in finals if r["rotation_error"]]
        if points:
            ax.scatter(*zip(*points), color=colours[family], s=14, label=family)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="training compute (FLOPs)",
        ylabel="relative rotational force error",
        title="Equivariance error vs compute",
    )
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_pareto(report: dict, spec: ScalingSpec, path: Path) -> None:
    """Force MAE of the largest-budget run of each size vs ms per ASE MD step."""
    colours = _colours(spec)
    fig, ax = subplots(figsize=(6, 4))
    for family, finals in report["finals"].items():
        top = max(spec.budgets)
        points = [
            (report["speed"]["md_ms_per_step"].get(f"{r['kind']}/{r['size']}"), r["force_mae"], r["size"])
            for r in finals
            if r["budget_epochs"] == top
        ]
        points = [p for p in points if p[0]]
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", color=colours[family], label=family, ms=4)
    ref = spec.reference
    if ref:
        ax.scatter([ref["ms_per_step"]], [ref["force_mae"]], marker="*", s=120, color="k", label=ref.get("name", "reference"))
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="ms per MD step (ASE, 1 molecule, float32)",
        ylabel="validation force MAE (meV/Å)",
        title="Accuracy vs speed",
    )
    ax.legend(fontsize=8)
    _save(fig, path)


# -- markdown ----------------------------------------------------------------------------------


def markdown(public: dict, spec: ScalingSpec) -> str:
    """``report.md``: the command, fits, compute-optimal sizes, comparisons, speed."""
    lines = [
        f"Command: `{public['command']}`",
        "",
        f"Data: `{spec.data.path}`; budgets {spec.budgets} epochs; device {public['device']}.",
        "",
        "## Fits: force MAE (meV/Å) = a·C^(−b) + c on each family's compute-optimal frontier (95% bootstrap intervals)",
        "",
        "| family | points | FLOPs covered | b | c (meV/Å) |",
        "|---|---|---|---|---|",
    ]
    for family, fit in public["fits"].items():
        lo, hi = fit["flops_range"]
        lines.append(
            f"| {family} | {fit['points']} | {lo:.2e} – {hi:.2e} | {fit['b']:.3f} [{fit['b_ci95'][0]:.3f}, {fit['b_ci95'][1]:.3f}] "
            f"| {fit['c']:.2f} [{fit['c_ci95'][0]:.2f}, {fit['c_ci95'][1]:.2f}] |"
        )
    lines += ["", "## Annealed runs (force MAE, meV/Å; rotational error)", ""] + _finals_table(public)
    lines += [
        "",
        "## Compute-optimal size (lowest force MAE reached within each compute: size, epoch of the run with that budget, MAE)",
        "",
    ] + _optimal_table(public)
    lines += ["", "## Pairwise: fitted difference A − B (meV/Å) and P(A below B) over bootstrap fits", ""] + _comparison_table(public)
    lines += ["", "## Speed (ms per ASE MD step, 1 molecule, float32)", "", "| model | ms/step |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in public["speed"]["md_ms_per_step"].items()]
    if public["reference"]:
        ref = public["reference"]
        lines += [f"| {ref.get('name')} (reference: {ref.get('note', '')}) | {ref['ms_per_step']:.2f} |"]
    return "\n".join(lines) + "\n"


def _finals_table(public: dict) -> list[str]:
    lines = [
        "| family | size | epochs | params | GFLOPs | train s (as run) | train s (quiet) | force MAE | energy MAE (meV) | rot. error |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for family, finals in public["finals"].items():
        for r in sorted(finals, key=lambda r: r["flops"]):
            rot = f"{r['rotation_error']:.2e}" if r["rotation_error"] else "n/a"
            quiet = f"{r['quiet_train_s']:.1f}" if r["quiet_train_s"] is not None else "n/a"
            lines.append(
                f"| {family} | {r['size']} | {r['budget_epochs']} | {r['params']} | {r['flops'] / 1e9:.3g} | {r['wall_s']:.1f} | {quiet} "
                f"| {r['force_mae']:.2f} | {r['energy_mae']:.2f} | {rot} |"
            )
    return lines


def _optimal_table(public: dict) -> list[str]:
    families = list(public["compute_optimal"])
    levels = public["compute_levels"]
    lines = ["| FLOPs | " + " | ".join(families) + " |", "|---" * (len(families) + 1) + "|"]
    for k, level in enumerate(levels):
        cells = []
        for f in families:
            p = public["compute_optimal"][f][k]
            cells.append(f"{p['size']}, epoch {p['epoch']} of {p['budget_epochs']} ({p['force_mae']:.1f})" if p else "–")
        lines.append(f"| {level:.2e} | " + " | ".join(cells) + " |")
    return lines


def _comparison_table(public: dict) -> list[str]:
    lines = ["| A vs B | fits cross at (FLOPs) | A − B at low / mid / high compute | P(A below B) low / mid / high |", "|---|---|---|---|"]
    for c in public["comparisons"]:
        n = len(c["flops"])
        picks = [0, n // 2, n - 1]
        cross = ", ".join(f"{x:.2e}" for x in c["crossings_flops"]) or "no crossing in range"
        diffs = " / ".join(f"{c['a_minus_b_meV_A'][k]:+.2f}" for k in picks)
        probs = " / ".join(f"{c['p_a_below_b'][k]:.2f}" for k in picks)
        lines.append(f"| {c['a']} vs {c['b']} | {cross} | {diffs} | {probs} |")
    return lines
