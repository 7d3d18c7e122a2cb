"""The population engine's functional core: one compiled program per group.

A *group* is the members that share their structural hyperparameters (the
model's constructor arguments and the batch size). A group's state is one
pytree whose every leaf has a leading population axis ``P``
(:class:`PopulationState`), and its functions are pure, jitted once per
:class:`GroupSpec` and cached::

    fns = group_functions(spec)
    state = fns.init(keys, hparams)
    state, metrics = fns.train_epoch(state, x_train, y_train)
    metrics = fns.evaluate(state, x_eval, y_eval, weights)

**The model** is any Flax NNX module: ``spec.model(**structural, rngs=...)``
builds one member (it also receives ``input_shape`` and ``num_outputs`` when
its signature takes them), and ``model(x, hp)`` runs it, where ``hp`` is an
:class:`hpjax.hparams.HParams` of the member's hyperparameters (traced
per-member values; a model whose ``__call__`` takes only ``x`` is called as
``model(x)``). The whole NNX state is carried per member: parameters (the only
thing differentiated), BatchNorm statistics, RNG streams and any variable of
the user's own. Training and evaluation use the graph in ``model.train()``
and ``model.eval()`` mode respectively (stock ``nnx.Dropout`` / ``BatchNorm``
switch with it).

*Traced* hyperparameters never cause a recompile: the optimizer's live in
``opt_state.hyperparams`` (``optax.inject_hyperparams``), the others in
``state.hparams`` (indices for choices among strings).

One epoch is one ``lax.scan`` inside ``jit``: each member draws its own
permutation of the (device-resident) training set, minibatches are gathered
on the device, and nothing returns to the host until the epoch ends. Data
larger than the device (:class:`hpjax.data.Stream`) trains instead from a
host loop: each call of ``fns.train_steps`` loops over a few batches shared
by every member, with the same step, keys and schedule, and
``fns.end_epoch`` closes the epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
import concurrent.futures
import dataclasses
import functools
import inspect
import os
import re
from typing import Any, NamedTuple

from absl import logging as absl_logging
from flax import nnx
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hpjax import distributed
from hpjax import hparams as hp_lib
from hpjax import optim
from hpjax.data import normalize

# XLA compile options by backend: each set measured on that backend; a
# backend not listed compiles with XLA's defaults until measured there.
#
# A group's init runs once per run: XLA's backend (LLVM) optimisations cost
# far more than they save there. `python -m experiments.bench_init` on the
# 2-core CPU, 8 members of the bench CNN at 8x8: 6.4 s to compile with them,
# 0.9 s without; 2 ms vs 11 ms to run (docs/benchmarks.md). The same holds
# for the programs that only move members' values between epochs (a gather,
# a select, splitting into blocks and joining them): they compute nothing
# that optimisations could change, so their results are the same bits.
# XLA's fusion emitters are off for them too: the init of digits28_pbt's 32
# members then compiles in 0.31 s instead of 0.48 s, to the same bits
# (docs/benchmarks.md, "Compiles side by side").
INIT_COMPILER_OPTIONS = {
  "cpu": {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
    "xla_cpu_use_fusion_emitters": False,
  }
}

# The programs that train and evaluate. On CPU, XLA's backend optimisation
# level 2 instead of its default 3. The digits28_pbt population's epoch
# compiles in 0.69x the time and runs 1.04x as fast, its evaluation 0.81x and
# 1.60x (`python -m experiments.bench_compile_options`, docs/benchmarks.md
# "Compile at XLA's level 2"). Level 1 compiles no faster; level 0 trains 7x
# slower. Results may differ from level 3's in the last bits.
STEP_COMPILER_OPTIONS = {"cpu": {"xla_backend_optimization_level": 2}}


def init_compiler_options() -> dict[str, Any] | None:
  """The XLA options of the init and of the value-moving programs on this backend."""
  return supported_compiler_options(INIT_COMPILER_OPTIONS.get(jax.default_backend()))


def step_compiler_options() -> dict[str, Any] | None:
  """The XLA options of the training and evaluation programs on this backend."""
  return supported_compiler_options(STEP_COMPILER_OPTIONS.get(jax.default_backend()))


def supported_compiler_options(options: Mapping[str, Any] | None) -> dict[str, Any] | None:
  """``options`` less those this jaxlib's XLA does not know on this backend.

  An XLA option can be renamed or removed between jaxlib releases (jaxlib
  0.11's XLA refuses ``xla_cpu_use_fusion_emitters`` on a GPU): such an
  option is dropped, once per process and backend, with a warning, rather
  than failing every compile. Found by compiling a trivial program.
  """
  if not options:
    return None
  return _supported_options(jax.default_backend(), tuple(sorted(options.items())))


@functools.lru_cache(maxsize=None)
def _supported_options(backend: str, items: tuple) -> dict[str, Any] | None:
  del backend  # the cache's key: the answer depends on it
  options = dict(items)
  while options:
    try:
      jax.jit(_compiler_options_probe, compiler_options=options).lower().compile()
      return options
    except Exception as e:  # pylint: disable=broad-except
      match = re.search(r"No such compile option: '([^']+)'", str(e))
      if match is None or match.group(1) not in options:
        raise
      absl_logging.warning(
        "XLA option %s is not known to this jaxlib on %s; compiling without it",
        match.group(1),
        jax.default_backend(),
      )
      del options[match.group(1)]
  return None


def _compiler_options_probe():
  return jnp.zeros((), jnp.int32)


class _BackendJit:
  """``jax.jit(fn, compiler_options=init_compiler_options(), **kw)``, made at first use.

  The options depend on the backend, which is known only once JAX starts;
  jitting at import time would start it. Calls and attributes (``lower``,
  ``trace``) go to the jitted function.
  """

  def __init__(self, fn: Callable, kw: dict[str, Any]):
    functools.update_wrapper(self, fn)
    self._fn, self._kw, self._jitted = fn, kw, {}

  def _get(self):
    backend = jax.default_backend()
    if backend not in self._jitted:
      options = init_compiler_options()
      self._jitted[backend] = jax.jit(self._fn, compiler_options=options, **self._kw)
    return self._jitted[backend]

  def __call__(self, *args, **kwargs):
    return self._get()(*args, **kwargs)

  def __getattr__(self, name: str):
    if name.startswith("_"):
      raise AttributeError(name)
    return getattr(self._get(), name)


def moving_jit(fn: Callable | None = None, **kw) -> Any:
  """``jax.jit`` for a program that only moves values: :func:`init_compiler_options`.

  Usable as ``@moving_jit`` or ``@moving_jit(static_argnums=...)``.
  """
  if fn is None:
    return functools.partial(moving_jit, **kw)
  return _BackendJit(fn, kw)


@flax.struct.dataclass
class PopulationState:
  """The state of one group; every leaf has the leading population axis P.

  Attributes:
    params: the models' ``nnx.Param`` values (nested dict of arrays).
    model_state: every other NNX variable of the models (BatchNorm
      statistics, RNG stream keys stored as uint32 key data, the user's own
      variables), nested dict; empty for a model that has none.
    opt_state: optax state, including ``hyperparams`` (per-member values).
    hparams: the other traced hyperparameters (name -> ``[P]``; indices of
      choices as int32, numbers as float32 / int32).
    key: per-member PRNG key data (uint32 ``[P, 2]``), split every epoch.
    epoch: epochs trained by each member (int32 ``[P]``).
  """

  params: Any
  model_state: Any
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
    model: the model factory (an ``nnx.Module`` class or a function).
    structural: ``((name, value), ...)``: the factory's keyword arguments.
    batch_size: training minibatch size; with ``batch_size`` among the traced
      hyperparameters (see :func:`batch_sizes_traced`), the micro-batch size:
      every member's batch size is a multiple of it, and a member updates
      after ``its batch size / batch_size`` micro-batches.
    input_shape: per-example input shape.
    num_outputs: classes (classification) or 1 (regression). The model must
      return ``[B, num_outputs]``; a regression model may also return ``[B]``
      (every loss and metric receives ``[B, 1]``; see :func:`_checked_outputs`).
    task: ``classification`` or ``regression``.
    traced: ``((name, candidates), ...)``: the traced hyperparameters kept in
      ``state.hparams``, with the candidate values of a choice among strings
      (``()`` for numbers); optimizer hyperparameters are not listed.
    loss: ``(outputs, y, hp) -> [B]`` training loss per example.
    metrics: the validation (and training) metrics (:class:`hpjax.fitness.Metric`),
      each one value per example (``[B]``); a split's metric is their mean
      over its real examples, a training metric the mean over the epoch's
      batches of each batch's mean. A per-batch value (a scalar) is refused
      while tracing: on a padded evaluation chunk it would count the padding.
    val_loss: ``(outputs, y) -> [B]``: the validation loss, one objective for
      every member; per example, as the metrics.
    schedule: learning-rate schedule shape, in epochs.
    mean, std: per-channel normalisation of the stored inputs.
    eval_batch_size: examples per evaluation chunk.
    optimizer_families: the optimizer families compiled in (each member's
      family is a traced index among them); a single family drops the others'
      arithmetic from the program.
    member_chunk: members trained (and evaluated) together. ``0``: all P
      vmapped at once; ``c``: chunks of ``c`` members run their epochs one
      after another (smaller working sets). ``None``: by backend, on CPU 4
      (or 2, or 1, the largest that divides P), where it measured 1.03x
      chunks of 2 at 28x28 (P=32) and 1.12x at 8x8 (P=128), and chunks of
      2 15-20% faster than all at once (docs/benchmarks.md); all at once
      elsewhere. With a mesh, P is the number of members on each device.
    shared_order: ``False`` (default): every member draws its own minibatch
      order from its own key. ``True``: all members of the group see the
      same minibatches, drawn from ``(order_seed, epoch)``; the input batch
      is then not batched over members.
    order_seed: the run's seed, for ``shared_order``.
    dropout: ``False``: no member can have a dropout rate (all are 0), so
      the model receives ``hp["dropout"]`` as the constant 0 and
      :func:`hpjax.nn.dropout` draws no masks (the same numbers, a smaller
      program).
  """

  model: Callable[..., nnx.Module]
  structural: tuple
  batch_size: int
  input_shape: tuple
  num_outputs: int
  task: str
  traced: tuple
  loss: Callable
  metrics: tuple
  val_loss: Callable
  schedule: optim.EpochSchedule = optim.EpochSchedule()
  mean: tuple = (0.0,)
  std: tuple = (1.0,)
  eval_batch_size: int = 256
  optimizer_families: tuple = optim.FAMILIES
  member_chunk: int | None = None
  shared_order: bool = False
  order_seed: int = 0
  dropout: bool = True


class GroupFunctions(NamedTuple):
  """The jitted pure functions of one group (see module docstring).

  ``key_impls``: per leaf of ``state.model_state``, the PRNG implementation
  of an NNX RNG-stream key (stored as key data), else None. ``reads(state,
  x, y)``: the hyperparameter names one training step reads (not jitted).
  ``train_steps`` and ``end_epoch``: an epoch streamed batch by batch
  (:meth:`_Group.train_steps`, :meth:`_Group.end_epoch`; both donate their
  state argument).
  """

  init: Any
  train_epoch: Any
  evaluate: Any
  predict: Any
  spec: GroupSpec
  key_impls: tuple
  reads: Any
  train_steps: Any = None
  end_epoch: Any = None


def build(spec: GroupSpec, rngs: nnx.Rngs) -> nnx.Module:
  """Builds one member's model from the group's factory and structural values."""
  kwargs = dict(spec.structural)
  accepted = _accepted(spec.model)
  if accepted is None or "input_shape" in accepted:
    kwargs.setdefault("input_shape", tuple(spec.input_shape))
  if accepted is None or "num_outputs" in accepted:
    kwargs.setdefault("num_outputs", spec.num_outputs)
  if accepted is not None:
    missing = sorted(set(kwargs) - accepted)
    if missing:
      raise ValueError(
        f"model: {getattr(spec.model, '__qualname__', spec.model)} takes no "
        f"argument {missing[0]!r}, a structural hyperparameter of its members "
        f"(it takes: {', '.join(sorted(accepted - {'self', 'rngs'}))})"
      )
  return spec.model(**kwargs, rngs=rngs)


@functools.lru_cache(maxsize=None)
def _accepted(factory) -> frozenset | None:
  """The keyword names ``factory`` accepts (None: it takes ``**kwargs``)."""
  try:
    # A class's constructor (NNX's metaclass hides it behind *args, **kwargs).
    fn = factory.__init__ if isinstance(factory, type) else factory
    params = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):
    return frozenset()
  if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
    return None
  return frozenset(p.name for p in params)


def _takes_hparams(model: nnx.Module) -> bool:
  """Whether ``model.__call__`` takes the hyperparameters after the input."""
  try:
    params = list(inspect.signature(model.__call__).parameters.values())
  except (TypeError, ValueError):
    return True
  positional = [
    p
    for p in params
    if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
  ]
  # A second parameter with a default (``train=False``, ``deterministic=None``,
  # ``mask=None``) is the model's own option, not a slot for ``hp``: given the
  # (truthy) hyperparameters, a flag would read "on" in training and
  # evaluation alike. Such a model is called as ``model(x)``, as its own
  # signature says it may be.
  return (
    (len(positional) >= 2 and positional[1].default is inspect.Parameter.empty)
    or any(p.name == "hp" for p in params)
    or any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
  )


def _member_chunk(spec: GroupSpec, p: int) -> int:
  """Members per chunk for a group of ``p`` (see ``GroupSpec.member_chunk``); 0: all at once."""
  c = spec.member_chunk
  if c is None:
    c = next(c for c in (4, 2, 1) if p % c == 0) if jax.default_backend() == "cpu" else 0
  # c == p: one chunk, the same program as each chunk of a larger group (so a
  # group split into blocks of c computes what it computes whole).
  return c if c and c <= p and p % c == 0 else 0


def _impl_name(leaf) -> str:
  """The PRNG implementation's name of an (abstract) typed key leaf, e.g. ``threefry2x32``."""
  # An abstract key (from nnx.eval_shape) only carries its dtype; the dtype
  # knows the implementation.
  impl = getattr(leaf.dtype, "_impl", None)
  return impl.name if impl is not None else str(jax.random.key_impl(leaf))


def _is_key(leaf) -> bool:
  return jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key)


class _Template(NamedTuple):
  """How one member's NNX model is split into the state's pure pytrees."""

  train_def: Any  # graph in model.train() mode
  eval_def: Any  # graph in model.eval() mode
  params_def: Any  # treedef of the nnx.State of Params
  rest_def: Any  # treedef of the nnx.State of every other variable
  key_impls: tuple  # per leaf of the rest: the PRNG impl of a key leaf, else None
  calls_hp: bool


def _template(spec: GroupSpec) -> _Template:
  model = nnx.eval_shape(lambda: build(spec, nnx.Rngs(0)))
  model.train()
  train_def, params, rest = nnx.split(model, nnx.Param, ...)
  model.eval()
  eval_def, _, _ = nnx.split(model, nnx.Param, ...)
  impls = tuple(_impl_name(leaf) if _is_key(leaf) else None for leaf in jax.tree.leaves(rest))
  return _Template(
    train_def,
    eval_def,
    jax.tree.structure(params),
    jax.tree.structure(rest),
    impls,
    _takes_hparams(model),
  )


def _split_state(model: nnx.Module) -> tuple[dict, dict]:
  """A member's model -> (params, rest) as pure dicts, PRNG keys as key data."""
  _, params, rest = nnx.split(model, nnx.Param, ...)
  rest = jax.tree.map(lambda a: jax.random.key_data(a) if _is_key(a) else a, rest)
  return nnx.to_pure_dict(params), nnx.to_pure_dict(rest)


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
  g = _Group(spec)
  opts = step_compiler_options()
  if mesh is None:
    jitted = (
      jax.jit(g.init, compiler_options=init_compiler_options()),
      jax.jit(g.train_epoch, donate_argnums=0, compiler_options=opts),
      jax.jit(g.evaluate, compiler_options=opts),
      jax.jit(g.predict, compiler_options=opts),
    )
    stream = tuple(
      jax.jit(fn, donate_argnums=0, compiler_options=opts) for fn in (g.train_steps, g.end_epoch)
    )
  else:
    # Per device, the very functions above on its share of the members.
    jitted = distributed.shard_functions(
      mesh,
      g.init,
      g.train_epoch,
      g.evaluate,
      g.predict,
      init_compiler_options=init_compiler_options(),
      compiler_options=opts,
    )
    m, r = jax.sharding.PartitionSpec(distributed.AXIS), jax.sharding.PartitionSpec()
    # As distributed.shard_functions wraps train_epoch: members split, the
    # shared batches and step counters replicated.
    stream = tuple(
      jax.jit(
        jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=(m, m), check_vma=False),
        donate_argnums=0,
        compiler_options=opts,
      )
      for fn, specs in ((g.train_steps, (m, r, r, r, r, r)), (g.end_epoch, (m, m, r)))
    )
  return GroupFunctions(*jitted, spec, g.t.key_impls, g.reads, *stream)


def compile_side_by_side(
  lowered: Iterable[Iterable[jax.stages.Lowered]], meanwhile: Callable[[], Any] | None = None
) -> None:
  """Compiles lowered programs side by side, one thread per core.

  XLA compiles a program on fewer cores than the host has (its
  optimisation passes run on one), and lowering runs on the host's Python
  thread: each program compiles while the next ones are lowered and
  compiled. ``lowered`` may be lazy (generators): a program is lowered when
  it is reached. Each executable lands in the cache of the ``jax.jit``
  function it was lowered from (and in the persistent cache): that
  function's next call with arguments of these shapes and dtypes runs it
  without compiling. The same executables as compiled one at a time.
  ``meanwhile`` runs on the calling thread once every program is lowered,
  while they compile.
  """
  workers = os.cpu_count() or 1
  with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="hpjax-compile") as pool:
    futures = [pool.submit(low.compile) for group in lowered for low in group]
    if meanwhile is not None:
      meanwhile()
    for future in futures:
      future.result()  # re-raises a compile's error here


def _per_example(name: str, fn: Callable, out: jax.Array, y: jax.Array) -> jax.Array:
  """``fn(out, y)``, checked while tracing to hold one value per example (``[B]``).

  A split's value is the weighted mean of these over its real examples. A
  per-batch value (a scalar) cannot be: computed on a padded evaluation
  chunk it counts the padding rows (x = 0, y = 0) as data, and a
  non-decomposable one (F1) would depend on ``eval_batch_size``. Neither can
  ``[B, 1]``, which would broadcast against the ``[B]`` weights.
  """
  v = fn(out, y)
  b = y.shape[0]
  if jnp.shape(v) != (b,):
    raise ValueError(
      f"{name}: returned shape {jnp.shape(v)} on a batch of {b} examples; it must return "
      f"one value per example (shape ({b},)), whose mean over a split is its value"
    )
  return v


def _masked_sum(v: jax.Array, w: jax.Array) -> jax.Array:
  """``sum(v * w)`` over a chunk, padding rows (``w == 0``) excluded.

  ``jnp.where``, not a product alone: a value that is not finite on a
  padding row (a relative error at y = 0) times 0 is NaN, and would make the
  member's whole score NaN. The real rows' sum is the product's, bit for bit.
  """
  return jnp.sum(jnp.where(w != 0, v * w, 0.0))


def _checked_outputs(spec: GroupSpec, out: Any, b: int) -> jax.Array:
  """The model's outputs as every loss and metric receives them: ``[B, num_outputs]``.

  Checked while tracing, before anything trains. A regression model may
  return ``[B]`` or ``[B, 1]``; both become ``[B, 1]``, since a loss or metric
  reading ``outputs[..., 0]`` or ``outputs.shape[-1]`` of ``[B]`` would read the
  batch's first prediction or take ``B`` for a class count. A classifier
  must return ``[B, num_outputs]`` logits.
  """
  shape = getattr(out, "shape", None)
  shape = tuple(shape) if shape is not None else type(out).__name__
  if spec.task == "regression":
    if shape in ((b,), (b, 1)):
      return jnp.reshape(out, (b, 1))
    want = f"({b},) or ({b}, 1), one prediction per example"
  else:
    if shape == (b, spec.num_outputs):
      return out
    want = f"({b}, {spec.num_outputs}), one logit per class for each example"
  raise ValueError(f"model: output shape {shape}; expected {want} ({spec.task}, batch of {b})")


class _Group:
  """The pure functions of one group, before ``jit`` (see :func:`group_functions`).

  Every method but :meth:`reads` is traced: one member's functions are
  written for one member and ``vmap``ped over the member axis.
  """

  def __init__(self, spec: GroupSpec):
    self.spec = spec
    self.t = _template(spec)
    # The update reads its values from state.hyperparams, not from here.
    self.opt = optim.make_optimizer(spec.optimizer_families)
    self.candidates = dict(spec.traced)
    self.micro = "batch_size" in self.candidates  # batch size traced: micro-batches
    self.structural = dict(spec.structural)

  # -- one member ---------------------------------------------------------------

  def merge(self, graphdef, params, rest) -> nnx.Module:
    """Pure dicts -> the member's NNX module (both flatten in sorted-key order)."""
    p = jax.tree.unflatten(self.t.params_def, jax.tree.leaves(params))
    leaves = [
      jax.random.wrap_key_data(a, impl=impl) if impl is not None else a
      for a, impl in zip(jax.tree.leaves(rest), self.t.key_impls)
    ]
    return nnx.merge(graphdef, p, jax.tree.unflatten(self.t.rest_def, leaves))

  def hp_view(self, opt_hp, hp, train, key, reads=None) -> hp_lib.HParams:
    """The member's hyperparameters as its model and loss receive them."""
    values = {**self.structural, **{k: v for k, v in opt_hp.items() if k in optim.HPARAMS}}
    for name, value in hp.items():
      cands = self.candidates.get(name, ())
      values[name] = hp_lib.TracedChoice(value, cands) if cands else value
    values["optimizer"] = hp_lib.TracedChoice(opt_hp["optimizer"].astype(jnp.int32), optim.FAMILIES)
    if not self.spec.dropout and "dropout" in values:
      values["dropout"] = 0.0  # every member's rate: a constant, no masks drawn
    return hp_lib.HParams(values, train=train, key=key, reads=reads)

  def call(self, model, x, hp):
    """The model on ``x``: its outputs checked and shaped (:func:`_checked_outputs`)."""
    x = normalize(x, self.spec.mean, self.spec.std)
    return _checked_outputs(self.spec, model(x, hp) if self.t.calls_hp else model(x), x.shape[0])

  def init_member(self, key, hp):
    model = build(self.spec, nnx.Rngs(jax.random.fold_in(key, 1), params=key))
    params, rest = _split_state(model)
    opt_state = optim.make_optimizer(
      self.spec.optimizer_families, **{k: hp[k] for k in optim.HPARAMS}
    ).init(params)
    return params, rest, opt_state

  def member_grads(self, params, rest, opt_state, hp, x, y, key, reads=None):
    """One member's loss, gradients, new model state and metrics on one batch."""
    spec = self.spec

    def loss_fn(p):
      model = self.merge(self.t.train_def, p, rest)
      view = self.hp_view(opt_state.hyperparams, hp, True, key, reads)
      out = self.call(model, x, view)
      _, new_rest = _split_state(model)
      return jnp.mean(spec.loss(out, y, view)), (new_rest, out)

    (l, (new_rest, out)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    scores = tuple(jnp.mean(_per_example(f"metric {m.name!r}", m.fn, out, y)) for m in spec.metrics)
    return l, grads, new_rest, scores

  def apply(self, params, opt_state, grads, factor):
    """One optimizer update at the schedule's ``factor``."""
    opt_state = optim.with_lr_scale(opt_state, factor)
    updates, opt_state = self.opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  def member_step(self, params, rest, opt_state, hp, x, y, key, progress):
    """One batch and one update of a member (batch size structural)."""
    l, grads, new_rest, scores = self.member_grads(params, rest, opt_state, hp, x, y, key)
    params, opt_state = self.apply(params, opt_state, grads, self.spec.schedule.factor(progress))
    return params, new_rest, opt_state, l, scores

  def member_micro_step(self, carry, hp, x, y, key, t, updates_per_epoch, epoch):
    """One micro-batch of a member whose batch size is ``hp['batch_size']``.

    Gradients accumulate over ``k = batch_size / micro`` micro-batches, then
    one update applies their mean: without BatchNorm exactly the full batch's
    gradient. BatchNorm normalizes each micro-batch ("ghost batch norm"), and
    its running statistics advance every micro-batch. Micro-steps past the
    member's last whole batch of the epoch change nothing.
    """
    params, rest, opt_state, acc = carry
    k = hp["batch_size"] // self.spec.batch_size
    valid = t < updates_per_epoch * k
    l, grads, new_rest, scores = self.member_grads(params, rest, opt_state, hp, x, y, key)
    acc = jax.tree.map(lambda a, g: a + jnp.where(valid, g, 0.0), acc, grads)
    boundary = valid & ((t + 1) % k == 0)
    progress = epoch + (t // k) / updates_per_epoch
    mean = jax.tree.map(lambda a: a / k.astype(a.dtype), acc)
    new_params, new_opt = self.apply(params, opt_state, mean, self.spec.schedule.factor(progress))
    pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(boundary, a, b), new, old)
    params, opt_state = pick(new_params, params), pick(new_opt, opt_state)
    rest = jax.tree.map(lambda a, b: jnp.where(valid, a, b), new_rest, rest)
    acc = jax.tree.map(lambda a: jnp.where(boundary, jnp.zeros_like(a), a), acc)
    masked = tuple(jnp.where(valid, s, 0.0) for s in (l,) + scores)
    return (params, rest, opt_state, acc), masked

  # -- a population (traced under jit) ---------------------------------------

  def init(self, keys: jax.Array, hparams: Mapping[str, jax.Array]) -> PopulationState:
    """keys: uint32 ``[P, 2]``; hparams: name -> ``[P]`` (optimizer's and ``spec.traced``)."""
    typed = jax.random.wrap_key_data(keys)
    init_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(typed)
    params, rest, opt_state = jax.vmap(self.init_member)(init_keys, hparams)
    return PopulationState(
      params=params,
      model_state=rest,
      opt_state=opt_state,
      hparams={k: hparams[k] for k in self.candidates},
      key=jax.random.key_data(jax.vmap(lambda k: jax.random.fold_in(k, 1))(typed)),
      epoch=jnp.zeros(keys.shape[0], jnp.int32),
    )

  def epoch_keys(self, state: PopulationState):
    """The members' keys for the epoch ``state`` is at: (next epoch's, order, dropout)."""
    split = jax.vmap(lambda k: jax.random.split(k, 3))(jax.random.wrap_key_data(state.key))
    return split[:, 0], split[:, 1], split[:, 2]

  @staticmethod
  def step_keys(drop_key, i):
    """The members' dropout keys at step ``i`` of their epoch."""
    return jax.vmap(lambda k: jax.random.fold_in(k, i))(drop_key)

  def members_step(self, carry, hp, x, y, keys, progress, batch_axis):
    """One step of some members (a leading member axis on ``carry``, ``hp``, ``keys``).

    ``batch_axis`` 0: each member its own batch (``x``: ``[P, B, ...]``);
    None: one batch shared by every member, unbatched under ``vmap`` (one
    gather, one set of patches).
    """
    params, rest, opt_state, l, scores = jax.vmap(
      self.member_step, in_axes=(0, 0, 0, 0, batch_axis, batch_axis, 0, 0)
    )(*carry, hp, x, y, keys, progress)
    return (params, rest, opt_state), (l,) + scores

  def orders(self, state: PopulationState, n: int):
    """The epoch's minibatch orders and the members' next / dropout keys.

    A per-member permutation truncated to whole (micro-)batches,
    ``[P, steps, B]``; with ``shared_order`` one for the whole group,
    ``[steps, B]``.
    """
    b = self.spec.batch_size
    steps = n // b
    if steps < 1:
      raise ValueError(f"batch_size: {b} exceeds the {n} training examples")
    next_key, perm_key, drop_key = self.epoch_keys(state)
    if self.spec.shared_order:
      # Every member (on every device) has trained the same number of epochs.
      order_key = jax.random.fold_in(jax.random.key(self.spec.order_seed), state.epoch[0])
      perms = jax.random.permutation(order_key, n)[: steps * b].reshape(steps, b)
    else:
      perms = jax.vmap(lambda k: jax.random.permutation(k, n)[: steps * b].reshape(steps, b))(
        perm_key
      )
    return perms, next_key, drop_key

  def run_epoch(self, x, y, params, rest, opt_state, hp, perms, drop_key, epoch):
    """The epoch of some members (a leading member axis on every state argument)."""
    shared = self.spec.shared_order
    order = perms if shared else jnp.swapaxes(perms, 0, 1)
    steps = order.shape[0]
    # A shared batch is unbatched under vmap: one gather, one set of patches.
    batch_axis = None if shared else 0

    def keys(i):
      return self.step_keys(drop_key, i)

    if self.micro:
      upe = x.shape[0] // hp["batch_size"]  # each member's updates per epoch

      def body(carry, inp):
        idx, i = inp
        return jax.vmap(
          self.member_micro_step, in_axes=(0, 0, batch_axis, batch_axis, 0, None, 0, 0)
        )(carry, hp, x[idx], y[idx], keys(i), i, upe, epoch)

      acc = jax.tree.map(jnp.zeros_like, params)
      (params, rest, opt_state, _), sums = jax.lax.scan(
        body, (params, rest, opt_state, acc), (order, jnp.arange(steps))
      )
      valid = (upe * (hp["batch_size"] // self.spec.batch_size)).astype(jnp.float32)
      return (params, rest, opt_state) + tuple(s.sum(0) / valid for s in sums)

    def body(carry, inp):
      idx, i = inp
      return self.members_step(carry, hp, x[idx], y[idx], keys(i), epoch + i / steps, batch_axis)

    (params, rest, opt_state), values = jax.lax.scan(
      body, (params, rest, opt_state), (order, jnp.arange(steps))
    )
    return (params, rest, opt_state) + tuple(v.mean(0) for v in values)

  def train_epoch(self, state: PopulationState, x: jax.Array, y: jax.Array):
    """One epoch over ``x, y`` (device arrays shared by all members)."""
    perms, next_key, drop_key = self.orders(state, x.shape[0])
    epoch = state.epoch.astype(jnp.float32)
    run = functools.partial(self.run_epoch, x, y)
    args = (state.params, state.model_state, state.opt_state, state.hparams, perms, drop_key, epoch)
    if self.spec.shared_order:  # one order for every member: not split by member
      run = lambda *a: self.run_epoch(x, y, *a[:4], perms, *a[4:])  # pylint: disable=unnecessary-lambda-assignment
      args = args[:4] + args[5:]
    out = _by_chunks(self.spec, state.epoch.shape[0], run, args)
    params, rest, opt_state, train_loss = out[:4]
    new_state = state.replace(
      params=params,
      model_state=rest,
      opt_state=opt_state,
      key=jax.random.key_data(next_key),
      epoch=state.epoch + 1,
    )
    return new_state, self.train_metrics(train_loss, out[4:])

  def train_metrics(self, loss, scores) -> dict:
    """An epoch's per-member means by name: ``train_loss``, ``train_<metric>``."""
    return {"train_loss": loss, **{f"train_{m.name}": v for m, v in zip(self.spec.metrics, scores)}}

  # -- an epoch streamed from the host (hpjax.data.Stream) ---------------------

  def run_steps(self, xs, ys, params, rest, opt_state, hp, drop_key, epoch, start, count, steps):
    """Steps ``start ..`` of some members' epoch, one shared batch per step; sums per member."""

    def body(j, carry):
      carry, sums = carry
      i = start + j
      carry, values = self.members_step(
        carry, hp, xs[j], ys[j], self.step_keys(drop_key, i), epoch + i / steps, None
      )
      return carry, tuple(a + v for a, v in zip(sums, values))

    zeros = tuple(jnp.zeros(epoch.shape, jnp.float32) for _ in range(1 + len(self.spec.metrics)))
    # A trip count only known at run time: one program for every call of an
    # epoch, the last one's shorter stack included. (XLA also removes a loop
    # of one known trip and compiles that step about 2x slower on CPU;
    # docs/benchmarks.md.)
    (params, rest, opt_state), sums = jax.lax.fori_loop(
      0, count, body, ((params, rest, opt_state), zeros)
    )
    return (params, rest, opt_state) + sums

  def train_steps(self, state: PopulationState, xs: jax.Array, ys: jax.Array, start, count, steps):
    """Steps ``start .. start + count - 1`` of an epoch of ``steps``, on shared batches.

    The epoch of a stream (:class:`hpjax.data.Stream`), called from a host
    loop: every member of the group trains on the same batch ``xs[j]``,
    ``ys[j]`` at step ``start + j``, with the conventions of
    :meth:`train_epoch` (the schedule's progress ``epoch + step / steps``,
    step ``i``'s dropout keys folded from the epoch's). The batch size is
    structural: the batches'. The state's key and epoch stay until
    :meth:`end_epoch`.

    Args:
      state: the group's state (donated).
      xs, ys: ``[k, B, *input_shape]`` and ``[k, B]``; only the first
        ``count`` batches are read (an epoch's last call pads its stack).
      start: the epoch's step of ``xs[0]`` (an int32 scalar).
      count: the batches to train on, ``1 .. k`` (an int32 scalar).
      steps: the epoch's steps (an int32 scalar).

    Returns:
      ``(state, sums)``: ``sums`` per member, the training loss and each
      metric summed over the ``count`` steps (a tuple of ``[P]``).
    """
    if self.micro:
      raise ValueError(
        "batch_size: a streamed epoch trains every member on the stream's "
        "batches; the batch size cannot be a traced hyperparameter"
      )
    _, _, drop_key = self.epoch_keys(state)
    run = lambda *a: self.run_steps(xs, ys, *a, start, count, steps)  # pylint: disable=unnecessary-lambda-assignment
    out = _by_chunks(
      self.spec,
      state.epoch.shape[0],
      run,
      (
        state.params,
        state.model_state,
        state.opt_state,
        state.hparams,
        drop_key,
        state.epoch.astype(jnp.float32),
      ),
    )
    params, rest, opt_state = out[:3]
    return state.replace(params=params, model_state=rest, opt_state=opt_state), out[3:]

  def end_epoch(self, state: PopulationState, sums, steps):
    """Closes a streamed epoch: next keys, one more epoch, the means of ``sums`` over ``steps``."""
    next_key, _, _ = self.epoch_keys(state)
    new_state = state.replace(key=jax.random.key_data(next_key), epoch=state.epoch + 1)
    means = tuple(s / steps for s in sums)
    return new_state, self.train_metrics(means[0], means[1:])

  def forward_eval(self, params, rest, opt_hp, hp, x, reads=None):
    return self.call(
      self.merge(self.t.eval_def, params, rest), x, self.hp_view(opt_hp, hp, False, None, reads)
    )

  def evaluate(self, state: PopulationState, x: jax.Array, y: jax.Array, weights: jax.Array):
    """Validation loss and metrics per member over ``x`` in fixed-size chunks.

    ``x`` must hold a whole number of ``eval_batch_size`` chunks; ``weights``
    (1 for real examples, 0 for padding) keeps padding out of the means. The
    validation loss and every metric give one value per example (checked
    while tracing: a per-batch value would count the padding), so a split's
    value is exact whatever ``eval_batch_size``; a padding row's value is
    dropped even where it is not finite.
    """
    spec = self.spec
    e = spec.eval_batch_size
    chunks = x.shape[0] // e
    data = (
      x.reshape((chunks, e) + x.shape[1:]),
      y.reshape((chunks, e) + y.shape[1:]),
      weights.reshape(chunks, e),
    )

    def member_eval(params, rest, opt_hp, hp, xc, yc, wc):
      out = self.forward_eval(params, rest, opt_hp, hp, xc)
      # One objective for every member, whatever it trains with, so that
      # validation losses rank members fairly.
      fns = [("val_loss", spec.val_loss)] + [(f"metric {m.name!r}", m.fn) for m in spec.metrics]
      return tuple(_masked_sum(_per_example(n, fn, out, yc), wc) for n, fn in fns)

    def eval_members(params, rest, opt_hp, hp):
      """Summed loss and metrics of some members over every chunk of ``x``."""
      zeros = tuple(
        jnp.zeros(jax.tree.leaves(hp)[0].shape[0]) for _ in range(1 + len(spec.metrics))
      )

      def body(acc, chunk):
        sums = jax.vmap(member_eval, in_axes=(0, 0, 0, 0, None, None, None))(
          params, rest, opt_hp, hp, *chunk
        )
        return tuple(a + s for a, s in zip(acc, sums)), None

      return jax.lax.scan(body, zeros, data)[0]

    # As in training: chunks of members, one after another, each over the
    # whole split (1.7x faster at P=32, 28x28 on the 2-core CPU; docs/benchmarks.md).
    sums = _by_chunks(
      spec,
      state.epoch.shape[0],
      eval_members,
      (state.params, state.model_state, state.opt_state.hyperparams, state.hparams),
    )
    total = jnp.maximum(jnp.sum(weights), 1.0)
    loss = sums[0] / total
    # A diverged member (non-finite loss) has no meaningful score: NaN, so
    # that every ranking puts it last whatever the metric.
    return {
      "loss": loss,
      **{
        m.name: jnp.where(jnp.isfinite(loss), s / total, jnp.nan)
        for m, s in zip(spec.metrics, sums[1:])
      },
    }

  def predict(self, state: PopulationState, x: jax.Array) -> jax.Array:
    """Every member's outputs (eval mode) on ``x``: ``[P, N, outputs]``."""
    return jax.vmap(lambda p, r, o, h: self.forward_eval(p, r, o, h, x))(
      state.params, state.model_state, state.opt_state.hyperparams, state.hparams
    )

  def reads(self, state: PopulationState, x: jax.Array, y: jax.Array) -> frozenset:
    """The hyperparameter names a training step or an evaluation of the model and loss reads.

    Traced abstractly (``jax.eval_shape``, nothing runs or compiles) on the
    first member and the first examples of ``x``, ``y``; both passes, since
    a model may read a name in one mode only (a temperature at evaluation).
    """
    names: set = set()
    b = self.spec.batch_size

    def one(a, batch=False):  # the abstract value of one member / one batch
      return jax.ShapeDtypeStruct(((b,) if batch else ()) + tuple(a.shape[1:]), a.dtype)

    first = jax.tree.map(one, (state.params, state.model_state, state.opt_state, state.hparams))
    jax.eval_shape(
      lambda s, xb, yb: self.member_grads(*s, xb, yb, jax.random.key(0), names),
      first,
      one(x, True),
      one(y, True),
    )
    jax.eval_shape(
      lambda s, xb: self.forward_eval(s[0], s[1], s[2].hyperparams, s[3], xb, names),
      first,
      one(x, True),
    )
    return frozenset(names)


def _by_chunks(spec: GroupSpec, p: int, fn, args):
  """``fn(*args)`` over all ``p`` members, in chunks of members one after another.

  Chunks of ``c`` members (:func:`_member_chunk`) run their whole work one
  chunk after another: each chunk's working set stays in cache (measured
  faster on CPU). Every leaf of ``args`` and of the result has the member axis.
  """
  c = _member_chunk(spec, p)
  if not c:
    return fn(*args)
  chunked = jax.tree.map(lambda a: a.reshape((p // c, c) + a.shape[1:]), args)
  out = jax.lax.map(lambda a: fn(*a), chunked)
  return jax.tree.map(lambda a: a.reshape((p,) + a.shape[2:]), out)


def runs_in_chunks(spec: GroupSpec, p: int, block: int) -> bool:
  """Whether a group of ``p`` members runs blocks of ``block`` as chunks anyway.

  True when the group runs its members one chunk after another, in chunks
  that tile a block, and a block alone runs in the same chunks. Then
  splitting the group into blocks of ``block`` (one call each;
  :class:`hpjax.Population`'s ``member_block``) loses no parallelism and
  runs the very program each chunk runs: the same numbers as the whole group.
  """
  c = _member_chunk(spec, p)
  return c != 0 and block % c == 0 and _member_chunk(spec, block) == c


@moving_jit(static_argnums=1)
def split_members(tree, n: int) -> tuple:
  """``tree``'s members (every leaf's leading axis) as ``n`` equal blocks, in order.

  One program per shape (a copy, nothing donated: the blocks' shapes differ
  from the whole's, so XLA could not reuse its buffers).

  Args:
    tree: a group state (or any pytree of ``[P, ...]`` arrays).
    n: the number of blocks; must divide ``P``.
  """
  blocked = jax.tree.map(lambda a: a.reshape((n, a.shape[0] // n) + a.shape[1:]), tree)
  return tuple(jax.tree.map(lambda a, i=i: a[i], blocked) for i in range(n))


@moving_jit
def join_members(trees: tuple):
  """The inverse of :func:`split_members`: the blocks' members concatenated, in order."""
  return jax.tree.map(lambda *a: jnp.concatenate(a), *trees)


def member_tree(tree, member: int):
  """Member ``member``'s slice of every leaf of ``tree`` (a leading member axis), on the host.

  Device arrays are gathered by one program for the whole tree (compiled
  once per tree structure and shapes, without backend optimisations), not
  one indexing program per leaf; numpy leaves are indexed on the host.

  Returns:
    ``tree`` with numpy leaves, each without the member axis.
  """
  leaves = jax.tree.leaves(tree)
  if leaves and all(isinstance(a, jax.Array) for a in leaves):
    one = _take(tree, np.asarray([member], np.int32))
    return jax.tree.map(lambda a: np.asarray(a)[0], one)
  return jax.tree.map(lambda a: np.asarray(a)[member], tree)


def model_of(spec: GroupSpec, state: PopulationState, member: int) -> nnx.Module:
  """Member ``member``'s model as a plain NNX module (eval mode), e.g. to predict."""
  t = _template(spec)
  host = member_tree((state.params, state.model_state), member)
  params = jax.tree.unflatten(t.params_def, jax.tree.leaves(host[0]))
  leaves = [
    jax.random.wrap_key_data(a, impl=impl) if impl is not None else jnp.asarray(a)
    for a, impl in zip(jax.tree.leaves(host[1]), t.key_impls)
  ]
  return nnx.merge(t.eval_def, params, jax.tree.unflatten(t.rest_def, leaves))


def get_hparams(state: PopulationState) -> dict[str, jax.Array]:
  """All per-member traced hyperparameters of a group (name -> ``[P]`` array)."""
  opt = {k: v for k, v in state.opt_state.hyperparams.items() if k in optim.HPARAMS}
  return {**opt, **state.hparams}


def set_hparams(state: PopulationState, values: Mapping[str, Any]) -> PopulationState:
  """Returns ``state`` with some per-member hyperparameters replaced.

  Args:
    state: a group state.
    values: name -> ``[P]`` values; optimizer names or names of ``state.hparams``.

  Returns:
    The new state (same shapes and dtypes: nothing recompiles).
  """
  opt_vals, other = {}, {}
  for k, v in values.items():
    if k in optim.HPARAMS:
      opt_vals[k] = jnp.asarray(v, state.opt_state.hyperparams[k].dtype)
    elif k in state.hparams:
      other[k] = jnp.asarray(v, state.hparams[k].dtype)
    else:
      raise ValueError(
        f"hyperparameter: unknown name {k!r}; allowed: "
        + ", ".join(sorted(optim.HPARAMS + tuple(state.hparams)))
      )
  opt_state = state.opt_state
  if opt_vals:
    opt_state = optax.tree_utils.tree_set(opt_state, **opt_vals)
  return state.replace(opt_state=opt_state, hparams={**state.hparams, **other})


@moving_jit
def reset_family(state: PopulationState, reset: jax.Array) -> PopulationState:
  """Fresh optimizer-family buffers for the members ``reset`` (see :mod:`hpjax.optim`)."""
  return state.replace(opt_state=optim.reset_family_state(state.opt_state, reset))


@moving_jit(static_argnames=("key_impls",))
def rekey(
  state: PopulationState, keys: jax.Array, mask: jax.Array, key_impls: tuple = ()
) -> PopulationState:
  """New PRNG keys for the members ``mask``: the engine's and every NNX RNG stream's.

  Args:
    state: a group state.
    keys: uint32 ``[P, 2]`` key data; used where ``mask``.
    mask: bool ``[P]``.
    key_impls: per leaf of ``state.model_state``, the PRNG implementation of
      an RNG-stream key leaf, else None (``GroupFunctions.key_impls``).

  Returns:
    ``state`` whose masked members draw fresh randomness: their epoch key is
    ``keys``, and each RNG-stream key of their model is folded with bits of
    ``keys`` (so it no longer repeats the stream it was copied from).
  """

  def pick(new, old):
    return jnp.where(mask.reshape(mask.shape + (1,) * (old.ndim - 1)), new, old)

  leaves, treedef = jax.tree.flatten(state.model_state)
  bits = keys[:, 0] ^ keys[:, -1]
  new_leaves = []
  for leaf, impl in zip(leaves, key_impls or (None,) * len(leaves)):
    if impl is not None:
      typed = jax.random.wrap_key_data(leaf, impl=impl)
      leaf = pick(jax.random.key_data(jax.vmap(jax.random.fold_in)(typed, bits)), leaf)
    new_leaves.append(leaf)
  return state.replace(
    key=pick(keys, state.key), model_state=jax.tree.unflatten(treedef, new_leaves)
  )


def _take_members(state, index):
  return jax.tree.map(lambda a: jnp.take(a, index, axis=0), state)


_take = moving_jit(_take_members)


@functools.lru_cache(maxsize=None)
def _sharded_take(mesh: jax.sharding.Mesh):
  # The output keeps the member sharding: XLA moves the donors' shards
  # between devices (and processes) as one collective gather.
  return jax.jit(_take_members, out_shardings=distributed.member_sharding(mesh))


def _mesh_of(state: PopulationState) -> jax.sharding.Mesh | None:
  """The population mesh ``state`` is split over, or None."""
  sharding = getattr(state.epoch, "sharding", None)
  if isinstance(
    sharding, jax.sharding.NamedSharding
  ) and sharding.spec == jax.sharding.PartitionSpec(distributed.AXIS):
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
    return _take(state, np.asarray(index, np.int32))
  return _sharded_take(mesh)(
    state, distributed.put(np.asarray(index, np.int32), distributed.replicated(mesh))
  )


def member_keys(seed: int, indices: Sequence[int]) -> jax.Array:
  """Per-member key data: member ``i``'s key depends only on (seed, i).

  ``fold_in(key(seed), i)`` for every ``i``, in one program (compiled once per
  population size, without backend optimisations: the same bits as one
  ``fold_in`` call per member, which compiled four programs and dispatched
  one call per member).
  """
  base = jax.random.key_data(jax.random.key(seed))
  return _member_keys(base, np.asarray(indices, np.uint32).reshape(-1))


@moving_jit
def _member_keys(base: jax.Array, indices: jax.Array) -> jax.Array:
  base = jax.random.wrap_key_data(base)
  return jax.vmap(lambda i: jax.random.key_data(jax.random.fold_in(base, i)))(indices)


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
  """Pads an evaluation split to whole chunks; returns (x, y, weights) on the device.

  The padding is done on the host (NumPy) and placed once: no program is
  compiled for it.
  """
  n = x.shape[0]
  length = length or n
  length = -(-length // eval_batch_size) * eval_batch_size
  pad = length - n
  w = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
  if pad:
    x, y = np.asarray(x), np.asarray(y)
    x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
    y = np.concatenate([y, np.zeros((pad,) + y.shape[1:], y.dtype)])
  return jax.device_put(x), jax.device_put(y), jax.device_put(w)
