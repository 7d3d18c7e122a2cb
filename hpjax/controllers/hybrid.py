"""PBT with successive-halving rungs: later generations train fewer, better members.

A budget-aware population-based training: at every rung
(``halving.grace_period * eta**k`` epochs, :mod:`hpjax.controllers.halving`)
the weakest members are dropped and the population compacted; at every PBT
decision (:mod:`hpjax.controllers.pbt`) the survivors exploit and explore
among themselves. When both fall on one epoch the cut comes first, so the
bottom quantile that copies is taken among the survivors.

Pruning spends the budget where PBT's strength lies: a member that trails
after a few epochs rarely wins, and every member-epoch not spent on it is
saved (Optuna's median pruner makes the same bet one trial at a time).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hpjax.controllers import base
from hpjax.controllers import halving as halving_lib
from hpjax.controllers import pbt as pbt_lib


@dataclasses.dataclass(frozen=True)
class PBTHalving(base.Controller):
  """PBT whose population is cut at successive-halving rungs.

  Attributes:
    pbt: when and how the survivors exploit and explore (:class:`hpjax.PBT`).
    halving: when and how hard the population is cut (:class:`hpjax.Halving`).
  """

  name = "pbt_halving"
  counts_generations = True
  pbt: pbt_lib.PBT = pbt_lib.PBT()
  halving: halving_lib.Halving = halving_lib.Halving()

  @property
  def interval(self) -> int:
    return self.pbt.interval

  def validate(self) -> "PBTHalving":
    self.pbt.validate()
    self.halving.validate()
    return self

  def acts_at(self, epoch: int) -> bool:
    return self.pbt.acts_at(epoch) or self.halving.acts_at(epoch)

  def population_sizes(self, population: int, epochs: int) -> tuple[int, ...]:
    return self.halving.population_sizes(population, epochs)

  def decide(self, view: base.View) -> base.Decision:
    p = len(view.fitness)
    keep, events, notes = None, [], []
    if self.halving.acts_at(view.epoch):
      cut = halving_lib.cut(view.fitness, self.halving, view.epoch, view.groups, mode=view.mode)
      keep = cut.keep
      events += [{"event": "pruned", **rec} for rec in cut.records]
      notes.append(f"pruned {len(cut.pruned)}, {len(cut.keep)} left")
    alive = np.arange(p) if keep is None else keep
    donors, hparams = None, None
    if self.pbt.acts_at(view.epoch) and len(alive) > 1:
      plan = pbt_lib.exploit_explore(
        view.fitness[alive],
        [view.hparams[i] for i in alive],
        view.space,
        view.groups[alive],
        self.pbt,
        view.rng,
        view.generation,
        mode=view.mode,
        structural=view.structural,
      )
      # The plan speaks of positions among the survivors: back to the population's.
      donors = np.arange(p)
      donors[alive] = alive[plan.donors]
      hparams = [dict(h) for h in view.hparams]
      for j, i in enumerate(alive):
        hparams[i] = plan.hparams[j]
      for e in plan.events:
        events.append({**e, "target": int(alive[e["target"]]), "donor": int(alive[e["donor"]])})
      notes.append(f"replaced {len(plan.events)}")
    return base.Decision(
      donors=donors, hparams=hparams, keep=keep, events=events, note=", ".join(notes)
    )

  def settings(self) -> dict:
    return {"name": self.name, "pbt": self.pbt.settings(), "halving": self.halving.settings()}
