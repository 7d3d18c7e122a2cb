"""Population-based training: truncation selection, then perturbation.

Follows Jaderberg et al. 2017, "Population Based Training of Neural
Networks", with the semantics and defaults of Ray Tune's
``PopulationBasedTraining``: every ``interval`` epochs (after ``burn_in``)
the members are ranked by fitness; each member of the bottom quantile copies
the weights of a member of the top quantile (*exploit*) and takes that
member's hyperparameters, perturbed (*explore*).

Generations are synchronous: the whole population trains the same number of
epochs between decisions. :func:`exploit_explore` is a pure function of host
arrays and an explicit ``numpy.random.Generator``; :class:`PBT` is the
controller (:mod:`hpjax.controllers.base`) the run loop drives, and the
population applies its decision as one device gather per structural group.

Exploitation never crosses structural groups: members of different groups
have differently shaped parameters (or batch sizes), so a bottom member copies
only a member of its own group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import fractions
import math
from typing import Any

import numpy as np

from hpjax import fitness as fitness_lib
from hpjax import hparams as hp_lib
from hpjax import space as space_lib
from hpjax.controllers import base
from hpjax.fitness import rank


@dataclasses.dataclass(frozen=True)
class PBT(base.Controller):
  """Population-based training: how and when it replaces members.

  Ranks in the direction of the run's fitness metric (:mod:`hpjax.fitness`).

  Attributes:
    interval: epochs between decisions (one synchronous generation).
    burn_in: epochs trained before the first decision.
    quantile_fraction: fraction of the population in the top and in the
      bottom quantile, in ``(0, 0.5]`` (see :func:`quantile_size`).
    perturbation_factors: multiplicative perturbations of numeric
      hyperparameters, each equally likely.
    resample_probability: probability, per hyperparameter, of a redraw from
      the prior instead of a perturbation; in ``[0, 1]``.
  """

  name = "pbt"
  counts_generations = True
  interval: int = 1
  burn_in: int = 0
  quantile_fraction: float = 0.25
  perturbation_factors: tuple = (0.8, 1.2)
  resample_probability: float = 0.25

  def __post_init__(self):
    if isinstance(self.perturbation_factors, list):
      object.__setattr__(self, "perturbation_factors", tuple(self.perturbation_factors))

  def acts_at(self, epoch: int) -> bool:
    return should_decide(epoch, self)

  def decide(self, view: base.View) -> base.Decision:
    plan = exploit_explore(
      view.fitness,
      view.hparams,
      view.space,
      view.groups,
      self,
      view.rng,
      view.generation,
      mode=view.mode,
      structural=view.structural,
    )
    return base.Decision(
      donors=plan.donors,
      hparams=plan.hparams,
      events=plan.events,
      note=f"replaced {len(plan.events)}",
    )

  def validate(self) -> "PBT":
    """Checks every field (:meth:`base.Controller.validate`); errors name ``pbt.<field>``."""
    base.check_int("pbt.interval", self.interval, 1)
    base.check_int("pbt.burn_in", self.burn_in, 0)
    base.check_between("pbt.quantile_fraction", self.quantile_fraction, 0, 0.5, lo_open=True)
    f = self.perturbation_factors
    if not space_lib.are_perturbation_factors(f):
      raise ValueError(
        f"pbt.perturbation_factors: must be a non-empty tuple of positive numbers, got {f!r}"
      )
    base.check_between("pbt.resample_probability", self.resample_probability, 0, 1)
    return self


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value
class Plan:
  """One generation's decisions.

  Attributes:
    donors: int ``[P]``; member ``i`` takes the parameters, optimizer state
      and batch statistics of member ``donors[i]`` (``donors[i] == i``: kept).
    hparams: the new hyperparameters of every member (plain values: floats,
      ints, choice values such as ``'adam'``); unchanged for kept members.
    events: one dict per replaced member, in member order: ``generation``,
      ``target``, ``donor``, ``group``, ``target_fitness``,
      ``donor_fitness``, ``old_hparams``, ``new_hparams`` and ``changes``
      (name -> ``(old, new)`` for the values that differ).
  """

  donors: np.ndarray
  hparams: list
  events: list

  @property
  def replaced(self) -> np.ndarray:
    """Indices of the members that copy another member."""
    return np.flatnonzero(self.donors != np.arange(len(self.donors)))


def should_decide(epoch: int, cfg: PBT) -> bool:
  """Whether PBT acts after training epoch ``epoch``.

  Args:
    epoch: epochs trained so far, counted from 1 after the first epoch.
    cfg: the configuration.

  Returns:
    True at ``burn_in + k * interval`` for ``k >= 1``.

  Raises:
    ValueError: a bad config, or a negative / non-integer ``epoch``.
  """
  cfg.validate()
  base.check_int("epoch", epoch, 0)
  return epoch > cfg.burn_in and (epoch - cfg.burn_in) % cfg.interval == 0


def quantile_size(population: int, quantile_fraction: float) -> int:
  """Members in the top quantile and, equally, in the bottom one.

  ``round(P * quantile_fraction)`` (halves rounded up), at least 1 so that a
  small population still evolves, and at most ``floor(P / 2)`` so that the
  quantiles never overlap. Ray Tune takes the ceiling instead of the rounded
  value; the two agree whenever ``P * quantile_fraction`` is a whole number.

  Args:
    population: number of members ``P``.
    quantile_fraction: in ``(0, 0.5]``.

  Returns:
    The quantile size; 0 when ``P < 2`` (nothing to exploit).
  """
  if population < 2:
    return 0
  # In exact decimal arithmetic: 90 x 0.35 is 31.5 and rounds up, where the
  # binary product 31.499999999999996 would round down.
  exact = population * fractions.Fraction(repr(float(quantile_fraction)))
  q = max(1, int(math.floor(exact + fractions.Fraction(1, 2))))
  return min(q, population // 2)


def _default_explore(
  h: dict, space: Mapping[str, Any], cfg: PBT, rng: np.random.Generator, fixed: Sequence[str] = ()
) -> dict:
  out = dict(h)
  # Sorted names: the draw order, hence the result, does not depend on dict order.
  for name in sorted(space):
    if name in fixed or space_lib.is_structural(name, space):
      continue  # the donor's group fixes it
    out[name] = space_lib.perturb(
      space[name], h[name], rng, tuple(cfg.perturbation_factors), cfg.resample_probability
    )
    # As the member will train with it: the plan, hence the lineage, says what trains.
    out[name] = hp_lib.stored(name, out[name], space)
  return out


def exploit_explore(
  fitness: np.ndarray,
  hparams: Sequence[Mapping[str, Any]],
  space: Mapping[str, Any],
  groups: np.ndarray,
  cfg: PBT,
  rng: np.random.Generator,
  generation: int,
  explore_fn: Callable[[dict, np.random.Generator], dict] | None = None,
  *,
  mode: str = "max",
  structural: Sequence[str] = (),
) -> Plan:
  """One PBT decision: who copies whom, and the new hyperparameters.

  The bottom :func:`quantile_size` members by :func:`rank` are replaced, in
  member order. Each copies a member of the top quantile drawn uniformly
  among those of *its own structural group*. When its group has no member in
  the top quantile, it copies the best member of its group outside the bottom
  quantile instead; when the whole group lies in the bottom quantile, it is
  left alone (no other member has its shapes). Top and bottom never overlap,
  so every donor keeps its own state this generation.

  A replaced member's hyperparameters are its donor's, explored: each
  vectorized dimension of ``space`` goes through :func:`hpjax.space.perturb`
  (structural ones keep the donor's value; names outside ``space`` are
  copied unchanged), or ``explore_fn(donor_hparams_copy, rng)`` replaces that
  step entirely. The default explore gives a traced float as the float32 the
  member trains with (:func:`hpjax.hparams.stored`: inside its bounds), so
  the plan and its events say exactly what trains; ``explore_fn``'s values
  are kept as it returns them (the population rounds them when it sets them).

  Args:
    fitness: ``[P]`` fitness; NaN / inf rank last (all-NaN fitness ranks by
      member index).
    hparams: ``P`` dicts name -> current value; every vectorized name of
      ``space`` must be present.
    space: name -> dimension (:mod:`hpjax.space`).
    groups: int ``[P]`` structural group id of each member.
    cfg: the configuration.
    rng: the random generator; the plan is a pure function of its state.
    generation: recorded in the events.
    explore_fn: optional custom explore, ``(dict, rng) -> dict``; it must not
      change structural values.
    mode: ``max`` or ``min``: the fitness's direction.
    structural: names of ``hparams`` that fix a member's group (besides the
      space's structural names); ``explore_fn`` must keep them.

  Returns:
    The :class:`Plan`.

  Raises:
    ValueError: one line naming the bad argument.
  """
  f, g, space, fixed = _checked_inputs(
    fitness, hparams, space, groups, cfg, rng, mode, structural, explore_fn is None
  )
  p = f.shape[0]
  donors = np.arange(p, dtype=np.int64)
  new_hparams = [dict(h) for h in hparams]
  events: list[dict] = []
  q = quantile_size(p, cfg.quantile_fraction)
  if q == 0:
    return Plan(donors, new_hparams, events)
  order = rank(f, mode)
  top = [int(j) for j in order[:q]]
  bottom = {int(j) for j in order[p - q :]}
  for i in sorted(bottom):
    donor = _donor(i, top, bottom, order, g, rng)
    if donor is None:
      continue  # the whole group is in the bottom quantile: nobody to copy
    source = dict(hparams[donor])
    if explore_fn is None:
      new = _default_explore(source, space, cfg, rng, fixed)
    else:
      new = _custom_explore(explore_fn, source, rng, fixed)
    donors[i] = donor
    new_hparams[i] = new
    events.append(_event(generation, i, donor, g, f, dict(hparams[i]), new))
  return Plan(donors, new_hparams, events)


def _checked_inputs(
  fitness: np.ndarray,
  hparams: Sequence[Any],
  space: Mapping[str, Any],
  groups: np.ndarray,
  cfg: PBT,
  rng: np.random.Generator,
  mode: str,
  structural: Sequence[str],
  default_explore: bool,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any], tuple[str, ...]]:
  """Checks :func:`exploit_explore`'s arguments.

  Returns:
    The fitness and the groups as arrays, the validated space, and the names
    an explore step must keep (the given ``structural`` and the space's).
  """
  cfg.validate()
  fitness_lib.check_mode(mode)
  f = fitness_lib.as_array(fitness)
  p = f.shape[0]
  if not isinstance(rng, np.random.Generator):
    raise ValueError(f"rng: must be a numpy.random.Generator, got {type(rng).__name__}")
  if len(hparams) != p:
    raise ValueError(f"hparams: needs one dict per member ({p}), got {len(hparams)}")
  g = np.asarray(groups)
  if g.shape != (p,) or (p and not np.issubdtype(g.dtype, np.integer)):
    raise ValueError(f"groups: must be an int array of shape ({p},), got {g.dtype} {g.shape}")
  space = space_lib.validate(space)
  fixed = tuple(
    dict.fromkeys(list(structural) + [k for k in space if space_lib.is_structural(k, space)])
  )
  # The default explore perturbs every vectorized dimension: each member needs its value.
  _check_hparams(hparams, [k for k in sorted(space) if k not in fixed] if default_explore else [])
  return f, g, space, fixed


def _check_hparams(hparams: Sequence[Any], needed: list[str]) -> None:
  """Every member's hyperparameters are a dict holding each of the ``needed`` names."""
  for i, h in enumerate(hparams):
    if not isinstance(h, Mapping):
      raise ValueError(f"hparams[{i}]: must be a dict name -> value, got {type(h).__name__}")
    missing = [k for k in needed if k not in h]
    if missing:
      raise ValueError(f"hparams[{i}]: missing {missing[0]!r}, a vectorized dimension of the space")


def _donor(
  i: int,
  top: list[int],
  bottom: set[int],
  order: np.ndarray,
  g: np.ndarray,
  rng: np.random.Generator,
) -> int | None:
  """The member that bottom member ``i`` copies; None when its group offers none.

  A uniform draw among its group's top members, else its group's best member
  outside the bottom quantile.
  """
  same = [j for j in top if g[j] == g[i]]
  if same:
    return same[int(rng.integers(len(same)))]
  rest = [int(j) for j in order if g[j] == g[i] and int(j) not in bottom]
  return rest[0] if rest else None


def _custom_explore(
  explore_fn: Callable, source: dict, rng: np.random.Generator, fixed: Sequence[str]
) -> dict:
  """A user's explore step on a copy of the donor's values; it must keep the structural ones."""
  new = explore_fn(dict(source), rng)
  if not isinstance(new, Mapping):
    raise ValueError(f"explore_fn: must return a dict name -> value, got {type(new).__name__}")
  new = dict(new)
  for k in fixed:
    if source.get(k) != new.get(k):
      raise ValueError(
        f"explore_fn: changed structural hyperparameter {k!r} "
        f"({source.get(k)!r} -> {new.get(k)!r}); it must keep the donor's value"
      )
  return new


def _event(
  generation: int, i: int, donor: int, g: np.ndarray, f: np.ndarray, old: dict, new: dict
) -> dict[str, Any]:
  """The lineage event of member ``i`` copying ``donor`` and taking ``new`` values."""
  changes = {
    k: (old.get(k), new.get(k))
    for k in sorted(set(old) | set(new), key=str)
    if old.get(k) != new.get(k)
  }
  return {
    "generation": int(generation),
    "target": i,
    "donor": donor,
    "group": g[i].item(),
    "target_fitness": float(f[i]),
    "donor_fitness": float(f[donor]),
    "old_hparams": old,
    "new_hparams": dict(new),
    "changes": changes,
  }
