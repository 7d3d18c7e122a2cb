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
import math
import numbers
from typing import Any

import numpy as np

from hpjax import fitness as fitness_lib
from hpjax import space as space_lib
from hpjax.controllers import base
from hpjax.fitness import rank


def _is_int(v: Any) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _is_real(v: Any) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


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
    """Checks every field.

    Returns:
      ``self``, for chaining.

    Raises:
      ValueError: one line naming ``pbt.<field>`` and the allowed values.
    """
    if not _is_int(self.interval) or self.interval < 1:
      raise ValueError(f"pbt.interval: must be an integer >= 1, got {self.interval!r}")
    if not _is_int(self.burn_in) or self.burn_in < 0:
      raise ValueError(f"pbt.burn_in: must be an integer >= 0, got {self.burn_in!r}")
    q = self.quantile_fraction
    if not _is_real(q) or not 0.0 < q <= 0.5:
      raise ValueError(f"pbt.quantile_fraction: must be in (0, 0.5], got {q!r}")
    f = self.perturbation_factors
    if (
      isinstance(f, (str, bytes))
      or not isinstance(f, Sequence)
      or not f
      or not all(_is_real(x) and math.isfinite(x) and x > 0 for x in f)
    ):
      raise ValueError(
        f"pbt.perturbation_factors: must be a non-empty tuple of positive numbers, got {f!r}"
      )
    p = self.resample_probability
    if not _is_real(p) or not 0.0 <= p <= 1.0:
      raise ValueError(f"pbt.resample_probability: must be in [0, 1], got {p!r}")
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
  if not _is_int(epoch) or epoch < 0:
    raise ValueError(f"epoch: must be an integer >= 0, got {epoch!r}")
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
  q = max(1, int(math.floor(population * quantile_fraction + 0.5)))
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
  step entirely.

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
  needed = [k for k in sorted(space) if k not in fixed]
  for i, h in enumerate(hparams):
    if not isinstance(h, Mapping):
      raise ValueError(f"hparams[{i}]: must be a dict name -> value, got {type(h).__name__}")
    missing = [k for k in needed if k not in h]
    if explore_fn is None and missing:
      raise ValueError(f"hparams[{i}]: missing {missing[0]!r}, a vectorized dimension of the space")

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
    same = [j for j in top if g[j] == g[i]]
    if same:
      donor = same[int(rng.integers(len(same)))]
    else:
      rest = [int(j) for j in order if g[j] == g[i] and int(j) not in bottom]
      if not rest:
        continue  # the whole group is in the bottom quantile: nobody to copy
      donor = rest[0]
    source = dict(hparams[donor])
    if explore_fn is None:
      new = _default_explore(source, space, cfg, rng, fixed)
    else:
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
    old = dict(hparams[i])
    donors[i] = donor
    new_hparams[i] = new
    changes = {
      k: (old.get(k), new.get(k))
      for k in sorted(set(old) | set(new), key=str)
      if old.get(k) != new.get(k)
    }
    events.append(
      {
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
    )
  return Plan(donors, new_hparams, events)
