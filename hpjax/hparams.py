"""The hyperparameter table: one entry per name, and everything derived from it.

Every hyperparameter hpjax knows is one :class:`HParam` in :data:`BUILTIN`:
its kind, whether it is *structural* (it changes shapes or the compiled
program, so members that differ in it form separate groups) or *traced* (a
per-member value inside one compiled program), its default, its legal range
or choices, and who reads it (its ``role``):

* ``optimizer``: lives in the optimizer state (``optax.inject_hyperparams``);
* ``model``: handed to the model, at construction (structural) or at every
  call (traced; see :class:`HParams`);
* ``loss``: read by the built-in loss;
* ``train``: read by the training loop (the batch size).

A user's own hyperparameter is declared by naming it in the search space
(:mod:`hpjax.space`): :func:`lookup` then derives its entry from the
dimension (traced unless the dimension says ``structural=True``; role
``model``, so it reaches the model and the loss).

Traced values are stored as numbers: floats and ints as they are, a choice
among strings by its index (:meth:`HParam.encode` / :meth:`HParam.decode`,
the only place that converts). Inside the model a traced choice arrives as a
:class:`TracedChoice` (the index and the static candidates).

Adding a built-in hyperparameter is one entry here plus its use (where the
model, loss or optimizer reads it); the space's checks, :class:`Member`,
validation, lineage and PBT's structural keys all follow from the table.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
import dataclasses
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hpjax import losses as losses_lib
from hpjax import models
from hpjax import optim
from hpjax.nn.activations import ACTIVATIONS

KINDS = ("float", "int", "bool", "choice")
ROLES = ("optimizer", "model", "loss", "train")


def _is_bool(v: Any) -> bool:
  return isinstance(v, (bool, np.bool_))


def _is_int(v: Any) -> bool:
  return isinstance(v, numbers.Integral) and not _is_bool(v)


def _is_real(v: Any) -> bool:
  return isinstance(v, numbers.Real) and not _is_bool(v)


@dataclasses.dataclass(frozen=True)
class HParam:
  """One hyperparameter.

  Attributes:
    name: its name (a search-space key, a :class:`Member` field).
    kind: ``float``, ``int``, ``bool`` or ``choice``.
    structural: True when members that differ in it cannot share a compiled
      program (a group per value); False when it is a traced per-member value.
    default: the value of a member that does not set it (``None``: decided
      elsewhere, e.g. the loss by the task).
    role: who reads it (see the module docstring).
    lo, hi: the legal range of a number (inclusive; ``hi`` exclusive when
      ``hi_open``); ``None``: unbounded on that side.
    hi_open: whether ``hi`` itself is excluded.
    choices: the legal values of a ``choice`` (empty: any value).
    doc: one line for users.
  """

  name: str
  kind: str
  structural: bool
  default: Any
  role: str = "model"
  lo: float | None = None
  hi: float | None = None
  hi_open: bool = False
  choices: tuple = ()
  doc: str = ""

  @property
  def traced(self) -> bool:
    """Whether it is a per-member value inside one compiled program."""
    return not self.structural

  @property
  def indexed(self) -> bool:
    """Whether a traced value is stored as an index into the candidates."""
    return self.kind == "choice" or self.kind == "bool"

  def range_text(self) -> str:
    lo = "-inf" if self.lo is None else f"{self.lo:g}"
    hi = "inf" if self.hi is None else f"{self.hi:g}"
    return f"[{lo}, {hi}{')' if self.hi_open or self.hi is None else ']'}"

  def check(self, value: Any, field: str | None = None) -> Any:
    """Returns ``value`` as a plain Python value if legal.

    Args:
      value: a candidate value.
      field: the name used in the error (default: the hyperparameter's).

    Raises:
      ValueError: one line naming the field and the allowed values.
    """
    field = field or self.name
    if self.kind == "bool":
      if not _is_bool(value):
        raise ValueError(f"{field}: must be True or False, got {value!r}")
      return bool(value)
    if isinstance(value, np.generic):
      value = value.item()
    if self.kind == "choice":
      if self.choices and not any(_same(value, c) for c in self.choices):
        raise ValueError(
          f"{field}: unknown value {value!r}; allowed: " + ", ".join(str(c) for c in self.choices)
        )
      return value
    if self.kind == "int":
      if not _is_int(value):
        raise ValueError(f"{field}: must be an integer in {self.range_text()}, got {value!r}")
      value = int(value)
    else:
      if not _is_real(value):
        raise ValueError(f"{field}: must be a number in {self.range_text()}, got {value!r}")
      value = float(value)
      if not math.isfinite(value):
        raise ValueError(f"{field}: must be finite, got {value!r}")
    if (self.lo is not None and value < self.lo) or (
      self.hi is not None and (value > self.hi or (self.hi_open and value >= self.hi))
    ):
      raise ValueError(f"{field}: must be in {self.range_text()}, got {value!r}")
    if self.choices and not any(_same(value, c) for c in self.choices):
      raise ValueError(
        f"{field}: unknown value {value!r}; allowed: " + ", ".join(str(c) for c in self.choices)
      )
    return value


def _same(a: Any, b: Any) -> bool:
  # True == 1 in Python; a bool only matches a bool.
  return _is_bool(a) == _is_bool(b) and a == b


def _float(name, default, lo, hi=None, hi_open=False, role="optimizer", doc=""):
  return HParam(name, "float", False, default, role, lo, hi, hi_open, doc=doc)


def _size(name, default, doc, role="model"):
  return HParam(name, "int", True, default, role, 1, None, doc=doc)


_ARCH = models.Arch()  # the built-in models' structural defaults

_ENTRIES = (
  _float("learning_rate", optim.DEFAULTS["learning_rate"], 0.0, doc="base learning rate"),
  _float("momentum", optim.DEFAULTS["momentum"], 0.0, 1.0, doc="momentum / nesterov"),
  _float("b1", optim.DEFAULTS["b1"], 0.0, 1.0, doc="Adam's first-moment decay"),
  _float("b2", optim.DEFAULTS["b2"], 0.0, 1.0, doc="Adam's second-moment decay"),
  _float("eps", optim.DEFAULTS["eps"], 0.0, doc="RMSprop / Adam epsilon"),
  _float("weight_decay", optim.DEFAULTS["weight_decay"], 0.0, doc="L2 (decoupled for adamw)"),
  _float("rms_decay", optim.DEFAULTS["rms_decay"], 0.0, 1.0, doc="RMSprop's decay"),
  HParam(
    "optimizer",
    "choice",
    False,
    "adam",
    "optimizer",
    choices=optim.FAMILIES,
    doc="optimizer family",
  ),
  HParam(
    "activation",
    "choice",
    False,
    "relu",
    "model",
    choices=tuple(ACTIVATIONS),
    doc="activation function",
  ),
  HParam(
    "loss",
    "choice",
    False,
    None,
    "loss",
    choices=tuple(dict.fromkeys(losses_lib.CLASSIFICATION_LOSSES + losses_lib.REGRESSION_LOSSES)),
    doc="training loss (default: cross_entropy, or mse for regression)",
  ),
  _float("dropout", 0.0, 0.0, 1.0, hi_open=True, role="model", doc="dropout rate"),
  _float(
    "label_smoothing",
    0.0,
    0.0,
    1.0,
    hi_open=True,
    role="loss",
    doc="label smoothing of the cross-entropy / one-hot MSE",
  ),
  # Traced: members of all batch sizes share one program, stepping through
  # micro-batches of the smallest (hpjax.population); structural only when
  # the sizes are not all multiples of the smallest.
  HParam("batch_size", "int", False, 32, "train", 1, None, doc="training minibatch size"),
  # The built-in model families' structural hyperparameters (hpjax.models).
  HParam(
    "family", "choice", True, "vgg", choices=tuple(models.FAMILIES), doc="built-in model family"
  ),
  _size("depth", _ARCH.depth, "stages / blocks / hidden layers"),
  _size("width", _ARCH.width, "channels of the first stage / hidden units"),
  _size("kernel_size", _ARCH.kernel_size, "convolution kernel size"),
  _size("dense", _ARCH.dense, "hidden units of the VGG head"),
  _size("convs_per_stage", _ARCH.convs_per_stage, "convolutions per VGG stage / ResNet blocks"),
  HParam("batch_norm", "bool", True, _ARCH.batch_norm, doc="BatchNorm after each convolution"),
  HParam(
    "conv_impl",
    "choice",
    True,
    _ARCH.conv_impl,
    choices=models.CONV_IMPLS,
    doc="convolution implementation of the built-in models (auto: by backend)",
  ),
  HParam(
    "compute_dtype",
    "choice",
    True,
    _ARCH.compute_dtype,
    choices=models.COMPUTE_DTYPES,
    doc="dtype the built-in models compute in (bfloat16: float32 parameters and logits)",
  ),
)

BUILTIN: dict[str, HParam] = {h.name: h for h in _ENTRIES}

# Derived views of the table.
OPTIMIZER = tuple(h.name for h in _ENTRIES if h.role == "optimizer")
STRUCTURAL = tuple(h.name for h in _ENTRIES if h.structural)
MODEL_STRUCTURAL = tuple(h.name for h in _ENTRIES if h.structural and h.role == "model")


def default_loss(task: str) -> str:
  """The training loss of a member that does not choose one."""
  return "cross_entropy" if task == "classification" else "mse"


def lookup(name: str, space: Mapping[str, Any] | None = None) -> HParam:
  """The entry of ``name``: built in, or derived from its search-space dimension.

  Args:
    name: a hyperparameter name.
    space: the search space (name -> dimension); declares user names.

  Raises:
    ValueError: a name that is neither built in nor in the space.
  """
  if name in BUILTIN:
    return BUILTIN[name]
  dim = (space or {}).get(name)
  if dim is None:
    raise ValueError(
      f"hyperparameter: unknown name {name!r}; built in: "
      + ", ".join(BUILTIN)
      + " (declare your own in the search space)"
    )
  return dim.hparam(name)


def is_structural(name: str, space: Mapping[str, Any] | None = None) -> bool:
  """Whether ``name`` splits the population into compiled groups."""
  if name in BUILTIN:
    return BUILTIN[name].structural
  dim = (space or {}).get(name)
  return bool(dim is not None and getattr(dim, "structural", False))


class TracedChoice:
  """A traced choice as the model sees it: a per-member index and the candidates.

  Attributes:
    index: int32 scalar (traced): the member's choice.
    values: the candidates (static); ``values[index]`` is the member's value.
  """

  def __init__(self, index: jax.Array, values: Sequence[Any]):
    self.index = index
    self.values = tuple(values)

  def is_(self, value: Any) -> jax.Array:
    """A traced bool: whether the member's choice is ``value``."""
    return self.index == self.values.index(value)

  def select(self, options: Mapping[Any, Any]) -> Any:
    """The member's entry of ``options`` (value -> array), selected on the device.

    Under ``vmap`` every option is computed and one is kept per member.
    """
    outs = [jnp.asarray(options[v]) for v in self.values]
    if len(outs) == 1:
      return outs[0]
    idx = jnp.clip(self.index, 0, len(outs) - 1)
    return jnp.select([idx == i for i in range(len(outs) - 1)], outs[:-1], outs[-1])

  def __eq__(self, value: Any) -> Any:
    """``hp[name] == value``: a traced bool, as :meth:`is_` (a plain ``==`` was always False)."""
    if isinstance(value, TracedChoice):
      return NotImplemented
    if value not in self.values:
      raise ValueError(f"{value!r} is not among this traced choice's values {self.values}")
    return self.is_(value)

  def __ne__(self, value: Any) -> Any:
    eq = self.__eq__(value)
    return eq if eq is NotImplemented else jnp.logical_not(eq)

  __hash__ = None  # compares by value on the device, so unhashable

  def __bool__(self) -> bool:
    # Each member has its own choice, known only on the device: a Python
    # ``if hp[name]:`` cannot branch on it (the object itself was always true).
    raise TypeError(
      f"a traced choice among {self.values} has no Python truth value (each member's is "
      "on the device): use hp[name].is_(value) or hp[name] == value (traced bools, for "
      "jnp.where), hp[name].select({...}), or declare the choice structural=True"
    )

  def __repr__(self) -> str:
    return f"TracedChoice(index={self.index}, values={self.values})"


class HParams(Mapping):
  """The hyperparameters a model (and the loss) receives at every call.

  A mapping name -> value: traced values are per-member scalars (inside the
  population's ``vmap``), a traced choice among strings is a
  :class:`TracedChoice`, structural values are plain Python values.

  Attributes:
    train: True in a training step (dropout on, BatchNorm statistics
      updated), False in evaluation.
  """

  def __init__(
    self,
    values: Mapping[str, Any],
    *,
    train: bool = False,
    key: jax.Array | None = None,
    reads: set | None = None,
  ):
    self._values = dict(values)
    self.train = train
    self._key = key
    self._reads = reads  # records the names read (see hpjax.engine: unread user names)

  def __getitem__(self, name: str) -> Any:
    if self._reads is not None:
      self._reads.add(name)
    try:
      return self._values[name]
    except KeyError:
      raise KeyError(
        f"hyperparameter {name!r} is not set; available: " + ", ".join(sorted(self._values))
      ) from None

  def __iter__(self) -> Iterator[str]:
    return iter(self._values)

  def __len__(self) -> int:
    return len(self._values)

  def next_key(self) -> jax.Array | None:
    """A fresh PRNG key for one random layer (dropout), or None outside training.

    The keys come from the member's own key, split once per call of this
    method, so a training step's random layers are deterministic per member
    and step. (Stock ``nnx.Dropout`` layers keep their own ``rngs`` stream in
    the model state instead; both work.)
    """
    if self._key is None or not self.train:
      return None
    self._key, sub = jax.random.split(self._key)
    return sub


def encode(h: HParam, value: Any, candidates: Sequence[Any] = ()) -> float | int:
  """A traced value as the number the population state stores.

  Args:
    h: the entry.
    value: the member's value.
    candidates: the compiled candidates of an indexed hyperparameter.

  Raises:
    ValueError: a value outside the compiled candidates.
  """
  if not h.indexed:
    return value
  for i, c in enumerate(candidates):
    if _same(value, c):
      return i
  raise ValueError(f"{h.name}: {value!r} is not among the compiled candidates {tuple(candidates)}")


def decode(h: HParam, number: Any, candidates: Sequence[Any] = ()) -> Any:
  """The member's value from a stored number (inverse of :func:`encode`).

  Args:
    h: the entry.
    number: the stored number.
    candidates: of an indexed hyperparameter, the compiled candidates; of a
      float, the values a space lists for it (a choice's, a fixed value).

  Returns:
    The value; a float listed among ``candidates`` (or the entry's choices)
    comes back as itself: ``Choice((1e-3, 3e-2))`` reads 0.03, not the
    0.029999999329 its float32 holds, so reports and PBT's explore (which
    looks the value up among the choices) see the choice.
  """
  if h.indexed:
    return candidates[int(number)]
  if h.kind == "int":
    return int(number)
  return _listed_float(float(np.float32(number)), tuple(candidates) or h.choices)


def _listed_float(f: float, listed: Sequence[Any]) -> float:
  """The listed value whose float32 is ``f`` (the first), else ``f``."""
  for c in listed:
    if _is_real(c) and float(np.float32(c)) == f:
      return c
  return f


def _step_inside(v: float, f: float, lo: float | None, hi: float | None, hi_open: bool) -> float:
  """``f``, the float32 nearest ``v``, moved one float32 inward where it crossed a bound ``v`` kept.

  Plain Python floats: numpy would compare a float32 with a Python float in
  float32 (NEP 50), where float32(0.1) > 0.1 is False.
  """
  if hi is not None and v <= hi and (f > hi or (hi_open and v < hi and f >= hi)):
    f = float(np.nextafter(np.float32(f), np.float32(-np.inf)))
  if lo is not None and v >= lo and f < lo:
    f = float(np.nextafter(np.float32(f), np.float32(np.inf)))
  return f


def stored(name: str, value: Any, space: Mapping[str, Any] | None = None) -> Any:
  """The value a member given ``value`` trains with, exactly as :func:`decode` reads it back.

  A traced float is stored as a float32 (:func:`dtype`), so what trains, what
  is reported and what a controller logs must all be that float32, not the
  float64 a controller computed: the nearest float32, moved one step inward
  where rounding crossed a bound the value kept (the entry's range, or the
  ``lo`` / ``hi`` of its space dimension), so that a value clipped to
  ``hi=0.1`` trains at the largest float32 below 0.1, not at 0.10000000149,
  and a dropout rate below 1 never rounds to 1. A value the space lists (a
  choice, a fixed value) is returned as itself (:func:`decode` returns it).
  Anything else (structural values, ints, choices, non-numbers) is returned
  unchanged.

  Args:
    name: the hyperparameter.
    value: the value given.
    space: the search space (declares user names and bounds).
  """
  h = lookup(name, space)
  if h.structural or h.kind != "float" or not _is_real(value):
    return value
  v = float(value)
  if not math.isfinite(v):
    return value  # HParam.check refuses it with its own message
  dim = (space or {}).get(name)
  listed = tuple(getattr(dim, "values", ())) or (
    (dim.value,) if hasattr(dim, "value") else h.choices
  )
  if any(_same(value, c) for c in listed):
    return value
  f = _step_inside(v, float(np.float32(v)), h.lo, h.hi, h.hi_open)
  f = _step_inside(v, f, getattr(dim, "lo", None), getattr(dim, "hi", None), False)
  return _listed_float(f, listed)


def dtype(h: HParam):
  """The stored dtype of a traced value."""
  return np.int32 if (h.indexed or h.kind == "int") else np.float32
