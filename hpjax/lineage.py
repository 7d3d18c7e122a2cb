"""A member's hyperparameter schedule, traced back through PBT's copies.

Under population-based training a member's weights are the product of its
ancestors: after epoch ``E`` a member that copies a donor carries on from the
donor's weights, so everything before ``E`` it "trained with" is the donor's
history. :func:`member_schedule` follows those copies backwards from a final
member and returns, per epoch, the hyperparameters its weights were trained
with; :func:`export_schedule` writes that as JSON, and a run whose config holds
``hparam_schedule`` (see :mod:`hpjax.tuner`) replays it on one fresh model.

File format written by :func:`export_schedule`::

  {"member": 5, "epochs": 10, "fitness": "accuracy",
   "structural": {"batch_size": 16, "width": 16, ...},
   "schedule": [{"epoch": 1, "trained_by": 2, "hparams": {...}}, ...],
   "changes": [{"epoch": 4, "copied_from": 2, "changes": {"learning_rate": [a, b]}}]}

``schedule[k]`` is what epoch ``k + 1`` trained with; ``trained_by`` is the
member whose row that was, ``changes`` lists where the schedule moves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
import json
import os
from typing import Any

from hpjax import hparams as hp_lib

# Keys of a metrics row's "hparams" that are structural: fixed along a lineage,
# because PBT copies only within a structural group. ("model": rows of runs
# logged by hpjax < 0.2, which nested the model's structure.)
STRUCTURAL = hp_lib.STRUCTURAL + ("model",)


def read_jsonl(path: str, warnings: list[str] | None = None) -> list[dict[str, Any]]:
  """The JSON objects of a JSON-lines file, one per line; ``[]`` when the file does not exist.

  The one reader of ``metrics.jsonl`` and ``lineage.jsonl`` (the tuner's resume,
  :mod:`hpjax.results`, :mod:`hpjax.report`). A line that is not a JSON object is
  skipped: a torn last line (a writer killed mid-line) or a damaged one.

  Args:
    path: the file.
    warnings: when given, one line is appended if lines were skipped:
      ``"NAME: skipped the truncated last line N"`` or ``"NAME: skipped K
      unreadable line(s): N, ..."``.

  Raises:
    OSError: the file exists but cannot be read.
  """
  rows: list[dict[str, Any]] = []
  if not os.path.exists(path):
    return rows
  bad, last = [], 0
  with open(path) as f:
    for i, line in enumerate(f, 1):
      if not line.strip():
        continue
      last = i
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        bad.append(i)
        continue
      if isinstance(row, dict):
        rows.append(row)
      else:
        bad.append(i)
  if warnings is not None and bad:
    name = os.path.basename(path)
    if bad == [last]:
      warnings.append(f"{name}: skipped the truncated last line {last}")
    else:
      warnings.append(
        f"{name}: skipped {len(bad)} unreadable line(s): "
        + ", ".join(map(str, bad[:5]))
        + (" ..." if len(bad) > 5 else "")
      )
  return rows


def member_schedule(
  metrics: Iterable[Mapping[str, Any]],
  lineage: Iterable[Mapping[str, Any]],
  member: int,
  last_epoch: int | None = None,
) -> list[dict[str, Any]]:
  """The per-epoch hyperparameters behind ``member``'s weights at ``last_epoch``.

  Args:
    metrics: ``metrics.jsonl`` rows (``epoch``, ``member``, ``hparams``).
    lineage: ``lineage.jsonl`` rows; exploit events have ``target`` and
      ``donor`` (ids stable across a PBT run); others are ignored.
    member: the member id at the end.
    last_epoch: the epoch whose weights are traced (default: the member's
      last row).

  Returns:
    ``[{"epoch": e, "trained_by": m, "hparams": {...}}]`` for ``e = 1 ..
    last_epoch``.

  Raises:
    ValueError: the member has no rows, a row lacks ``hparams`` (a log
      written before schedules were recorded) or the history has a gap.
  """
  rows: dict[tuple[int, int], Mapping[str, Any]] = {}
  for r in metrics:
    rows[(int(r["epoch"]), int(r["member"]))] = r
  own = [e for (e, m) in rows if m == member]
  if not own:
    raise ValueError(f"member: no metrics rows for member {member}")
  last = max(own) if last_epoch is None else int(last_epoch)
  copies: dict[tuple[int, int], int] = {}
  for ev in lineage:
    if "donor" in ev and "target" in ev and int(ev["target"]) != int(ev["donor"]):
      copies[(int(ev["epoch"]), int(ev["target"]))] = int(ev["donor"])
  cur = member
  # A copy made after the last epoch itself means the weights are the donor's.
  cur = copies.get((last, cur), cur)
  out = []
  for epoch in range(last, 0, -1):
    row = rows.get((epoch, cur))
    if row is None:
      raise ValueError(
        f"metrics: no row for member {cur} at epoch {epoch} (tracing member {member})"
      )
    if "hparams" not in row:
      raise ValueError(
        "metrics: rows carry no 'hparams' (a run logged by an older hpjax); "
        "the schedule cannot be traced"
      )
    out.append({"epoch": epoch, "trained_by": cur, "hparams": dict(row["hparams"])})
    cur = copies.get((epoch - 1, cur), cur)
  out.reverse()
  return out


def schedule_changes(schedule: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Where consecutive epochs of a schedule differ: ``[{epoch, copied_from, changes}]``."""
  out = []
  for prev, cur in zip(schedule, schedule[1:]):
    diff = {
      k: [prev["hparams"].get(k), v]
      for k, v in cur["hparams"].items()
      if k not in STRUCTURAL and prev["hparams"].get(k) != v
    }
    if diff or prev["trained_by"] != cur["trained_by"]:
      out.append({"epoch": cur["epoch"], "copied_from": prev["trained_by"], "changes": diff})
  return out


def export_schedule(
  workdir: str,
  member: int,
  path: str | None = None,
  last_epoch: int | None = None,
  fitness: str | None = None,
) -> dict[str, Any]:
  """Traces ``member``'s schedule from a workdir's logs and writes it as JSON.

  Args:
    workdir: a run's workdir (``metrics.jsonl`` and ``lineage.jsonl``).
    member: the member id.
    path: where to write (default ``WORKDIR/best/schedule.json``).
    last_epoch: see :func:`member_schedule`.
    fitness: recorded in the file for the reader.

  Returns:
    The document written.
  """
  metrics = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  lineage = read_jsonl(os.path.join(workdir, "lineage.jsonl"))
  schedule = member_schedule(metrics, lineage, member, last_epoch)
  first = schedule[0]["hparams"]
  doc = {
    "member": int(member),
    "epochs": len(schedule),
    "fitness": fitness,
    "structural": {k: first[k] for k in STRUCTURAL if k in first},
    "schedule": schedule,
    "changes": schedule_changes(schedule),
  }
  path = path or os.path.join(workdir, "best", "schedule.json")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(doc, f, indent=2)
  return doc


def check_schedule(schedule: Any, epochs: int) -> list[dict[str, Any]]:
  """Validates a config's ``hparam_schedule``; returns one hparams dict per epoch.

  Accepts the exported document, its ``schedule`` list, or a list of plain
  hparams dicts. Shorter than ``epochs``: the last entry holds on.

  Raises:
    ValueError: naming ``config.hparam_schedule`` and the problem.
  """
  if isinstance(schedule, Mapping):
    schedule = schedule.get("schedule")
  if not isinstance(schedule, Sequence) or isinstance(schedule, str) or not schedule:
    raise ValueError(
      "config.hparam_schedule: must be a non-empty list of per-epoch "
      "hyperparameters (or an exported schedule document)"
    )
  per_epoch = []
  for k, entry in enumerate(schedule):
    if not isinstance(entry, Mapping):
      raise ValueError(
        f"config.hparam_schedule[{k}]: must be a mapping, got {type(entry).__name__}"
      )
    hp = entry.get("hparams", entry)
    if not isinstance(hp, Mapping):
      raise ValueError(f"config.hparam_schedule[{k}].hparams: must be a mapping")
    per_epoch.append(dict(hp))
  for k, hp in enumerate(per_epoch[1:], 1):
    for name in STRUCTURAL:
      if name in hp and name in per_epoch[0] and hp[name] != per_epoch[0][name]:
        raise ValueError(
          f"config.hparam_schedule[{k}].{name}: structural hyperparameters "
          f"cannot change along a schedule ({per_epoch[0][name]!r} -> {hp[name]!r})"
        )
  while len(per_epoch) < epochs:
    per_epoch.append(per_epoch[-1])
  return per_epoch
