"""A population: members with their own hyperparameters, trained side by side.

:class:`Population` is the host-side wrapper of the functional engine
(:mod:`hpjax.engine`): it resolves every member's hyperparameters against the
table (:mod:`hpjax.hparams`), groups members that share their structural
ones (one compiled, vmapped program per group), converts values to the
arrays the engine stores, and applies controllers' decisions (copying
members, changing hyperparameters, dropping members) as gathers on the
device. Per-member results come back as ``[P]`` arrays in member order.

With several devices (``mesh='auto'``, the default) each group's state is
split over a 1-D device mesh along the member axis (see
:mod:`hpjax.distributed`: padding of groups that do not divide the device
count, gathers across devices, checkpoints independent of the device count).
With one device nothing changes.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator, Mapping, Sequence
import dataclasses
import difflib
import functools
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from hpjax import distributed
from hpjax import engine
from hpjax import fitness as fitness_lib
from hpjax import hparams as hp_lib
from hpjax import losses as losses_lib
from hpjax import models
from hpjax import optim
from hpjax.data.stream import Stream
from hpjax.engine import GroupFunctions
from hpjax.engine import pad_eval
from hpjax.engine import PopulationState


class Member(Mapping):
  """One member's hyperparameters: name -> value.

  Holds only what was set; a name not set takes its default from the table
  (:data:`hpjax.hparams.BUILTIN`) when the member joins a population. Values
  read as attributes too (``member.learning_rate``).

  Example::

    hpjax.Member(learning_rate=3e-3, optimizer="adam", activation="tanh", width=32)
  """

  def __init__(self, values: Mapping[str, Any] | None = None, /, **kwargs: Any):
    self._values = {**dict(values or {}), **kwargs}

  def __getitem__(self, name: str) -> Any:
    return self._values[name]

  def __iter__(self) -> Iterator[str]:
    return iter(self._values)

  def __len__(self) -> int:
    return len(self._values)

  def __getattr__(self, name: str) -> Any:
    if name.startswith("_"):
      raise AttributeError(name)
    if name in self._values:
      return self._values[name]
    if name in hp_lib.BUILTIN:
      return hp_lib.BUILTIN[name].default
    raise AttributeError(f"member has no hyperparameter {name!r}")

  def replace(self, **values: Any) -> "Member":
    """A copy with some values replaced."""
    return Member(self._values, **values)

  def __eq__(self, other: Any) -> bool:
    return isinstance(other, Member) and self._values == other._values

  def __hash__(self) -> int:
    return hash(tuple(sorted((k, repr(v)) for k, v in self._values.items())))

  def __repr__(self) -> str:
    return "Member(" + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"


def _listed_values(dim) -> tuple:
  """The values a space dimension lists: a choice's, or a fixed value; ``()`` otherwise."""
  if hasattr(dim, "values"):
    return tuple(dim.values)
  return (dim.value,) if hasattr(dim, "value") else ()


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
    members: the members' hyperparameters (:class:`Member` or dicts).
    data: a :class:`hpjax.data.Dataset`, or a :class:`hpjax.data.Stream`
      (training batches streamed from the host; every member trains on the
      stream's batches, in the stream's order, at its batch size).
    model: the model factory (an ``nnx.Module`` class or function; see
      :mod:`hpjax.engine` for the contract); default: the built-in families
      (:func:`hpjax.models.builtin`), whose structural hyperparameters
      (``family``, ``depth``, ``width``, ...) then take the table's defaults.
    loss: ``(outputs, y, hp) -> [B]`` per-example training loss; default
      :func:`hpjax.losses.builtin` (the member's ``loss`` and
      ``label_smoothing``).
    metric: a :class:`hpjax.fitness.Metric`, or several (the first is the
      default fitness); default: accuracy, or MSE for regression.
    val_loss: ``(outputs, y) -> [B]``, the validation loss, one objective for
      every member (default :func:`hpjax.losses.validation`).
    space: the search space; declares the user's own hyperparameter names
      and the candidates of traced choices.
    candidates: name -> the values of a traced choice compiled into every
      group (default: the space's choices, else those the members use). Give
      every value a controller may switch members to.
    seed: member ``i``'s PRNG key is derived from ``(seed, i)`` alone.
    schedule: learning-rate schedule shape shared by all members, in epochs
      (:class:`hpjax.optim.EpochSchedule`).
    eval_batch_size: examples per evaluation chunk.
    mesh: ``'auto'`` (default) splits every group over all devices when there
      are more than one; ``None`` never splits; or a 1-D population mesh.
      Results do not depend on it beyond floating-point rounding.
    shared_order: all members of a group see the same minibatches (drawn
      from ``seed`` and the epoch); see :class:`hpjax.engine.GroupSpec`.
    member_chunk: see :class:`hpjax.engine.GroupSpec`.
    member_block: train and evaluate a group of ``n * member_block``
      members as ``n`` blocks of ``member_block``, one call of the same
      compiled programs each, where the group's members run one chunk after
      another anyway (CPU; see :func:`hpjax.engine.runs_in_chunks`): a
      population that successive halving shrinks (32, 16, 8) then compiles
      its epoch once, not once per size. The same numbers either way.
      ``None`` (default): whole groups.
    compile_ahead: evaluation splits (``val``, ``test``) whose programs
      compile while the population is built: every group's init, training
      epoch and evaluation on these splits are traced one after another, then
      compiled side by side on the host's cores (one compile alone leaves
      some idle), so the first epoch compiles nothing. ``()`` (default):
      each program compiles at its first call. Not used over a device mesh
      or with a :class:`hpjax.data.Stream` (their programs compile at their
      first call). The same programs, the same numbers either way.
    batch_mode: how members with different batch sizes train. ``traced``: in
      one program, every member stepping through micro-batches of the
      smallest size and updating after its own number of them (a batch size
      is then a per-member value that PBT may change without a recompile);
      needs every size to be a multiple of the smallest. ``structural``: a
      compiled group per batch size. ``auto`` (default): traced when the
      sizes allow it (the candidates' sizes, else the space's, else the
      members'), structural otherwise.
  """

  def __init__(
    self,
    members: Sequence[Mapping[str, Any]],
    data,
    *,
    model: Callable[..., nnx.Module] | None = None,
    loss: Callable | None = None,
    metric: fitness_lib.Metric | Sequence[fitness_lib.Metric] | None = None,
    val_loss: Callable | None = None,
    space: Mapping[str, Any] | None = None,
    candidates: Mapping[str, Sequence[Any]] | None = None,
    seed: int = 0,
    schedule: optim.EpochSchedule = optim.EpochSchedule(),
    eval_batch_size: int = 256,
    mesh: jax.sharding.Mesh | str | None = "auto",
    shared_order: bool = False,
    member_chunk: int | None = None,
    batch_mode: str = "auto",
    member_block: int | None = None,
    compile_ahead: Sequence[str] = (),
  ):
    if not members:
      raise ValueError("members: a population needs at least one member")
    if member_block is not None and not (isinstance(member_block, int) and member_block >= 1):
      raise ValueError(f"member_block: expected None or an int >= 1, got {member_block!r}")
    self.member_block = member_block
    self.data = data
    self.stream = isinstance(data, Stream)
    self.seed = seed
    self.space = dict(space or {})
    self.model = model or models.builtin
    self.loss = loss or losses_lib.builtin
    self.metrics = fitness_lib.as_metrics(metric, data.task)
    self.metric = self.metrics[0]
    self.val_loss = val_loss or losses_lib.validation
    raw = [dict(m) for m in members]
    self.traced = self._traced_names(raw)
    self.candidates = self._candidates(raw, candidates or {})
    self.families = self._families(raw, candidates or {})
    self.dropout = self._dropout(raw)
    self._batch_mode(raw, candidates or {}, batch_mode)
    self._check_float_choices()
    self.members = [self.resolve(m) for m in raw]
    for m in self.members:
      data.check_batch_size(m["batch_size"])
    self.schedule = schedule.validate()
    self.eval_batch_size = eval_batch_size
    self.size = len(self.members)
    self.ids = np.arange(self.size)
    # Each split is padded to its own whole number of eval batches: the
    # validation set, evaluated every epoch, is not padded to the test set's
    # length (digits: 180 and 359 examples, 256 and 512 padded, where one
    # common length made every validation pass 512). The test set's
    # evaluate compiles once, at its first use.
    self._eval = {
      "val": pad_eval(data.x_val, data.y_val, eval_batch_size),
      "test": pad_eval(data.x_test, data.y_test, eval_batch_size),
    }
    self._train = None if self.stream else (data.x_train, data.y_train)
    self.mesh = distributed.resolve_mesh(mesh)
    if self.mesh is not None:
      # Every device holds the whole dataset, placed once.
      rep = distributed.replicated(self.mesh)
      if self._train is not None:
        self._train = distributed.put(self._train, rep)
      self._eval = {k: distributed.put(v, rep) for k, v in self._eval.items()}
    # A stream's batches are shared by every member of a group.
    self._static = dict(
      shared_order=bool(shared_order) or self.stream,
      member_chunk=member_chunk,
      dropout=self.dropout,
    )
    self.groups: list[Group] = self._build_groups(compile_ahead)
    self._check_read()

  # -- hyperparameters ------------------------------------------------------

  def _dropout(self, raw) -> bool:
    """Whether dropout's masks are compiled in: where a member can have a rate.

    'dropout' in the space, or a member's rate not 0. Without them
    digits28_pbt's epoch compiles 11% faster, to the same numbers (a rate of
    0 keeps every unit, unscaled).
    """
    return "dropout" in self.space or any(m.get("dropout", 0.0) != 0 for m in raw)

  def _build_groups(self, compile_ahead: Sequence[str]) -> list[Group]:
    """The members grouped by structure, each group's state initialised."""
    by_key: dict[tuple, list[int]] = {}
    for i, m in enumerate(self.members):
      by_key.setdefault(self.group_key(m), []).append(i)
    keys: dict[tuple, jax.Array] = {}
    self._compile_ahead(by_key, compile_ahead, keys)
    return [self._new_group(key, ids, keys.get(key)) for key, ids in by_key.items()]

  def _families(self, raw, candidates: Mapping[str, Sequence[Any]]) -> tuple[str, ...]:
    """The optimizer families compiled in: the candidates', else the space's, else the members'."""
    names = (
      candidates.get("optimizer")
      or _listed_values(self.space.get("optimizer"))
      or [m.get("optimizer", hp_lib.BUILTIN["optimizer"].default) for m in raw]
    )
    for n in names:
      hp_lib.BUILTIN["optimizer"].check(n)
    return tuple(f for f in optim.FAMILIES if f in set(names))

  def _batch_mode(self, raw, candidates: Mapping[str, Sequence[Any]], mode: str) -> None:
    """Decides whether batch size is traced (one program) or structural (a group per size)."""
    if mode not in ("auto", "traced", "structural"):
      raise ValueError(f"batch_mode: unknown value {mode!r}; allowed: auto, traced, structural")
    if self.stream:  # one batch size, the stream's (members are checked against it)
      if mode == "traced":
        raise ValueError(
          "batch_mode: 'traced' needs batch sizes of the members' own; a "
          "Stream's batches are every member's"
        )
      self.micro, self.batch_traced = self.data.batch_size, False
      return
    dim = self.space.get("batch_size")
    field = "candidates.batch_size" if candidates.get("batch_size") else "space.batch_size"
    given = (
      candidates.get("batch_size")
      or _listed_values(dim)
      or (tuple(range(dim.lo, dim.hi + 1)) if hasattr(dim, "lo") else None)
    )
    sizes = given or [m.get("batch_size", hp_lib.BUILTIN["batch_size"].default) for m in raw]
    sizes = sorted({hp_lib.BUILTIN["batch_size"].check(int(v)) for v in sizes})
    if given and sizes[-1] > self.data.num_train:
      # A member sampled or explored (PBT) into such a size would make no update
      # at all; refused here, before any controller can move a member there.
      raise ValueError(
        f"{field}: {sizes[-1]} is more than the {self.data.num_train} training "
        f"examples; allowed: batch sizes up to {self.data.num_train}"
      )
    self.micro = sizes[0]
    multiples = all(v % self.micro == 0 for v in sizes)
    if mode == "traced" and not multiples:
      raise ValueError(
        f"batch_size: batch_mode 'traced' needs every size to be a multiple of "
        f"the smallest; got {sizes}"
      )
    self.batch_traced = multiples and (mode == "traced" or (mode == "auto" and len(sizes) > 1))
    if self.batch_traced:
      self.traced += ("batch_size",)

  def _check_float_choices(self) -> None:
    """Refuses a traced float's listed values that one float32 holds.

    The state could not tell them apart: :meth:`hparams` would report the
    first for both.
    """
    for name in list(optim.HPARAMS) + list(self.traced):
      h = hp_lib.lookup(name, self.space)
      if h.structural or h.kind != "float":
        continue
      seen: dict[float, Any] = {}
      for v in _listed_values(self.space.get(name)):
        f = float(np.float32(v))
        if f in seen:
          raise ValueError(
            f"space.{name}: {seen[f]!r} and {v!r} are one float32, the value a member "
            "stores; allowed: choices that differ in float32"
          )
        seen[f] = v

  def _traced_names(self, raw: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The traced non-optimizer names kept in the state: the built-in ones and the user's.

    The batch size joins them when it is traced (see ``batch_mode``).
    """
    names = [
      h.name for h in hp_lib.BUILTIN.values() if h.traced and h.role not in ("optimizer", "train")
    ]
    for name in list(self.space) + [k for m in raw for k in m]:
      if name not in hp_lib.BUILTIN and not hp_lib.is_structural(name, self.space):
        hp_lib.lookup(name, self.space)  # an undeclared name is an error here
        names.append(name)
    return tuple(dict.fromkeys(names))

  def _candidates(self, raw, given: Mapping[str, Sequence[Any]]) -> dict[str, tuple]:
    """The compiled values of every traced choice (its index is what the state stores)."""
    out = {}
    for name in self.traced:
      h = hp_lib.lookup(name, self.space)
      if not h.indexed:
        continue
      if name in given:
        values = tuple(given[name])
      else:
        values = _listed_values(self.space.get(name))
        if not values:
          used = [m.get(name, self._default(h)) for m in raw]
          order = list(h.choices) or list(dict.fromkeys(used))
          values = tuple(v for v in order if v in used)
      if not values:
        raise ValueError(f"{name}: no candidate values")
      for v in values:
        h.check(v)
      if name == "loss":
        losses_lib.check_losses(values, self.data.task)
      out[name] = values
    return out

  def _cands(self, name: str) -> tuple:
    """The values whose index a traced choice stores (the optimizer's: every family)."""
    return optim.FAMILIES if name == "optimizer" else self.candidates.get(name, ())

  def _listed(self, name: str) -> tuple:
    """What a stored number of ``name`` decodes among (:func:`hpjax.hparams.decode`).

    A traced choice's candidates, or the values the space lists for a number,
    so that a float choice reads back as itself, not as its float32.
    """
    return self._cands(name) or _listed_values(self.space.get(name))

  def _default(self, h: hp_lib.HParam) -> Any:
    if h.name == "batch_size" and self.stream:
      return self.data.batch_size
    return hp_lib.default_loss(self.data.task) if h.name == "loss" else h.default

  def _structural_names(self, m: Mapping[str, Any]) -> list[str]:
    """The model's structural names of member ``m`` (batch size apart)."""
    if self.model is models.builtin:
      names = list(hp_lib.MODEL_STRUCTURAL)
    else:
      names = [k for k in hp_lib.MODEL_STRUCTURAL if k in m]
    names += [
      k
      for k in list(self.space) + list(m)
      if k not in hp_lib.BUILTIN and hp_lib.is_structural(k, self.space)
    ]
    return list(dict.fromkeys(names))

  def resolve(self, member: Mapping[str, Any]) -> dict[str, Any]:
    """Every hyperparameter of ``member``: its values checked, the rest defaulted.

    Raises:
      ValueError: one line naming the hyperparameter: an unknown name, a value
        out of range, or a choice not among the compiled candidates.
    """
    m = dict(member)
    out = {}
    names = list(optim.HPARAMS) + list(self.traced) + ["batch_size"]
    names += self._structural_names(m)
    for name in m:
      if name not in names:
        h = hp_lib.lookup(name, self.space)  # unknown -> error naming it
        raise ValueError(
          f"{name}: a {'structural' if h.structural else 'traced'} "
          "hyperparameter this population's model does not take"
        )
    for name in dict.fromkeys(names):
      h = hp_lib.lookup(name, self.space)
      value = m.get(name, self._default(h))
      if value is None:
        raise ValueError(f"{name}: no value and no default; set it on every member")
      # What the member trains with (a traced float: its float32, see hp_lib.stored).
      value = hp_lib.stored(name, h.check(value), self.space)
      if name == "batch_size" and self.batch_traced and value % self.micro:
        raise ValueError(
          f"batch_size: {value} is not a multiple of {self.micro}, the "
          "micro-batch compiled for this population (give every batch size a "
          "controller may choose among the candidates)"
        )
      if name == "batch_size":
        # Fewer examples than one batch: no update at all (a replayed schedule's
        # values are checked here too, before the run trains).
        self.data.check_batch_size(value)
      if name == "optimizer" and value not in self.families:
        raise ValueError(
          f"optimizer: {value!r} is not among the families compiled for this "
          f"population {self.families} (give every family a controller may "
          "choose among the candidates)"
        )
      if name in self.candidates and not any(
        hp_lib.encode(h, value, self.candidates[name]) == i
        for i in range(len(self.candidates[name]))
      ):
        raise ValueError(f"{name}: {value!r} is not among the candidates {self.candidates[name]}")
      out[name] = value
    return out

  def group_key(self, m: Mapping[str, Any]) -> tuple:
    """The structural part of a resolved member: members that share it share a group."""
    size = self.micro if self.batch_traced else m["batch_size"]
    return (size, tuple((k, m[k]) for k in self._structural_names(m)))

  def hparam_arrays(self, members: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The traced hyperparameters of resolved ``members`` as ``[len(members)]`` arrays."""
    out = {}
    for name in list(optim.HPARAMS) + list(self.traced):
      h = hp_lib.lookup(name, self.space)
      cands = self._cands(name)
      out[name] = np.array([hp_lib.encode(h, m[name], cands) for m in members], hp_lib.dtype(h))
    return out

  def _spec(self, key: tuple) -> engine.GroupSpec:
    batch_size, structural = key
    return engine.GroupSpec(
      model=self.model,
      structural=structural,
      batch_size=batch_size,
      input_shape=tuple(self.data.input_shape),
      num_outputs=self.data.num_classes if self.data.task == "classification" else 1,
      task=self.data.task,
      traced=tuple((n, self.candidates.get(n, ())) for n in self.traced),
      loss=self.loss,
      metrics=self.metrics,
      val_loss=self.val_loss,
      schedule=self.schedule,
      mean=tuple(float(v) for v in np.ravel(self.data.mean)),
      std=tuple(float(v) for v in np.ravel(self.data.std)),
      eval_batch_size=self.eval_batch_size,
      optimizer_families=self.families,
      order_seed=int(self.seed),
      **self._static,
    )

  def _compile_ahead(
    self, by_key: Mapping[tuple, list[int]], splits: Sequence[str], keys: dict
  ) -> None:
    """Compiles each group's init, train_epoch and evaluate on ``splits`` side by side.

    The groups' member keys are computed into ``keys`` meanwhile.
    """
    if isinstance(splits, str) or any(s not in self._eval for s in splits):
      raise ValueError(f"compile_ahead: expected a sequence of splits of val, test; got {splits!r}")
    if splits and self.mesh is None and not self.stream:
      # Generators: each program compiles while the next one is lowered.
      engine.compile_side_by_side(
        [self._lower_ahead(key, ids, splits) for key, ids in by_key.items()],
        meanwhile=lambda: keys.update(
          {key: engine.member_keys(self.seed, ids) for key, ids in by_key.items()}
        ),
      )

  def _lower_ahead(self, key: tuple, ids: list[int], splits: Sequence[str]):
    """A group's first-epoch programs, lowered, the training epoch first.

    Its init, train_epoch and evaluate on ``splits``; in blocks (see
    ``member_block``) those of one block and the programs that split the
    group into blocks and join their results. Each is yielded as soon as it
    is lowered: the training epoch, the longest to compile, goes first.
    """
    fns = engine.group_functions(self._spec(key))
    hp = self.hparam_arrays([self.members[i] for i in ids])
    # The keys' shape is all init's program depends on; they are computed later.
    init = fns.init.trace(jax.ShapeDtypeStruct((len(ids), 2), np.uint32), hp)
    state = init.out_info  # the state's shapes and dtypes, as train_epoch will see them
    n = self._blocks_of(fns.spec, len(ids))
    block = jax.tree.map(lambda a: a.update(shape=(a.shape[0] // n,) + a.shape[1:]), state)
    programs = [fns.train_epoch.lower(block, *self._train)]
    yield programs[0]
    for s in splits:
      programs.append(fns.evaluate.lower(block, *self._eval[s]))
      yield programs[-1]
    yield init.lower()
    if n > 1:
      yield engine.split_members.lower(state, n)
      for low in programs:
        yield engine.join_members.lower((low.out_info,) * n)

  def _new_group(self, key: tuple, ids: list[int], keys: jax.Array | None = None) -> Group:
    spec = self._spec(key)
    hp = self.hparam_arrays([self.members[i] for i in ids])
    if self.mesh is None:
      fns = engine.group_functions(spec)
      state = fns.init(engine.member_keys(self.seed, ids) if keys is None else keys, hp)
    else:
      fns = engine.group_functions(spec, self.mesh)
      pad = distributed.pad_index(range(len(ids)), distributed.padded_size(len(ids), self.mesh))
      keys = np.asarray(engine.member_keys(self.seed, ids))[pad]
      state = fns.init(
        *distributed.put(
          (keys, {k: v[pad] for k, v in hp.items()}), distributed.member_sharding(self.mesh)
        )
      )
    return Group(fns, list(ids), state)

  def _check_read(self) -> None:
    """Refuses a traced hyperparameter of the model or loss that neither of them reads.

    A user's name nothing reads is almost always a typo (``learnig_rate``), and
    would otherwise tune nothing while the real hyperparameter keeps its
    default. A built-in one in the space (``activation``, ``dropout``,
    ``loss``, ``label_smoothing``: read by the built-in models and loss) that
    the user's model or loss ignores would be mutated and reported as tuned
    with no effect. Names the optimizer or the training loop reads
    (``learning_rate``, ``optimizer``, ``batch_size``, ...) are not the
    model's to read.
    """
    user = [n for n in self.traced if n not in hp_lib.BUILTIN]
    builtin = [
      n
      for n in self.space
      if n in self.traced and n in hp_lib.BUILTIN and hp_lib.BUILTIN[n].role in ("model", "loss")
    ]
    if not user and not builtin:
      return
    # A stream's training batches have the validation split's shapes and dtypes.
    x, y = self._train or (self.data.x_val, self.data.y_val)
    read = set().union(*(g.fns.reads(g.state, x, y) for g in self.groups))
    for name in user:
      if name not in read:
        close = difflib.get_close_matches(name, list(hp_lib.BUILTIN) + list(read), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(
          f"space.{name}: neither the model nor the loss reads this "
          f"hyperparameter (hp[{name!r}]){hint}"
        )
    for name in builtin:
      if name not in read:
        raise ValueError(
          f"space.{name}: neither the model nor the loss reads this hyperparameter "
          f"(hp[{name!r}]), so tuning it would change nothing; remove it from the space"
        )

  # -- training and evaluation --------------------------------------------------

  def _gather(self, per_group: Sequence[Mapping[str, jax.Array]]) -> dict[str, np.ndarray]:
    """Per-group metric dicts -> one dict of ``[P]`` arrays in member order."""
    out: dict[str, np.ndarray] = {}
    if self.mesh is not None:  # to every process; pad members dropped below
      per_group = distributed.to_host(list(per_group))
    for g, metrics in zip(self.groups, per_group):
      for k, v in metrics.items():
        arr = out.setdefault(k, np.full(self.size, np.nan, np.float64))
        arr[g.members] = np.asarray(v)[: len(g.members)]
    return out

  def train_epoch(self) -> dict[str, np.ndarray]:
    """Trains every member for one epoch; returns per-member train metrics."""
    if self.stream:
      return self._train_streamed()
    results = []
    x, y = self._train
    for g in self.groups:  # groups are dispatched asynchronously, synced below
      n = self._blocks(g)
      if n == 1:
        g.state, metrics = g.fns.train_epoch(g.state, x, y)
      else:  # the same program for every block, then joined
        outs = [g.fns.train_epoch(s, x, y) for s in engine.split_members(g.state, n)]
        g.state, metrics = engine.join_members(tuple(outs))
      results.append(metrics)
    return self._gather(results)

  def _blocks(self, g: Group) -> int:
    """The blocks group ``g`` trains and evaluates in (1: all its members in one call)."""
    return self._blocks_of(g.fns.spec, g.state.size)

  def _blocks_of(self, spec: engine.GroupSpec, p: int) -> int:
    """The blocks a group of ``p`` members with ``spec`` runs in."""
    b = self.member_block
    if not b or self.mesh is not None or p <= b or p % b:
      return 1
    return p // b if engine.runs_in_chunks(spec, p, b) else 1

  def _train_streamed(self) -> dict[str, np.ndarray]:
    """One epoch of a :class:`hpjax.data.Stream`: a host loop over its batches.

    The stream is asked for the epoch the members are at (every member has
    trained as many epochs), so a resumed run re-reads its checkpoint's
    next epoch from the start. Each call trains every group on the same
    stacked batches (:meth:`hpjax.engine._Group.train_steps`), dispatched
    asynchronously; the host then fetches and puts the next batches while
    it runs. At most ``prefetch`` calls run ahead of the host: their
    batches are all the device holds of the stream.
    """
    d: Stream = self.data
    epoch = int(self._host(self.groups[0].state.epoch)[0])
    put = jax.device_put
    if self.mesh is not None:  # every device trains its members on the whole batch
      put = functools.partial(distributed.put, sharding=distributed.replicated(self.mesh))
    sums: list[Any] = [None] * len(self.groups)
    running: collections.deque = collections.deque()
    for start, count, xs, ys in d.device_calls(epoch, put):
      outs = []
      for j, g in enumerate(self.groups):
        g.state, s = g.fns.train_steps(g.state, xs, ys, start, count, d.steps_per_epoch)
        sums[j] = s if sums[j] is None else tuple(jnp.add(a, b) for a, b in zip(sums[j], s))
        outs.append(s)
      running.append(outs)
      if len(running) > d.prefetch:
        jax.block_until_ready(running.popleft())
    results = []
    for j, g in enumerate(self.groups):
      g.state, metrics = g.fns.end_epoch(g.state, sums[j], d.steps_per_epoch)
      results.append(metrics)
    return self._gather(results)

  def evaluate(self, split: str = "val") -> dict[str, np.ndarray]:
    """Per-member validation loss and metric on ``split`` (``val`` or ``test``)."""
    if split not in self._eval:
      raise ValueError(f"split: unknown value {split!r}; allowed: val, test")
    x, y, w = self._eval[split]
    results = []
    for g in self.groups:
      n = self._blocks(g)
      if n == 1:
        results.append(g.fns.evaluate(g.state, x, y, w))
      else:
        blocks = engine.split_members(g.state, n)
        results.append(engine.join_members(tuple(g.fns.evaluate(s, x, y, w) for s in blocks)))
    return self._gather(results)

  def steps_per_epoch(self) -> int:
    """Member-steps one epoch of the whole population takes."""
    return sum(self.data.num_train // m["batch_size"] for m in self.members)

  def hparams(self) -> list[dict[str, Any]]:
    """Each member's current hyperparameters (plain values, choices by name)."""
    rows: list[dict[str, Any]] = [{} for _ in range(self.size)]
    for g in self.groups:
      values = self._host(engine.get_hparams(g.state))
      for j, i in enumerate(g.members):
        row = dict(self.members[i])
        for name in list(optim.HPARAMS) + list(self.traced):
          h = hp_lib.lookup(name, self.space)
          row[name] = hp_lib.decode(h, values[name][j], self._listed(name))
        rows[i] = row
    return rows

  def group_ids(self) -> np.ndarray:
    """Per member, the index of its structural group."""
    out = np.zeros(self.size, np.int64)
    for k, g in enumerate(self.groups):
      out[g.members] = k
    return out

  def structural_names(self) -> tuple[str, ...]:
    """Every hyperparameter name that fixes a member's group."""
    return tuple(
      dict.fromkeys(
        ([] if self.batch_traced else ["batch_size"])
        + [k for m in self.members for k in self._structural_names(m)]
      )
    )

  def member_model(self, position: int) -> nnx.Module:
    """The model of the member at ``position``, as a plain NNX module in eval mode."""
    g = next(g for g in self.groups if position in g.members)
    state = self.checkpoint_states([g])[0]
    return engine.model_of(g.fns.spec, state, g.members.index(position))

  # -- controllers' decisions -------------------------------------------------

  def set_member_hparams(
    self,
    hparams: Sequence[Mapping[str, Any]],
    donors: Sequence[int] | None = None,
    new_keys: Mapping[int, Any] | None = None,
  ) -> None:
    """Exploit and explore: copy members and give them new hyperparameters.

    One gather per group on the device (the whole state of ``donors``), then
    the traced hyperparameters are overwritten; shapes and dtypes stay, so
    nothing recompiles. A member whose optimizer family ends up different
    from the family of the state it now holds (its donor's, or its own) gets
    that family's fresh buffers (:func:`hpjax.optim.reset_family_state`).

    Args:
      hparams: per member, a dict of hyperparameters by name (choices as
        values); missing keys keep the current (donor's) value; structural
        values must be the donor's (they are fixed by the group).
      donors: per member, the member whose state it copies (itself to keep
        its own); must be in the same group.
      new_keys: member -> PRNG key data (uint32 ``[2]``) replacing the keys it
        holds after the copy (:func:`hpjax.engine.exploit_key`; the epoch key
        and the model's RNG streams), so that a clone does not repeat its
        donor's batch order and dropout masks.

    Raises:
      ValueError: a donor from another group, or an unknown name or value.
    """
    if len(hparams) != self.size:
      raise ValueError(f"hparams: expected {self.size} entries, got {len(hparams)}")
    donors = list(range(self.size)) if donors is None else [int(d) for d in donors]
    new_keys = dict(new_keys or {})
    traced = list(optim.HPARAMS) + list(self.traced)
    before = [dict(m) for m in self.members]
    for g in self.groups:
      state = _donors_state(g, donors)
      current = {k: np.array(v) for k, v in self._host(engine.get_hparams(state)).items()}
      reset = np.zeros(state.size, bool)
      for j, m in enumerate(g.members):
        member = dict(before[donors[m]])
        for name, value in hparams[m].items():
          h = hp_lib.lookup(name, self.space)  # an unknown name is an error
          if name not in traced:
            if name in member and member[name] != value:
              raise ValueError(
                f"{name}: member {m} cannot take {value!r} (structural: "
                f"fixed by its group at {member[name]!r})"
              )
            continue
          member[name] = self._checked_value(name, h, value)
          number = hp_lib.encode(h, member[name], self._cands(name))
          if name == "optimizer":
            reset[j] = number != current[name][j]
          current[name][j] = number
        self.members[m] = member
      g.state = self._with_values(g, state, current, reset, new_keys)

  def _checked_value(self, name: str, h: hp_lib.HParam, value: Any) -> Any:
    """A traced hyperparameter's new value, checked against its entry and this population.

    Returned as the member will train with it and :meth:`hparams` will report
    it (a float: its float32, see :func:`hpjax.hparams.stored`).
    """
    value = h.check(value)
    if name == "optimizer" and value not in self.families:
      raise ValueError(
        f"optimizer: {value!r} is not among the families compiled "
        f"for this population {self.families}"
      )
    if name == "dropout" and value != 0 and not self.dropout:
      raise ValueError(
        f"dropout: {value!r} needs dropout compiled in, and this population has "
        "none (every member's rate was 0 and its space has no 'dropout'); put "
        "'dropout' in the space to vary it"
      )
    if name == "batch_size" and not self.stream and value > self.data.num_train:
      # It would make no update at all (no whole batch per epoch) while the
      # member keeps being ranked on its stale weights.
      raise ValueError(
        f"batch_size: {value} is more than the {self.data.num_train} training "
        f"examples; allowed: a multiple of {self.micro} up to {self.data.num_train}"
      )
    if name == "batch_size" and value % self.micro:
      raise ValueError(
        f"batch_size: {value} is not a multiple of {self.micro}, "
        "the micro-batch compiled for this population"
      )
    return hp_lib.stored(name, value, self.space)  # errors above name the value given

  def _with_values(
    self,
    g: Group,
    state: PopulationState,
    current: dict[str, np.ndarray],
    reset: np.ndarray,
    new_keys: Mapping[int, Any],
  ) -> PopulationState:
    """``state`` with new traced values, keys and, where ``reset``, optimizer buffers.

    Args:
      g: the group.
      state: its state, donors copied.
      current: name -> ``[size]`` encoded traced values.
      reset: bool ``[size]``: the members whose optimizer family changed.
      new_keys: member -> PRNG key data replacing its keys.
    """
    mask = np.zeros(state.size, bool)
    keys = np.zeros((state.size, 2), np.uint32)
    for j, m in enumerate(g.members):
      if m in new_keys:
        mask[j], keys[j] = True, np.asarray(new_keys[m], np.uint32)
    if self.mesh is not None:
      n = len(g.members)
      for v in list(current.values()) + [reset, mask, keys]:
        v[n:] = v[0]
      current, reset, mask, keys = distributed.put(
        (current, reset, mask, keys), distributed.member_sharding(self.mesh)
      )
    state = engine.set_hparams(state, current)
    if np.any(reset):
      state = engine.reset_family(state, reset)
    if np.any(mask):
      state = engine.rekey(state, keys, mask, key_impls=g.fns.key_impls)
    return state

  def compacted(self, keep: Sequence[int]) -> tuple[list[Group], list[dict], np.ndarray]:
    """The groups, members and ids that :meth:`compact` would leave (self unchanged)."""
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
        state = engine.take(
          g.state, distributed.pad_index(local, distributed.padded_size(len(local), self.mesh))
        )
      groups.append(Group(g.fns, [new_pos[g.members[j]] for j in local], state))
    return groups, [self.members[k] for k in keep], self.ids[keep]

  def compact(self, keep: Sequence[int]) -> None:
    """Keeps only members ``keep`` (successive halving), renumbered 0..K-1.

    One gather per group; a group left without members is dropped. The
    smaller groups compile once more (bounded by the number of rungs).
    :attr:`ids` keeps each position's original member id.

    Args:
      keep: current member indices to keep, in the order they will have.
    """
    self.groups, self.members, self.ids = self.compacted(keep)
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
    return [_leading_rows(self._host(g.state), len(g.members)) for g in groups]

  def checkpoint_templates(self, groups: Sequence[Group] | None = None) -> list[Any]:
    """Restore templates matching :meth:`checkpoint_states` (shapes, dtypes, placement).

    Without a mesh, the groups' states (restored leaves are placed like
    them). On a mesh, zero-cost numpy stand-ins (restored leaves stay numpy
    and :meth:`load_checkpoint_states` pads and places them).
    """
    groups = self.groups if groups is None else groups
    if self.mesh is None:
      return [g.state for g in groups]
    return [_stand_ins(g.state, len(g.members)) for g in groups]

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
      g.state = distributed.put(_take_rows(st, index), distributed.member_sharding(self.mesh))
    # The host's copy of each member's values follows the restored state (a
    # controller may have changed them since the start): steps_per_epoch
    # counts with the batch sizes the members now train with.
    self.members = self.hparams()


def _leading_rows(tree: Any, n: int) -> Any:
  """Every leaf's first ``n`` rows: the real members of a padded state."""
  return jax.tree.map(lambda a: a[:n], tree)


def _stand_ins(tree: Any, n: int) -> Any:
  """Zero-cost numpy stand-ins for ``tree``'s leaves with ``n`` rows each."""
  return jax.tree.map(
    lambda a: np.broadcast_to(np.zeros((), a.dtype), (n,) + tuple(a.shape[1:])), tree
  )


def _take_rows(tree: Any, index: np.ndarray) -> Any:
  """Every leaf's rows ``index`` (host numpy arrays)."""
  return jax.tree.map(lambda a: np.asarray(a)[index], tree)


def _donors_state(g: Group, donors: Sequence[int]) -> PopulationState:
  """The group's state with each member's row its donor's (donors must be in the group)."""
  local = {m: j for j, m in enumerate(g.members)}
  try:
    index = [local[donors[m]] for m in g.members]
  except KeyError:
    bad = [m for m in g.members if donors[m] not in local][0]
    raise ValueError(
      f"donors: member {bad} cannot copy member {donors[bad]} (different structural group)"
    ) from None
  state = g.state
  # Pad members (sharded groups) follow the group's first member.
  index = distributed.pad_index(index, state.size)
  if index != list(range(len(index))):
    state = engine.take(state, index)
  return state
