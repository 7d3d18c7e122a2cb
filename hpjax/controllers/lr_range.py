"""Learning-rate range test, run side by side across a population.

Smith 2017 ("Cyclical Learning Rates for Training Neural Networks") raises the
learning rate of a single run step by step and watches where the loss falls
fastest and where it blows up. Here the sweep is spread over the population
instead: each member trains a short run with one constant learning rate from
a log-spaced set (:func:`log_spaced_rates`), all members at once, and
:func:`analyse` reads the resulting loss curves. ``hpjax.tuner`` passes each
member's *validation* loss: the loss before training, then one point per
epoch (so a curve's first point is the untrained model's loss, for a
classifier near the chance level ``ln(classes)``).

Per rate, measured on the curve ``c`` of ``n_points`` losses:

* *loss*: the final loss, the mean of the last ``tail`` points (default 1).
* *slope*: the relative decrease ``(c[0] - loss) / |c[0]|``: the fraction of
  the initial loss that the run removed. Every member runs the same number of
  steps, so this is a speed; it is 1 for a loss driven to 0, 0 for no
  progress and negative for a loss that rose. It saturates near 1 once runs
  converge, which is why the runs should stay short (a few hundred steps or a
  couple of epochs). A least-squares fit over the curve was rejected: the
  curves are strongly non-linear (fast early drop, then a plateau) and a fit
  weighs the plateau as much as the drop.
* *blew up*: any non-finite point on the curve (a NaN / inf loss means the
  parameters blew up, and they stay broken), or a final loss above
  ``diverge_factor`` (default 1.5) times the initial one.
* *no progress*: a rate above the best rate (below) that did not blow up but
  removed less than ``min_progress`` (default 0.1, i.e. 10 %) of its initial
  loss, its final loss staying at or near the initial one, while the best
  rate removed at least that much. Such a rate is too high to learn: in
  ``experiments/configs/digits_lr_range.py`` (adam), the rates from 0.046 to
  1 collapse to predicting chance, final validation losses 2.30-2.39 (ln(10)
  = 2.30) against 2.53 before training, slopes 0.05-0.09, never above 1.5 x
  the initial loss. The default suits a classifier whose untrained loss is
  near chance: a collapse to chance from an initial loss above 1.11 x the
  chance level (``1 / (1 - min_progress)``) removes more than
  ``min_progress`` and is not flagged. Only rates above the best are
  flagged: a small rate that barely moved is slow, not broken (it shows as
  "too low" in :func:`describe`).
* *diverged*: blew up or no progress, the rates too high to train with.

The *best rate* is the rate with the largest slope among those that did not
blow up (ties go to the lower rate, the safer choice); it must have lowered
the loss. The *suggested range* grows from the best rate, one neighbour at a
time in rate order, over the rates that did not diverge and whose slope is
at least ``range_fraction`` (default 0.5, i.e. 50 %) of the best slope; it is
therefore contiguous and never contains a diverged rate. Losses are assumed
positive (cross-entropy, squared error), the usual case; a zero initial loss
gives a slope of 0.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from hpjax.controllers import base


def log_spaced_rates(lo: float, hi: float, n: int) -> np.ndarray:
  """``n`` learning rates evenly spaced in log scale from ``lo`` to ``hi``.

  Args:
    lo: the smallest rate, > 0.
    hi: the largest rate, > ``lo``.
    n: the number of rates (one per member), >= 2.

  Returns:
    float64 ``[n]``, increasing, with ``lo`` and ``hi`` exactly at the ends.

  Raises:
    ValueError: one line naming the bad argument.
  """
  if not base.is_real(lo) or not math.isfinite(lo) or lo <= 0:
    raise ValueError(f"lo: must be a finite number > 0, got {lo!r}")
  if not base.is_real(hi) or not math.isfinite(hi) or hi <= lo:
    raise ValueError(f"hi: must be a finite number > lo ({lo!r}), got {hi!r}")
  base.check_int("n", n, 2)
  rates = np.geomspace(float(lo), float(hi), int(n))
  # geomspace can be off by an ulp at the ends; users compare against lo / hi.
  rates[0], rates[-1] = lo, hi
  return rates


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value
class RangeResult:
  """What a side-by-side range test found; every array is sorted by rate.

  Attributes:
    rates: float64 ``[n]`` the learning rates, increasing.
    losses: float64 ``[n]`` final loss per rate (mean of the last ``tail``
      points; NaN where that is not finite).
    slopes: float64 ``[n]`` relative decrease ``(first - final) / |first|``
      (NaN where either is not finite).
    best_rate: the rate, among those that did not blow up, whose loss fell
      fastest; NaN when every rate blew up or none made the loss fall.
    suggested_range: ``(low, high)`` contiguous rates around ``best_rate``
      whose slope is at least ``range_fraction`` of the best and that did not
      diverge; ``(nan, nan)`` when there is no best rate.
    diverged: bool ``[n]`` too high to train with: a non-finite loss
      anywhere on the curve, a final loss above ``diverge_factor`` times the
      initial loss, or ``no_progress``.
    no_progress: bool ``[n]`` the diverged rates that did not blow up but,
      above the best rate, removed less than ``min_progress`` of their
      initial loss (e.g. collapsed to chance) while the best rate removed
      more; all False when there is no best rate.
  """

  rates: np.ndarray
  losses: np.ndarray
  slopes: np.ndarray
  best_rate: float
  suggested_range: tuple
  diverged: np.ndarray
  no_progress: np.ndarray | None = None  # None (code that predates the field): all False

  def __post_init__(self):
    if self.no_progress is None:
      object.__setattr__(self, "no_progress", np.zeros(np.shape(self.diverged), bool))


def analyse(
  rates: np.ndarray,
  loss_curves: np.ndarray,
  *,
  tail: int = 1,
  diverge_factor: float = 1.5,
  range_fraction: float = 0.5,
  min_progress: float = 0.1,
) -> RangeResult:
  """Reads the loss curves of a side-by-side learning-rate sweep.

  See the module docstring for the exact definitions.

  Args:
    rates: ``[n]`` distinct positive learning rates, in any order.
    loss_curves: ``[n, n_points]`` loss of each rate's run over its steps or
      epochs (``n_points >= 2``), the first point taken before or at the
      start of training (``hpjax.tuner``: the validation loss before
      training, then after each epoch); NaN / inf allowed (they mark a
      diverged run).
    tail: final points averaged into the final loss, in
      ``[1, n_points - 1]`` (the first point is the reference).
    diverge_factor: a run whose final loss exceeds this many times its initial
      loss counts as diverged; > 1.
    range_fraction: a rate joins the suggested range when its slope is at
      least this fraction of the best slope; in ``(0, 1]``.
    min_progress: a rate above the best one whose slope is below this (it
      removed less than this fraction of its initial loss) made no progress
      and counts as diverged, provided the best slope is at least this; in
      ``[0, 1)``.

  Returns:
    The :class:`RangeResult`, sorted by rate.

  Raises:
    ValueError: one line naming the bad argument.
  """
  r, c = _checked_curves(rates, loss_curves)
  n_points = c.shape[1]
  if not base.is_int(tail) or not 1 <= tail <= n_points - 1:
    raise ValueError(f"tail: must be an integer in [1, {n_points - 1}], got {tail!r}")
  if not base.is_real(diverge_factor) or not math.isfinite(diverge_factor) or diverge_factor <= 1:
    raise ValueError(f"diverge_factor: must be a finite number > 1, got {diverge_factor!r}")
  base.check_between("range_fraction", range_fraction, 0, 1, lo_open=True)
  base.check_between("min_progress", min_progress, 0, 1, hi_open=True)

  order = np.argsort(r, kind="stable")
  r, c = r[order], c[order]
  final, slopes, blew_up = _measure(c, tail, diverge_factor)
  best_rate, suggested = math.nan, (math.nan, math.nan)
  no_progress = np.zeros(len(r), bool)
  # A best rate must not have blown up and must actually have lowered the loss.
  candidates = np.flatnonzero(~blew_up & (slopes > 0))
  if candidates.size:
    # argmax takes the first maximum: the lowest rate among equal slopes.
    b = int(candidates[np.argmax(slopes[candidates])])
    if slopes[b] >= min_progress:
      # Above a rate that learnt, one that left its loss near the start is
      # too high (e.g. collapsed to chance), not slow.
      no_progress = (np.arange(len(r)) > b) & ~blew_up & (slopes < min_progress)
    ok = ~blew_up & ~no_progress & (slopes >= range_fraction * slopes[b])
    lo, hi = _grow(ok, b)
    best_rate, suggested = float(r[b]), (float(r[lo]), float(r[hi]))
  return RangeResult(
    rates=r,
    losses=final,
    slopes=slopes,
    best_rate=best_rate,
    suggested_range=suggested,
    diverged=blew_up | no_progress,
    no_progress=no_progress,
  )


def _checked_curves(rates: Any, loss_curves: Any) -> tuple[np.ndarray, np.ndarray]:
  """:func:`analyse`'s rates ``[n]`` and loss curves ``[n, n_points]`` as float64, checked."""
  try:
    r = np.asarray(rates, np.float64)
  except (TypeError, ValueError):
    raise ValueError("rates: must be a 1-D array of numbers") from None
  if r.ndim != 1 or r.shape[0] < 2:
    raise ValueError(f"rates: must be a 1-D array of at least 2 rates, got shape {r.shape}")
  if not np.all(np.isfinite(r) & (r > 0)):
    raise ValueError(f"rates: must all be finite and > 0, got {r.tolist()}")
  if np.unique(r).shape[0] != r.shape[0]:
    raise ValueError(f"rates: must be distinct, got {r.tolist()}")
  try:
    c = np.asarray(loss_curves, np.float64)
  except (TypeError, ValueError):
    raise ValueError("loss_curves: must be a 2-D array of numbers") from None
  if c.ndim != 2 or c.shape[0] != r.shape[0] or c.shape[1] < 2:
    raise ValueError(f"loss_curves: must have shape ({r.shape[0]}, n_points >= 2), got {c.shape}")
  return r, c


def _measure(
  c: np.ndarray, tail: int, diverge_factor: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per curve: the final loss and the slope (NaN where not finite), and whether it blew up."""
  first = c[:, 0]
  with np.errstate(invalid="ignore", over="ignore"):
    final = c[:, c.shape[1] - tail :].mean(axis=1)
  finite = np.all(np.isfinite(c), axis=1) & np.isfinite(final)
  final = np.where(finite, final, np.nan)
  # |first| keeps the sign of the comparison right should a loss be negative;
  # for the usual positive loss it reads ``final > diverge_factor * first``.
  rose = finite & (final - first > (diverge_factor - 1.0) * np.abs(first))
  denom = np.abs(first)
  with np.errstate(invalid="ignore", divide="ignore"):
    slopes = np.where(denom > 0, (first - final) / np.where(denom > 0, denom, 1.0), 0.0)
  return final, np.where(finite, slopes, np.nan), ~finite | rose


def _grow(ok: np.ndarray, b: int) -> tuple[int, int]:
  """The widest run of ``ok`` positions around ``b``: its first and last position."""
  lo = b
  while lo > 0 and ok[lo - 1]:
    lo -= 1
  hi = b
  while hi < len(ok) - 1 and ok[hi + 1]:
    hi += 1
  return lo, hi


def _fmt(x: float) -> str:
  return f"{x:.1e}"


def describe(result: RangeResult) -> str:
  """A short human summary of a range test.

  E.g. ``loss falls fastest at lr 3.2e-03; useful range 1.0e-03 – 1.0e-02;
  too high (diverged) from 1.0e-01; too low (slow) below 1.0e-03``. "Too
  high" names the lowest diverged rate above the best one and why the rates
  there are flagged: "diverged" (the loss blew up), "no progress" (it stayed
  near its initial loss, e.g. collapsed to chance) or both; "too low" the
  lower end of the useful range, below which every rate fell less than the
  range's threshold. A best rate at either end of the sweep adds a hint to
  widen it.

  Args:
    result: from :func:`analyse`.

  Returns:
    One line of text.

  Raises:
    ValueError: ``result`` is not a :class:`RangeResult`.
  """
  if not isinstance(result, RangeResult):
    raise ValueError(f"result: must be a RangeResult, got {type(result).__name__}")
  r, div = result.rates, result.diverged
  if math.isnan(result.best_rate):
    if np.all(div):
      return f"every rate diverged (lowest tried {_fmt(r[0])}); try rates below {_fmt(r[0])}"
    text = "the loss did not fall at any rate that did not diverge"
    if np.any(div):
      text += f"; too high (diverged) from {_fmt(r[int(np.argmax(div))])}"
    return text + f"; try rates above {_fmt(r[~div].max())}"
  lo, hi = result.suggested_range
  parts = [
    f"loss falls fastest at lr {_fmt(result.best_rate)}",
    f"useful range {_fmt(lo)} – {_fmt(hi)}",
  ]
  above = np.flatnonzero(div & (r > result.best_rate))
  if above.size:
    stalled = result.no_progress[above]
    why = " or ".join(
      w
      for w, present in (("diverged", not np.all(stalled)), ("no progress", np.any(stalled)))
      if present
    )
    parts.append(f"too high ({why}) from {_fmt(r[above[0]])}")
  if np.any(~div & (r < lo)):
    parts.append(f"too low (slow) below {_fmt(lo)}")
  if result.best_rate == r[-1]:
    parts.append("the best rate is the highest tried; widen the sweep upwards")
  elif result.best_rate == r[0]:
    parts.append("the best rate is the lowest tried; widen the sweep downwards")
  return "; ".join(parts)
