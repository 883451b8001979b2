"""The comparison report: one Markdown table (models as columns), its JSON, and PNG plots."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from remul_ff.md.analysis import H_R_BINS, H_R_RANGE
from remul_ff.md.engine import default_max_temperature
from remul_ff.utils.io import atomic_path
from remul_ff.utils.plotting import subplots

logger = logging.getLogger(__name__)

ROWS: list[tuple[str, str, str]] = [
    ("Energy MAE (meV)", "energy_mae_meV", "{:.2f}"),
    ("Force MAE (meV/Å)", "forces_mae_meV_A", "{:.2f}"),
    ("Force RMSE (meV/Å)", "forces_rmse_meV_A", "{:.2f}"),
    ("Force equivariance error (relative)", "equi_forces_rel", "{:.2e}"),
    ("Energy equivariance error (relative)", "equi_energy_rel", "{:.2e}"),
    ("Shen et al. loss share from symmetry (%)", "shen_task_percent", "{:.3f}"),
    ("ms per MD step, 1 molecule, float32", "ms_per_step_float32", "{:.2f}"),
    ("ms per MD step, 1 molecule, float64", "ms_per_step_float64", "{:.2f}"),
    ("ms per MD step, all replicas as in the stability runs", "ms_per_step_md_batch", "{:.2f}"),
    ("Stable replicas", "stable_fraction", "{}"),
    ("Replica-ps simulated", "replica_ps", "{:.1f}"),
    ("Collapses", "collapses", "{}"),
    ("Collapses per 1000 replica-ps [exact 95% CI]", "failure_rate", "{}"),
    ("Mean stability time (ps)", "mean_stability_ps", "{:.2f}"),
    ("h(r) MAE", "h_r_mae", "{:.4f}"),
    ("NVE energy drift (meV/atom/ps)", "drift_meV_atom_ps", "{:.3g}"),
    ("Collapses a committee warned of (median lead)", "committee_warned", "{}"),
]
PLOTS = ("h_r.png", "survival.png", "parity.png", "learning_curves.png", "energy_drift.png")
COMMITTEE_PLOT = "committee_warning.png"  # only when a model has a committee


def table(payload: dict) -> dict[str, dict[str, str]]:
    """``{row label: {model: formatted value}}``, the content of the Markdown table."""
    out = {}
    for label, key, fmt in ROWS:
        if key == "committee_warned" and not _has_committee(payload):
            continue
        out[label] = {}
        for name, r in payload["models"].items():
            value = {
                "stable_fraction": f"{r['stable_replicas']}/{len(r['stability_ps'])}",
                "mean_stability_ps": float(np.mean(r["stability_ps"])),
                "failure_rate": _rate_cell(r),
                "committee_warned": _warned_cell(r.get("committee_warning")),
            }.get(key, r.get(key))
            out[label][name] = fmt.format(value) if value is not None else "n/a"
    return out


def _has_committee(payload: dict) -> bool:
    return any("committee_warning" in r for r in payload["models"].values())


def _warned_cell(warning: dict | None) -> str | None:
    if warning is None:
        return None
    lead = warning["median_lead_time_ps"]
    return f"{warning['warned']}/{warning['collapses']}" + (f" ({lead:.2f} ps)" if lead is not None else "")


def committee_lines(payload: dict) -> list[str]:
    """How each model's committee was judged: its members and the alarm threshold."""
    lines = []
    for name, r in payload["models"].items():
        w = r.get("committee_warning")
        if w is None:
            continue
        threshold = (
            (
                f"{w['threshold_eV_A']:.3f} eV/Å (passed by {w['false_alarm_percent']}% of the {w['healthy_frames']} saved "
                "frames of replicas that never collapsed)"
            )
            if w["threshold_eV_A"] is not None
            else "none (every replica collapsed)"
        )
        lines.append(
            f"- {name}: committee {', '.join(w['committee'])}; alarm threshold {threshold}; "
            f"{w['warned']} of {w['collapses']} collapses had a frame above it before the collapse."
        )
    if not lines:
        return []
    return ["## Committee warnings", "", *lines, "", f"![{COMMITTEE_PLOT}]({COMMITTEE_PLOT})", ""]


def _rate_cell(r: dict) -> str | None:
    if "ci95" not in r:
        return None
    low, high = r["ci95"]
    return f"{r['failure_rate_per_1000_replica_ps']:.2f} [{low:.2f}, {high:.2f}]"


def collapse_lines(payload: dict) -> list[str]:
    """One Markdown line per collapse: model, replica, time and the broken bond (or other reason)."""
    lines = []
    for name, r in payload["models"].items():
        for c in r.get("collapse_events", []):
            lines.append(f"- {name}, replica {c['replica']}: {c['time_ps']:.2f} ps, {c['reason']}")
    return ["## Collapses", "", *(lines or ["None."]), ""]


def pooled_lines(payload: dict) -> list[str]:
    """The failure rate of each model over all its ensembles (same model file, other replicas)."""
    pooled = payload.get("pooled") or {}
    if not pooled:
        return []
    lines = [
        "## Pooled ensembles (same model file)",
        "",
        "| model | ensembles | replica-ps | collapses | per 1000 replica-ps [exact 95% CI] |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {', '.join(p['ensembles'])} | {p['replica_ps']:.1f} | {p['collapses']} | {_rate_cell(p)} |"
        for name, p in pooled.items()
    ]
    return lines + [""]


def markdown(payload: dict) -> str:
    """The report's Markdown."""
    cells = table(payload)
    names = list(payload["models"])
    md = payload["spec"]["md"]
    lines = [
        "# remul-ff comparison",
        "",
        f"Command: `{payload.get('command', 'remul-ff compare')}`",
        "",
        *[f"Updated (models added, the others kept as reported) by: `{command}`\n" for command in payload.get("updates", [])],
        f"Data: `{payload['spec']['data']['path']}`. MD: {md['replicas']} replicas x {md['time']} at {md['temperature']} K, "
        f"{md['thermostat']}, {md['timestep_fs']} fs, collapse at {md['bond_tolerance']} Å deviation from the mean bond length "
        f"of the training frames (Fu et al. 2023) "
        f"or above {md.get('max_temperature') or default_max_temperature(md['temperature']):.0f} K, "
        f"{md.get('dtype', 'float64')}{', torch.compile' if md.get('compile') else ''}.",
        "",
        "| | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    own = [
        f"{n}: {m['md_protocol']['replicas']} x {m['md_protocol']['time']}"
        for n, m in payload["models"].items()
        if m.get("md_protocol") and (m["md_protocol"]["replicas"], m["md_protocol"]["time"]) != (md["replicas"], md["time"])
    ]
    if own:
        lines[-2:-2] = [f"Models with their own amount of MD: {'; '.join(own)}.", ""]
    lines += [f"| {label} | " + " | ".join(row[n] for n in names) + " |" for label, row in cells.items()]
    lines += ["", *pooled_lines(payload), *collapse_lines(payload), *committee_lines(payload), *[f"![{p}]({p})" for p in PLOTS], ""]
    return "\n".join(lines)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_all(payload: dict, out: Path) -> None:
    """Write the five PNG plots (and the committee plot when a model has a committee)."""
    models = payload["models"]
    for plot in (_plot_h_r, _plot_survival, _plot_parity, _plot_learning_curves, _plot_drift):
        plot(payload, models, out)
    if _has_committee(payload):
        plot_committee_warnings({n: m["committee_warning"] for n, m in models.items() if "committee_warning" in m}, out / COMMITTEE_PLOT)


def _plot_h_r(payload: dict, models: dict, out: Path) -> None:
    edges = np.linspace(*H_R_RANGE, H_R_BINS + 1)
    r = 0.5 * (edges[1:] + edges[:-1])
    fig, ax = subplots(figsize=(6, 3.5))
    ax.plot(r, payload["reference_h_r"], "k-", lw=2, label="reference data")
    for name, m in models.items():
        ax.plot(r, m["h_r"], label=name)
    ax.set(xlabel="r (Å)", ylabel="h(r)", title="Interatomic distance distribution")
    ax.legend()
    _save(fig, out / "h_r.png")


def _plot_survival(payload: dict, models: dict, out: Path) -> None:
    fig, ax = subplots(figsize=(5, 3.5))
    for name, m in models.items():
        times = np.sort(m["stability_ps"])
        total = max(times) if len(times) else 1.0
        grid = np.linspace(0, total, 200)
        ax.step(grid, [(times >= t).mean() for t in grid], where="post", label=name)
    ax.set(xlabel="time (ps)", ylabel="fraction of stable replicas", ylim=(-0.05, 1.05), title="Survival")
    ax.legend()
    _save(fig, out / "survival.png")


def _plot_parity(payload: dict, models: dict, out: Path) -> None:
    fig, axes = subplots(1, len(models), figsize=(3.5 * len(models), 3.5), squeeze=False)
    for ax, (name, m) in zip(axes[0], models.items()):
        ax.scatter(m["parity_ref"], m["parity_pred"], s=2)
        lim = [min(m["parity_ref"] + [0]), max(m["parity_ref"] + [0])]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set(xlabel="reference force (eV/Å)", ylabel="predicted (eV/Å)", title=name)
    _save(fig, out / "parity.png")


def _plot_learning_curves(payload: dict, models: dict, out: Path) -> None:
    fig, ax = subplots(figsize=(5, 3.5))
    for name, m in models.items():
        curve = m.get("learning_curve") or []
        if curve:
            ax.plot([c["wall_time_s"] / 60 for c in curve], [c["val_forces_mae_meV_A"] for c in curve], label=name)
    ax.set(xlabel="training time (min)", ylabel="validation force MAE (meV/Å)", yscale="log", title="Learning curves")
    ax.legend()
    _save(fig, out / "learning_curves.png")


def _plot_drift(payload: dict, models: dict, out: Path) -> None:
    fig, ax = subplots(figsize=(5, 3.5))
    for name, m in models.items():
        e = np.array(m["nve_e_tot"])
        ax.plot(m["nve_time_ps"], 1e3 * (e - e[0]), label=f"{name} ({m['drift_meV_atom_ps']:.3g} meV/atom/ps)")
    ax.set(xlabel="time (ps)", ylabel="E_tot − E_tot(0) (meV)", title="NVE energy drift")
    ax.legend()
    _save(fig, out / "energy_drift.png")


def plot_committee_warnings(warnings: dict[str, dict], path: Path) -> None:
    """Committee force deviation along every replica (collapsed ones in red), one panel per model."""
    fig, axes = subplots(1, len(warnings), figsize=(6 * len(warnings), 3.5), squeeze=False)
    for ax, (name, w) in zip(axes[0], warnings.items()):
        collapsed = {e["replica"]: e["collapse_ps"] for e in w["events"]}
        for replica, deviations in w["deviations_eV_A"].items():
            times = np.arange(len(deviations)) * w["frame_ps"]
            hit = int(replica) in collapsed
            ax.plot(times, deviations, color="C3" if hit else "0.7", lw=1.2 if hit else 0.5)
        for t in collapsed.values():
            ax.axvline(t, color="C3", ls=":", lw=0.8)
        if w["threshold_eV_A"] is not None:
            ax.axhline(
                w["threshold_eV_A"], color="k", ls="--", lw=0.8, label=f"alarm ({100 - w['false_alarm_percent']}% of healthy frames)"
            )
            ax.legend(fontsize=8)
        ax.set(xlabel="time (ps)", ylabel="committee max force deviation (eV/Å)", yscale="log", title=f"{name} (collapsed: red)")
    _save(fig, path)


def write_report(payload: dict, out: Path) -> None:
    """``report.md``, ``report.json`` (with the table) and the plots, in ``out``."""
    payload = {**payload, "table": table(payload)}
    plot_all(payload, out)
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(payload, indent=1) + "\n")
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(markdown(payload))
    logger.info(markdown(payload).split("\n## Collapses")[0])
