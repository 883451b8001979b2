"""``remul-ff compare spec.yaml``: train (or load) several potentials on the same data and compare
accuracy, equivariance, speed, MD stability and energy drift side by side.

Re-running a spec after an interruption continues where it stopped: training resumes from its
checkpoint and MD from its restart files, so the 300 ps protocol can span several jobs.

A spec::

    output_dir: reports/ethanol
    data: {path: ..., e0s: ..., train: 950, valid: 50}        # DataConfig, shared by all models
    train: {max_minutes: 30, epochs: 1000}                      # TrainConfig, the same budget for all
    models:                                                     # name -> overrides (or model_path)
      remul: {model: {kind: transformer}, loss: {mode: remul}, md: {time: 50ps}}   # md: this model's own MD
      egnn:  {model: {kind: egnn}, loss: {mode: none}}
      other: {model_path: runs/other/model.pt, committee: [a/model.pt, b/model.pt]}   # see below
    md: {temperature: 500, timestep_fs: 0.5, time: 300ps, replicas: 5}   # Fu et al. 2023 defaults

A model's ``committee`` (two or more model files) is evaluated on that model's saved MD frames:
the report says how many of its collapses the committee's force deviation warned of, and how early
(:func:`~remul_ff.md.analysis.committee_warnings`).

Writes ``report.md`` (one table, models as columns), ``report.json`` (every number in the table
and the curves behind the plots) and PNG plots into ``output_dir``.
"""

from remul_ff.compare.run import (
    SharedInputs,
    _saved_frame_collapse,
    compare_one,
    pooled_ensembles,
    run_compare,
    run_long_stages,
    update_report,
)
from remul_ff.compare.spec import (
    DEFAULT_MODELS,
    MODEL_ENTRY_KEYS,
    CompareSpec,
    MDProtocol,
    load_spec,
    model_config,
    model_spec,
    stability_settings,
)

__all__ = [
    "DEFAULT_MODELS",
    "MODEL_ENTRY_KEYS",
    "CompareSpec",
    "MDProtocol",
    "SharedInputs",
    "_saved_frame_collapse",
    "compare_one",
    "load_spec",
    "model_config",
    "model_spec",
    "pooled_ensembles",
    "run_compare",
    "run_long_stages",
    "stability_settings",
    "update_report",
]
