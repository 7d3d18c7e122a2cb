"""Search-space dimensions and the initial sampling of a population.

A dimension is *vectorized* when its value is a traced per-member number
(learning rate, optimizer family, activation, ...): members with different
values share one compiled group. It is *structural* when it changes shapes
(batch size, model family, depth, width, kernel size): each distinct value
makes a group of its own.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpjax import optim
from hpjax.models import ACTIVATIONS
from hpjax.losses import CLASSIFICATION_LOSSES, REGRESSION_LOSSES

# Hyperparameters a space may name, and whether each is structural.
VECTORIZED = tuple(optim.DEFAULTS) + ("optimizer", "activation", "loss", "dropout",
                                      "label_smoothing")
STRUCTURAL = ("batch_size", "family", "depth", "width", "kernel_size", "dense",
              "convs_per_stage", "batch_norm")
NAMES = VECTORIZED + STRUCTURAL
_CHOICES = {"optimizer": optim.FAMILIES, "activation": tuple(ACTIVATIONS),
            "loss": tuple(dict.fromkeys(CLASSIFICATION_LOSSES + REGRESSION_LOSSES)),
            "family": ("vgg", "resnet", "inception", "mlp")}


@dataclasses.dataclass(frozen=True)
class Float:
  """A real value in ``[lo, hi]``, sampled uniformly or log-uniformly."""
  lo: float
  hi: float
  log: bool = False

  def sample(self, rng: np.random.Generator, n: int) -> list[float]:
    if self.log:
      return [float(v) for v in np.exp(rng.uniform(math.log(self.lo), math.log(self.hi), n))]
    return [float(v) for v in rng.uniform(self.lo, self.hi, n)]

  def check(self, name: str) -> None:
    if not (np.isfinite(self.lo) and np.isfinite(self.hi)) or self.lo >= self.hi:
      raise ValueError(f"space.{name}: lo must be < hi, got lo={self.lo}, hi={self.hi}")
    if self.log and self.lo <= 0:
      raise ValueError(f"space.{name}: a log scale needs lo > 0, got lo={self.lo}")


@dataclasses.dataclass(frozen=True)
class Int:
  """An integer in ``[lo, hi]`` (inclusive), uniform or log-uniform."""
  lo: int
  hi: int
  log: bool = False

  def sample(self, rng: np.random.Generator, n: int) -> list[int]:
    if self.log:
      v = np.exp(rng.uniform(math.log(self.lo), math.log(self.hi + 1), n))
      return [int(min(max(math.floor(x), self.lo), self.hi)) for x in v]
    return [int(v) for v in rng.integers(self.lo, self.hi + 1, n)]

  def check(self, name: str) -> None:
    if self.lo >= self.hi:
      raise ValueError(f"space.{name}: lo must be < hi, got lo={self.lo}, hi={self.hi}")
    if self.log and self.lo <= 0:
      raise ValueError(f"space.{name}: a log scale needs lo > 0, got lo={self.lo}")


@dataclasses.dataclass(frozen=True)
class Choice:
  """One of ``values``; ``ordered`` ones mutate to a neighbouring value."""
  values: tuple
  ordered: bool = False

  def sample(self, rng: np.random.Generator, n: int) -> list[Any]:
    return [self.values[int(i)] for i in rng.integers(0, len(self.values), n)]

  def check(self, name: str) -> None:
    if not self.values:
      raise ValueError(f"space.{name}: choices are empty")
    if len(set(self.values)) != len(self.values):
      raise ValueError(f"space.{name}: duplicated choices in {list(self.values)}")
    allowed = _CHOICES.get(name)
    if allowed:
      for v in self.values:
        if v not in allowed:
          raise ValueError(f"space.{name}: unknown value {v!r}; allowed: {', '.join(allowed)}")


@dataclasses.dataclass(frozen=True)
class Fixed:
  """A constant."""
  value: Any

  def sample(self, rng: np.random.Generator, n: int) -> list[Any]:
    del rng
    return [self.value] * n

  def check(self, name: str) -> None:
    allowed = _CHOICES.get(name)
    if allowed and self.value not in allowed:
      raise ValueError(f"space.{name}: unknown value {self.value!r}; allowed: {', '.join(allowed)}")


Dimension = Float | Int | Choice | Fixed


def is_structural(name: str) -> bool:
  """Whether a hyperparameter splits the population into groups."""
  return name in STRUCTURAL


def from_config(cfg: Mapping[str, Any]) -> dict[str, Dimension]:
  """Builds a space from plain config dicts.

  Each entry is ``{'type': 'float'|'int'|'choice'|'fixed', ...}`` with
  ``lo``/``hi``/``log``, ``values``/``ordered`` or ``value``.

  Raises:
    ValueError: one line naming the entry and the problem.
  """
  space = {}
  for name, d in cfg.items():
    if name not in NAMES:
      raise ValueError(f"space.{name}: unknown hyperparameter; allowed: {', '.join(NAMES)}")
    d = dict(d)
    kind = d.pop("type", None)
    try:
      if kind == "float":
        dim = Float(float(d["lo"]), float(d["hi"]), bool(d.get("log", False)))
      elif kind == "int":
        dim = Int(int(d["lo"]), int(d["hi"]), bool(d.get("log", False)))
      elif kind == "choice":
        dim = Choice(tuple(d["values"]), bool(d.get("ordered", False)))
      elif kind == "fixed":
        dim = Fixed(d["value"])
      else:
        raise ValueError(f"space.{name}.type: unknown value {kind!r}; allowed: float, int, choice, fixed")
    except KeyError as e:
      raise ValueError(f"space.{name}: missing field {e.args[0]!r} for type {kind!r}") from None
    dim.check(name)
    space[name] = dim
  return space


def sample_random(space: Mapping[str, Dimension], n: int, seed: int) -> list[dict[str, Any]]:
  """``n`` independent random draws of every dimension (seeded)."""
  rng = np.random.default_rng(seed)
  cols = {name: dim.sample(rng, n) for name, dim in sorted(space.items())}
  return [{name: cols[name][i] for name in cols} for i in range(n)]


def candidates(space: Mapping[str, Dimension], name: str, default: Sequence[Any]) -> tuple:
  """All values a categorical hyperparameter can take in this space."""
  dim = space.get(name)
  if isinstance(dim, Choice):
    return tuple(dim.values)
  if isinstance(dim, Fixed):
    return (dim.value,)
  return tuple(default)
