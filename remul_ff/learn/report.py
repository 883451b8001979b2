"""``report.json`` and ``report.png`` of a ``remul-ff learn`` run, rewritten after every stage."""

from __future__ import annotations

import json
from pathlib import Path

from remul_ff.md.analysis import poisson_rate_ci
from remul_ff.utils.io import atomic_path


def temperature_row(chunks: list[dict]) -> dict:
    """Replica-ps, collapses and the rate per 1000 replica-ps with its exact 95% interval."""
    replica_ps = sum(c["replica_ps"] for c in chunks)
    collapses = sum(c["collapses"] for c in chunks)
    row = {"replica_ps": replica_ps, "collapses": collapses}
    if replica_ps > 0:
        low, high = poisson_rate_ci(collapses, replica_ps / 1000)
        row.update(per_1000_replica_ps=1000 * collapses / replica_ps, ci95=[low, high])
    return row


def round_row(entry: dict, labels_before: int) -> dict:
    """One round of the report: labels, CPU hours (and their split), MD per temperature, test accuracy."""
    cpu = entry["cpu_s"]
    return {
        "round": entry["round"],
        "stage": entry["stage"],
        "n_data": entry["n_data"],
        "labels_total": labels_before,
        "labels_added": entry["labels_added"],
        "cpu_hours": sum(cpu.values()) / 3600,
        "cpu_hours_split": {k: v / 3600 for k, v in cpu.items()},
        "temperatures": {t: temperature_row(chunks) for t, chunks in entry["md"].items()},
        "max_deviation_eV_A": entry.get("max_deviation"),
        "selected": entry.get("selected"),
        "test": entry.get("test"),
    }


def build(state: dict, labeller: str, model: str) -> dict:
    """The report of a learn state. ``labels_total`` of a round counts the labels its models trained on."""
    rounds, labels = [], 0
    for entry in state["rounds"]:
        rounds.append(round_row(entry, labels))
        labels += entry["labels_added"]
    return {
        "labeller": labeller,
        "model": model,
        "labeller_check": state["check"],
        "finished": state["finished"],
        "rounds": rounds,
    }


def write(out: Path, state: dict, labeller: str, model: str) -> None:
    """Write ``report.json`` and ``report.png`` in ``out``."""
    report = build(state, labeller, model)
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    if any(r["temperatures"] for r in report["rounds"]):
        plot(report, out / "report.png")


def plot(report: dict, path: Path) -> None:
    """Collapses per 1000 replica-ps (with intervals) and labels, against the round."""
    from remul_ff.utils.plotting import subplots

    fig, (rate_ax, label_ax) = subplots(1, 2, figsize=(9, 3.5))
    temperatures = sorted({t for r in report["rounds"] for t in r["temperatures"]}, key=float)
    for t in temperatures:
        rows = [(r["round"], r["temperatures"][t]) for r in report["rounds"] if "ci95" in r["temperatures"].get(t, {})]
        x = [n for n, _ in rows]
        y = [row["per_1000_replica_ps"] for _, row in rows]
        err = [[v - row["ci95"][0] for v, (_, row) in zip(y, rows)], [row["ci95"][1] - v for v, (_, row) in zip(y, rows)]]
        rate_ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=f"{t} K")
    rate_ax.set(xlabel="round", ylabel="collapses per 1000 replica-ps", title="MD stability")
    rate_ax.legend()
    label_ax.plot([r["round"] for r in report["rounds"]], [r["labels_total"] for r in report["rounds"]], marker="o")
    label_ax.set(xlabel="round", ylabel="labels trained on", title=report["labeller"])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
