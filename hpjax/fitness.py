"""One fitness convention: the ranked metric carries its direction.

Everything that ranks members (PBT's quantiles, successive halving's cut, the
tuner's summary and ranking, the best checkpoint, the report, the progress
table) asks this module, so a run can never rank by one direction in one
place and by the other elsewhere.

A fitness is a validation metric name; its direction follows from the name:
``accuracy`` is maximised, ``loss`` and ``mse`` are minimised. Validation
``loss`` is the same objective for every member (see
:func:`hpjax.losses.validation`), so it can be compared across
members whatever loss each one trains with.

Non-finite values (NaN, +inf, -inf: a diverged member) always rank last,
whatever the direction; ties keep member order.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

MODES = ("max", "min")

# The built-in metric names -> direction (a user's Metric carries its own).
DIRECTIONS = {"accuracy": "max", "loss": "min", "mse": "min"}


def check_mode(mode: Any, field: str = "mode") -> str:
  """Returns ``mode`` if it is ``max`` or ``min``; ValueError naming ``field`` otherwise."""
  if mode not in MODES:
    raise ValueError(f"{field}: unknown value {mode!r}; allowed: {', '.join(MODES)}")
  return mode


@dataclasses.dataclass(frozen=True)
class Metric:
  """A validation (and training) metric: its name, per-example values and direction.

  Attributes:
    name: the name it is logged and ranked under (``val_<name>``,
      ``train_<name>``); not ``loss``, which is the validation loss.
    fn: ``(outputs, targets) -> [B]``, one value per example (jit-compatible);
      ``outputs`` are ``[B, K]`` logits, or ``[B, 1]`` predictions for
      regression. A split's metric is the mean over its examples (padding
      excluded, whatever ``eval_batch_size``); a training metric is the mean
      over the epoch's batches of each batch's mean. A per-batch value (a
      scalar) is refused while tracing: it could not leave out the padding of
      an evaluation chunk.
    mode: ``max`` (higher is better) or ``min``.
  """

  name: str
  fn: Callable[[jax.Array, jax.Array], jax.Array]
  mode: str

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name.isidentifier() or self.name == "loss":
      raise ValueError(f"metric.name: must be an identifier other than 'loss', got {self.name!r}")
    if not callable(self.fn):
      raise ValueError(f"metric.fn: must be callable, got {type(self.fn).__name__}")
    check_mode(self.mode, "metric.mode")


def _accuracy(outputs: jax.Array, targets: jax.Array) -> jax.Array:
  return (jnp.argmax(outputs, -1) == targets).astype(jnp.float32)


def _squared_error(outputs: jax.Array, targets: jax.Array) -> jax.Array:
  # Predictions [B, 1] or [B]: a reshape (outputs[..., 0] of [B] is the first prediction).
  return jnp.square(outputs.reshape(targets.shape) - targets)


ACCURACY = Metric("accuracy", _accuracy, "max")
MSE = Metric("mse", _squared_error, "min")
TASK_METRIC = {"classification": ACCURACY, "regression": MSE}


def as_metrics(metric: Any, task: str) -> tuple[Metric, ...]:
  """A run's metrics: ``metric`` as a tuple (None: the task's built-in one).

  Args:
    metric: None, a :class:`Metric`, a built-in name (``accuracy``, ``mse``),
      or a sequence of those; the first is the default fitness.
    task: ``classification`` or ``regression``.

  Raises:
    ValueError: an unknown name, a non-Metric, or two metrics with one name.
  """
  if metric is None:
    return (TASK_METRIC[task],)
  items = list(metric) if isinstance(metric, (list, tuple)) else [metric]
  builtin = {m.name: m for m in TASK_METRIC.values()}
  out = []
  for m in items:
    if isinstance(m, str) and m in builtin:
      m = builtin[m]
    if not isinstance(m, Metric):
      raise ValueError(
        f"metric: {m!r} is not a metric; allowed: accuracy, mse, or an hpjax.Metric(name, fn, mode)"
      )
    out.append(m)
  names = [m.name for m in out]
  if not out or len(set(names)) != len(names):
    raise ValueError(f"metric: needs one or more metrics with distinct names, got {names}")
  return tuple(out)


def direction(metric: str) -> str:
  """``max`` or ``min``: which way ``metric`` improves.

  Raises:
    ValueError: an unknown metric name, listing the known ones.
  """
  if metric not in DIRECTIONS:
    raise ValueError(f"fitness: unknown value {metric!r}; allowed: {', '.join(DIRECTIONS)}")
  return DIRECTIONS[metric]


def check(fitness: Any, metric: Any, field: str = "config.fitness") -> str:
  """Validates a fitness name against the run's metrics and returns its direction.

  Args:
    fitness: the ranked name: a metric's name, or ``loss`` (the validation
      loss, minimised).
    metric: the run's :class:`Metric` (or a sequence of them), or a task
      (``classification`` / ``regression``) for its built-in metric.
    field: the name used in the error message.

  Returns:
    ``max`` or ``min``.

  Raises:
    ValueError: one line naming ``field`` and the allowed names.
  """
  task = metric if isinstance(metric, str) else None
  metrics = as_metrics(None if task else metric, task or "classification")
  allowed = {m.name: m.mode for m in metrics}
  allowed["loss"] = "min"
  if fitness not in allowed:
    where = f" for {task}" if task else ""
    raise ValueError(f"{field}: unknown value {fitness!r}{where}; allowed: " + ", ".join(allowed))
  return allowed[fitness]


def resolve_mode(mode: Any, want: str, fitness: str, field: str) -> str:
  """The fitness's direction ``want``, refusing a configured ``mode`` that contradicts it.

  Args:
    mode: a configured mode: ``None`` (follow the fitness) or ``max``/``min``,
      which must equal ``want``.
    want: the fitness's direction.
    fitness: the fitness's name, for the message.
    field: the mode's name in error messages (e.g. ``config.controller.mode``).

  Returns:
    ``want``.

  Raises:
    ValueError: an unknown or contradicting ``mode``.
  """
  if mode is None:
    return want
  check_mode(mode, field)
  if mode != want:
    raise ValueError(
      f"{field}: {mode!r} contradicts fitness {fitness!r}, which is "
      f"{'maximised' if want == 'max' else 'minimised'}; leave it out "
      "(the direction follows the fitness)"
    )
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
