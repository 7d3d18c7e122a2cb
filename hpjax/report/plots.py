"""The PNG plots of a run (matplotlib, Agg backend; global pyplot state is never touched).

:func:`make_plots` draws every plot that applies, into a directory:

* ``learning_curves.png``: always. Validation fitness (and validation loss,
  when fitness is another metric) per member over epochs; the best member
  thick and in colour. Pruned members of successive halving end early (x).
* ``hparam_trajectories.png``: when the space searches at least one
  hyperparameter (``fixed`` dimensions are not searched) and the rows hold
  ``hparams``. One panel per hyperparameter, each member's value per epoch
  (PBT changes it; other controllers keep it).
* ``lineage.png``: PBT runs with at least one exploit event. Who copied whom:
  x = epoch, y = member; an arrow from the donor after epoch E to the target
  at epoch E + 1, the best member's ancestry in colour.
* ``fitness_vs_hparams.png``: as ``hparam_trajectories.png``. Each member's
  final fitness against each searched hyperparameter.
* ``parallel_coordinates.png``: at least two searched hyperparameters. Each
  member a line across normalised axes, coloured by final fitness.
* ``lr_range.png``: learning-rate range tests (``config.lr_range_test`` or
  ``summary.json['lr_range']``) with rows holding ``hparams``. Final and
  minimum validation loss against learning rate, diverged rates marked, the
  suggested range shaded; recomputed from ``metrics.jsonl`` when
  ``summary.json`` is missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import json
import math
import os
from typing import Any

import numpy as np

from hpjax import fitness as fitness_lib
from hpjax.report.load import _float
from hpjax.report.load import ReportError
from hpjax.report.load import Run
from hpjax.report.summary import _lr_range_result
from hpjax.report.summary import hparam_value
from hpjax.report.summary import ranking

PLOT_NAMES = (
  "learning_curves.png",
  "hparam_trajectories.png",
  "lineage.png",
  "fitness_vs_hparams.png",
  "parallel_coordinates.png",
  "lr_range.png",
)
_DPI = 120
_BEST_COLOR = "tab:red"
_OTHER_COLOR = "0.55"


def _figure(width: float, height: float):
  """A Figure bound to an Agg canvas (no pyplot, no global backend change)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  fig = Figure(figsize=(width, height), layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def _save(fig, path: str) -> str:
  fig.savefig(path, dpi=_DPI, bbox_inches="tight", facecolor="white")
  return path


def _grid(n: int, ncols: int = 3) -> tuple[int, int]:
  ncols = min(ncols, n)
  return (n + ncols - 1) // ncols, ncols


def _metric_label(name: str) -> str:
  return f"val {name.replace('_', ' ')}"


def _spans_decades(values: Sequence[float]) -> bool:
  v = np.asarray([x for x in values if math.isfinite(x)], np.float64)
  return v.size > 1 and bool(np.all(v > 0)) and v.max() / v.min() > 10


def _log_y(ax) -> None:
  """A log y axis labelled with plain numbers (0.3, 2) rather than 3x10^-1."""
  from matplotlib.ticker import LogFormatter  # pylint: disable=g-import-not-at-top

  class _Plain(LogFormatter):
    def __call__(self, x, pos=None):
      return f"{x:g}" if super().__call__(x, pos) else ""

  ax.set_yscale("log")
  ax.yaxis.set_major_formatter(_Plain())
  ax.yaxis.set_minor_formatter(_Plain(labelOnlyBase=False, minor_thresholds=(1.5, 0.5)))


def _int_xaxis(ax) -> None:
  from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top

  ax.xaxis.set_major_locator(MaxNLocator(integer=True))


class _Dim:
  """How one searched hyperparameter is drawn."""

  def __init__(self, name: str, spec: Mapping[str, Any], observed: Sequence[Any]):
    self.name = name
    self.spec = spec
    kind = spec.get("type", "float")
    numeric_obs = [v for v in observed if isinstance(v, (int, float)) and not isinstance(v, bool)]
    self.categorical = kind == "choice" or len(numeric_obs) < len(
      [v for v in observed if v is not None]
    )
    if self.categorical:
      cats = list(spec.get("values") or [])
      for v in observed:
        if v is not None and _cat(v) not in {_cat(c) for c in cats}:
          cats.append(v)
      self.categories = cats
      self.index = {_cat(c): i for i, c in enumerate(cats)}
      self.log = False
    else:
      self.categories = []
      self.index = {}
      bounds = [_float(spec.get("lo")), _float(spec.get("hi"))]
      self.log = bool(spec.get("log")) or _spans_decades(
        [_float(v) for v in numeric_obs] + [b for b in bounds if math.isfinite(b)]
      )
      vals = [_float(v) for v in numeric_obs if math.isfinite(_float(v))]
      lo = bounds[0] if math.isfinite(bounds[0]) else (min(vals) if vals else 0.0)
      hi = bounds[1] if math.isfinite(bounds[1]) else (max(vals) if vals else 1.0)
      if vals:
        lo, hi = min(lo, min(vals)), max(hi, max(vals))
      if self.log and lo <= 0:
        self.log = False
      self.lo, self.hi = lo, hi

  def y(self, v: Any) -> float:
    """The plotted coordinate (category index for categorical ones)."""
    if v is None:
      return math.nan
    if self.categorical:
      return float(self.index.get(_cat(v), math.nan))
    return _float(v)

  def unit(self, v: Any) -> float:
    """The value mapped to [0, 1] (parallel coordinates)."""
    y = self.y(v)
    if self.categorical:
      n = len(self.categories)
      return 0.5 if n <= 1 else y / (n - 1)
    lo, hi = self.lo, self.hi
    if self.log:
      y, lo, hi = (math.log10(y) if y > 0 else math.nan), math.log10(lo), math.log10(hi)
    return 0.5 if hi == lo else (y - lo) / (hi - lo)

  def label(self) -> str:
    return self.name.replace("_", " ") + (" (log)" if self.log else "")

  def style_axis(self, ax, axis: str = "y") -> None:
    """Log scale or categorical ticks with alternating bands."""
    set_scale = ax.set_yscale if axis == "y" else ax.set_xscale
    if self.log:
      set_scale("log")
    if self.categorical:
      n = len(self.categories)
      ticks = ax.set_yticks if axis == "y" else ax.set_xticks
      ticks(range(n), [str(c) for c in self.categories])
      span = ax.axhspan if axis == "y" else ax.axvspan
      for i in range(n):
        span(i - 0.5, i + 0.5, color="0.93" if i % 2 == 0 else "white", zorder=0, lw=0)
      (ax.set_ylim if axis == "y" else ax.set_xlim)(-0.5, n - 0.5)


def _cat(v: Any) -> str:
  if isinstance(v, float) and v.is_integer():
    v = int(v)
  return json.dumps(v, sort_keys=True, default=str)


def _dims(run: Run) -> list[_Dim]:
  last = run.rows
  dims = []
  for name, spec in run.searched.items():
    observed = [hparam_value(r.get("hparams"), name) for r in last]
    if all(v is None for v in observed):
      continue
    dims.append(_Dim(name, spec, observed))
  return dims


def _jitter(members: Sequence[int], width: float = 0.3) -> dict[int, float]:
  """A fixed small offset per member, so lines in one category stay apart."""
  ms = sorted(members)
  if len(ms) <= 1:
    return {m: 0.0 for m in ms}
  return {m: width * (i / (len(ms) - 1) - 0.5) for i, m in enumerate(ms)}


def plot_learning_curves(run: Run, path: str, best: int) -> str:
  """Validation fitness (and loss) per member over epochs; ``best`` highlighted."""
  panels = [run.fitness] + (
    ["loss"] if run.fitness != "loss" and any("val_loss" in r for r in run.rows) else []
  )
  fig = _figure(6.0 * len(panels), 4.2)
  axes = fig.subplots(1, len(panels), squeeze=False)[0]
  last_epoch = run.epochs_done
  for ax, metric in zip(axes, panels):
    series = run.series(f"val_{metric}")
    pruned = False
    for m, (e, v) in sorted(series.items()):
      if m == best:
        continue
      ax.plot(e, v, color=_OTHER_COLOR, lw=0.9, alpha=0.6, marker="." if len(e) < 3 else None)
      if e[-1] < last_epoch:
        pruned = True
        ax.plot(e[-1:], v[-1:], "x", color="0.3", ms=6, mew=1.5)
    e, v = series[best]
    ax.plot(
      e, v, color=_BEST_COLOR, lw=2.6, marker="o", ms=4, zorder=5, label=f"best: member {best}"
    )
    ax.plot([], [], color=_OTHER_COLOR, lw=0.9, label=f"other members ({len(series) - 1})")
    if pruned:
      ax.plot([], [], "x", color="0.3", ms=6, mew=1.5, label="pruned")
    vals = np.concatenate([s[1] for s in series.values()])
    if metric != "accuracy" and _spans_decades(vals.tolist()):
      _log_y(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel(_metric_label(metric))
    ax.set_title(f"{_metric_label(metric)} per member")
    _int_xaxis(ax)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=9)
  fig.suptitle(f"learning curves ({run.controller}, {len(run.members)} members)")
  return _save(fig, path)


def plot_hparam_trajectories(run: Run, path: str, best: int, dims: list[_Dim]) -> str:
  """Each searched hyperparameter per member over epochs."""
  nrows, ncols = _grid(len(dims), 2)
  fig = _figure(5.2 * ncols, 3.3 * nrows)
  axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
  jit = _jitter(run.members, 0.35)
  by_member: dict[int, list[dict[str, Any]]] = {}
  for r in run.rows:
    by_member.setdefault(int(r["member"]), []).append(r)
  for ax, dim in zip(axes, dims):
    dim.style_axis(ax)
    for m, rows in sorted(by_member.items(), key=lambda kv: kv[0] == best):
      e = [r["epoch"] for r in rows]
      y = np.array([dim.y(hparam_value(r.get("hparams"), dim.name)) for r in rows])
      if dim.categorical:
        y = y + jit[m]
      if m == best:
        ax.plot(
          e, y, color=_BEST_COLOR, lw=2.4, marker="o", ms=4, zorder=5, label=f"best: member {best}"
        )
      else:
        ax.plot(e, y, color=_OTHER_COLOR, lw=0.9, alpha=0.7, marker=".", ms=4)
    ax.set_title(dim.name.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel(dim.label())
    _int_xaxis(ax)
    ax.grid(alpha=0.3, axis="x" if dim.categorical else "both")
  for ax in axes[len(dims) :]:
    ax.set_visible(False)
  axes[0].plot([], [], color=_OTHER_COLOR, lw=0.9, label="other members")
  axes[0].legend(loc="best", fontsize=8)
  fig.suptitle("hyperparameters per member over epochs")
  return _save(fig, path)


def _exploits(run: Run) -> list[dict[str, Any]]:
  return [e for e in run.lineage if "donor" in e and "target" in e and "epoch" in e]


def _ancestry(
  copies: Mapping[tuple[int, int], int], member: int, epoch: int
) -> set[tuple[int, int, int]]:
  """Edges ``(E, parent, child)`` from epoch E to E + 1 that ``member`` at ``epoch`` descends from.

  Args:
    copies: ``(E, target) -> donor``: after epoch E, target copied donor.
    member: the member whose ancestry is traced.
    epoch: its epoch.
  """
  out = set()
  for e in range(epoch - 1, 0, -1):
    parent = copies.get((e, member), member)
    out.add((e, parent, member))
    member = parent
  return out


def plot_lineage(run: Run, path: str, best: int) -> str:
  """PBT genealogy: every node one member after one epoch, an arrow per copy."""
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
  from matplotlib.colors import Normalize  # pylint: disable=g-import-not-at-top
  from matplotlib.lines import Line2D  # pylint: disable=g-import-not-at-top

  events = _exploits(run)
  copies = {(int(ev["epoch"]), int(ev["target"])): int(ev["donor"]) for ev in events}
  members = run.members
  last = run.epochs_done
  best_epoch = run.last_rows()[best]["epoch"]
  path_edges = _ancestry(copies, best, best_epoch)
  fig = _figure(min(4.0 + 1.1 * last, 16.0), min(2.0 + 0.42 * len(members), 14.0))
  ax = fig.subplots()
  fit = {(r["epoch"], r["member"]): _float(r.get(f"val_{run.fitness}")) for r in run.rows}
  finite = [v for v in fit.values() if math.isfinite(v)]
  norm = Normalize(min(finite, default=0.0), max(finite, default=1.0))
  cmap = colormaps["viridis" if run.maximize else "viridis_r"]
  # Continuations: a member not replaced after epoch E keeps its own weights.
  for e, m in fit:
    if (e + 1, m) in fit and (e, m) not in copies:
      on_path = (e, m, m) in path_edges
      ax.plot(
        [e, e + 1],
        [m, m],
        color=_BEST_COLOR if on_path else "0.75",
        lw=2.2 if on_path else 1.0,
        zorder=1,
      )
  for (e, target), donor in copies.items():
    on_path = (e, donor, target) in path_edges
    ax.annotate(
      "",
      xy=(e + 1, target),
      xytext=(e, donor),
      arrowprops=dict(
        arrowstyle="-|>",
        color=_BEST_COLOR if on_path else "0.35",
        lw=2.0 if on_path else 1.0,
        shrinkA=5,
        shrinkB=5,
        connectionstyle="arc3,rad=0.12",
        mutation_scale=11,
      ),
      zorder=3 if on_path else 2,
    )
  xs = [k[0] for k in fit]
  ys = [k[1] for k in fit]
  sc = ax.scatter(
    xs,
    ys,
    c=[fit[k] for k in fit],
    cmap=cmap,
    norm=norm,
    s=46,
    edgecolors="0.2",
    linewidths=0.5,
    zorder=4,
  )
  ax.scatter(
    [best_epoch], [best], s=170, facecolors="none", edgecolors=_BEST_COLOR, linewidths=2.0, zorder=5
  )
  # Copies after the last epoch (they shape the final weights) end in a hollow node.
  tail = [(e, t) for (e, t) in copies if (e + 1, t) not in fit]
  if tail:
    ax.scatter(
      [e + 1 for e, _ in tail],
      [t for _, t in tail],
      s=46,
      facecolors="white",
      edgecolors="0.35",
      zorder=4,
    )
  ax.set_xlabel("epoch (an arrow: after epoch E the target copies the donor's weights)")
  ax.set_ylabel("member")
  ax.set_yticks(members if len(members) <= 32 else ax.get_yticks())
  ax.set_ylim(min(members) - 0.7, max(members) + 0.7)
  ticks = list(range(1, last + 1))
  ax.set_xticks(
    ticks + ([last + 1] if tail else []),
    [str(t) for t in ticks] + (["after\nlast"] if tail else []),
  )
  ax.set_xlim(0.5, last + (1.5 if tail else 0.5))
  ax.grid(alpha=0.25)
  fig.colorbar(sc, ax=ax, label=_metric_label(run.fitness), shrink=0.9)
  handles = [
    Line2D([], [], color="0.35", marker=r"$\rightarrow$", ls="", ms=12, label="copy (exploit)"),
    Line2D([], [], color=_BEST_COLOR, lw=2.0, label=f"ancestry of best member {best}"),
  ]
  if tail:
    handles.append(
      Line2D(
        [],
        [],
        marker="o",
        ls="",
        mfc="white",
        mec="0.35",
        ms=7,
        label="copied after the last epoch",
      )
    )
  ax.legend(
    handles=handles,
    loc="upper center",
    bbox_to_anchor=(0.5, -0.16),
    ncol=len(handles),
    fontsize=9,
    frameon=False,
  )
  ax.set_title(f"PBT lineage: {len(events)} exploit events over {last} epochs")
  return _save(fig, path)


def _final_fitness(run: Run) -> dict[int, float]:
  key = f"val_{run.fitness}"
  return {m: _float(r.get(key)) for m, r in run.last_rows().items()}


def plot_fitness_vs_hparams(run: Run, path: str, best: int, dims: list[_Dim]) -> str:
  """Each member's final fitness against each searched hyperparameter."""
  nrows, ncols = _grid(len(dims), 2 if len(dims) == 4 else 3)
  fig = _figure(4.6 * ncols, 3.5 * nrows)
  axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
  last = run.last_rows()
  fit = _final_fitness(run)
  pruned = {m for m, r in last.items() if r["epoch"] < run.epochs_done}
  rng = np.random.default_rng(0)
  jitter = {m: float(rng.uniform(-0.22, 0.22)) for m in sorted(last)}
  for ax, dim in zip(axes, dims):
    dim.style_axis(ax, "x")
    for group, marker, color, label in (
      (sorted(set(last) - pruned - {best}), "o", "tab:blue", "member (final epoch)"),
      (sorted(pruned - {best}), "x", "0.4", "pruned (fitness when pruned)"),
      ([best], "*", _BEST_COLOR, f"best: member {best}"),
    ):
      if not group:
        continue
      x = np.array([dim.y(hparam_value(last[m].get("hparams"), dim.name)) for m in group])
      if dim.categorical:
        x = x + np.array([jitter[m] for m in group])
      y = np.array([fit[m] for m in group])
      style = {
        "o": dict(s=34, alpha=0.8, zorder=3, edgecolors="white", linewidths=0.5),
        "x": dict(s=34, alpha=0.8, zorder=3, linewidths=1.5),
        "*": dict(s=150, alpha=0.95, zorder=5, edgecolors="none"),
      }[marker]
      ax.scatter(x, y, marker=marker, c=color, label=label, **style)
    ax.margins(x=0.08, y=0.1)  # room for the large marker of the best member
    ax.set_xlabel(dim.label())
    ax.set_title(dim.name.replace("_", " "))
    ax.grid(alpha=0.3, axis="y" if dim.categorical else "both")
  vals = [v for v in fit.values() if math.isfinite(v)]
  if run.fitness != "accuracy" and _spans_decades(vals):
    _log_y(axes[0])
  for ax in axes[::ncols]:
    ax.set_ylabel(f"final {_metric_label(run.fitness)}")
  for ax in axes[len(dims) :]:
    ax.set_visible(False)
  axes[0].legend(loc="best", fontsize=8)
  fig.suptitle(f"final {_metric_label(run.fitness)} against each hyperparameter")
  return _save(fig, path)


def plot_parallel_coordinates(run: Run, path: str, best: int, dims: list[_Dim]) -> str:
  """Members as lines across normalised hyperparameter axes, coloured by fitness."""
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
  from matplotlib import patheffects  # pylint: disable=g-import-not-at-top
  from matplotlib.cm import ScalarMappable  # pylint: disable=g-import-not-at-top
  from matplotlib.colors import Normalize  # pylint: disable=g-import-not-at-top

  last = run.last_rows()
  fit = _final_fitness(run)
  finite = [v for v in fit.values() if math.isfinite(v)]
  norm = Normalize(min(finite, default=0.0), max(finite, default=1.0))
  cmap = colormaps["viridis" if run.maximize else "viridis_r"]
  fig = _figure(max(6.0, 2.2 * len(dims) + 1.5), 4.6)
  ax = fig.subplots()
  xs = np.arange(len(dims))
  jit = _jitter(run.members, 0.06)
  # Worst first, so the best lines are drawn on top.
  keys = dict(zip(last, fitness_lib.sort_key([fit[m] for m in last], run.mode).tolist()))
  order = sorted(last, key=lambda m: -keys[m])
  for m in order:
    ys = np.array(
      [
        d.unit(hparam_value(last[m].get("hparams"), d.name)) + (jit[m] if d.categorical else 0.0)
        for d in dims
      ]
    )
    if m == best:
      continue
    if math.isfinite(fit[m]):
      ax.plot(xs, ys, color=cmap(norm(fit[m])), lw=1.4, alpha=0.85, marker="o", ms=3)
    else:
      ax.plot(xs, ys, color="0.6", lw=1.0, ls="--", alpha=0.8)
  ys = np.array(
    [
      d.unit(hparam_value(last[best].get("hparams"), d.name))
      + (jit[best] if d.categorical else 0.0)
      for d in dims
    ]
  )
  ax.plot(
    xs,
    ys,
    color=cmap(norm(fit[best])) if math.isfinite(fit[best]) else "0.6",
    lw=2.6,
    zorder=6,
    marker="o",
    ms=5,
    mec="black",
    label=f"best: member {best}",
    path_effects=[patheffects.Stroke(linewidth=5.0, foreground="black"), patheffects.Normal()],
  )
  for i, d in enumerate(dims):
    ax.axvline(i, color="0.2", lw=1.0, zorder=0)
    if d.categorical:
      labels = [(d.unit(c), str(c)) for c in d.categories]
    else:
      lo, hi = d.lo, d.hi
      if d.log:
        mids = np.geomspace(lo, hi, 3)
      else:
        mids = np.linspace(lo, hi, 3)
      labels = [(d.unit(float(v)), f"{v:.3g}") for v in mids]
    for y, text in labels:
      ax.text(
        i + 0.04,
        y,
        text,
        fontsize=8,
        va="center",
        ha="left",
        color="0.15",
        zorder=7,
        bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.75),
      )
  ax.set_xticks(xs, [d.label() for d in dims])
  ax.set_yticks([])
  ax.set_xlim(-0.2, len(dims) - 0.45)
  ax.set_ylim(-0.08, 1.08)
  for side in ("top", "right", "left"):
    ax.spines[side].set_visible(False)
  fig.colorbar(
    ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=f"final {_metric_label(run.fitness)}"
  )
  ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), fontsize=9, frameon=False)
  ax.set_title("hyperparameters of each member (final), coloured by final fitness")
  return _save(fig, path)


def plot_lr_range(run: Run, path: str, result: Mapping[str, Any]) -> str:
  """Final / minimum validation loss against the learning rate (range tests)."""
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
  from matplotlib.colors import LogNorm  # pylint: disable=g-import-not-at-top

  curves = run.series("val_loss")
  last = run.last_rows()
  members = sorted(curves)
  rate = {m: _float(hparam_value(last[m].get("hparams"), "learning_rate")) for m in members}
  members = sorted((m for m in members if rate[m] > 0), key=lambda m: rate[m])
  r = np.array([rate[m] for m in members])
  final = np.array([curves[m][1][-1] for m in members])
  with np.errstate(all="ignore"):
    best_loss = np.array(
      [
        np.nanmin(np.where(np.isfinite(curves[m][1]), curves[m][1], np.nan))
        if np.any(np.isfinite(curves[m][1]))
        else np.nan
        for m in members
      ]
    )
  diverged = np.zeros(len(members), bool)
  if result.get("diverged") is not None and result.get("rates"):
    div_rates = [x for x, d in zip(result["rates"], result["diverged"]) if d]
    diverged = np.array([any(math.isclose(x, d, rel_tol=1e-6) for d in div_rates) for x in r])
  diverged |= ~np.isfinite(final)
  fig = _figure(12.0, 4.4)
  ax, ax2 = fig.subplots(1, 2)
  lo_hi = result.get("suggested_range") or [None, None]
  if lo_hi[0] is not None and lo_hi[1] is not None and math.isfinite(_float(lo_hi[0])):
    lo, hi = float(lo_hi[0]), float(lo_hi[1])
    if hi == lo:  # a single rate: shade half a grid step each side
      step = math.sqrt(r[1] / r[0]) if len(r) > 1 else 1.5
      lo, hi = lo / step**0.5, hi * step**0.5
    ax.axvspan(lo, hi, color="tab:green", alpha=0.15, label="suggested range")
  best_rate = _float(result.get("best_rate"))
  if math.isfinite(best_rate):
    ax.axvline(best_rate, color="tab:green", ls="--", lw=1.4, label=f"best rate {best_rate:.2g}")
  ax.plot(r, final, "o-", color="tab:blue", label="final val loss")
  ax.plot(r, best_loss, "s--", color="tab:orange", ms=4, alpha=0.8, label="min val loss")
  ok = np.isfinite(np.concatenate([final, best_loss]))
  finite = np.concatenate([final, best_loss])[ok]
  if finite.size and _spans_decades(finite.tolist()):
    _log_y(ax)
  if np.any(diverged):
    top = float(finite.max()) if finite.size else 1.0
    ys = np.where(np.isfinite(final), final, top)
    ax.plot(r[diverged], ys[diverged], "X", color="tab:red", ms=11, zorder=6, label="diverged")
    for x, y in zip(r[diverged & ~np.isfinite(final)], ys[diverged & ~np.isfinite(final)]):
      ax.annotate(
        "NaN",
        (x, y),
        textcoords="offset points",
        xytext=(0, 9),
        ha="center",
        fontsize=8,
        color="tab:red",
      )
  ax.set_xscale("log")
  ax.margins(x=0.06, y=0.08)
  ax.set_xlabel("learning rate (log)")
  ax.set_ylabel("validation loss")
  ax.set_title("learning-rate range test")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="best")
  # Right: each rate's curve over epochs, coloured by its rate.
  cmap = colormaps["plasma"]
  norm = LogNorm(r.min(), r.max()) if len(r) > 1 and r.min() < r.max() else None
  for m, x in zip(members, r):
    e, v = curves[m]
    ax2.plot(e, v, color=cmap(norm(x)) if norm else "tab:blue", lw=1.5, marker="o", ms=3)
  allv = np.concatenate([curves[m][1] for m in members])
  if _spans_decades(allv[np.isfinite(allv)].tolist()):
    _log_y(ax2)
  ax2.set_xlabel("epoch")
  ax2.set_ylabel("validation loss")
  ax2.set_title("validation loss per rate")
  _int_xaxis(ax2)
  ax2.grid(alpha=0.3)
  if norm is not None:
    from matplotlib.cm import ScalarMappable  # pylint: disable=g-import-not-at-top

    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax2, label="learning rate")
  desc = result.get("description")
  if desc:
    import textwrap  # pylint: disable=g-import-not-at-top

    fig.suptitle(textwrap.fill(desc, 120), fontsize=10)
  return _save(fig, path)


def make_plots(run: Run, out_dir: str, best: int | None = None) -> list[str]:
  """Draws every plot that applies to the run (see the module docstring).

  Args:
    run: from :func:`load_run`.
    out_dir: where the PNGs go (created); stale PNGs of :data:`PLOT_NAMES`
      that no longer apply are removed.
    best: the member to highlight (default: the best one, :func:`ranking`).

  Returns:
    The paths written, in :data:`PLOT_NAMES` order.

  Raises:
    ReportError: ``out_dir`` cannot be written.
  """
  if best is None:
    best = ranking(run)[0]
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    raise ReportError(f"{out_dir}: cannot create ({e.strerror})") from None
  p = {n: os.path.join(out_dir, n) for n in PLOT_NAMES}
  dims = _dims(run) if run.has_hparams else []
  written = []
  try:
    written.append(plot_learning_curves(run, p["learning_curves.png"], best))
    if dims:
      written.append(plot_hparam_trajectories(run, p["hparam_trajectories.png"], best, dims))
    if run.controller in ("pbt", "pbt_halving") and _exploits(run):
      written.append(plot_lineage(run, p["lineage.png"], best))
    if dims:
      written.append(plot_fitness_vs_hparams(run, p["fitness_vs_hparams.png"], best, dims))
    if len(dims) >= 2:
      written.append(plot_parallel_coordinates(run, p["parallel_coordinates.png"], best, dims))
    result = _lr_range_result(run)
    if result is not None and run.has_hparams and any("val_loss" in r for r in run.rows):
      written.append(plot_lr_range(run, p["lr_range.png"], result))
  except OSError as e:
    raise ReportError(f"{out_dir}: cannot write a plot ({e.strerror})") from None
  for path in p.values():
    if path not in written and os.path.exists(path):
      os.remove(path)
  return written
