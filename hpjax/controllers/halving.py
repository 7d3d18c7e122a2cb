"""Successive halving: at each rung, keep the best fraction of the population.

Follows Jamieson & Talwalkar 2016, "Non-stochastic Best Arm Identification
and Hyperparameter Optimization", with the geometric rung schedule of
Hyperband (Li et al. 2017) and ASHA (Li et al. 2018): the first rung comes
after ``grace_period`` epochs and each later one ``reduction_factor`` (``eta``)
times as many epochs in, at ``grace_period * eta**k``. At each rung the whole
population is ranked by fitness and only the best ``ceil(P / eta)`` members
go on training (see :func:`keep_size`).

Rungs are synchronous (every member has trained the same number of epochs when
it is judged), so there is none of ASHA's asynchronous promotion. :func:`cut`
is a pure function of host arrays that only decides positions; :class:`Halving`
is the controller (:mod:`hpjax.controllers.base`) the run loop drives, and the
population compacts the survivors with one device gather per structural
group, renumbered ``0 .. len(keep) - 1`` in their previous relative order.

Ranking is global, across structural groups: every member reports the same
fitness metric, so fitness is comparable whatever its shapes. A consequence is
that a whole group can be pruned at a rung and vanish from the population.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hpjax import fitness as fitness_lib
from hpjax.controllers import base
from hpjax.fitness import rank


@dataclasses.dataclass(frozen=True)
class Halving(base.Controller):
  """Successive halving: when it cuts, and how hard.

  Ranks in the direction of the run's fitness metric (:mod:`hpjax.fitness`).

  Attributes:
    grace_period: epochs trained before the first rung; at least 1.
    reduction_factor: ``eta`` in Hyperband; each rung keeps ``ceil(P / eta)``
      members and the rungs sit ``eta`` times further apart; at least 2.
    min_members: a rung never leaves fewer members than this (a population
      already at or below it is left alone); at least 1.
  """

  name = "halving"
  grace_period: int = 1
  reduction_factor: int = 3
  min_members: int = 1

  def acts_at(self, epoch: int) -> bool:
    return is_rung(epoch, self, epoch + 1)

  def population_sizes(self, population: int, epochs: int) -> tuple[int, ...]:
    sizes = [population]
    for _ in rung_epochs(self, epochs):
      k = keep_size(sizes[-1], self)
      if k != sizes[-1]:  # a rung at min_members cuts no more
        sizes.append(k)
    return tuple(sizes)

  def decide(self, view: base.View) -> base.Decision:
    c = cut(view.fitness, self, view.epoch, view.groups, mode=view.mode)
    events = [{"event": "pruned", **rec} for rec in c.records]
    return base.Decision(
      keep=c.keep, events=events, note=f"pruned {len(c.pruned)}, {len(c.keep)} left"
    )

  def validate(self) -> "Halving":
    """Checks every field (:meth:`base.Controller.validate`); errors name ``halving.<field>``."""
    base.check_int("halving.grace_period", self.grace_period, 1)
    base.check_int("halving.reduction_factor", self.reduction_factor, 2)
    base.check_int("halving.min_members", self.min_members, 1)
    return self


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value
class Cut:
  """One rung's decision.

  Attributes:
    keep: int ``[K]`` ids (into the current population order) of the members
      that go on training, in increasing order, so that compacting the
      population is a plain gather that keeps their relative order.
    pruned: int ``[P - K]`` ids of the members stopped at this rung, in
      increasing order.
    records: one dict per pruned member, in member order: ``rung`` (0 for the
      first rung), ``epoch``, ``member``, ``fitness`` (its last fitness, a
      float, possibly NaN), ``rank`` (0-based position in the whole
      population's ranking, 0 = best) and, when groups were given, ``group``.
  """

  keep: np.ndarray
  pruned: np.ndarray
  records: list


def rung_epochs(cfg: Halving, max_epochs: int) -> list[int]:
  """The epochs after which a rung cuts the population.

  The geometric schedule of Hyperband / ASHA: ``grace_period * eta**k`` for
  ``k = 0, 1, ...``, strictly below ``max_epochs``. A rung at ``max_epochs``
  itself would be pointless: training stops there anyway and the final
  ranking is the tuner's result.

  Args:
    cfg: the configuration.
    max_epochs: epochs the longest-lived members train.

  Returns:
    The rung epochs, increasing; empty when ``grace_period >= max_epochs``.
    E.g. grace 1, eta 3, 30 epochs: ``[1, 3, 9, 27]``.

  Raises:
    ValueError: a bad config or ``max_epochs``.
  """
  cfg.validate()
  base.check_int("max_epochs", max_epochs, 1)
  out = []
  e = cfg.grace_period
  while e < max_epochs:
    out.append(int(e))
    e *= cfg.reduction_factor
  return out


def is_rung(epoch: int, cfg: Halving, max_epochs: int) -> bool:
  """Whether a rung cuts the population after training epoch ``epoch``.

  Args:
    epoch: epochs trained so far, counted from 1 after the first epoch.
    cfg: the configuration.
    max_epochs: epochs the longest-lived members train.

  Returns:
    True when ``epoch`` is one of :func:`rung_epochs`.

  Raises:
    ValueError: a bad config, ``max_epochs`` or ``epoch``.
  """
  base.check_int("epoch", epoch, 0)
  return epoch in rung_epochs(cfg, max_epochs)


def rung_index(epoch: int, cfg: Halving) -> int:
  """Which rung ``epoch`` is: ``k`` such that ``epoch == grace_period * eta**k``.

  Args:
    epoch: a rung epoch.
    cfg: the configuration.

  Returns:
    ``k >= 0``.

  Raises:
    ValueError: a bad config, or an ``epoch`` off the geometric schedule.
  """
  cfg.validate()
  base.check_int("epoch", epoch, 0)
  # Integer arithmetic: a float log would misjudge large powers.
  k, e = 0, cfg.grace_period
  while e < epoch:
    k, e = k + 1, e * cfg.reduction_factor
  if e != epoch:
    raise ValueError(
      f"epoch: {epoch} is not a rung epoch; allowed: grace_period * "
      f"reduction_factor**k ({cfg.grace_period}, "
      f"{cfg.grace_period * cfg.reduction_factor}, ...)"
    )
  return k


def keep_size(population: int, cfg: Halving) -> int:
  """Members that survive a rung.

  ``ceil(P / eta)``: rounding up keeps at least one member and, when ``P`` is
  a power of ``eta``, gives exactly ``P / eta`` (so the classic schedules come
  out as in the papers). Hyperband's successive halving takes the floor
  instead, which can empty a small population. The result is then raised to
  ``min_members`` and capped at ``P``.

  Args:
    population: number of members ``P``.
    cfg: the configuration.

  Returns:
    The number kept; ``P`` when ``P <= min_members`` (in particular a
    population of 1 never changes).

  Raises:
    ValueError: a bad config or a negative ``population``.
  """
  cfg.validate()
  base.check_int("population", population, 0)
  k = -(-population // cfg.reduction_factor)  # exact integer ceil
  return int(min(population, max(k, cfg.min_members)))


def cut(
  fitness: np.ndarray,
  cfg: Halving,
  epoch: int,
  groups: np.ndarray | None = None,
  *,
  mode: str = "max",
) -> Cut:
  """One rung: keep the best :func:`keep_size` members, prune the rest.

  Members are ranked globally by :func:`hpjax.fitness.rank`: NaN and
  ±inf come last whatever the mode, and ties (non-finite ones included) go to
  the lower member index. With all-NaN fitness the first members survive.

  Args:
    fitness: ``[P]`` each member's fitness at this rung.
    cfg: the configuration.
    epoch: the rung epoch (``grace_period * eta**k``; see :func:`rung_index`),
      recorded with the rung index in the records.
    groups: optional int ``[P]`` structural group id of each member. It does
      not change the decision (ranking stays global, so a whole group may be
      pruned); it only adds ``group`` to the records.
    mode: ``max`` or ``min``: the fitness's direction.

  Returns:
    The :class:`Cut`.

  Raises:
    ValueError: one line naming the bad argument.
  """
  cfg.validate()
  k = rung_index(epoch, cfg)
  f = fitness_lib.as_array(fitness)
  p = f.shape[0]
  g = None
  if groups is not None:
    g = np.asarray(groups)
    if g.shape != (p,) or (p and not np.issubdtype(g.dtype, np.integer)):
      raise ValueError(f"groups: must be an int array of shape ({p},), got {g.dtype} {g.shape}")
  order = rank(f, fitness_lib.check_mode(mode))
  n_keep = keep_size(p, cfg)
  position = np.empty(p, np.int64)
  position[order] = np.arange(p)
  # Sorting the ids (not keeping rank order) makes compaction order-stable.
  keep = np.sort(order[:n_keep]).astype(np.int64)
  pruned = np.sort(order[n_keep:]).astype(np.int64)
  records = []
  for i in pruned.tolist():
    rec = {
      "rung": k,
      "epoch": int(epoch),
      "member": i,
      "fitness": float(f[i]),
      "rank": int(position[i]),
    }
    if g is not None:
      rec["group"] = g[i].item()
    records.append(rec)
  return Cut(keep, pruned, records)
