r"""Do two runs give the same numbers? Compares two workdirs' files, wall time aside.

A refactor must not change what a run computes. Run the same config before
and after (two checkouts, two workdirs) and compare::

  python -m experiments.compare_workdirs --a=runs/before --b=runs/after

``metrics.jsonl`` rows are compared per (epoch, member): every metric exactly
and the hyperparameters each member trained with (rows of hpjax < 0.2 nested
the model's structure under ``model``; it is flattened for the comparison);
``lineage.jsonl`` events exactly, in order; ``summary.json``'s best member,
ranking and validation / test metrics. Exit status 0 when everything
matches, 1 otherwise, with the first differences listed.
"""

from __future__ import annotations

from collections.abc import Mapping
import json
import os
import sys
from typing import Any

from absl import app
from absl import flags

_A = flags.DEFINE_string("a", None, "The first workdir.")
_B = flags.DEFINE_string("b", None, "The second workdir.")
flags.mark_flags_as_required(["a", "b"])

_WALL = ("wall_s", "wall_time_s", "member_steps_per_s", "export")


def _flat(hparams: Mapping[str, Any] | None) -> dict[str, Any]:
  out = {}
  for k, v in (hparams or {}).items():
    if isinstance(v, Mapping):
      out.update(v)
    else:
      out[k] = v
  return out


def _rows(workdir: str, name: str) -> list[dict[str, Any]]:
  path = os.path.join(workdir, name)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _normalize(row: Mapping[str, Any]) -> dict[str, Any]:
  row = {k: v for k, v in row.items() if k not in _WALL}
  for key in ("hparams", "old_hparams", "new_hparams"):
    if key in row:
      row[key] = _flat(row[key])
  if "changes" in row:
    row["changes"] = {k: v for k, v in row["changes"].items() if k != "model"}
  return row


def compare(a: str, b: str) -> list[str]:
  """The differences between workdirs ``a`` and ``b`` (empty: the same numbers)."""
  diffs = []
  for name in ("metrics.jsonl", "lineage.jsonl"):
    ra = [_normalize(r) for r in _rows(a, name)]
    rb = [_normalize(r) for r in _rows(b, name)]
    if len(ra) != len(rb):
      diffs.append(f"{name}: {len(ra)} rows vs {len(rb)}")
    for i, (x, y) in enumerate(zip(ra, rb)):
      if x != y:
        keys = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
        diffs.append(
          f"{name} row {i + 1}: "
          + ", ".join(f"{k}: {x.get(k)!r} vs {y.get(k)!r}" for k in keys)[:400]
        )
  sa, sb = (json.load(open(os.path.join(w, "summary.json"))) for w in (a, b))
  for key in ("best_member", "ranking", "val", "test", "members_at_end", "member_epochs", "epochs"):
    if sa.get(key) != sb.get(key):
      diffs.append(f"summary.json {key}: {sa.get(key)!r} vs {sb.get(key)!r}")
  if _flat(sa.get("hyperparameters")) != _flat(sb.get("hyperparameters")):
    diffs.append("summary.json hyperparameters differ")
  return diffs


def main(argv):
  del argv
  diffs = compare(_A.value, _B.value)
  for d in diffs[:20]:
    print(d)
  print(f"{'same numbers' if not diffs else f'{len(diffs)} differences'}: {_A.value} vs {_B.value}")
  return 1 if diffs else 0


if __name__ == "__main__":
  sys.exit(app.run(main))
