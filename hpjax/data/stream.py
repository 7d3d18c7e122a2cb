"""Training data larger than the device: batches streamed from the host.

A :class:`Stream` is the second kind of data a population trains on, beside
the device-resident :class:`hpjax.data.Dataset`. Only the training batches
stream; the validation and test splits are evaluated every epoch and stay in
memory (on the device), as a Dataset's do::

  def train(epoch):                      # the epoch's batches, as numpy (x, y)
    return my_pipeline(seed=epoch).as_numpy_iterator()   # tf.data, grain, a generator...

  data = hpjax.data.Stream(train, val=(x_val, y_val), test=(x_test, y_test),
                           steps_per_epoch=1000, batch_size=128)
  hpjax.tune(MyModel, data, space, controller=hpjax.PBT())

The contract:

* ``train(epoch)`` returns an iterable of ``(x, y)`` batches for the epoch
  ``epoch``: the epochs the members trained before it (0 for the run's
  first epoch, logged as epoch 1). Exactly ``steps_per_epoch`` are read
  (later ones are left unread, so an endless pipeline is fine); fewer is an
  error. A run resumed from the checkpoint of epoch ``e`` (logged ``e``)
  asks ``train(e)`` again, from its first batch, however far that epoch had
  gone; so for a resume to repeat the run exactly, ``train(epoch)`` must
  yield the same batches for the same ``epoch`` (seed the shuffle with it).
* Every batch holds ``batch_size`` examples: ``x`` ``[batch_size,
  *input_shape]`` of the validation split's stored dtype (uint8 stays uint8,
  other numbers are float32), ``y`` ``[batch_size]`` integer labels
  (classification) or float targets (regression). A batch of another
  shape or dtype is a :class:`hpjax.data.DataError` naming the batch and the
  epoch (drop a last partial batch: ``drop_remainder=True``).
* Every member of a group trains on the same batch at the same step (the
  in-memory path's ``shared_order=True``), and the batch size is structural:
  it is the stream's, for every member.
* The normalisation statistics (per-channel or per-feature ``mean`` and
  ``std``, in the stored units) are ``mean`` / ``std`` when given, else
  computed at construction over the first ``stats_batches`` batches of
  ``train(0)`` (default: all ``steps_per_epoch`` of them, one extra pass
  over the data; a Dataset's come from its whole training split).
  Regression targets are used as the batches hold them (not standardised).
* With several processes, every process must yield the same batches (each
  batch is replicated over the population's devices).

The host loop (:meth:`hpjax.population.Population.train_epoch`) stacks
``steps_per_call`` batches per call of one jitted loop over them
(:meth:`hpjax.engine._Group.train_steps`), puts each stack on the device
``prefetch`` calls ahead of the call that trains on it, and lets at most
``prefetch`` calls run ahead of the host: the device holds about
``(2 * prefetch + 1) * steps_per_call`` of the stream's batches at a time.
Each call has a fixed cost: on the 2-core CPU one batch per call trained at
0.78x the in-memory path's speed, 8 per call (the default) at 0.98x
(docs/benchmarks.md).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
import hashlib
import itertools
import numbers
from typing import Any

import jax
import numpy as np

from hpjax.data.dataset import DataError
from hpjax.data.dataset import HeldOut
from hpjax.data.sources import _class_count
from hpjax.data.sources import _convert_x
from hpjax.data.sources import _convert_y

_TASKS = ("auto", "classification", "regression")


def _positive(name: str, value: Any, where: str) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
    raise DataError(f"{where}: {name} must be an integer >= 1, got {value!r}")
  return int(value)


class Stream(HeldOut):
  """Training batches streamed from the host; validation and test splits in memory.

  See the module docstring for the contract. Reads like a
  :class:`hpjax.data.Dataset` where a population needs it (``task``,
  ``num_classes``, ``input_shape``, ``mean``, ``std``, the evaluation
  splits, ``num_train``).

  Args:
    train: ``epoch -> iterable of (x, y)`` numpy batches.
    val: ``(x_val, y_val)``, evaluated every epoch.
    test: ``(x_test, y_test)``, evaluated at the end.
    steps_per_epoch: batches read per epoch.
    batch_size: examples per batch: every member's batch size.
    num_classes: classes of a classification task (default: counted from
      the validation and test labels, which must then hold every class).
    task: ``auto`` (integer labels: classification, float: regression),
      ``classification`` or ``regression``.
    mean, std: per-channel (images) or per-feature (vectors) statistics in
      the stored units; default: computed from ``train(0)``.
    stats_batches: batches of ``train(0)`` the statistics are computed over
      when not given (default: ``steps_per_epoch``).
    steps_per_call: batches stacked into one jitted call (a loop over
      them); an epoch's last call trains what remains (its stack padded:
      the same compiled program).
    prefetch: calls whose batches are put on the device ahead of the one
      that trains, and calls the device may run ahead of the host.
    name: for messages and the run's records.
  """

  def __init__(
    self,
    train: Callable[[int], Iterable[Any]],
    *,
    val: tuple,
    test: tuple,
    steps_per_epoch: int,
    batch_size: int,
    num_classes: int | None = None,
    task: str = "auto",
    mean: Any = None,
    std: Any = None,
    stats_batches: int | None = None,
    steps_per_call: int = 8,
    prefetch: int = 1,
    name: str = "stream",
  ):
    self.name = str(name)
    where = self.where = f"stream '{self.name}'"
    if not callable(train):
      raise DataError(
        f"{where}: train must be a function epoch -> iterable of (x, y) batches, "
        f"got {type(train).__name__}"
      )
    self.train = train
    self.steps_per_epoch = _positive("steps_per_epoch", steps_per_epoch, where)
    self.batch_size = _positive("batch_size", batch_size, where)
    self.steps_per_call = _positive("steps_per_call", steps_per_call, where)
    self.prefetch = _positive("prefetch", prefetch, where)
    if task not in _TASKS:
      raise DataError(f"{where}: task must be one of {', '.join(_TASKS)}, got {task!r}")
    if num_classes is not None:
      _positive("num_classes", num_classes, where)
      if task == "auto":
        task = "classification"  # a class count says what the labels are
    splits = {}
    for split, pair in (("val", val), ("test", test)):
      if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise DataError(
          f"{where}: {split} must be a pair (x_{split}, y_{split}), got {type(pair).__name__}"
        )
      x = _convert_x(pair[0], f"x_{split}", where)
      y, kind = _convert_y(pair[1], f"y_{split}", where, task)
      if x.shape[0] != y.shape[0]:
        raise DataError(
          f"{where}: x_{split} has {x.shape[0]} examples but y_{split} has {y.shape[0]}"
        )
      splits[split] = (x, y, kind)
    (x_val, y_val, self.task), (x_test, y_test, test_task) = splits["val"], splits["test"]
    if test_task != self.task:
      raise DataError(
        f"{where}: y_val means {self.task} but y_test means {test_task} "
        "(integer vs float labels; pass task= to decide)"
      )
    if x_test.shape[1:] != x_val.shape[1:] or x_test.dtype != x_val.dtype:
      raise DataError(
        f"{where}: x_test is {x_test.dtype} {x_test.shape[1:]} but x_val is "
        f"{x_val.dtype} {x_val.shape[1:]}"
      )
    if self.task == "classification":
      self.num_classes = _class_count({"y_val": y_val, "y_test": y_test}, num_classes, where)
      if self.num_classes < 2:
        raise DataError(f"{where}: classification needs at least 2 classes")
      y_val, y_test = y_val.astype(np.int32), y_test.astype(np.int32)
    else:
      self.num_classes = 1
      y_val, y_test = y_val.astype(np.float32), y_test.astype(np.float32)
    self.x_dtype = x_val.dtype
    self.input_shape = tuple(x_val.shape[1:])
    self.y_mean, self.y_std = 0.0, 1.0
    self.mean, self.std = self._statistics(mean, std, stats_batches)
    self._host_eval = (x_val, y_val, x_test, y_test)
    self.x_val, self.y_val, self.x_test, self.y_test = jax.device_put(self._host_eval)

  # -- what a population reads, as of a Dataset ---------------------------------

  @property
  def num_train(self) -> int:
    """Training examples one epoch reads: ``steps_per_epoch x batch_size``."""
    return self.steps_per_epoch * self.batch_size

  def check_batch_size(self, batch_size: int) -> None:
    """A member's batch size must be the stream's: it trains on the stream's batches."""
    if batch_size != self.batch_size:
      raise DataError(
        f"batch_size: {batch_size!r}, but {self.where} yields batches of "
        f"{self.batch_size} (every member trains on the stream's batches; leave "
        "batch_size out of the members and the space)"
      )

  def summary(self) -> str:
    """One line describing the stream."""
    what = (
      f"classification ({self.num_classes} classes)"
      if self.task == "classification"
      else "regression"
    )
    return (
      f"{self.name}: {what}, streamed, x {np.dtype(self.x_dtype)} {self.input_shape}, "
      f"{self.steps_per_epoch} batches of {self.batch_size} per epoch / val "
      f"{self.num_val} / test {self.num_test}"
    )

  def fingerprint(self) -> str:
    """What a resumed run must find again: the evaluation splits and the stream's shape.

    The training batches themselves are not read here (the stream may be
    endless); ``train``'s qualified name stands for them.
    """
    h = hashlib.sha256()
    for a in self._host_eval + (self.mean, self.std):
      h.update(np.ascontiguousarray(a).tobytes())
    fn = getattr(self.train, "__qualname__", None) or type(self.train).__qualname__
    h.update(
      repr(
        (
          self.task,
          self.num_classes,
          self.input_shape,
          str(np.dtype(self.x_dtype)),
          self.steps_per_epoch,
          self.batch_size,
          fn,
        )
      ).encode()
    )
    return h.hexdigest()[:32]

  # -- the batches ----------------------------------------------------------------

  def check(self, x: Any, y: Any, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """One training batch checked against the contract: ``(x, y)`` as the engine takes them.

    Raises:
      DataError: one line naming the batch, the epoch and what is wrong.
    """
    where = f"{self.where}: batch {index} of epoch {epoch}"
    x, y = np.asarray(x), np.asarray(y)
    want = (self.batch_size,) + self.input_shape
    if want[-1:] == (1,) and x.shape == want[:-1]:
      x = x[..., None]  # [B, H, W] grayscale, as the evaluation splits take it
    if x.shape != want:
      hint = (
        " (a last partial batch? drop it: drop_remainder=True)"
        if x.shape[1:] == self.input_shape and x.shape[:1] < want[:1]
        else ""
      )
      raise DataError(f"{where}: x has shape {x.shape}, expected {want}{hint}")
    if x.dtype != self.x_dtype:
      raise DataError(
        f"{where}: x has dtype {x.dtype}, expected {np.dtype(self.x_dtype)} (the "
        "validation split's stored dtype; convert in the pipeline)"
      )
    if y.ndim == 2 and y.shape[1] == 1:
      y = y[:, 0]
    if y.shape != (self.batch_size,):
      raise DataError(f"{where}: y has shape {y.shape}, expected ({self.batch_size},)")
    if self.task == "classification":
      if y.dtype.kind not in "biu":
        raise DataError(f"{where}: y has dtype {y.dtype}, expected integer class labels")
      low, high = int(y.min()), int(y.max())
      if low < 0 or high >= self.num_classes:
        raise DataError(
          f"{where}: label {low if low < 0 else high} out of range [0, {self.num_classes - 1}]"
        )
      return x, y.astype(np.int32, copy=False)
    if y.dtype.kind != "f":
      raise DataError(f"{where}: y has dtype {y.dtype}, expected float regression targets")
    return x, y.astype(np.float32, copy=False)

  def batches(self, epoch: int, limit: int | None = None) -> Iterator[tuple[np.ndarray, ...]]:
    """The checked batches of ``train(epoch)``: ``steps_per_epoch`` of them (or ``limit``).

    Raises:
      DataError: a bad batch, or fewer batches than asked for.
    """
    limit = self.steps_per_epoch if limit is None else limit
    source = iter(self.train(epoch))
    try:
      for index in range(limit):
        try:
          item = next(source)
        except StopIteration:
          raise DataError(
            f"{self.where}: train({epoch}) yielded {index} batches, fewer than "
            f"steps_per_epoch={self.steps_per_epoch}"
          ) from None
        if not isinstance(item, (tuple, list)) or len(item) != 2:
          raise DataError(
            f"{self.where}: batch {index} of epoch {epoch} is a "
            f"{type(item).__name__}, expected a pair (x, y)"
          )
        yield self.check(*item, epoch, index)
    finally:
      close = getattr(source, "close", None)  # a generator's cleanup runs now, not at exit
      if close is not None:
        close()

  def device_calls(
    self, epoch: int, put: Callable[[Any], Any] = jax.device_put
  ) -> Iterator[tuple[int, int, Any, Any]]:
    """The epoch as the engine trains it: ``(start, count, xs, ys)`` per call, on the device.

    ``xs``, ``ys`` stack ``steps_per_call`` batches (``[k, B, ...]``), of
    which the first ``count`` are the epoch's steps ``start ..``; the last
    call of an epoch pads its stack with zeros, so that every call has one
    shape (one compiled program). Each stack is put on the device (``put``)
    ``prefetch`` calls before it is yielded, so that its transfer overlaps
    the steps that run before it.
    """
    batches = self.batches(epoch)
    k = min(self.steps_per_call, self.steps_per_epoch)
    queue: collections.deque = collections.deque()
    for start in range(0, self.steps_per_epoch, k):
      count = min(k, self.steps_per_epoch - start)
      # One copy into a fresh stack: the pipeline may reuse its buffers.
      xs = np.zeros((k, self.batch_size) + self.input_shape, self.x_dtype)
      ys = np.zeros((k, self.batch_size), np.int32 if self.task == "classification" else np.float32)
      for j, (x, y) in enumerate(itertools.islice(batches, count)):
        xs[j], ys[j] = x, y
      queue.append((start, count, put((xs, ys))))
      if len(queue) > self.prefetch:
        first, n, (xd, yd) = queue.popleft()
        yield first, n, xd, yd
    while queue:
      first, n, (xd, yd) = queue.popleft()
      yield first, n, xd, yd

  def _statistics(self, mean: Any, std: Any, stats_batches: int | None):
    """The normalisation statistics: given, or over the first batches of ``train(0)``."""
    channels = (self.input_shape[-1],)
    if (mean is None) != (std is None):
      raise DataError(f"{self.where}: give both mean and std, or neither")
    if mean is not None:
      mean, std = np.asarray(mean, np.float32).reshape(-1), np.asarray(std, np.float32).reshape(-1)
      if mean.shape != channels or std.shape != channels:
        raise DataError(
          f"{self.where}: mean and std must have shape {channels}, got {mean.shape} and {std.shape}"
        )
      if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
        raise DataError(f"{self.where}: mean must be finite and std finite and positive")
      return mean, std
    n = (
      self.steps_per_epoch
      if stats_batches is None
      else _positive("stats_batches", stats_batches, self.where)
    )
    moments = _Moments(channels[0])
    for x, _ in self.batches(0, min(n, self.steps_per_epoch)):
      moments.add(x)
    return moments.result()


class _Moments:
  """Per-channel mean and std over blocks, in float64 (Chan et al.'s pairwise update).

  One pass, without the cancellation of summing squares; a constant channel
  gets std 1, as a Dataset's statistics do.
  """

  def __init__(self, channels: int):
    self.n = 0
    self.mean = np.zeros(channels)
    self.m2 = np.zeros(channels)
    self.low = np.full(channels, np.inf)
    self.high = np.full(channels, -np.inf)

  def add(self, x: np.ndarray) -> None:
    block = x.reshape(-1, x.shape[-1]).astype(np.float64)
    nb = block.shape[0]
    mb = block.mean(axis=0)
    m2b = ((block - mb) ** 2).sum(axis=0)
    total = self.n + nb
    delta = mb - self.mean
    self.mean = self.mean + delta * (nb / total)
    self.m2 = self.m2 + m2b + delta**2 * (self.n * nb / total)
    self.n = total
    self.low = np.minimum(self.low, block.min(axis=0))
    self.high = np.maximum(self.high, block.max(axis=0))

  def result(self) -> tuple[np.ndarray, np.ndarray]:
    std = np.sqrt(self.m2 / max(self.n, 1))
    std[self.low == self.high] = 1.0
    return self.mean.astype(np.float32), std.astype(np.float32)
