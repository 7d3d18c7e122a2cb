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
*schedule shape* (constant, cosine, linear warm-up; :class:`EpochSchedule`) is
shared by the run and measured in epochs; the training loop sets its factor
(``lr_scale``) before each update, and it multiplies each member's own base
learning rate.

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

from collections.abc import Sequence
import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

FAMILIES = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "warmup")

# Defaults of the vectorized optimizer hyperparameters (optax's where it has one).
DEFAULTS = {
  "learning_rate": 1e-3,
  "momentum": 0.9,  # momentum / nesterov
  "b1": 0.9,  # adam / adamw
  "b2": 0.999,  # adam / adamw
  "eps": 1e-8,  # rmsprop / adam / adamw
  "weight_decay": 0.0,  # L2 (decoupled for adamw)
  "rms_decay": 0.9,  # rmsprop's squared-gradient decay
}
HPARAMS = tuple(DEFAULTS) + ("optimizer",)


def family_index(name: str) -> int:
  """Index of an optimizer family name; ValueError naming the allowed ones."""
  if name not in FAMILIES:
    raise ValueError(f"optimizer: unknown value {name!r}; allowed: {', '.join(FAMILIES)}")
  return FAMILIES.index(name)


@dataclasses.dataclass(frozen=True)
class EpochSchedule:
  """The learning-rate schedule shape of a run, in epochs.

  A member's learning rate at a step is ``learning_rate * factor(progress)``,
  where ``progress`` is the member's epochs trained so far, fractions of the
  current epoch included (``epoch + update / updates_per_epoch``). In epochs,
  one schedule serves members of every batch size, and a member whose batch
  size changes keeps its place in the schedule.

  Attributes:
    kind: ``constant``, ``cosine`` (decay from 1 to ``alpha`` over
      ``total_epochs``, then ``alpha``), ``warmup`` (linear from 0 over
      ``warmup_epochs``, then constant) or ``warmup_cosine`` (linear warm-up,
      then a cosine decay to ``alpha`` at ``total_epochs``).
    warmup_epochs: length of the linear warm-up.
    total_epochs: where a cosine decay ends (warm-up included).
    alpha: final factor of the cosine decay.
  """

  kind: str = "constant"
  warmup_epochs: float = 0.0
  total_epochs: float = 1.0
  alpha: float = 0.0

  def validate(self) -> "EpochSchedule":
    """Checks the fields; returns ``self``. Errors name ``schedule.<field>``."""
    if self.kind not in SCHEDULES:
      raise ValueError(f"schedule: unknown value {self.kind!r}; allowed: {', '.join(SCHEDULES)}")
    if self.kind in ("warmup", "warmup_cosine") and not self.warmup_epochs > 0:
      raise ValueError(
        f"schedule.warmup_epochs: must be > 0 for {self.kind!r}, got {self.warmup_epochs}"
      )
    if self.kind in ("cosine", "warmup_cosine") and not self.total_epochs > self.warmup_epochs:
      raise ValueError(
        "schedule.total_epochs: must exceed warmup_epochs, got "
        f"{self.total_epochs} <= {self.warmup_epochs}"
      )
    if not 0.0 <= self.alpha <= 1.0:
      raise ValueError(f"schedule.alpha: must be in [0, 1], got {self.alpha}")
    return self

  def factor(self, progress: jax.Array) -> jax.Array:
    """The multiplier of the base learning rate at ``progress`` epochs (jit-compatible)."""
    p = jnp.asarray(progress, jnp.float32)
    if self.kind == "constant":
      return jnp.ones_like(p)
    w, t, a = self.warmup_epochs, self.total_epochs, self.alpha

    def cosine(q, length):
      q = jnp.clip(q, 0.0, length)
      return a + (1.0 - a) * 0.5 * (1.0 + jnp.cos(jnp.pi * q / length))

    if self.kind == "cosine":
      return cosine(p, t)
    ramp = jnp.minimum(p / w, 1.0)
    if self.kind == "warmup":
      return ramp
    return jnp.where(p < w, ramp, cosine(p - w, t - w))


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
    opt_state,
    is_leaf=lambda node: isinstance(node, FamilyState),
  )


def scale_by_family(
  optimizer, momentum, b1, b2, eps, weight_decay, rms_decay, families: Sequence[str] = FAMILIES
) -> optax.GradientTransformation:
  """The update direction of family ``FAMILIES[optimizer]`` (before -lr).

  Args:
    optimizer: integer index into :data:`FAMILIES` (may be traced).
    momentum, b1, b2, eps, weight_decay, rms_decay: hyperparameters (may be traced).
    families: the families compiled in (static): only their rules are
      computed, and with one the index is ignored. A member's family must be
      among them.

  Returns:
    An optax transformation producing the family's direction; the learning
    rate is applied by :func:`family_optimizer`.
  """
  fams = tuple(families)
  for name in fams:
    family_index(name)

  def init_fn(params):
    zeros = optax.tree.zeros_like(params)
    return FamilyState(jnp.zeros([], jnp.int32), zeros, optax.tree.zeros_like(params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("scale_by_family needs params (weight decay reads them)")
    fam = jnp.asarray(optimizer, jnp.int32)
    count = optax.safe_increment(state.count)
    t = count.astype(jnp.float32)

    def is_(*names):  # whether the member's family is one of names (static when it can be)
      names = [n for n in names if n in fams]
      if not names:
        return False
      if len(names) == len(fams):
        return True
      return functools.reduce(jnp.logical_or, [fam == family_index(n) for n in names])

    def where(cond, a, b):
      return a if cond is True else (b if cond is False else jnp.where(cond, a, b))

    def per_leaf(g, m, v, p):
      # L2 for every family but AdamW, whose decay is decoupled (added below).
      g = g + where(is_("adamw"), 0.0, weight_decay) * p
      directions, new_m, new_v = {}, m, v
      if is_("momentum", "nesterov") is not False:
        m_mom = momentum * m + g
        directions.update(momentum=m_mom, nesterov=g + momentum * m_mom)
        new_m = where(is_("momentum", "nesterov"), m_mom, new_m)
      if is_("rmsprop") is not False:
        v_rms = rms_decay * v + (1.0 - rms_decay) * g * g
        directions["rmsprop"] = g * jax.lax.rsqrt(v_rms + eps)
        new_v = where(is_("rmsprop"), v_rms, new_v)
      if is_("adam", "adamw") is not False:
        m_adam = b1 * m + (1.0 - b1) * g
        v_adam = b2 * v + (1.0 - b2) * g * g
        d_adam = (m_adam / (1.0 - b1**t)) / (jnp.sqrt(v_adam / (1.0 - b2**t)) + eps)
        directions["adam"] = d_adam
        directions["adamw"] = d_adam + where(is_("adamw"), weight_decay, 0.0) * p
        new_m = where(is_("adam", "adamw"), m_adam, new_m)
        new_v = where(is_("adam", "adamw"), v_adam, new_v)
      directions["sgd"] = g
      order = [n for n in FAMILIES if n in fams]
      d = directions[order[-1]]
      if len(order) > 1:
        d = jnp.select(
          [fam == family_index(n) for n in order[:-1]], [directions[n] for n in order[:-1]], d
        )
      return d.astype(g.dtype), new_m, new_v

    out = jax.tree.map(per_leaf, updates, state.mu, state.nu, params)
    treedef = jax.tree.structure(updates)
    leaves = treedef.flatten_up_to(out)
    d = treedef.unflatten([l[0] for l in leaves])
    mu = treedef.unflatten([l[1] for l in leaves])
    nu = treedef.unflatten([l[2] for l in leaves])
    return d, FamilyState(count, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def family_optimizer(
  learning_rate,
  optimizer,
  momentum=DEFAULTS["momentum"],
  b1=DEFAULTS["b1"],
  b2=DEFAULTS["b2"],
  eps=DEFAULTS["eps"],
  weight_decay=DEFAULTS["weight_decay"],
  rms_decay=DEFAULTS["rms_decay"],
  lr_scale=1.0,
  *,
  families: Sequence[str] = FAMILIES,
) -> optax.GradientTransformation:
  """One member's optimizer: a family direction scaled by ``-learning_rate * lr_scale``.

  ``lr_scale`` is the schedule's factor at this step, set by the training
  loop before every update (:class:`EpochSchedule`).
  """
  return optax.chain(
    scale_by_family(optimizer, momentum, b1, b2, eps, weight_decay, rms_decay, families),
    optax.scale(-learning_rate * lr_scale),
  )


def make_optimizer(families: Sequence[str] = FAMILIES, **hparams) -> optax.GradientTransformation:
  """The injected optimizer of a group.

  Args:
    families: the optimizer families compiled in (a population's candidates);
      every member's ``optimizer`` must be one of them. The others' arithmetic
      is left out of the program: fewer families, less elementwise work and a
      faster compile.
    **hparams: initial values of :data:`HPARAMS` (scalars, or per-member
      values when called under ``vmap``); missing ones take :data:`DEFAULTS`.

  Returns:
    ``optax.inject_hyperparams`` over :func:`family_optimizer`: its state's
    ``hyperparams`` dict holds every value as a traced array, and
    ``lr_scale``, the schedule's factor, which the training loop sets.
  """
  unknown = set(hparams) - set(HPARAMS)
  if unknown:
    raise ValueError(
      f"optimizer hyperparameters: unknown {sorted(unknown)}; allowed: {', '.join(HPARAMS)}"
    )
  values = {**DEFAULTS, "optimizer": 0, "lr_scale": 1.0, **hparams}
  fams = tuple(families)
  factory = optax.inject_hyperparams(
    lambda learning_rate, optimizer, momentum, b1, b2, eps, weight_decay, rms_decay, lr_scale: (
      family_optimizer(
        learning_rate,
        optimizer,
        momentum,
        b1,
        b2,
        eps,
        weight_decay,
        rms_decay,
        lr_scale,
        families=fams,
      )
    ),
    hyperparam_dtype=jnp.float32,
  )
  return factory(**values)


def with_lr_scale(opt_state, factor: jax.Array):
  """``opt_state`` (of :func:`make_optimizer`) with the schedule's factor for the next update."""
  return opt_state._replace(
    hyperparams={**opt_state.hyperparams, "lr_scale": jnp.asarray(factor, jnp.float32)}
  )
