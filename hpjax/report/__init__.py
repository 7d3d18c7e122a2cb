"""Plots and a summary table of a tuning run, rebuilt from its workdir alone.

Nothing is retrained or re-evaluated: everything comes from the files
:func:`hpjax.tuner.run` writes (``config.json``, ``metrics.jsonl``,
``lineage.jsonl`` and, once the run finished, ``summary.json``), finished or
not. :func:`build_report` writes PNGs into ``WORKDIR/plots/``,
``WORKDIR/report.json`` (``summary.json`` is never touched) and returns the
text table. The pieces, each usable alone:

* :mod:`hpjax.report.load`: :func:`load_run` parses a workdir into a
  :class:`Run`; :class:`ReportError` is one line naming the file.
* :mod:`hpjax.report.summary`: :func:`ranking` (best first, by
  :mod:`hpjax.fitness`), :func:`summarize` (what ``report.json`` holds),
  :func:`hparam_value`.
* :mod:`hpjax.report.table`: :func:`format_table`, the text report.
* :mod:`hpjax.report.plots`: :func:`make_plots` and one ``plot_*`` function
  per PNG of :data:`PLOT_NAMES` (which are drawn when is said there).
"""

from __future__ import annotations

import json
import os
from typing import Any

from hpjax.report.load import load_run
from hpjax.report.load import ReportError
from hpjax.report.load import Run
from hpjax.report.plots import make_plots
from hpjax.report.plots import plot_fitness_vs_hparams
from hpjax.report.plots import plot_hparam_trajectories
from hpjax.report.plots import plot_learning_curves
from hpjax.report.plots import plot_lineage
from hpjax.report.plots import plot_lr_range
from hpjax.report.plots import PLOT_NAMES
from hpjax.report.plots import plot_parallel_coordinates
from hpjax.report.summary import hparam_value
from hpjax.report.summary import ranking
from hpjax.report.summary import summarize
from hpjax.report.table import format_table

__all__ = [
  "PLOT_NAMES",
  "ReportError",
  "Run",
  "build_report",
  "format_table",
  "hparam_value",
  "load_run",
  "make_plots",
  "plot_fitness_vs_hparams",
  "plot_hparam_trajectories",
  "plot_learning_curves",
  "plot_lineage",
  "plot_lr_range",
  "plot_parallel_coordinates",
  "ranking",
  "summarize",
]


def build_report(workdir: str | os.PathLike) -> dict[str, Any]:
  """Rebuilds plots, ``report.json`` and the table of a workdir (no training).

  Args:
    workdir: a directory written by :func:`hpjax.tuner.run`, finished or not.

  Returns:
    ``{"plots": [paths], "summary": summarize's dict, "table": text,
    "report_json": path}``.

  Raises:
    ReportError: one line, when the workdir cannot be read or written.
  """
  run = load_run(workdir)
  summary = summarize(run)
  plots = make_plots(run, os.path.join(run.workdir, "plots"), best=summary["best_member"])
  summary["plots"] = [os.path.relpath(p, run.workdir) for p in plots]
  path = os.path.join(run.workdir, "report.json")
  try:
    with open(path, "w") as f:
      json.dump(summary, f, indent=2)
  except OSError as e:
    raise ReportError(f"{path}: cannot write ({e.strerror})") from None
  return {"plots": plots, "summary": summary, "table": format_table(summary), "report_json": path}
