"""The plain-text report of a run: :func:`format_table` of :func:`hpjax.report.summarize`'s dict."""

from __future__ import annotations

from collections.abc import Mapping
import math
from typing import Any


def _fmt(v: Any) -> str:
  if v is None:
    return "-"
  if isinstance(v, bool):
    return str(v)
  if isinstance(v, float):
    if not math.isfinite(v):
      return str(v)
    return f"{v:.4f}" if 1e-3 <= abs(v) < 1e4 or v == 0 else f"{v:.3g}"
  return str(v)


def _hp_fmt(v: Any) -> str:
  if isinstance(v, float) and not isinstance(v, bool):
    return f"{v:.3g}"
  return _fmt(v)


def format_table(summary: Mapping[str, Any], top: int = 10) -> str:
  """A plain-text report of :func:`summarize`'s dict.

  Args:
    summary: from :func:`summarize` (or ``report.json``).
    top: ranked members listed.

  Returns:
    Multi-line text: status, a ranking table, the best member's metrics.
  """
  s = summary
  if s["status"] == "finished":
    status = f"finished, {s['epochs_done']} epochs"
  else:
    status = f"partial, {s['epochs_done']}/{s['epochs']} epochs (no summary.json yet)"
  lines = [
    f"run {s['workdir']}: {status}; controller {s['controller']}; {s['members']} members; "
    f"fitness val {s['fitness']} ({s['mode']})",
    "",
  ]
  # Columns for the searched hyperparameters the rows recorded (older rows hold none).
  searched = [
    n for n in s.get("searched") or [] if any(r["hparams"].get(n) is not None for r in s["ranking"])
  ]
  show_epoch = any(r["epoch"] != s["epochs_done"] for r in s["ranking"])
  head = ["rank", "member"] + (["epochs"] if show_epoch else []) + [f"val {s['fitness']}"]
  head += searched
  body = []
  for i, r in enumerate(s["ranking"][:top], 1):
    cells = [str(i), str(r["member"])] + ([str(r["epoch"])] if show_epoch else [])
    cells.append(_fmt(r["fitness"]) if r["fitness"] is not None else "nan")
    cells += [_hp_fmt(r["hparams"].get(n)) for n in searched]
    body.append(cells)
  widths = [max(len(c) for c in col) for col in zip(head, *body)]
  lines.append("  ".join(h.rjust(w) for h, w in zip(head, widths)))
  lines += ["  ".join(c.rjust(w) for c, w in zip(cells, widths)) for cells in body]
  if len(s["ranking"]) > top:
    lines.append(f"  ... {len(s['ranking']) - top} more")
  lines.append("")
  val = ", ".join(f"{k} {_fmt(v)}" for k, v in s["val"].items())
  text = f"best member {s['best_member']} (epoch {s['best_epoch']}): val {val}"
  if s.get("test"):
    text += "; test " + ", ".join(f"{k} {_fmt(v)}" for k, v in s["test"].items())
  lines.append(text)
  hps = s.get("hyperparameters")
  if hps:
    flat = {k: v for k, v in hps.items() if not isinstance(v, Mapping)}
    model = hps.get("model") if isinstance(hps.get("model"), Mapping) else {}
    lines.append("  hyperparameters: " + ", ".join(f"{k}={_hp_fmt(v)}" for k, v in flat.items()))
    if model:
      lines.append("  model: " + ", ".join(f"{k}={_hp_fmt(v)}" for k, v in model.items()))
  work = f"{s['member_epochs']} member-epochs"
  if s.get("wall_time_s") is not None:
    work += f" in {s['wall_time_s']:.1f} s"
    if s.get("member_steps_per_s") is not None:
      work += f" ({s['member_steps_per_s']:.0f} member-steps/s)"
    elif s.get("member_epochs_per_s") is not None:
      work += f" ({s['member_epochs_per_s']:.2f} member-epochs/s)"
  else:
    work += " (wall time not recorded)"
  lines.append(work)
  # PBT with halving rungs (pbt_halving) both copies and prunes.
  if s["controller"] in ("pbt", "pbt_halving"):
    lines.append(f"pbt: {s['exploit_events']} exploit events")
  if s["controller"] in ("halving", "pbt_halving"):
    lines.append(f"successive halving: {s['pruned']} members pruned")
  if s.get("lr_range") and s["lr_range"].get("description"):
    lines.append(f"learning-rate range test: {s['lr_range']['description']}")
  for w in s.get("warnings") or []:
    lines.append(f"note: {w}")
  return "\n".join(lines)
