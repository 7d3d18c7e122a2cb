"""Search-space dimensions, the initial sampling of a population, and mutation.

A dimension is *vectorized* when its value is a traced per-member number
(learning rate, optimizer family, activation, ...): members with different
values share one compiled group. It is *structural* when it changes shapes
(batch size, model family, depth, width, kernel size): each distinct value
makes a group of its own.

A space is a plain ``dict`` name -> dimension (:class:`Float`, :class:`Int`,
:class:`Choice`, :class:`Fixed`); :func:`validate` checks one up front, with
one single-line ``ValueError`` per problem naming ``space.<name>``.

Initial populations:

* :func:`sample_random`: independent draws from each dimension's prior;
* :func:`sample_quasi_random`: a scrambled Sobol sequence mapped through each
  dimension (evenly spread, deterministic per seed);
* :func:`sample_grid`: the full factorial over every dimension's grid values.

Mutation (the *explore* step of population-based training):
:func:`perturb` is a pure function of a value and an explicit
``numpy.random.Generator``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import itertools
import math
import numbers
from typing import Any, ClassVar, Generic, TypeVar
import warnings

import numpy as np

from hpjax import hparams as hp_lib

# Built-in hyperparameter names a space may use, from the table (any other
# name is the user's own; see hpjax.hparams.lookup).
VECTORIZED = tuple(h.name for h in hp_lib.BUILTIN.values() if h.traced)
STRUCTURAL = hp_lib.STRUCTURAL
NAMES = VECTORIZED + STRUCTURAL

# An Int dimension without ``points`` enters a grid with every integer of its
# range, up to this many.
GRID_MAX_INT_VALUES = 16

_FIELDS = {
  "float": ("lo", "hi", "log", "points", "structural"),
  "int": ("lo", "hi", "log", "points", "structural"),
  "choice": ("values", "ordered", "structural"),
  "fixed": ("value", "structural"),
}


def _is_real(v: Any) -> bool:
  return isinstance(v, numbers.Real) and not _is_bool(v)


def _is_bool(v: Any) -> bool:
  return isinstance(v, (bool, np.bool_))


def _is_int(v: Any) -> bool:
  return isinstance(v, numbers.Integral) and not _is_bool(v)


def _kind_of(values: Sequence[Any]) -> str:
  """The table kind of a user's choice: numbers stay numbers, anything else is a choice."""
  if all(_is_bool(v) for v in values):
    return "bool"
  if all(_is_int(v) for v in values):
    return "int"
  if all(_is_real(v) for v in values):
    return "float"
  return "choice"


def _check_points(name: str, points: Any, most: float) -> None:
  if points is None:
    return
  if not _is_int(points) or points < 2:
    raise ValueError(f"space.{name}.points: must be an integer >= 2 (or None), got {points!r}")
  if points > most:
    raise ValueError(
      f"space.{name}.points: at most {most} (the integers in [lo, hi]), got {points}"
    )


_Number = TypeVar("_Number", float, int)


@dataclasses.dataclass(frozen=True)
class _Range(Generic[_Number]):
  """What :class:`Float` and :class:`Int` share: the fields of a range and their checks."""

  lo: _Number
  hi: _Number
  log: bool = False
  points: int | None = None
  structural: bool = False

  # The table kind; which values a bound may take, and their name in messages;
  # whether a bound must be checked finite (an int always is).
  _kind: ClassVar[str]
  _is_bound: ClassVar[Callable[[Any], bool]]
  _bounds: ClassVar[str]
  _bounded: ClassVar[bool]

  def hparam(self, name: str) -> hp_lib.HParam:
    """The table entry of a user's hyperparameter declared by this dimension."""
    return hp_lib.HParam(name, self._kind, self.structural, None, "model", doc="user-defined")

  def count(self) -> float:
    raise NotImplementedError

  def _end(self) -> float:
    """Where the prior's support ends: ``hi``, or ``hi + 1`` for the integers' last bin."""
    raise NotImplementedError

  def _values(self, v: np.ndarray) -> list:
    """Points of the support as the dimension's values, inside ``[lo, hi]``."""
    raise NotImplementedError

  def sample(self, rng: np.random.Generator, n: int) -> list:
    """Draws from the prior: uniform, or log-uniform when ``log``.

    Args:
      rng: the random generator.
      n: number of draws.

    Returns:
      ``n`` Python floats (ints for an :class:`Int`) in ``[lo, hi]``.
    """
    if self.log:
      return self._values(np.exp(rng.uniform(math.log(self.lo), math.log(self._end()), n)))
    return self._uniform(rng, n)

  def _uniform(self, rng: np.random.Generator, n: int) -> list:
    """``n`` uniform draws."""
    raise NotImplementedError

  def from_unit(self, u: np.ndarray) -> list:
    """Maps points of ``[0, 1)`` onto the dimension (quasi-random sampling).

    The inverse of the prior's CDF (its floor for an :class:`Int`: equal-width
    bins of ``u`` map to each integer, log-width bins when ``log``, as
    :meth:`sample` draws).

    Args:
      u: values in ``[0, 1)``.

    Returns:
      One Python float (int for an :class:`Int`) per entry of ``u``, monotone in ``u``.
    """
    u = np.asarray(u, np.float64)
    end = self._end()
    if self.log:
      v = np.exp(math.log(self.lo) + u * (math.log(end) - math.log(self.lo)))
    else:
      v = self.lo + u * (end - self.lo)
    return self._values(v)

  def check(self, name: str) -> None:
    """Validates the fields.

    Args:
      name: the dimension's name, used in the message.

    Raises:
      ValueError: one line naming ``space.<name>`` and the problem.
    """
    if not (self._is_bound(self.lo) and self._is_bound(self.hi)):
      raise ValueError(
        f"space.{name}: lo and hi must be {self._bounds}, got lo={self.lo!r}, hi={self.hi!r}"
      )
    finite = not self._bounded or (np.isfinite(self.lo) and np.isfinite(self.hi))
    if not finite or self.lo >= self.hi:
      raise ValueError(f"space.{name}: lo must be < hi, got lo={self.lo}, hi={self.hi}")
    if self.log and self.lo <= 0:
      raise ValueError(f"space.{name}: a log scale needs lo > 0, got lo={self.lo}")
    _check_points(name, self.points, self.count())


@dataclasses.dataclass(frozen=True)
class Float(_Range[float]):
  """A real value in ``[lo, hi]``, sampled uniformly or log-uniformly.

  Attributes:
    lo: lower bound (inclusive).
    hi: upper bound (inclusive); must exceed ``lo``.
    log: sample, grid and map log-uniformly (needs ``lo > 0``).
    points: values of this dimension in a grid (:func:`sample_grid`), evenly
      spaced from ``lo`` to ``hi`` (geometrically when ``log``); ``None``: the
      dimension cannot enter a grid.
  """

  _kind = "float"
  _is_bound = staticmethod(_is_real)
  _bounds = "numbers"
  _bounded = True

  def _uniform(self, rng: np.random.Generator, n: int) -> list[float]:
    return self._values(rng.uniform(self.lo, self.hi, n))

  def _end(self) -> float:
    return self.hi

  def _values(self, v: np.ndarray) -> list[float]:
    # exp(log(hi)) can round a hair above hi.
    return [float(x) for x in np.clip(v, self.lo, self.hi)]

  def grid_values(self, name: str) -> tuple[float, ...]:
    """The values of this dimension in a grid.

    Args:
      name: the dimension's name (for the error message).

    Returns:
      ``points`` values from ``lo`` to ``hi``, both included.

    Raises:
      ValueError: when ``points`` is not set.
    """
    if self.points is None:
      raise ValueError(
        f"space.{name}.points: a grid needs points (the number of values) "
        "for a float dimension, got None"
      )
    fn = np.geomspace if self.log else np.linspace
    return tuple(float(x) for x in fn(self.lo, self.hi, self.points))

  def count(self) -> float:
    """Number of distinct values: ``math.inf`` for a real interval."""
    return math.inf


@dataclasses.dataclass(frozen=True)
class Int(_Range[int]):
  """An integer in ``[lo, hi]`` (inclusive), uniform or log-uniform.

  Attributes:
    lo: lower bound (inclusive).
    hi: upper bound (inclusive); must exceed ``lo``.
    log: sample log-uniformly (needs ``lo > 0``).
    points: values in a grid, evenly (or geometrically) spaced and rounded;
      ``None``: every integer of the range, allowed for at most
      :data:`GRID_MAX_INT_VALUES` of them.
  """

  _kind = "int"
  _is_bound = staticmethod(_is_int)
  _bounds = "integers"
  _bounded = False

  def _uniform(self, rng: np.random.Generator, n: int) -> list[int]:
    return [int(v) for v in rng.integers(self.lo, self.hi + 1, n)]

  def _end(self) -> int:
    return self.hi + 1

  def _values(self, v: np.ndarray) -> list[int]:
    return [int(x) for x in np.clip(np.floor(v), self.lo, self.hi)]

  def grid_values(self, name: str) -> tuple[int, ...]:
    """The values of this dimension in a grid.

    Args:
      name: the dimension's name (for the error message).

    Returns:
      Sorted distinct ints. With ``points``, the rounded evenly (or
      geometrically) spaced values; rounding may merge neighbours of a log
      range, so there can be fewer than ``points``.

    Raises:
      ValueError: a range wider than :data:`GRID_MAX_INT_VALUES` without ``points``.
    """
    if self.points is None:
      if self.count() > GRID_MAX_INT_VALUES:
        raise ValueError(
          f"space.{name}.points: a grid needs points for an int range of "
          f"{self.count()} values (more than {GRID_MAX_INT_VALUES}), got None"
        )
      return tuple(range(self.lo, self.hi + 1))
    fn = np.geomspace if self.log else np.linspace
    return tuple(sorted({int(math.floor(x + 0.5)) for x in fn(self.lo, self.hi, self.points)}))

  def count(self) -> int:
    """Number of distinct values: the integers in ``[lo, hi]``."""
    return int(self.hi - self.lo + 1)


@dataclasses.dataclass(frozen=True)
class Choice:
  """One of ``values``; ``ordered`` ones mutate to a neighbouring value.

  Attributes:
    values: the candidates (a list is stored as a tuple, keeping the
      dimension hashable).
    ordered: the values have a meaningful order (e.g. batch sizes), so PBT
      moves to a neighbour instead of jumping anywhere.
  """

  values: tuple
  ordered: bool = False
  structural: bool = False

  def __post_init__(self):
    if isinstance(self.values, (list, np.ndarray)):
      object.__setattr__(self, "values", tuple(self.values))

  def hparam(self, name: str) -> hp_lib.HParam:
    """The table entry of a user's hyperparameter declared by this dimension.

    A traced choice among numbers is stored as the number itself; among
    strings (or mixed values) as an index, handed to the model as a
    :class:`hpjax.hparams.TracedChoice`.
    """
    return hp_lib.HParam(
      name,
      _kind_of(self.values),
      self.structural,
      None,
      "model",
      choices=tuple(self.values),
      doc="user-defined",
    )

  def sample(self, rng: np.random.Generator, n: int) -> list[Any]:
    """Draws uniformly among the values.

    Args:
      rng: the random generator.
      n: number of draws.

    Returns:
      ``n`` elements of ``values``.
    """
    return [self.values[int(i)] for i in rng.integers(0, len(self.values), n)]

  def from_unit(self, u: np.ndarray) -> list[Any]:
    """Maps points of ``[0, 1)`` onto the values (equal-width bins, in order).

    Args:
      u: values in ``[0, 1)``.

    Returns:
      One element of ``values`` per entry of ``u``.
    """
    k = len(self.values)
    idx = np.clip(np.floor(np.asarray(u, np.float64) * k), 0, k - 1).astype(int)
    return [self.values[int(i)] for i in idx]

  def grid_values(self, name: str) -> tuple:
    """Every value (a grid takes all of them).

    Args:
      name: unused; kept for a uniform interface.

    Returns:
      ``values``.
    """
    del name
    return tuple(self.values)

  def count(self) -> int:
    """Number of distinct values."""
    return len(self.values)

  def index(self, value: Any) -> int:
    """Position of ``value`` among the values.

    Args:
      value: one of ``values``.

    Returns:
      Its index.

    Raises:
      ValueError: when ``value`` is not a candidate.
    """
    for i, v in enumerate(self.values):
      # True == 1 in Python; a bool only matches a bool.
      if _is_bool(v) == _is_bool(value) and v == value:
        return i
    raise ValueError(
      f"value: {value!r} is not among the choices; allowed: "
      + ", ".join(repr(v) for v in self.values)
    )

  def check(self, name: str) -> None:
    """Validates the values.

    Args:
      name: the dimension's name, used in the message.

    Raises:
      ValueError: one line naming ``space.<name>`` and the problem.
    """
    if isinstance(self.values, str) or not isinstance(self.values, tuple):
      raise ValueError(f"space.{name}.values: must be a list of values, got {self.values!r}")
    if not self.values:
      raise ValueError(f"space.{name}: choices are empty")
    try:
      distinct = len(set(self.values))
    except TypeError:
      raise ValueError(
        f"space.{name}.values: must be hashable (numbers, strings, bools), got {list(self.values)}"
      ) from None
    if distinct != len(self.values):
      raise ValueError(f"space.{name}: duplicated choices in {list(self.values)}")


@dataclasses.dataclass(frozen=True)
class Fixed:
  """A constant.

  Attributes:
    value: the value every member gets.
  """

  value: Any
  structural: bool = False

  def hparam(self, name: str) -> hp_lib.HParam:
    """The table entry of a user's hyperparameter declared by this dimension."""
    return hp_lib.HParam(
      name,
      _kind_of((self.value,)),
      self.structural,
      None,
      "model",
      choices=(self.value,),
      doc="user-defined",
    )

  def sample(self, rng: np.random.Generator, n: int) -> list[Any]:
    """The constant, ``n`` times (consumes nothing from ``rng``).

    Args:
      rng: unused.
      n: number of copies.

    Returns:
      ``[value] * n``.
    """
    del rng
    return [self.value] * n

  def from_unit(self, u: np.ndarray) -> list[Any]:
    """The constant once per entry of ``u``.

    Args:
      u: only its length matters.

    Returns:
      ``[value] * len(u)``.
    """
    return [self.value] * len(u)

  def grid_values(self, name: str) -> tuple:
    """The single grid value.

    Args:
      name: unused; kept for a uniform interface.

    Returns:
      ``(value,)``.
    """
    del name
    return (self.value,)

  def count(self) -> int:
    """Number of distinct values: 1."""
    return 1

  def check(self, name: str) -> None:
    """Validates the value (the table's checks come in :func:`validate`).

    Args:
      name: the dimension's name, used in the message.

    Raises:
      ValueError: one line naming ``space.<name>``.
    """
    if not isinstance(self.value, (numbers.Real, str, np.bool_)):
      raise ValueError(
        f"space.{name}: a fixed value must be a number, string or bool, got {self.value!r}"
      )


Dimension = Float | Int | Choice | Fixed


def is_structural(name: str, space: Mapping[str, Dimension] | None = None) -> bool:
  """Whether a hyperparameter splits the population into groups.

  Args:
    name: a hyperparameter name.
    space: the space that declares a user's own names.

  Returns:
    True for a structural built-in name, or a user's dimension declared
    ``structural=True``.
  """
  return hp_lib.is_structural(name, space)


def _extremes(dim: Dimension) -> tuple:
  """The values whose legality implies that of every value of ``dim``."""
  if isinstance(dim, (Float, Int)):
    return (dim.lo, dim.hi)
  if isinstance(dim, Choice):
    return tuple(dim.values)
  return (dim.value,)


def _check_name(name: str, dim: Dimension) -> None:
  """Checks the values of ``dim`` against what built-in hyperparameter ``name`` accepts."""
  h = hp_lib.BUILTIN.get(name)
  if h is None:
    return  # a user's own name: the dimension is its definition
  if dim.structural and not h.structural:
    raise ValueError(
      f"space.{name}.structural: {name} is a traced hyperparameter of hpjax; leave the flag out"
    )
  kind = type(dim).__name__
  if h.kind in ("choice", "bool") and not isinstance(dim, (Choice, Fixed)):
    raise ValueError(f"space.{name}: must be a choice or fixed dimension, got {kind}")
  if h.kind == "int" and isinstance(dim, Float):
    raise ValueError(f"space.{name}: must be an int, choice or fixed dimension, got Float")
  for v in _extremes(dim):
    h.check(v, f"space.{name}")


def validate(space: Mapping[str, Dimension]) -> dict[str, Dimension]:
  """Checks a whole space before anything is sampled.

  Args:
    space: name -> dimension.

  Returns:
    The space as a plain dict.

  Raises:
    ValueError: one line naming ``space.<name>`` on a name that is not an
      identifier, a non-dimension, bad bounds (lo >= hi, log with lo <= 0),
      empty or duplicated choices, an unknown optimizer / activation / loss /
      family, a value a built-in hyperparameter cannot take, or a name a
      metrics row already has as a column (``epoch``, ``member``, ``wall_s``,
      ``hparams``, ``train_*``, ``val_*``). Any other name declares the
      user's own hyperparameter.
  """
  if not isinstance(space, Mapping):
    raise ValueError(f"space: must be a mapping of name -> dimension, got {type(space).__name__}")
  for name, dim in space.items():
    if not isinstance(name, str) or not name.isidentifier():
      raise ValueError(f"space: names must be identifiers, got {name!r}")
    if not isinstance(dim, (Float, Int, Choice, Fixed)):
      raise ValueError(
        f"space.{name}: must be a Float, Int, Choice or Fixed dimension, got {type(dim).__name__}"
      )
    if name in _ROW_FIELDS or name.startswith(("train_", "val_")):
      # A metrics row (and Results.dataframe) has a column of this name: the
      # hyperparameter's column would silently replace it, or it the value.
      raise ValueError(
        f"space.{name}: a metrics row already has this column; allowed: any other "
        "identifier (not epoch, member, wall_s, hparams, train_* or val_*)"
      )
    dim.check(name)
    _check_name(name, dim)
  return dict(space)


_ROW_FIELDS = ("epoch", "member", "wall_s", "hparams")


def _number(name: str, field: str, v: Any, integer: bool) -> float | int:
  """A config number, refusing strings and non-integral ints."""
  if isinstance(v, str) or _is_bool(v):
    raise ValueError(f"space.{name}.{field}: must be a number, got {v!r}")
  try:
    f = float(v)
  except (TypeError, ValueError):
    raise ValueError(f"space.{name}.{field}: must be a number, got {v!r}") from None
  if integer:
    if not f.is_integer():
      raise ValueError(f"space.{name}.{field}: must be an integer, got {v!r}")
    return int(f)
  return f


def _flag(name: str, field: str, v: Any) -> bool:
  """A config boolean; a string such as 'false' would otherwise read as True."""
  if not _is_bool(v):
    raise ValueError(f"space.{name}.{field}: must be True or False, got {v!r}")
  return bool(v)


def from_config(cfg: Mapping[str, Any]) -> dict[str, Dimension]:
  """Builds a space from plain config dicts.

  Each entry is ``{'type': 'float'|'int'|'choice'|'fixed', ...}`` with
  ``lo``/``hi``/``log``/``points``, ``values``/``ordered`` or ``value``, and
  ``structural`` (for a user's own name: True makes it a constructor
  argument of the model, one compiled group per value).

  Args:
    cfg: name -> entry.

  Returns:
    The validated space, name -> dimension.

  Raises:
    ValueError: one line naming the entry and the problem.
  """
  space = {}
  for name, d in cfg.items():
    if not isinstance(d, Mapping):
      raise ValueError(f"space.{name}: must be a dict with a 'type' field, got {d!r}")
    d = dict(d)
    kind = d.pop("type", None)
    if kind not in _FIELDS:
      raise ValueError(
        f"space.{name}.type: unknown value {kind!r}; allowed: float, int, choice, fixed"
      )
    unknown = sorted(set(d) - set(_FIELDS[kind]))
    if unknown:
      raise ValueError(
        f"space.{name}: unknown field {unknown[0]!r} for type {kind!r}; "
        f"allowed: {', '.join(_FIELDS[kind])}"
      )
    structural = _flag(name, "structural", d.get("structural", False))
    try:
      if kind in ("float", "int"):
        integer = kind == "int"
        points = d.get("points")
        if points is not None:
          points = _number(name, "points", points, True)
        cls = Int if integer else Float
        dim = cls(
          _number(name, "lo", d["lo"], integer),
          _number(name, "hi", d["hi"], integer),
          _flag(name, "log", d.get("log", False)),
          points,
          structural,
        )
      elif kind == "choice":
        values = d["values"]
        if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
          raise ValueError(f"space.{name}.values: must be a list of values, got {values!r}")
        dim = Choice(tuple(values), _flag(name, "ordered", d.get("ordered", False)), structural)
      else:
        dim = Fixed(d["value"], structural)
    except KeyError as e:
      raise ValueError(f"space.{name}: missing field {e.args[0]!r} for type {kind!r}") from None
    space[name] = dim
  return validate(space)


def _check_n(n: Any) -> int:
  if not _is_int(n) or n < 1:
    raise ValueError(f"population: must be a positive integer, got {n!r}")
  return int(n)


def sample_random(space: Mapping[str, Dimension], n: int, seed: int) -> list[dict[str, Any]]:
  """``n`` independent random draws of every dimension (seeded).

  Args:
    space: name -> dimension.
    n: number of members.
    seed: seed of ``numpy.random.default_rng``.

  Returns:
    ``n`` dicts name -> value (plain Python values).
  """
  validate(space)
  n = _check_n(n)
  rng = np.random.default_rng(seed)
  cols = {name: dim.sample(rng, n) for name, dim in sorted(space.items())}
  return [{name: cols[name][i] for name in cols} for i in range(n)]


def sample_grid(space: Mapping[str, Dimension], n: int | None = None) -> list[dict[str, Any]]:
  """The full factorial grid over every dimension.

  Choice and Fixed dimensions contribute all their values; Float and Int
  ones contribute ``points`` evenly spaced values (geometrically when
  ``log``), and an Int range of at most :data:`GRID_MAX_INT_VALUES` integers
  without ``points`` contributes every integer.

  Args:
    space: name -> dimension.
    n: the population size, if fixed already; must equal the grid's size.

  Returns:
    One dict name -> value per grid point, in ``itertools.product`` order
    over the sorted names (the last name varies fastest).

  Raises:
    ValueError: a Float without ``points`` (or a wide Int), or ``n`` not the
      grid's size (the message says how many members the grid needs).
  """
  validate(space)
  names = sorted(space)
  axes = [space[k].grid_values(k) for k in names]
  size = math.prod(len(a) for a in axes)
  if n is not None and (not _is_int(n) or n != size):
    shape = " x ".join(f"{len(a)} {k}" for k, a in zip(names, axes)) or "empty space"
    raise ValueError(f"population: the grid needs {size} members ({shape}), got {n!r}")
  return [dict(zip(names, point)) for point in itertools.product(*axes)]


def sample_quasi_random(space: Mapping[str, Dimension], n: int, seed: int) -> list[dict[str, Any]]:
  """``n`` members from a scrambled Sobol sequence: evenly spread, seeded.

  Each non-Fixed dimension (sorted by name) takes one Sobol coordinate,
  mapped through the dimension: uniformly or log-uniformly for Float, the
  floor for Int, equal bins in order for Choice. With ``n`` a power of two,
  every coordinate puts exactly ``n / k`` points in each of ``k`` equal bins
  (``k`` a power of two up to ``n``).

  Args:
    space: name -> dimension.
    n: number of members. Any ``n`` works; scipy's warning that balance needs
      a power of two is silenced (the population size is the user's choice).
    seed: scrambling seed.

  Returns:
    ``n`` dicts name -> value (plain Python values).
  """
  validate(space)
  n = _check_n(n)
  names = sorted(space)
  free = [k for k in names if not isinstance(space[k], Fixed)]
  cols = {k: space[k].from_unit(np.zeros(n)) for k in names if k not in free}
  if free:
    # Imported here: scipy.stats costs about a second at import time.
    from scipy.stats import qmc  # pylint: disable=g-import-not-at-top

    sobol = qmc.Sobol(len(free), scramble=True, seed=seed)
    with warnings.catch_warnings():
      warnings.filterwarnings("ignore", message=".*balance properties of Sobol")
      u = sobol.random(n)
    for j, k in enumerate(free):
      cols[k] = space[k].from_unit(u[:, j])
  return [{k: cols[k][i] for k in names} for i in range(n)]


def check_structural_fits(space: Mapping[str, Dimension], population: Any) -> dict[str, int]:
  """Checks that each structural dimension has no more values than members.

  Every distinct structural value is a compiled group of its own; a
  dimension with more values than the population has members can never have
  all of them represented, and usually means a typo (an Int range where a
  Choice of a few sizes was meant). An Int counts every integer in its range.

  Args:
    space: name -> dimension.
    population: the number of members (or an object with a ``size``, such as
      :class:`hpjax.Population`).

  Returns:
    Structural name -> number of distinct values.

  Raises:
    ValueError: naming the dimension, its count and the population size.
  """
  size = getattr(population, "size", population)
  size = _check_n(size)
  validate(space)
  counts = {}
  for name in sorted(space):
    if not is_structural(name, space):
      continue
    count = space[name].count()
    counts[name] = count
    if count > size:
      raise ValueError(
        f"space.{name}: {count} structural values do not fit a population of "
        f"{size} members (each value needs a member and a compiled group)"
      )
  return counts


def are_perturbation_factors(factors: Any) -> bool:
  """Whether ``factors`` is a non-empty sequence of finite positive numbers (:func:`perturb`'s)."""
  return (
    not isinstance(factors, (str, bytes))
    and isinstance(factors, Sequence)
    and bool(factors)
    and all(_is_real(f) and math.isfinite(f) and f > 0 for f in factors)
  )


def _check_perturb_args(rng: Any, factors: Sequence[float], resample_probability: float) -> None:
  if not isinstance(rng, np.random.Generator):
    raise ValueError(f"rng: must be a numpy.random.Generator, got {type(rng).__name__}")
  if not are_perturbation_factors(factors):
    raise ValueError(
      f"perturbation_factors: must be a non-empty list of positive numbers, got {factors!r}"
    )
  if not _is_real(resample_probability) or not 0.0 <= resample_probability <= 1.0:
    raise ValueError(f"resample_probability: must be in [0, 1], got {resample_probability!r}")


def perturb(
  dim: Dimension,
  value: Any,
  rng: np.random.Generator,
  factors: Sequence[float] = (0.8, 1.2),
  resample_probability: float = 0.25,
) -> Any:
  """One explore step of population-based training on one dimension.

  With probability ``resample_probability`` the value is redrawn from the
  prior (``dim.sample``). Otherwise:

  * Float: multiplied by one of ``factors`` (each equally likely), clipped to
    ``[lo, hi]`` (a log dimension stays positive since ``lo > 0``).
  * Int: multiplied likewise, rounded half up and clipped; when the factor is
    not 1 but rounding left the value unchanged, it moves by 1 in the
    factor's direction instead (small integers would never move otherwise),
    still clipped, so a value at the bound it is pushed against stays there.
    A value of 0 cannot move multiplicatively; only a resample moves it.
  * Choice, ordered: a neighbouring value (index - 1 or + 1, equally likely;
    the only neighbour at either end).
  * Choice, unordered: a uniformly drawn *other* value, so the step always
    changes something.
  * Fixed, or a Choice with one value: unchanged.

  Fixed dimensions consume nothing from ``rng``; every other dimension draws
  the resample decision first, so results are deterministic given the
  generator's state.

  Args:
    dim: the dimension.
    value: the current (plain Python or numpy scalar) value.
    rng: the random generator (its state advances).
    factors: multiplicative perturbations (Ray Tune's default ``(0.8, 1.2)``).
    resample_probability: in ``[0, 1]``.

  Returns:
    The new value: a Python float, a Python int, or an element of the choices.

  Raises:
    ValueError: bad ``factors`` / ``resample_probability`` / ``rng``, or a
      Choice value that is not among the choices.
  """
  _check_perturb_args(rng, factors, resample_probability)
  if not isinstance(dim, (Float, Int, Choice, Fixed)):
    raise ValueError(
      f"dim: must be a Float, Int, Choice or Fixed dimension, got {type(dim).__name__}"
    )
  if isinstance(dim, Fixed):
    return value
  if isinstance(dim, Choice):
    i = dim.index(value)  # before any draw: a bad value fails the same way every time
  if rng.random() < resample_probability:
    return dim.sample(rng, 1)[0]
  if isinstance(dim, Float):
    factor = float(factors[int(rng.integers(len(factors)))])
    return float(np.clip(float(value) * factor, dim.lo, dim.hi))
  if isinstance(dim, Int):
    factor = float(factors[int(rng.integers(len(factors)))])
    value = int(value)
    raw = value * factor
    new = int(math.floor(raw + 0.5))
    if new == value and raw != value:
      new = value + (1 if raw > value else -1)
    return int(min(max(new, dim.lo), dim.hi))
  if isinstance(dim, Choice):
    k = len(dim.values)
    if k == 1:
      return dim.values[0]
    if dim.ordered:
      if i == 0:
        return dim.values[1]
      if i == k - 1:
        return dim.values[k - 2]
      return dim.values[i + (1 if rng.random() < 0.5 else -1)]
    j = int(rng.integers(k - 1))
    return dim.values[j if j < i else j + 1]


def to_config(space: Mapping[str, Dimension]) -> dict[str, dict[str, Any]]:
  """The inverse of :func:`from_config`: a JSON-able dict of the dimensions."""
  out = {}
  for name, dim in validate(space).items():
    kind = type(dim).__name__.lower()
    entry = {"type": kind}
    for f in dataclasses.fields(dim):
      v = getattr(dim, f.name)
      if f.name == "structural" and not v:
        continue
      entry[f.name] = list(v) if isinstance(v, tuple) else v
    out[name] = entry
  return out
