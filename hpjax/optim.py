"""Optimizer families whose hyperparameters, *and family*, vary per member.

All six families (sgd, momentum, nesterov, rmsprop, adam, adamw) are one optax
``GradientTransformation`` over a shared pair of moment buffers (``mu``,
``nu``): each member's integer ``optimizer`` index selects which update rule
reads and writes them. A population that mixes families therefore compiles
once and keeps two buffers per parameter, not one set per family. The rules
reproduce optax's own optimizers exactly (tested against ``optax.sgd``,
``optax.rmsprop``, ``optax.adam``, ``optax.adamw``); the cost of this against
a structural family (one group per optimizer) is measured by
``experiments/bench_engine.py`` and recorded in ``docs/benchmarks.md``.

Every hyperparameter is injected with ``optax.inject_hyperparams``, so it is
a traced per-member value in ``opt_state.hyperparams``: a controller changes
it with ``optax.tree_utils.tree_set`` and nothing recompiles. The learning-rate
*schedule shape* (constant, cosine, linear warm-up) is structural and shared;
it multiplies each member's own base learning rate.

Weight decay follows PyTorch's convention: decoupled (AdamW) for ``adamw``,
an L2 term added to the gradient for every other family.

**Changing a member's family.** The moment buffers mean different things to
different families (momentum's running sum is not Adam's first moment, and
Adam's bias correction reads the step count), so a member whose family
changes — by PBT's explore, by copying a donor of another family, or by a
replayed schedule — gets that family's fresh state: :func:`reset_family_state`
zeroes its ``mu``, ``nu`` and ``count``, exactly what a new optax optimizer of
the new family starts from. The learning-rate schedule's own step count is
not reset: the schedule follows the run's steps.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

FAMILIES = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "warmup")

# Defaults of the vectorized optimizer hyperparameters (optax's where it has one).
DEFAULTS = {
    "learning_rate": 1e-3,
    "momentum": 0.9,      # momentum / nesterov
    "b1": 0.9,            # adam / adamw
    "b2": 0.999,          # adam / adamw
    "eps": 1e-8,          # rmsprop / adam / adamw
    "weight_decay": 0.0,  # L2 (decoupled for adamw)
    "rms_decay": 0.9,     # rmsprop's squared-gradient decay
}
HPARAMS = tuple(DEFAULTS) + ("optimizer",)


def family_index(name: str) -> int:
  """Index of an optimizer family name; ValueError naming the allowed ones."""
  if name not in FAMILIES:
    raise ValueError(f"optimizer: unknown value {name!r}; allowed: {', '.join(FAMILIES)}")
  return FAMILIES.index(name)


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Structural learning-rate schedule shape, shared by a group.

  The member's learning rate is ``learning_rate * factor(step)``.

  Attributes:
    kind: ``constant``, ``cosine`` (decay to ``alpha`` over ``decay_steps``),
      ``warmup`` (linear from 0 over ``warmup_steps``, then constant) or
      ``warmup_cosine`` (linear warm-up then cosine decay).
    warmup_steps: steps of linear warm-up.
    decay_steps: total steps of the cosine decay (warm-up included).
    alpha: final factor of the cosine decay.
  """

  kind: str = "constant"
  warmup_steps: int = 0
  decay_steps: int = 1
  alpha: float = 0.0

  def validate(self) -> "Schedule":
    if self.kind not in SCHEDULES:
      raise ValueError(f"schedule: unknown value {self.kind!r}; allowed: {', '.join(SCHEDULES)}")
    if self.kind in ("warmup", "warmup_cosine") and self.warmup_steps < 1:
      raise ValueError(f"schedule.warmup_steps: must be >= 1 for {self.kind!r}, got {self.warmup_steps}")
    if self.kind in ("cosine", "warmup_cosine") and self.decay_steps <= self.warmup_steps:
      raise ValueError("schedule.decay_steps: must exceed warmup_steps, got "
                       f"{self.decay_steps} <= {self.warmup_steps}")
    return self

  def factor_fn(self) -> Callable[[jax.Array], jax.Array]:
    """The multiplier of the base learning rate as an optax schedule."""
    self.validate()
    if self.kind == "constant":
      return optax.constant_schedule(1.0)
    if self.kind == "cosine":
      return optax.cosine_decay_schedule(1.0, self.decay_steps, self.alpha)
    if self.kind == "warmup":
      return optax.linear_schedule(0.0, 1.0, self.warmup_steps)
    return optax.warmup_cosine_decay_schedule(0.0, 1.0, self.warmup_steps,
                                              self.decay_steps, end_value=self.alpha)


@dataclasses.dataclass(frozen=True)
class EpochSchedule:
  """A schedule shape given in epochs; groups turn it into steps.

  Members with different batch sizes take different numbers of steps per
  epoch, so a run's schedule is declared in epochs and converted per group.
  """

  kind: str = "constant"
  warmup_epochs: float = 0.0
  total_epochs: float = 1.0
  alpha: float = 0.0

  def for_steps(self, steps_per_epoch: int) -> Schedule:
    """The step-based :class:`Schedule` for a group."""
    warmup = int(round(self.warmup_epochs * steps_per_epoch))
    if self.kind in ("warmup", "warmup_cosine"):
      warmup = max(warmup, 1)
    total = max(int(round(self.total_epochs * steps_per_epoch)), warmup + 1)
    return Schedule(self.kind, warmup, total, self.alpha).validate()


class FamilyState(NamedTuple):
  """Shared optimizer buffers: step count, first and second moments."""
  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates


def reset_family_state(opt_state, reset: jax.Array):
  """Zeroes the family buffers (step count, ``mu``, ``nu``) of some members.

  Args:
    opt_state: a population's optimizer state (every leaf ``[P, ...]``).
    reset: bool ``[P]``: the members whose family changed.

  Returns:
    ``opt_state`` with the :class:`FamilyState` of the ``reset`` members
    zeroed (the state a fresh optimizer starts from) and everything else,
    the injected hyperparameters and the schedule's count included, kept.
  """
  reset = jnp.asarray(reset, bool)

  def zero(a):
    mask = reset.reshape(reset.shape + (1,) * (a.ndim - 1))
    return jnp.where(mask, jnp.zeros((), a.dtype), a)

  return jax.tree.map(
      lambda node: jax.tree.map(zero, node) if isinstance(node, FamilyState) else node,
      opt_state, is_leaf=lambda node: isinstance(node, FamilyState))


def scale_by_family(optimizer, momentum, b1, b2, eps, weight_decay, rms_decay
                    ) -> optax.GradientTransformation:
  """The update direction of family ``FAMILIES[optimizer]`` (before -lr).

  Args:
    optimizer: integer family index (may be traced).
    momentum, b1, b2, eps, weight_decay, rms_decay: hyperparameters (may be traced).

  Returns:
    An optax transformation producing the family's direction; the learning
    rate is applied by :func:`family_optimizer`.
  """

  def init_fn(params):
    zeros = optax.tree.zeros_like(params)
    return FamilyState(jnp.zeros([], jnp.int32), zeros, optax.tree.zeros_like(params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("scale_by_family needs params (weight decay reads them)")
    fam = jnp.asarray(optimizer, jnp.int32)
    is_mom = (fam == 1) | (fam == 2)
    is_rms = fam == 3
    is_adam = (fam == 4) | (fam == 5)
    count = optax.safe_increment(state.count)
    t = count.astype(jnp.float32)
    bc1 = 1.0 - b1 ** t
    bc2 = 1.0 - b2 ** t

    def per_leaf(g, m, v, p):
      # L2 for every family but AdamW, whose decay is decoupled (added below).
      g = g + jnp.where(fam == 5, 0.0, weight_decay) * p
      m_mom = momentum * m + g
      m_adam = b1 * m + (1.0 - b1) * g
      v_rms = rms_decay * v + (1.0 - rms_decay) * g * g
      v_adam = b2 * v + (1.0 - b2) * g * g
      new_m = jnp.where(is_mom, m_mom, jnp.where(is_adam, m_adam, m))
      new_v = jnp.where(is_rms, v_rms, jnp.where(is_adam, v_adam, v))
      d_adam = (m_adam / bc1) / (jnp.sqrt(v_adam / bc2) + eps)
      d_adam = d_adam + jnp.where(fam == 5, weight_decay, 0.0) * p
      d = jnp.select(
          [fam == 0, fam == 1, fam == 2, fam == 3],
          [g, m_mom, g + momentum * m_mom, g * jax.lax.rsqrt(v_rms + eps)],
          d_adam)
      return d.astype(g.dtype), new_m, new_v

    out = jax.tree.map(per_leaf, updates, state.mu, state.nu, params)
    treedef = jax.tree.structure(updates)
    leaves = treedef.flatten_up_to(out)
    d = treedef.unflatten([l[0] for l in leaves])
    mu = treedef.unflatten([l[1] for l in leaves])
    nu = treedef.unflatten([l[2] for l in leaves])
    return d, FamilyState(count, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def family_optimizer(learning_rate, optimizer, momentum=DEFAULTS["momentum"],
                     b1=DEFAULTS["b1"], b2=DEFAULTS["b2"], eps=DEFAULTS["eps"],
                     weight_decay=DEFAULTS["weight_decay"], rms_decay=DEFAULTS["rms_decay"],
                     *, schedule: Schedule = Schedule()) -> optax.GradientTransformation:
  """One member's optimizer: a family direction scaled by the scheduled rate."""
  factor = schedule.factor_fn()
  return optax.chain(
      scale_by_family(optimizer, momentum, b1, b2, eps, weight_decay, rms_decay),
      optax.scale_by_schedule(lambda count: -learning_rate * factor(count)),
  )


def make_optimizer(schedule: Schedule = Schedule(), static_family: str | None = None,
                   **hparams) -> optax.GradientTransformation:
  """The injected optimizer of a group.

  Args:
    schedule: the group's (structural) schedule shape.
    static_family: if given, the family is fixed at trace time (structural)
      and the injected ``optimizer`` value is ignored; XLA then drops the other
      families' arithmetic. Used to measure what vectorizing the family costs.
    **hparams: initial values of :data:`HPARAMS` (scalars, or per-member
      values when called under ``vmap``); missing ones take :data:`DEFAULTS`.

  Returns:
    ``optax.inject_hyperparams`` over :func:`family_optimizer`: its state's
    ``hyperparams`` dict holds every value as a traced array.
  """
  unknown = set(hparams) - set(HPARAMS)
  if unknown:
    raise ValueError(f"optimizer hyperparameters: unknown {sorted(unknown)}; allowed: {', '.join(HPARAMS)}")
  values = {**DEFAULTS, "optimizer": 0, **hparams}
  fixed = None if static_family is None else family_index(static_family)
  factory = optax.inject_hyperparams(
      lambda learning_rate, optimizer, momentum, b1, b2, eps, weight_decay, rms_decay:
      family_optimizer(learning_rate, optimizer if fixed is None else fixed, momentum, b1, b2,
                       eps, weight_decay, rms_decay, schedule=schedule),
      hyperparam_dtype=jnp.float32)
  return factory(**values)
