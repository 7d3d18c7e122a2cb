"""What a run found: the ranking of its members and the summary of :mod:`hpjax.report`.

The best member is the one with the best validation fitness at the last
recorded epoch (``max`` for accuracy, ``min`` for loss-like metrics, from
:mod:`hpjax.fitness`; NaN ranks last; ties go to the lower member id). Members
pruned earlier rank after the ones still training, later prunings first.
A learning-rate range test's analysis comes from ``summary.json`` or, while
the run has none, is recomputed from ``metrics.jsonl``.
"""

from __future__ import annotations

from collections.abc import Mapping
import math
import os
from typing import Any

import numpy as np

from hpjax import fitness as fitness_lib
from hpjax.report.load import _float
from hpjax.report.load import Run


def ranking(run: Run) -> list[int]:
  """Member ids, best first.

  Members with a row at the last recorded epoch come first, by fitness there
  (NaN last, ties to the lower id); members that stopped earlier (pruned by
  successive halving) follow, the later-stopped first, each group by fitness.
  """
  key = f"val_{run.fitness}"
  last = run.last_rows()
  members = list(last)
  fit = fitness_lib.sort_key([_float(last[m].get(key)) for m in members], run.mode)
  order = dict(zip(members, fit.tolist()))
  return sorted(members, key=lambda m: (-int(last[m]["epoch"]), order[m], m))


def hparam_value(hparams: Mapping[str, Any] | None, name: str) -> Any:
  """A hyperparameter from a row's ``hparams`` (structural ones sit under ``model``)."""
  if not isinstance(hparams, Mapping):
    return None
  if name in hparams:
    return hparams[name]
  model = hparams.get("model")
  if isinstance(model, Mapping):
    return model.get(name)
  return None


def _clean(v: Any) -> Any:
  """JSON-safe copy: NaN / inf become None."""
  if isinstance(v, float):
    return v if math.isfinite(v) else None
  if isinstance(v, Mapping):
    return {str(k): _clean(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [_clean(x) for x in v]
  if isinstance(v, np.generic):
    return _clean(v.item())
  return v


def _val_metrics(row: Mapping[str, Any], first: str) -> dict[str, float]:
  vals = {k[4:]: _float(v) for k, v in row.items() if k.startswith("val_")}
  return dict(sorted(vals.items(), key=lambda kv: kv[0] != first))


def _lr_range_result(run: Run) -> dict[str, Any] | None:
  """The range-test analysis: ``summary.json``'s, or recomputed from the rows."""
  if not run.is_lr_range:
    return None
  if run.summary and run.summary.get("lr_range"):
    return dict(run.summary["lr_range"], source="summary.json")
  if not run.has_hparams:
    return None
  from hpjax.controllers import lr_range  # pylint: disable=g-import-not-at-top

  curves = run.series("val_loss")
  last = run.last_rows()
  members = sorted(curves)
  rates = np.array([_float(hparam_value(last[m]["hparams"], "learning_rate")) for m in members])
  n_points = min(len(curves[m][1]) for m in members)
  out: dict[str, Any] = {"rates": sorted(rates.tolist()), "source": "metrics.jsonl"}
  if n_points < 2 or len(members) < 2:
    out["description"] = "too few epochs recorded to analyse the range test"
    return out
  losses = np.stack([curves[m][1][:n_points] for m in members])
  try:
    result = lr_range.analyse(rates, losses)
  except ValueError as e:
    out["description"] = f"cannot analyse: {e}"
    return out
  return {
    "rates": result.rates.tolist(),
    "final_losses": result.losses.tolist(),
    "slopes": result.slopes.tolist(),
    "diverged": result.diverged.tolist(),
    "best_rate": result.best_rate,
    "suggested_range": [float(v) for v in result.suggested_range],
    "description": lr_range.describe(result) + " (from epoch 1 on: the loss before "
    "training is only in summary.json)",
    "source": "metrics.jsonl",
  }


def _speed(run: Run) -> tuple[float | None, float | None]:
  """The run's wall time (summary.json's, else the latest row's) and member steps per second."""
  finished = run.summary is not None
  walls = [_float(r.get("wall_s")) for r in run.rows]
  walls = [w for w in walls if math.isfinite(w)]
  wall = (
    _float(run.summary.get("wall_time_s"))
    if finished and "wall_time_s" in run.summary
    else (max(walls) if walls else None)
  )
  steps_per_s = (
    _float(run.summary.get("member_steps_per_s"))
    if finished and "member_steps_per_s" in run.summary
    else None
  )
  return wall, steps_per_s


def _best_from_summary(run: Run, best: int, brow: Mapping[str, Any]) -> tuple[Any, Any, list[str]]:
  """The best member's hyperparameters and test metrics, and the run's warnings.

  Its last row's hyperparameters, else summary.json's when it names the same
  member best; test metrics only from summary.json, for that same member (a
  warning otherwise).
  """
  finished = run.summary is not None
  hps = brow.get("hparams") if isinstance(brow.get("hparams"), Mapping) else None
  if hps is None and finished and int(run.summary.get("best_member", -1)) == best:
    hps = run.summary.get("hyperparameters")
  test = None
  warnings = list(run.warnings)
  if finished and "test" in run.summary:
    if int(run.summary.get("best_member", -1)) == best:
      test = run.summary["test"]
    else:
      warnings.append(
        f"summary.json names member {run.summary.get('best_member')} best "
        f"(ranked after the final controller step); its test metrics are not "
        f"shown for member {best}"
      )
  return hps, test, warnings


def summarize(run: Run) -> dict[str, Any]:
  """What the run found, as a JSON-ready dict (NaN becomes None).

  Keys: ``workdir``, ``status`` (``finished`` / ``partial``), ``epochs_done``,
  ``epochs``, ``controller``, ``fitness``, ``mode``, ``members``,
  ``best_member``, ``best_epoch``, ``hyperparameters``, ``val``, ``test``
  (only from a finished run's ``summary.json``, for the same best member),
  ``member_epochs``, ``wall_time_s``, ``member_steps_per_s``,
  ``member_epochs_per_s``, ``ranking`` (``[{member, epoch, fitness,
  hparams}]`` best first, ``hparams`` the searched ones), ``searched``,
  ``exploit_events``, ``pruned``, ``lr_range``, ``warnings`` and, for a
  finished run, ``summary_best_member`` (``summary.json``'s pick, which the
  tuner makes after the final controller step; it may differ on a tie).

  Args:
    run: from :func:`load_run`.

  Returns:
    The dict (also what ``report.json`` holds).
  """
  order = ranking(run)
  last = run.last_rows()
  best = order[0]
  brow = last[best]
  key = f"val_{run.fitness}"
  finished = run.summary is not None
  epochs_total = max(
    int(run.config.get("epochs", 0) or 0),
    run.epochs_done,
    int((run.summary or {}).get("epochs", 0) or 0),
  )
  wall, steps_per_s = _speed(run)
  searched = list(run.searched)
  hps, test, warnings = _best_from_summary(run, best, brow)
  out = {
    "workdir": os.path.abspath(run.workdir),
    "status": "finished" if finished else "partial",
    "epochs_done": run.epochs_done,
    "epochs": epochs_total,
    "controller": run.controller,
    "fitness": run.fitness,
    "mode": run.mode,
    "members": len(run.members),
    "best_member": best,
    "best_epoch": int(brow["epoch"]),
    "hyperparameters": hps,
    "val": _val_metrics(brow, run.fitness),
    "test": test,
    "member_epochs": len(run.rows),
    "wall_time_s": wall,
    "member_steps_per_s": steps_per_s,
    "member_epochs_per_s": (len(run.rows) / wall) if wall else None,
    "ranking": [
      {
        "member": m,
        "epoch": int(last[m]["epoch"]),
        "fitness": _float(last[m].get(key)),
        "hparams": {n: hparam_value(last[m].get("hparams"), n) for n in searched},
      }
      for m in order
    ],
    "searched": searched,
    "exploit_events": sum(1 for e in run.lineage if "donor" in e and "target" in e),
    "pruned": sum(1 for e in run.lineage if e.get("event") == "pruned"),
    "lr_range": _lr_range_result(run),
    "warnings": warnings,
  }
  if finished and "best_member" in run.summary:
    out["summary_best_member"] = int(run.summary["best_member"])
  return _clean(out)
