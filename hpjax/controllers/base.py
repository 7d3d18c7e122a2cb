"""The controller protocol: what the run loop asks of PBT, halving or a sweep.

After every epoch the loop asks the controller whether it acts
(:meth:`Controller.acts_at`); if so it hands it a :class:`View` of the
population (fitness, hyperparameters, structural groups) and applies the
returned :class:`Decision`: copies (``donors``) with new hyperparameters
(``hparams``), then survivors (``keep``). The loop never knows which
controller it runs; a plain sweep is the controller that never acts.

Controllers are frozen dataclasses of settings and pure functions of the
view: everything random comes from ``np.random.default_rng([seed,
generation])``, so a decision is the same on every process and after a
resume.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
import dataclasses
import numbers
from typing import Any

import numpy as np

# -- checks of settings and arguments: one line naming the field ---------------


def is_int(v: Any) -> bool:
  """An integer, and not a bool (Python's or NumPy's)."""
  return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def is_real(v: Any) -> bool:
  """A real number, and not a bool."""
  return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def check_int(field: str, value: Any, least: int) -> None:
  """Raises ``ValueError("FIELD: must be an integer >= LEAST, ...")`` unless ``value`` is one."""
  if not is_int(value) or value < least:
    raise ValueError(f"{field}: must be an integer >= {least}, got {value!r}")


def check_between(
  field: str, value: Any, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False
) -> None:
  """Raises ``ValueError("FIELD: must be in [LO, HI], ...")`` unless ``value`` is a number there.

  ``lo_open`` / ``hi_open`` leave an end out (the message says ``(`` / ``)``).
  """
  inside = is_real(value) and (
    (lo < value if lo_open else lo <= value) and (value < hi if hi_open else value <= hi)
  )
  if not inside:
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    raise ValueError(f"{field}: must be in {interval}, got {value!r}")


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value
class View:
  """What a controller sees when it acts.

  Attributes:
    epoch: epochs trained so far (the decision comes after this one).
    generation: the number of this decision (1 for the first), counted over
      the run; with ``seed`` it seeds the decision's random draws.
    seed: the run's seed.
    fitness: ``[P]`` validation fitness per position.
    mode: ``max`` or ``min``: the fitness's direction (:mod:`hpjax.fitness`).
    hparams: ``P`` dicts: each position's hyperparameters this epoch.
    groups: int ``[P]``: each position's structural group.
    space: the search space (name -> dimension).
    structural: the names that fix a member's group.
    max_epochs: epochs the run trains to.
  """

  epoch: int
  generation: int
  seed: int
  fitness: np.ndarray
  mode: str
  hparams: Sequence[Mapping[str, Any]]
  groups: np.ndarray
  space: Mapping[str, Any]
  structural: Sequence[str]
  max_epochs: int

  @property
  def rng(self) -> np.random.Generator:
    """This decision's generator: a function of (seed, generation) alone."""
    return np.random.default_rng([int(self.seed), int(self.generation)])


@dataclasses.dataclass(frozen=True, eq=False)
class Decision:
  """What the loop applies to the population, in this order.

  Attributes:
    donors: int ``[P]`` or None: position ``i`` takes the whole state of
      position ``donors[i]`` (``donors[i] == i``: kept). Copying members get a
      fresh PRNG key (:func:`hpjax.engine.exploit_key`).
    hparams: ``P`` dicts or None: each position's hyperparameters from now on.
    keep: int ``[K]`` increasing, or None: the positions that go on training
      (the others are dropped and the survivors renumbered ``0..K-1``).
    events: one dict per change, written to ``lineage.jsonl``; the values of
      ``target``, ``donor`` and ``member`` are positions, which the loop turns
      into member ids.
    note: a few words for the progress table (``replaced 4``).
  """

  donors: np.ndarray | None = None
  hparams: list | None = None
  keep: np.ndarray | None = None
  events: list = dataclasses.field(default_factory=list)
  note: str = ""

  @property
  def replaced(self) -> np.ndarray:
    """Positions that copy another member."""
    if self.donors is None:
      return np.zeros(0, np.int64)
    return np.flatnonzero(self.donors != np.arange(len(self.donors)))


class Controller(abc.ABC):
  """Decides, between epochs, how the population changes.

  Subclasses are frozen dataclasses of settings with :meth:`validate`.
  """

  name: str = "controller"
  # Whether its decisions are generations worth numbering in the progress table.
  counts_generations: bool = False

  @property
  def interval(self) -> int:
    """Epochs per generation (for progress display)."""
    return 1

  def validate(self) -> "Controller":
    """Checks every setting.

    Returns:
      ``self``, for chaining.

    Raises:
      ValueError: one line naming ``<name>.<field>`` and the allowed values.
    """
    return self

  @abc.abstractmethod
  def acts_at(self, epoch: int) -> bool:
    """Whether the controller acts after ``epoch`` in a run longer than ``epoch``.

    The loop makes no decision after a run's last epoch (nothing would train
    on it); a relaunch that extends the run makes it first.
    """

  @abc.abstractmethod
  def decide(self, view: View) -> Decision:
    """The decision after ``view.epoch``."""

  def population_sizes(self, population: int, epochs: int) -> tuple[int, ...]:
    """The sizes a population of ``population`` members has over ``epochs`` epochs.

    In order, from the start, each different from the one before; a
    controller that never removes members has one. The population compiles one epoch for all of them where it can
    (:class:`hpjax.Population`'s ``member_block``).
    """
    del epochs
    return (population,)

  def settings(self) -> dict[str, Any]:
    """The settings as a JSON-able dict (``name`` included): what config.json records."""
    out = {"name": self.name}
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


@dataclasses.dataclass(frozen=True)
class Sweep(Controller):
  """A plain sweep: every member trains its own hyperparameters to the end."""

  name = "none"

  def acts_at(self, epoch: int) -> bool:
    del epoch
    return False

  def decide(self, view: View) -> Decision:
    del view
    return Decision()
