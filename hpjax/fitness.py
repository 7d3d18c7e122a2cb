"""One fitness convention: the ranked metric carries its direction.

Everything that ranks members (PBT's quantiles, successive halving's cut, the
tuner's summary and ranking, the best checkpoint, the report, the progress
table) asks this module, so a run can never rank by one direction in one
place and by the other elsewhere.

A fitness is a validation metric name; its direction follows from the name:
``accuracy`` is maximised, ``loss`` and ``mse`` are minimised. Validation
``loss`` is the same objective for every member (see
:func:`hpjax.losses.validation_per_example`), so it can be compared across
members whatever loss each one trains with.

Non-finite values (NaN, +inf, -inf: a diverged member) always rank last,
whatever the direction; ties keep member order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MODES = ("max", "min")

# Metric name -> direction.
DIRECTIONS = {"accuracy": "max", "loss": "min", "mse": "min"}

# The validation metrics each task reports, hence the fitnesses it allows.
TASK_METRICS = {"classification": ("accuracy", "loss"), "regression": ("mse", "loss")}


def check_mode(mode: Any, field: str = "mode") -> str:
  """Returns ``mode`` if it is ``max`` or ``min``; ValueError naming ``field`` otherwise."""
  if mode not in MODES:
    raise ValueError(f"{field}: unknown value {mode!r}; allowed: {', '.join(MODES)}")
  return mode


def direction(metric: str) -> str:
  """``max`` or ``min``: which way ``metric`` improves.

  Raises:
    ValueError: an unknown metric name, listing the known ones.
  """
  if metric not in DIRECTIONS:
    raise ValueError(f"fitness: unknown value {metric!r}; allowed: {', '.join(DIRECTIONS)}")
  return DIRECTIONS[metric]


def check(metric: Any, task: str, field: str = "config.fitness") -> str:
  """Validates a fitness metric for a task and returns its direction.

  Args:
    metric: the metric name.
    task: ``classification`` or ``regression``.
    field: the name used in the error message.

  Returns:
    ``max`` or ``min``.

  Raises:
    ValueError: one line naming ``field`` and the metrics the task reports.
  """
  allowed = TASK_METRICS[task]
  if metric not in allowed:
    raise ValueError(f"{field}: unknown value {metric!r} for {task}; allowed: "
                     + ", ".join(allowed))
  return DIRECTIONS[metric]


def resolve_mode(mode: Any, metric: str, field: str) -> str:
  """The direction of ``metric``, refusing a ``mode`` that contradicts it.

  Args:
    mode: a controller's configured mode: ``None`` (follow the metric) or
      ``max``/``min``, which must agree with the metric's direction.
    metric: the fitness metric.
    field: the mode's name in error messages (e.g. ``config.controller.mode``).

  Returns:
    The metric's direction.

  Raises:
    ValueError: an unknown or contradicting ``mode``.
  """
  want = direction(metric)
  if mode is None:
    return want
  check_mode(mode, field)
  if mode != want:
    raise ValueError(f"{field}: {mode!r} contradicts fitness {metric!r}, which is "
                     f"{'maximised' if want == 'max' else 'minimised'}; leave it out "
                     "(the direction follows the fitness)")
  return want


def as_array(fitness: Any) -> np.ndarray:
  """``fitness`` as a 1-D float64 array; ValueError otherwise."""
  try:
    f = np.asarray(fitness, np.float64)
  except (TypeError, ValueError):
    raise ValueError("fitness: must be a 1-D array of numbers") from None
  if f.ndim != 1:
    raise ValueError(f"fitness: must be a 1-D array of numbers, got shape {f.shape}")
  return f


def sort_key(fitness: Any, mode: str) -> np.ndarray:
  """A key where smaller is better: ``-f`` (max) or ``f`` (min), ``+inf`` when not finite."""
  check_mode(mode)
  f = as_array(fitness)
  return np.where(np.isfinite(f), -f if mode == "max" else f, np.inf)


def rank(fitness: Any, mode: str) -> np.ndarray:
  """Members ordered from best to worst.

  Args:
    fitness: ``[P]`` fitness values.
    mode: ``max`` (higher is better) or ``min``.

  Returns:
    int ``[P]`` member indices, best first. Non-finite values come last
    whatever the mode (a diverged member is never the best); ties,
    non-finite ones included, keep member-index order.

  Raises:
    ValueError: an unknown ``mode`` or a fitness that is not 1-D numbers.
  """
  key = sort_key(fitness, mode)
  return np.argsort(key, kind="stable").astype(np.int64)


def best(fitness: Any, mode: str) -> int:
  """Index of the best member (see :func:`rank`)."""
  return int(rank(fitness, mode)[0])


def is_better(a: float, b: float | None, mode: str) -> bool:
  """Whether fitness ``a`` beats ``b`` (``None`` or non-finite ``b`` is beaten by any finite ``a``)."""
  check_mode(mode)
  if not np.isfinite(a):
    return False
  if b is None or not np.isfinite(b):
    return True
  return a > b if mode == "max" else a < b
