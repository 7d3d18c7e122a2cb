"""The population engine: many members trained at once, one compiled program per group.

A *member* is one model with its own hyperparameters. Members whose
*structural* hyperparameters agree (model config, batch size) form a
**group**; a group's state is one pytree whose every leaf has a leading
population axis ``P`` (:class:`PopulationState`), and its train / evaluate
functions are pure, jitted once per :class:`GroupSpec` and cached.

*Vectorized* hyperparameters are traced per-member values and never cause a
recompile: the optimizer family and its hyperparameters live in
``opt_state.hyperparams`` (``optax.inject_hyperparams``), the activation,
loss index, dropout rate and label smoothing in ``state.hparams``.

One epoch is one ``lax.scan`` inside ``jit``: each member draws its own
permutation of the (device-resident) training set, minibatches are gathered
on the device, and nothing returns to the host until the epoch ends.

Functional core::

    fns = group_functions(spec)
    state = fns.init(keys, hparams)
    state, metrics = fns.train_epoch(state, x_train, y_train)
    metrics = fns.evaluate(state, x_eval, y_eval, weights)

:class:`Population` wraps this for users: a list of :class:`Member` in, per
member metrics out.

With several devices (``Population(..., mesh='auto')``, the default) each
group's state is split over a 1-D device mesh along the member axis and the
same per-device functions run under ``jax.shard_map`` (see
:mod:`hpjax.distributed`: padding of groups that do not divide the device
count, gathers across devices, checkpoints independent of the device count).
With one device nothing changes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from hpjax import distributed
from hpjax import losses as losses_lib
from hpjax import optim
from hpjax.models import ACTIVATIONS, Context, ModelConfig, build_model
from hpjax.models import layers

# Per-member hyperparameters kept in ``state.hparams`` (the optimizer's live in
# ``opt_state.hyperparams``). Index-valued ones are int32, the rest float32.
MODEL_HPARAMS = ("activation", "loss", "dropout", "label_smoothing")
INDEX_HPARAMS = ("activation", "loss", "optimizer")

# A group's init runs once per run: XLA's backend (LLVM) optimisations cost
# far more than they save there. `python -m experiments.bench_init` on the
# 2-core CPU, 8 members of the bench CNN at 8x8: 6.4 s to compile with them,
# 0.9 s without; 2 ms vs 11 ms to run (docs/benchmarks.md).
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0,
                         "xla_llvm_disable_expensive_passes": True}


@flax.struct.dataclass
class PopulationState:
  """The state of one group; every leaf has the leading population axis P.

  Attributes:
    params: model parameters (nested dict of arrays).
    batch_stats: BatchNorm statistics (nested dict; empty without BatchNorm).
    opt_state: optax state, including ``hyperparams`` (per-member values).
    hparams: ``activation`` / ``loss`` (int32 indices), ``dropout`` and
      ``label_smoothing`` (float32).
    key: per-member PRNG key data (uint32 ``[P, 2]``), split every epoch.
    epoch: epochs trained by each member (int32 ``[P]``).
  """

  params: Any
  batch_stats: Any
  opt_state: Any
  hparams: dict
  key: jax.Array
  epoch: jax.Array

  @property
  def size(self) -> int:
    """Number of members P."""
    return int(self.epoch.shape[0])


@dataclasses.dataclass(frozen=True)
class GroupSpec:
  """Everything static about a group: it keys the compiled-function cache.

  Attributes:
    model: structural model config.
    batch_size: training minibatch size.
    input_shape: per-example input shape.
    num_outputs: classes (classification) or 1 (regression).
    task: ``classification`` or ``regression``.
    activations: candidate activation names (members index into them).
    losses: candidate loss names (members index into them).
    schedule: learning-rate schedule shape.
    mean, std: per-channel normalisation of the stored inputs.
    eval_batch_size: examples per evaluation chunk.
    optimizer_family: ``None`` (the family is a per-member traced index, the
      default) or a family name fixed for the whole group (structural).
    member_chunk: members trained (and evaluated) together. ``0``: all P
      vmapped at once; ``c``: chunks of ``c`` members run their epochs one
      after another (smaller working sets). ``None``: by backend, 2 (or 1 for
      odd P) on CPU, where it measured 15-20% faster than all at once
      (docs/benchmarks.md), all at once elsewhere. With a mesh, P is the
      number of members on each device.
    shared_order: ``False`` (default): every member draws its own minibatch
      order from its own key. ``True``: all members of the group see the
      same minibatches, drawn from ``(order_seed, epoch)``; the input batch
      is then not batched over members, so the first layer's patches are
      built once for the whole group (an option for speed; members then
      differ only in their initialisation, hyperparameters and dropout).
    order_seed: the run's seed, for ``shared_order``.
  """

  model: ModelConfig
  batch_size: int
  input_shape: tuple
  num_outputs: int
  task: str = "classification"
  activations: tuple = ("relu",)
  losses: tuple = ("cross_entropy",)
  schedule: optim.Schedule = optim.Schedule()
  mean: tuple = (0.0,)
  std: tuple = (1.0,)
  eval_batch_size: int = 256
  optimizer_family: str | None = None
  member_chunk: int | None = None
  shared_order: bool = False
  order_seed: int = 0


class GroupFunctions(NamedTuple):
  """The jitted pure functions of one group (see module docstring)."""
  init: Any
  train_epoch: Any
  evaluate: Any
  predict: Any
  graphdef: Any
  spec: GroupSpec


def _normalize(spec: GroupSpec, x: jax.Array) -> jax.Array:
  # Inputs stay uint8 on the device; the float conversion is fused into the
  # first layer's input by XLA.
  mean = np.asarray(spec.mean, np.float32)
  inv_std = 1.0 / np.asarray(spec.std, np.float32)
  return (x.astype(jnp.float32) - mean) * inv_std


def _member_chunk(spec: GroupSpec, p: int) -> int:
  """Members per chunk for a group of ``p`` (see ``GroupSpec.member_chunk``); 0: all at once."""
  c = spec.member_chunk
  if c is None:
    c = (2 if p % 2 == 0 else 1) if jax.default_backend() == "cpu" else 0
  return c if c and c < p and p % c == 0 else 0


def _template(spec: GroupSpec):
  """Graph definition and abstract state of one member's model."""
  model = nnx.eval_shape(lambda: build_model(spec.model, spec.input_shape, spec.num_outputs,
                                             spec.activations, nnx.Rngs(0)))
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  return graphdef, params, stats


def group_functions(spec: GroupSpec, mesh: jax.sharding.Mesh | None = None) -> GroupFunctions:
  """Builds (once per spec and mesh) the jitted init / train_epoch / evaluate of a group.

  Args:
    spec: the group's static description.
    mesh: None: one device (plain ``jit``); a population mesh
      (:func:`hpjax.distributed.population_mesh`): the same per-device
      functions under ``shard_map``, members split over the mesh (the member
      count must be a multiple of the device count), data replicated.

  Returns:
    :class:`GroupFunctions`. ``train_epoch`` donates its state argument.
  """
  return _group_functions(spec, mesh)


@functools.lru_cache(maxsize=None)
def _group_functions(spec: GroupSpec, mesh: jax.sharding.Mesh | None) -> GroupFunctions:
  layers.check_activations(spec.activations)
  losses_lib.check_losses(spec.losses, spec.task)
  graphdef, params_t, stats_t = _template(spec)
  params_def = jax.tree.structure(params_t)
  stats_def = jax.tree.structure(stats_t)
  num_classes = spec.num_outputs if spec.task == "classification" else 1
  # The update reads its values from state.hyperparams, not from here.
  opt = optim.make_optimizer(spec.schedule, spec.optimizer_family)

  def merge(params, stats):
    # Pure dicts <-> nnx.State: both flatten in sorted-key order.
    p = jax.tree.unflatten(params_def, jax.tree.leaves(params))
    s = jax.tree.unflatten(stats_def, jax.tree.leaves(stats))
    return nnx.merge(graphdef, p, s)

  def init_member(key, hp):
    model = build_model(spec.model, spec.input_shape, spec.num_outputs, spec.activations,
                        nnx.Rngs(params=key))
    _, p, s = nnx.split(model, nnx.Param, nnx.BatchStat)
    p, s = nnx.to_pure_dict(p), nnx.to_pure_dict(s)
    opt_hp = {k: hp[k] for k in optim.HPARAMS}
    opt_state = optim.make_optimizer(spec.schedule, **opt_hp).init(p)
    return p, s, opt_state

  def init(keys: jax.Array, hparams: Mapping[str, jax.Array]) -> PopulationState:
    """keys: uint32 ``[P, 2]``; hparams: name -> ``[P]`` (all of HPARAMS)."""
    hparams = {k: jnp.asarray(v, jnp.int32 if k in INDEX_HPARAMS else jnp.float32)
               for k, v in hparams.items()}
    typed = jax.random.wrap_key_data(keys)
    init_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(typed)
    params, stats, opt_state = jax.vmap(init_member)(init_keys, hparams)
    return PopulationState(
        params=params, batch_stats=stats, opt_state=opt_state,
        hparams={k: hparams[k] for k in MODEL_HPARAMS},
        key=jax.random.key_data(jax.vmap(lambda k: jax.random.fold_in(k, 1))(typed)),
        epoch=jnp.zeros(keys.shape[0], jnp.int32))

  def forward(params, stats, hp, x, train, key):
    model = merge(params, stats)
    ctx = Context(hp["activation"], hp["dropout"], train=train, key=key)
    out = model(_normalize(spec, x), ctx)
    new_stats = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)) if train else stats
    return out, new_stats

  def member_step(params, stats, opt_state, hp, x, y, key):
    def loss_fn(p):
      out, new_stats = forward(p, stats, hp, x, True, key)
      l = losses_lib.loss(hp["loss"], spec.losses, out, y, num_classes, hp["label_smoothing"])
      return l, (new_stats, out)
    (l, (new_stats, out)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    if spec.task == "classification":
      score = jnp.mean((jnp.argmax(out, -1) == y).astype(jnp.float32))
    else:
      score = jnp.mean(jnp.square(out[..., 0] - y))
    return params, new_stats, opt_state, l, score

  def train_epoch(state: PopulationState, x: jax.Array, y: jax.Array):
    """One epoch over ``x, y`` (device arrays shared by all members)."""
    n = x.shape[0]
    b = spec.batch_size
    steps = n // b
    if steps < 1:
      raise ValueError(f"batch_size: {b} exceeds the {n} training examples")
    keys = jax.random.wrap_key_data(state.key)
    split = jax.vmap(lambda k: jax.random.split(k, 3))(keys)
    next_key, perm_key, drop_key = split[:, 0], split[:, 1], split[:, 2]
    # A per-member permutation, truncated to whole batches, [P, steps, B];
    # with shared_order one for the whole group, [steps, B].
    if spec.shared_order:
      # Every member (on every device) has trained the same number of epochs.
      order_key = jax.random.fold_in(jax.random.key(spec.order_seed), state.epoch[0])
      perms = jax.random.permutation(order_key, n)[:steps * b].reshape(steps, b)
    else:
      perms = jax.vmap(
          lambda k: jax.random.permutation(k, n)[:steps * b].reshape(steps, b))(perm_key)
    hp = state.hparams

    def run_epoch(params, stats, opt_state, hp, perms, drop_key):
      """The epoch of some members (a leading member axis on every argument)."""

      def body(carry, inp):
        params, stats, opt_state = carry
        idx, t = inp
        step_keys = jax.vmap(lambda k: jax.random.fold_in(k, t))(drop_key)
        # A shared batch is unbatched under vmap: one gather, one set of patches.
        batch_axis = None if spec.shared_order else 0
        params, stats, opt_state, l, score = jax.vmap(
            member_step, in_axes=(0, 0, 0, 0, batch_axis, batch_axis, 0))(
                params, stats, opt_state, hp, x[idx], y[idx], step_keys)
        return (params, stats, opt_state), (l, score)

      order = perms if spec.shared_order else jnp.swapaxes(perms, 0, 1)
      (params, stats, opt_state), (ls, scores) = jax.lax.scan(
          body, (params, stats, opt_state), (order, jnp.arange(steps)))
      return params, stats, opt_state, ls.mean(0), scores.mean(0)

    args = (state.params, state.batch_stats, state.opt_state, hp, perms, drop_key)
    p = state.epoch.shape[0]
    c = _member_chunk(spec, p)
    if c:
      # Chunks of c members train their whole epoch one chunk after another:
      # each chunk's working set stays in cache (measured faster on CPU).
      if spec.shared_order:  # one order for all chunks: not split by member
        chunked = jax.tree.map(lambda a: a.reshape((p // c, c) + a.shape[1:]),
                               args[:4] + args[5:])
        out = jax.lax.map(lambda a: run_epoch(*a[:4], perms, *a[4:]), chunked)
      else:
        chunked = jax.tree.map(lambda a: a.reshape((p // c, c) + a.shape[1:]), args)
        out = jax.lax.map(lambda a: run_epoch(*a), chunked)
      out = jax.tree.map(lambda a: a.reshape((p,) + a.shape[2:]), out)
    else:
      out = run_epoch(*args)
    params, stats, opt_state, train_loss, train_score = out
    new_state = state.replace(params=params, batch_stats=stats, opt_state=opt_state,
                              key=jax.random.key_data(next_key), epoch=state.epoch + 1)
    metric = "train_accuracy" if spec.task == "classification" else "train_mse"
    return new_state, {"train_loss": train_loss, metric: train_score}

  def evaluate(state: PopulationState, x: jax.Array, y: jax.Array, weights: jax.Array):
    """Loss and accuracy (or MSE) per member over ``x`` in fixed-size chunks.

    ``x`` must hold a whole number of ``eval_batch_size`` chunks; ``weights``
    (1 for real examples, 0 for padding) keeps padding out of the means.
    """
    e = spec.eval_batch_size
    chunks = x.shape[0] // e
    xs = x.reshape((chunks, e) + x.shape[1:])
    ys = y.reshape((chunks, e) + y.shape[1:])
    ws = weights.reshape(chunks, e)
    hp = state.hparams

    def member_eval(params, stats, mhp, xc, yc, wc):
      out, _ = forward(params, stats, mhp, xc, False, None)
      # One objective for every member, whatever it trains with, so that
      # validation losses rank members fairly.
      per = losses_lib.validation_per_example(out, yc, num_classes)
      if spec.task == "classification":
        score = (jnp.argmax(out, -1) == yc).astype(jnp.float32)
      else:
        score = jnp.square(out[..., 0] - yc)
      return jnp.sum(per * wc), jnp.sum(score * wc)

    def eval_members(params, stats, mhp):
      """Summed loss and score of some members over every chunk of ``x``."""
      n = jax.tree.leaves(mhp)[0].shape[0]

      def body(acc, chunk):
        xc, yc, wc = chunk
        l, s = jax.vmap(member_eval, in_axes=(0, 0, 0, None, None, None))(
            params, stats, mhp, xc, yc, wc)
        return (acc[0] + l, acc[1] + s), None

      (l, s), _ = jax.lax.scan(body, (jnp.zeros(n), jnp.zeros(n)), (xs, ys, ws))
      return l, s

    p = state.epoch.shape[0]
    c = _member_chunk(spec, p)
    args = (state.params, state.batch_stats, hp)
    if c:
      # As in training: chunks of c members, one after another, each over
      # the whole split (1.7x faster at P=32, 28x28 on the 2-core CPU:
      # experiments/bench_init.py, docs/benchmarks.md).
      chunked = jax.tree.map(lambda a: a.reshape((p // c, c) + a.shape[1:]), args)
      l, s = jax.tree.map(lambda a: a.reshape(p), jax.lax.map(lambda a: eval_members(*a), chunked))
    else:
      l, s = eval_members(*args)
    total = jnp.maximum(jnp.sum(weights), 1.0)
    metric = "accuracy" if spec.task == "classification" else "mse"
    loss = l / total
    # A diverged member (non-finite loss) has no meaningful accuracy: NaN, so
    # that controllers rank it last whatever the metric.
    return {"loss": loss, metric: jnp.where(jnp.isfinite(loss), s / total, jnp.nan)}

  def predict(state: PopulationState, x: jax.Array) -> jax.Array:
    """Every member's outputs (eval mode) on ``x``: ``[P, N, outputs]``."""
    return jax.vmap(lambda p, s, h: forward(p, s, h, x, False, None)[0])(
        state.params, state.batch_stats, state.hparams)

  if mesh is None:
    jitted = (jax.jit(init, compiler_options=INIT_COMPILER_OPTIONS),
              jax.jit(train_epoch, donate_argnums=0), jax.jit(evaluate), jax.jit(predict))
  else:
    # Per device, the very functions above on its share of the members.
    jitted = distributed.shard_functions(mesh, init, train_epoch, evaluate, predict,
                                         init_compiler_options=INIT_COMPILER_OPTIONS)
  return GroupFunctions(*jitted, graphdef, spec)


def get_hparams(state: PopulationState) -> dict[str, jax.Array]:
  """All per-member hyperparameters of a group (name -> ``[P]`` array)."""
  return {**state.opt_state.hyperparams, **state.hparams}


def set_hparams(state: PopulationState, values: Mapping[str, Any]) -> PopulationState:
  """Returns ``state`` with some per-member hyperparameters replaced.

  Args:
    state: a group state.
    values: name -> ``[P]`` values; names from ``optim.HPARAMS`` or
      :data:`MODEL_HPARAMS`.

  Returns:
    The new state (same shapes and dtypes: nothing recompiles).
  """
  opt_vals, model_vals = {}, {}
  for k, v in values.items():
    if k in optim.HPARAMS:
      opt_vals[k] = jnp.asarray(v, state.opt_state.hyperparams[k].dtype)
    elif k in MODEL_HPARAMS:
      model_vals[k] = jnp.asarray(v, state.hparams[k].dtype)
    else:
      raise ValueError(f"hyperparameter: unknown name {k!r}; allowed: "
                       + ", ".join(optim.HPARAMS + MODEL_HPARAMS))
  opt_state = state.opt_state
  if opt_vals:
    opt_state = optax.tree_utils.tree_set(opt_state, **opt_vals)
  return state.replace(opt_state=opt_state, hparams={**state.hparams, **model_vals})


@jax.jit
def _reset_family(state: PopulationState, reset: jax.Array) -> PopulationState:
  return state.replace(opt_state=optim.reset_family_state(state.opt_state, reset))


def _take_members(state, index):
  return jax.tree.map(lambda a: jnp.take(a, index, axis=0), state)


_take = jax.jit(_take_members)


@functools.lru_cache(maxsize=None)
def _sharded_take(mesh: jax.sharding.Mesh):
  # The output keeps the member sharding: XLA moves the donors' shards
  # between devices (and processes) as one collective gather.
  return jax.jit(_take_members, out_shardings=distributed.member_sharding(mesh))


def _mesh_of(state: PopulationState) -> jax.sharding.Mesh | None:
  """The population mesh ``state`` is split over, or None."""
  sharding = getattr(state.epoch, "sharding", None)
  if (isinstance(sharding, jax.sharding.NamedSharding)
      and sharding.spec == jax.sharding.PartitionSpec(distributed.AXIS)):
    return sharding.mesh
  return None


def take(state: PopulationState, index) -> PopulationState:
  """Gathers members ``index`` (exploit / compaction: one gather on device).

  A state split over a population mesh stays split over it (``Q`` must then
  be a multiple of the device count).

  Args:
    state: a group state.
    index: ``[Q]`` member indices; ``Q`` may differ from ``P`` (compaction).

  Returns:
    The state of members ``index``, in that order.
  """
  mesh = _mesh_of(state)
  if mesh is None:
    return _take(state, jnp.asarray(index, jnp.int32))
  return _sharded_take(mesh)(state, distributed.put(np.asarray(index, np.int32),
                                                    distributed.replicated(mesh)))


# ---------------------------------------------------------------------------
# The user-facing wrapper.


@dataclasses.dataclass(frozen=True)
class Member:
  """One member's hyperparameters.

  Structural: ``model`` and ``batch_size`` (members that share both share a
  compiled group). Everything else is vectorized.
  """

  learning_rate: float = 1e-3
  optimizer: str = "adam"
  momentum: float = optim.DEFAULTS["momentum"]
  b1: float = optim.DEFAULTS["b1"]
  b2: float = optim.DEFAULTS["b2"]
  eps: float = optim.DEFAULTS["eps"]
  weight_decay: float = optim.DEFAULTS["weight_decay"]
  rms_decay: float = optim.DEFAULTS["rms_decay"]
  activation: str = "relu"
  loss: str | None = None  # None: cross_entropy for classification, mse for regression
  dropout: float = 0.0
  label_smoothing: float = 0.0
  batch_size: int = 32
  model: ModelConfig = ModelConfig()

  def validate(self) -> "Member":
    """Raises ValueError naming the field on a bad value."""
    optim.family_index(self.optimizer)
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"activation: unknown value {self.activation!r}; allowed: "
                       + ", ".join(ACTIVATIONS))
    if not (np.isfinite(self.learning_rate) and self.learning_rate >= 0):
      raise ValueError(f"learning_rate: must be finite and >= 0, got {self.learning_rate!r}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"dropout: must be in [0, 1), got {self.dropout!r}")
    if not 0.0 <= self.label_smoothing < 1.0:
      raise ValueError(f"label_smoothing: must be in [0, 1), got {self.label_smoothing!r}")
    if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
      raise ValueError(f"batch_size: must be a positive integer, got {self.batch_size!r}")
    self.model.validate()
    return self


def member_keys(seed: int, indices: Sequence[int]) -> jax.Array:
  """Per-member key data: member ``i``'s key depends only on (seed, i)."""
  base = jax.random.key(seed)
  return jnp.stack([jax.random.key_data(jax.random.fold_in(base, int(i))) for i in indices])


# Separates the keys of exploited members from the initial member keys
# (``fold_in(key(seed), i)``), which would collide only for this many members.
_EXPLOIT_STREAM = 0x45584C54


def exploit_key(seed: int, member: int, generation: int) -> np.ndarray:
  """Key data for ``member`` after it copied another member at ``generation``.

  A function of ``(seed, member, generation)`` alone: deterministic, the same
  on every process, and different from its donor's key, so that the clone
  draws its own batch order and dropout masks from then on.

  Returns:
    uint32 ``[2]`` key data.
  """
  k = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _EXPLOIT_STREAM), int(member))
  return np.asarray(jax.random.key_data(jax.random.fold_in(k, int(generation))))


def pad_eval(x, y, eval_batch_size: int, length: int | None = None):
  """Pads an evaluation split to whole chunks; returns (x, y, weights)."""
  n = x.shape[0]
  length = length or n
  length = -(-length // eval_batch_size) * eval_batch_size
  pad = length - n
  w = jnp.concatenate([jnp.ones(n, jnp.float32), jnp.zeros(pad, jnp.float32)])
  if pad:
    x = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)])
    y = jnp.concatenate([y, jnp.zeros((pad,) + y.shape[1:], y.dtype)])
  return x, y, w


@dataclasses.dataclass
class Group:
  """A compiled group: its functions, its state and which members it holds.

  On a population mesh ``state`` may hold pad members after the
  ``len(members)`` real ones (see :mod:`hpjax.distributed`).
  """
  fns: GroupFunctions
  members: list[int]
  state: PopulationState


class Population:
  """A population of members trained side by side on one dataset.

  Example::

    data = hpjax.load_dataset("digits")
    pop = hpjax.Population([hpjax.Member(learning_rate=lr) for lr in (1e-3, 1e-2)], data)
    for _ in range(3):
      pop.train_epoch()
    print(pop.evaluate("val")["accuracy"])

  Args:
    members: the members' hyperparameters.
    data: a :class:`hpjax.data.Dataset`.
    seed: member ``i``'s PRNG key is derived from ``(seed, i)`` alone.
    activations: candidate activations compiled into every group (default:
      those the members use). Give the full set of a search space so that a
      controller can switch members between them without recompiling.
    losses: candidate losses (default: those the members use).
    schedule: learning-rate schedule shape shared by all members, in steps
      (:class:`hpjax.optim.Schedule`) or in epochs
      (:class:`hpjax.optim.EpochSchedule`, converted per batch size).
    eval_batch_size: examples per evaluation chunk.
    mesh: how members are spread over devices (:mod:`hpjax.distributed`):
      ``'auto'`` (default) splits every group over all devices when there
      are more than one and is the plain one-device engine otherwise;
      ``None`` never splits; or a 1-D population mesh. Results do not depend
      on it beyond floating-point rounding.
    shared_order: all members of a group see the same minibatches (drawn
      from ``seed`` and the epoch) instead of each its own order; see
      :class:`GroupSpec`. An option for speed, off by default.
  """

  def __init__(self, members: Sequence[Member], data, *, seed: int = 0,
               activations: Sequence[str] | None = None, losses: Sequence[str] | None = None,
               schedule: optim.Schedule | optim.EpochSchedule = optim.Schedule(),
               eval_batch_size: int = 256, mesh: jax.sharding.Mesh | str | None = "auto",
               shared_order: bool = False):
    if not members:
      raise ValueError("members: a population needs at least one member")
    self.data = data
    self.seed = seed
    default_loss = "cross_entropy" if data.task == "classification" else "mse"
    members = [dataclasses.replace(m, loss=m.loss or default_loss).validate() for m in members]
    for m in members:
      data.check_batch_size(m.batch_size)
    if activations is None:
      used = {m.activation for m in members}
      activations = [a for a in ACTIVATIONS if a in used]
    self.activations = layers.check_activations(activations)
    if losses is None:
      used = {m.loss for m in members}
      losses = [l for l in losses_lib.CLASSIFICATION_LOSSES + losses_lib.REGRESSION_LOSSES
                if l in used]
      losses = list(dict.fromkeys(losses))
    self.losses = losses_lib.check_losses(losses, data.task)
    for m in members:
      if m.activation not in self.activations:
        raise ValueError(f"activation: {m.activation!r} is not among the candidates "
                         f"{self.activations}")
      if m.loss not in self.losses:
        raise ValueError(f"loss: {m.loss!r} is not among the candidates {self.losses}")
    if isinstance(schedule, optim.Schedule):
      schedule.validate()
    self.schedule = schedule
    self.eval_batch_size = eval_batch_size
    self.size = len(members)
    self.members = members
    num_outputs = data.num_classes if data.task == "classification" else 1
    # Each split is padded to its own whole number of eval batches: the
    # validation set, evaluated every epoch, is not padded to the test set's
    # length (digits: 180 and 359 examples, 256 and 512 padded, where one
    # common length made every validation pass 512). The test set's
    # evaluate compiles once, at its first use.
    self._eval = {
        "val": pad_eval(data.x_val, data.y_val, eval_batch_size),
        "test": pad_eval(data.x_test, data.y_test, eval_batch_size),
    }
    self._train = (data.x_train, data.y_train)
    self.mesh = distributed.resolve_mesh(mesh)
    if self.mesh is not None:
      # Every device holds the whole dataset, placed once.
      rep = distributed.replicated(self.mesh)
      self._train = distributed.put(self._train, rep)
      self._eval = {k: distributed.put(v, rep) for k, v in self._eval.items()}
    by_key: dict[tuple, list[int]] = {}
    for i, m in enumerate(members):
      by_key.setdefault((m.model, m.batch_size), []).append(i)
    self.groups: list[Group] = []
    for (model, batch_size), ids in by_key.items():
      sched = self.schedule
      if isinstance(sched, optim.EpochSchedule):
        sched = sched.for_steps(data.num_train // batch_size)
      spec = GroupSpec(model=model, batch_size=batch_size, input_shape=tuple(data.input_shape),
                       num_outputs=num_outputs, task=data.task, activations=self.activations,
                       losses=self.losses, schedule=sched,
                       mean=tuple(float(v) for v in np.ravel(data.mean)),
                       std=tuple(float(v) for v in np.ravel(data.std)),
                       eval_batch_size=eval_batch_size, shared_order=bool(shared_order),
                       order_seed=int(seed))
      hp = self.hparam_arrays([members[i] for i in ids])
      if self.mesh is None:
        fns = group_functions(spec)
        state = fns.init(member_keys(seed, ids), hp)
      else:
        fns = group_functions(spec, self.mesh)
        pad = distributed.pad_index(range(len(ids)), distributed.padded_size(len(ids), self.mesh))
        keys = np.asarray(member_keys(seed, ids))[pad]
        state = fns.init(*distributed.put((keys, {k: v[pad] for k, v in hp.items()}),
                                          distributed.member_sharding(self.mesh)))
      self.groups.append(Group(fns, ids, state))

  def hparam_arrays(self, members: Sequence[Member]) -> dict[str, np.ndarray]:
    """Vectorized hyperparameters of ``members`` as ``[len(members)]`` arrays."""
    out = {k: np.array([getattr(m, k) for m in members], np.float32)
           for k in optim.DEFAULTS}
    out["optimizer"] = np.array([optim.family_index(m.optimizer) for m in members], np.int32)
    out["activation"] = np.array([self.activations.index(m.activation) for m in members], np.int32)
    default_loss = "cross_entropy" if self.data.task == "classification" else "mse"
    out["loss"] = np.array([self.losses.index(m.loss or default_loss) for m in members], np.int32)
    out["dropout"] = np.array([m.dropout for m in members], np.float32)
    out["label_smoothing"] = np.array([m.label_smoothing for m in members], np.float32)
    return out

  def _gather(self, per_group: Sequence[Mapping[str, jax.Array]]) -> dict[str, np.ndarray]:
    """Per-group metric dicts -> one dict of ``[P]`` arrays in member order."""
    out: dict[str, np.ndarray] = {}
    if self.mesh is not None:  # to every process; pad members dropped below
      per_group = distributed.to_host(list(per_group))
    for g, metrics in zip(self.groups, per_group):
      for k, v in metrics.items():
        arr = out.setdefault(k, np.full(self.size, np.nan, np.float64))
        arr[g.members] = np.asarray(v)[:len(g.members)]
    return out

  def train_epoch(self) -> dict[str, np.ndarray]:
    """Trains every member for one epoch; returns per-member train metrics."""
    results = []
    x, y = self._train
    for g in self.groups:  # groups are dispatched asynchronously, synced below
      g.state, metrics = g.fns.train_epoch(g.state, x, y)
      results.append(metrics)
    return self._gather(results)

  def evaluate(self, split: str = "val") -> dict[str, np.ndarray]:
    """Per-member loss and accuracy (MSE for regression) on ``split``."""
    if split not in self._eval:
      raise ValueError(f"split: unknown value {split!r}; allowed: val, test")
    x, y, w = self._eval[split]
    return self._gather([g.fns.evaluate(g.state, x, y, w) for g in self.groups])

  def hparams(self) -> list[dict[str, Any]]:
    """Each member's current hyperparameters (names, not indices)."""
    rows: list[dict[str, Any]] = [{} for _ in range(self.size)]
    for g in self.groups:
      values = self._host(get_hparams(g.state))
      for j, i in enumerate(g.members):
        row = {k: float(values[k][j]) for k in optim.DEFAULTS}
        row["optimizer"] = optim.FAMILIES[int(values["optimizer"][j])]
        row["activation"] = self.activations[int(values["activation"][j])]
        row["loss"] = self.losses[int(values["loss"][j])]
        row["dropout"] = float(values["dropout"][j])
        row["label_smoothing"] = float(values["label_smoothing"][j])
        row["batch_size"] = g.fns.spec.batch_size
        row["model"] = dataclasses.asdict(g.fns.spec.model)
        rows[i] = row
    return rows

  def set_member_hparams(self, hparams: Sequence[Mapping[str, Any]],
                         donors: Sequence[int] | None = None,
                         new_keys: Mapping[int, Any] | None = None) -> None:
    """Exploit and explore: copy members and give them new hyperparameters.

    One gather per group on the device (parameters, optimizer state, batch
    statistics and keys of ``donors``), then the vectorized hyperparameters
    are overwritten; shapes and dtypes stay, so nothing recompiles. A member
    whose optimizer family ends up different from the family of the state it
    now holds (its donor's, or its own) gets that family's fresh buffers
    (:func:`hpjax.optim.reset_family_state`).

    Args:
      hparams: per member, a dict of vectorized hyperparameters by name
        (``optimizer``/``activation``/``loss`` as names); missing keys keep
        the current (donor's) value.
      donors: per member, the member whose state it copies (itself to keep
        its own); must be in the same group.
      new_keys: member -> PRNG key data (uint32 ``[2]``) replacing the key it
        holds after the copy (see :func:`exploit_key`), so that a clone does
        not repeat its donor's batch order and dropout masks.

    Raises:
      ValueError: a donor from another group, or an unknown name or value.
    """
    if len(hparams) != self.size:
      raise ValueError(f"hparams: expected {self.size} entries, got {len(hparams)}")
    donors = list(range(self.size)) if donors is None else [int(d) for d in donors]
    new_keys = dict(new_keys or {})
    for g in self.groups:
      local = {m: j for j, m in enumerate(g.members)}
      try:
        index = [local[donors[m]] for m in g.members]
      except KeyError:
        bad = [m for m in g.members if donors[m] not in local][0]
        raise ValueError(f"donors: member {bad} cannot copy member {donors[bad]} "
                         "(different structural group)") from None
      state = g.state
      # Pad members (sharded groups) follow the group's first member.
      index = distributed.pad_index(index, state.size)
      if index != list(range(len(index))):
        state = take(state, index)
      current = {k: np.array(v) for k, v in self._host(get_hparams(state)).items()}
      reset = np.zeros(state.size, bool)
      for j, m in enumerate(g.members):
        for name, value in hparams[m].items():
          if name in ("batch_size", "model") or name in ModelConfig.__dataclass_fields__:
            continue  # structural: fixed by the group
          if name == "optimizer":
            value = optim.family_index(value) if isinstance(value, str) else int(value)
            reset[j] = value != current[name][j]
          elif name == "activation":
            value = self._index(self.activations, value, "activation")
          elif name == "loss":
            value = self._index(self.losses, value, "loss")
          if name not in current:
            raise ValueError(f"hyperparameter: unknown name {name!r}; allowed: "
                             + ", ".join(sorted(current)))
          current[name][j] = value
      keys = None
      if any(m in new_keys for m in g.members):
        keys = np.array(self._host(state.key))
        for j, m in enumerate(g.members):
          if m in new_keys:
            keys[j] = np.asarray(new_keys[m], np.uint32)
      if self.mesh is not None:
        n = len(g.members)
        for v in list(current.values()) + [reset] + ([keys] if keys is not None else []):
          v[n:] = v[0]
        current, reset, keys = distributed.put((current, reset, keys),
                                               distributed.member_sharding(self.mesh))
      state = set_hparams(state, current)
      if np.any(reset):
        state = _reset_family(state, reset)
      if keys is not None:
        state = state.replace(key=jnp.asarray(keys) if self.mesh is None else keys)
      g.state = state

  @staticmethod
  def _index(candidates: Sequence[str], value, field: str) -> int:
    if isinstance(value, str):
      if value not in candidates:
        raise ValueError(f"{field}: {value!r} is not among the compiled candidates "
                         f"{tuple(candidates)}")
      return candidates.index(value)
    return int(value)

  def group_ids(self) -> np.ndarray:
    """Per member, the index of its structural group."""
    out = np.zeros(self.size, np.int64)
    for k, g in enumerate(self.groups):
      out[g.members] = k
    return out

  def compacted(self, keep: Sequence[int]) -> tuple[list[Group], list[Member]]:
    """The groups and members that :meth:`compact` would leave (self unchanged)."""
    keep = [int(k) for k in keep]
    if not keep:
      raise ValueError("keep: at least one member must survive")
    new_pos = {old: new for new, old in enumerate(keep)}
    groups = []
    for g in self.groups:
      local = [j for j, m in enumerate(g.members) if m in new_pos]
      if not local:
        continue
      if len(local) == len(g.members):
        state = g.state
      else:
        state = take(g.state, distributed.pad_index(
            local, distributed.padded_size(len(local), self.mesh)))
      groups.append(Group(g.fns, [new_pos[g.members[j]] for j in local], state))
    return groups, [self.members[k] for k in keep]

  def compact(self, keep: Sequence[int]) -> None:
    """Keeps only members ``keep`` (successive halving), renumbered 0..K-1.

    One gather per group; a group left without members is dropped. The
    smaller groups compile once more (bounded by the number of rungs).

    Args:
      keep: current member indices to keep, in the order they will have.
    """
    self.groups, self.members = self.compacted(keep)
    self.size = len(self.members)

  # -- checkpoints --------------------------------------------------------------

  def _host(self, tree):
    """``tree`` as numpy, gathered to every process when sharded."""
    if self.mesh is None:
      return jax.tree.map(np.asarray, tree)
    return distributed.to_host(tree)

  def checkpoint_states(self, groups: Sequence[Group] | None = None) -> list[Any]:
    """Per group, the state of its real members: what a checkpoint holds.

    Without a mesh these are the groups' device states themselves. On a
    mesh they are numpy copies of the whole global state (gathered to every
    process, so every process must call this) without the pad members: a
    checkpoint does not depend on the device count it was written with.

    Args:
      groups: default: this population's groups.

    Returns:
      One state pytree per group.
    """
    groups = self.groups if groups is None else groups
    if self.mesh is None:
      return [g.state for g in groups]
    return [jax.tree.map(lambda a, n=len(g.members): a[:n], self._host(g.state)) for g in groups]

  def checkpoint_templates(self, groups: Sequence[Group] | None = None) -> list[Any]:
    """Restore templates matching :meth:`checkpoint_states` (shapes, dtypes, placement).

    Without a mesh, the groups' states (restored leaves are placed like
    them). On a mesh, zero-cost numpy stand-ins (restored leaves stay numpy
    and :meth:`load_checkpoint_states` pads and places them).
    """
    groups = self.groups if groups is None else groups
    if self.mesh is None:
      return [g.state for g in groups]

    def stand_in(a, n):
      return np.broadcast_to(np.zeros((), a.dtype), (n,) + tuple(a.shape[1:]))

    return [jax.tree.map(lambda a, n=len(g.members): stand_in(a, n), g.state) for g in groups]

  def load_checkpoint_states(self, states: Sequence[Any]) -> None:
    """Sets every group's state from :meth:`checkpoint_states`-shaped values.

    On a mesh the values are padded for the current device count and split
    over it, so a checkpoint written on N devices resumes on M.

    Args:
      states: one state per group of :attr:`groups`, real members only.
    """
    if len(states) != len(self.groups):
      raise ValueError(f"states: expected {len(self.groups)} group states, got {len(states)}")
    for g, st in zip(self.groups, states):
      if self.mesh is None:
        g.state = st
        continue
      index = np.asarray(distributed.pad_index(range(len(g.members)), g.state.size))
      g.state = distributed.put(jax.tree.map(lambda a: np.asarray(a)[index], st),
                                distributed.member_sharding(self.mesh))
