"""Reading a workdir: the files a tuning run writes, parsed into a :class:`Run`.

Everything comes from the files :func:`hpjax.tuner.run` writes
(``config.json``, ``run.json``, ``metrics.jsonl``, ``lineage.jsonl`` and,
once the run finished, ``summary.json``). A run that is still going, or was
killed, works too: a line of a ``.jsonl`` file that does not parse (a
truncated last line) is skipped with a note (:func:`hpjax.lineage.read_jsonl`,
the one JSON-lines reader), an epoch whose rows are only partly written is
left out, and the run is ranked as the tuner ranks it by the fitness and mode
``run.json`` records from the run's start.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import json
import math
import os
from typing import Any

import numpy as np

from hpjax import fitness as fitness_lib
from hpjax import lineage as lineage_lib

# Written by hpjax.tuner.write_run_file before a run's first epoch: the
# resolved fitness and its mode (runs of an older hpjax have none).
RUN_FILE = "run.json"


class ReportError(Exception):
  """A workdir cannot be reported on; the message is one line naming the file."""


@dataclasses.dataclass
class Run:
  """The parsed files of one workdir.

  Attributes:
    workdir: the directory.
    config: ``config.json``.
    rows: ``metrics.jsonl`` rows sorted by ``(epoch, member)``; one row per
      pair (a repeated pair keeps the later line); an epoch whose rows are
      only partly written is left out.
    lineage: ``lineage.jsonl`` events (empty when the file is missing).
    summary: ``summary.json``, or None while the run has not finished.
    warnings: what was skipped while reading, one line each.
    ranked: ``run.json``'s ``fitness`` and ``mode`` (what the tuner ranks
      by), or None for a run started by an older hpjax.
  """

  workdir: str
  config: dict[str, Any]
  rows: list[dict[str, Any]]
  lineage: list[dict[str, Any]]
  summary: dict[str, Any] | None
  warnings: list[str] = dataclasses.field(default_factory=list)
  ranked: dict[str, Any] | None = None

  @property
  def fitness(self) -> str:
    """The ranked validation metric (``accuracy``, ``loss``, ``mse``, a user's, ...)."""
    if self.summary and self.summary.get("fitness"):
      return str(self.summary["fitness"])
    if self.ranked:
      return str(self.ranked["fitness"])
    # An older run without run.json: guessed from config.json and the rows.
    name = self.config.get("fitness")
    if name and any(f"val_{name}" in r for r in self.rows):
      return str(name)
    for name in ("accuracy", "mse", "loss"):
      if any(f"val_{name}" in r for r in self.rows):
        return name
    return str(self.config.get("fitness", "accuracy"))

  @property
  def mode(self) -> str:
    """``max`` or ``min``: the fitness's direction (:mod:`hpjax.fitness`)."""
    # A user's metric records its direction (summary.json, run.json, and
    # config.json of a run started by hpjax.tune); a built-in one is known by
    # its name in older runs.
    for source in (self.summary or {}, self.ranked or {}, self.config):
      if source.get("mode") in fitness_lib.MODES and source.get("fitness") == self.fitness:
        return source["mode"]
    try:
      return fitness_lib.direction(self.fitness)
    except ValueError:
      raise ReportError(
        f"{self.workdir}: the direction of fitness {self.fitness!r} (not a built-in "
        f"metric) is not recorded: the run has no {RUN_FILE} (started by an older "
        "hpjax) and no summary.json yet; relaunch it to resume (it then records it)"
      ) from None

  @property
  def maximize(self) -> bool:
    """Whether a larger fitness is better."""
    return self.mode == "max"

  @property
  def epochs_done(self) -> int:
    """The last epoch with complete rows."""
    return max((int(r["epoch"]) for r in self.rows), default=0)

  @property
  def members(self) -> list[int]:
    """Every original member id seen in the rows, ascending."""
    return sorted({int(r["member"]) for r in self.rows})

  @property
  def controller(self) -> str:
    """``none``, ``pbt`` or ``halving``."""
    return str((self.config.get("controller") or {}).get("name", "none"))

  @property
  def is_lr_range(self) -> bool:
    """Whether the run is a learning-rate range test."""
    return bool(self.config.get("lr_range_test")) or bool(
      self.summary and self.summary.get("lr_range")
    )

  @property
  def has_hparams(self) -> bool:
    """Whether the rows record the hyperparameters (older rows do not)."""
    return bool(self.rows) and all(isinstance(r.get("hparams"), Mapping) for r in self.rows)

  @property
  def searched(self) -> dict[str, dict[str, Any]]:
    """The searched dimensions of ``config.space`` (``fixed`` ones left out)."""
    space = self.config.get("space") or {}
    return {
      k: dict(v)
      for k, v in space.items()
      if isinstance(v, Mapping) and v.get("type", "float") != "fixed"
    }

  def series(self, key: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Member id -> ``(epochs, values)`` of one row key (NaN where absent)."""
    out: dict[int, tuple[list[int], list[float]]] = {}
    for r in self.rows:
      e, v = out.setdefault(int(r["member"]), ([], []))
      e.append(int(r["epoch"]))
      v.append(_float(r.get(key)))
    return {m: (np.asarray(e), np.asarray(v, np.float64)) for m, (e, v) in out.items()}

  def last_rows(self) -> dict[int, dict[str, Any]]:
    """Member id -> that member's last row."""
    out = {}
    for r in self.rows:
      out[int(r["member"])] = r
    return out


def _float(v: Any) -> float:
  try:
    return float(v)
  except (TypeError, ValueError):
    return math.nan


def _read_jsonl(path: str, warnings: list[str]) -> list[dict[str, Any]]:
  """:func:`hpjax.lineage.read_jsonl`, skipped lines noted; ReportError when unreadable."""
  try:
    return lineage_lib.read_jsonl(path, warnings)
  except OSError as e:
    raise ReportError(f"{path}: cannot read ({e.strerror})") from None


def _read_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except OSError as e:
    raise ReportError(f"{path}: cannot read ({e.strerror})") from None
  except json.JSONDecodeError as e:
    raise ReportError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def load_run(workdir: str | os.PathLike) -> Run:
  """Parses a workdir.

  Args:
    workdir: a directory written by :func:`hpjax.tuner.run`.

  Returns:
    The :class:`Run`.

  Raises:
    ReportError: one line naming the file, when the directory, ``config.json``
      or ``metrics.jsonl`` is missing or unreadable, or no epoch is complete.
  """
  workdir = os.fspath(workdir)
  if not os.path.isdir(workdir):
    raise ReportError(f"{workdir}: no such directory")
  paths = {
    n: os.path.join(workdir, n)
    for n in ("config.json", "metrics.jsonl", "lineage.jsonl", "summary.json")
  }
  for n in ("config.json", "metrics.jsonl"):
    if not os.path.isfile(paths[n]):
      raise ReportError(
        f"{paths[n]}: missing; is {workdir} a tuning workdir "
        "(python -m experiments.tune ... --workdir=DIR)?"
      )
  config = _read_json(paths["config.json"])
  if not isinstance(config, dict):
    raise ReportError(f"{paths['config.json']}: expected a JSON object")
  warnings: list[str] = []
  raw = _read_jsonl(paths["metrics.jsonl"], warnings)
  raw = [r for r in raw if isinstance(r.get("epoch"), int) and isinstance(r.get("member"), int)]
  lineage = (
    _read_jsonl(paths["lineage.jsonl"], warnings) if os.path.isfile(paths["lineage.jsonl"]) else []
  )
  ranked = _read_ranked(os.path.join(workdir, RUN_FILE), warnings)
  summary = None
  if os.path.isfile(paths["summary.json"]):
    try:
      summary = _read_json(paths["summary.json"])
    except ReportError as e:
      warnings.append(f"summary.json: ignored ({str(e).split(': ', 1)[-1]})")
    if summary is not None and not isinstance(summary, dict):
      warnings.append("summary.json: ignored (not a JSON object)")
      summary = None
  dedup = {(r["epoch"], r["member"]): r for r in raw}
  rows = [dedup[k] for k in sorted(dedup)]
  rows = _complete_epochs(rows, lineage, int(config.get("population", 0) or 0), warnings)
  if not rows:
    raise ReportError(f"{paths['metrics.jsonl']}: no complete epoch recorded yet")
  if summary is not None and int(summary.get("epochs", 0) or 0) < max(r["epoch"] for r in rows):
    warnings.append(
      f"summary.json: ignored (it is for {summary.get('epochs')} epochs; the run "
      "has trained more since)"
    )
    summary = None
  return Run(
    workdir=workdir,
    config=config,
    rows=rows,
    lineage=lineage,
    summary=summary,
    warnings=warnings,
    ranked=ranked,
  )


def _read_ranked(path: str, warnings: list[str]) -> dict[str, Any] | None:
  """``run.json``'s fitness and mode, or None (absent: a run of an older hpjax; damaged: noted)."""
  if not os.path.isfile(path):
    return None
  try:
    doc = _read_json(path)
  except ReportError as e:
    warnings.append(f"{RUN_FILE}: ignored ({str(e).split(': ', 1)[-1]})")
    return None
  if (
    not isinstance(doc, dict)
    or not isinstance(doc.get("fitness"), str)
    or not doc["fitness"]
    or doc.get("mode") not in fitness_lib.MODES
  ):
    warnings.append(f"{RUN_FILE}: ignored (no fitness name and mode max / min)")
    return None
  return {"fitness": doc["fitness"], "mode": doc["mode"]}


def _complete_epochs(
  rows: list[dict[str, Any]], lineage: list[dict[str, Any]], population: int, warnings: list[str]
) -> list[dict[str, Any]]:
  """Drops the last epoch when not every member still training wrote its row."""
  if not rows:
    return rows
  last = max(r["epoch"] for r in rows)
  at_last = {r["member"] for r in rows if r["epoch"] == last}
  if last == 1:
    expected = set(range(population)) if population else at_last
  else:
    expected = {r["member"] for r in rows if r["epoch"] == last - 1}
    expected -= {
      e.get("member") for e in lineage if e.get("event") == "pruned" and e.get("epoch") == last - 1
    }
  if at_last >= expected:
    return rows
  warnings.append(
    f"metrics.jsonl: epoch {last} is incomplete ({len(at_last)} of {len(expected)} rows); left out"
  )
  return [r for r in rows if r["epoch"] != last]
