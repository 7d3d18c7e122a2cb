"""The :class:`Dataset` of a run, and how a source's arrays become one.

* :class:`Dataset` carries the train / validation / test splits (on the
  accelerator already) plus the per-channel (images) or per-feature (vectors)
  mean and standard deviation of the *training* split, so that
  :meth:`Dataset.normalize` can run inside ``jax.jit`` with the statistics
  baked in as constants. :func:`normalize` is the one place inputs are
  standardized.
* :class:`DataError` is raised for every problem with the input, always with a
  one-line message that names the file or source and what is wrong, so that a
  command-line tool can print it as it is. :class:`DataWarning` flags data
  that loads but may not mean what was intended (a split without some class,
  float labels that look like class numbers).
* A source (:mod:`hpjax.data.sources`) hands its checked arrays over as a
  ``_Raw``; ``_assemble`` validates them, draws the splits it lacks (seeded,
  stratified for classification), optionally resizes images
  (:func:`resize_images`) and caps the training set, computes the statistics,
  standardizes regression targets and places everything on the device.

Storage conventions: images are NHWC (grayscale gets ``C == 1``) and stay
``uint8`` when the source is 8-bit (a quarter of the device memory of float32;
:meth:`Dataset.normalize` converts per batch). Everything else is float32.
Classification labels are int32; regression targets are float32 of shape
``[N]``, standardized with the training split's mean and standard deviation.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import sys
from typing import Any
import warnings

import jax
import jax.numpy as jnp
import numpy as np

_TASKS = ("classification", "regression")

# Warnings point at the first caller outside this folder (_caller_outside_package).
_PACKAGE_DIR = os.path.dirname(__file__)

# Host-side work (statistics, resizing) goes through the data in blocks so that
# float64/float32 temporaries stay small even for 60k-image datasets.
_BLOCK_ROWS = 1 << 16
_BLOCK_IMAGES = 2048


class DataError(ValueError):
  """Bad dataset input.

  The message is one line naming the file (or the source / field) and the
  problem. Newlines in the message (for example from a wrapped exception) are
  folded into spaces, because these messages go straight into log lines and
  command-line errors.
  """

  def __init__(self, message: Any):
    super().__init__(" ".join(str(message).split("\n")).replace("\r", " ").strip())


class DataWarning(UserWarning):
  """Data that loads but may not be what was meant (a python ``warnings`` category).

  Issued, with a one-line message naming the source, when a split lacks some
  classes or when float labels hold only whole numbers; filter it with
  ``warnings.filterwarnings('ignore', category=DataWarning)``.
  """


class HeldOut:
  """The sizes of the held-out splits, ``x_val`` and ``x_test``.

  A :class:`Dataset` and a :class:`hpjax.data.Stream` both hold them on the device.
  """

  @property
  def num_val(self) -> int:
    """Number of validation examples."""
    return int(self.x_val.shape[0])

  @property
  def num_test(self) -> int:
    """Number of test examples."""
    return int(self.x_test.shape[0])


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset(HeldOut):
  """Train / validation / test splits on the device, plus normalization stats.

  Attributes:
    name: Source name, e.g. ``'digits'``, ``'mnist'``, ``'npz:/path/f.npz'``.
    task: ``'classification'`` or ``'regression'``.
    x_train, x_val, x_test: Inputs, NHWC images or ``[N, F]`` vectors;
      uint8 when the source is 8-bit, float32 otherwise.
    y_train, y_val, y_test: int32 class labels ``[N]`` (classification) or
      standardized float32 targets ``[N]`` (regression).
    num_classes: Number of classes; 1 for regression (one output).
    mean, std: float32 ``(C,)`` for images or ``(F,)`` for vectors, in the
      stored units (0..255 for uint8), computed on the training split.
      ``std`` is 1 where a channel / feature is constant, never 0.
    y_mean, y_std: The training-split mean / std used to standardize
      regression targets (0 / 1 for classification). A prediction ``p``
      in standardized units is ``p * y_std + y_mean`` in original units.
  """

  name: str
  task: str
  x_train: jax.Array
  y_train: jax.Array
  x_val: jax.Array
  y_val: jax.Array
  x_test: jax.Array
  y_test: jax.Array
  num_classes: int
  mean: np.ndarray
  std: np.ndarray
  y_mean: float = 0.0
  y_std: float = 1.0

  def __post_init__(self):
    # Light consistency checks: other modules and tests may build a Dataset
    # by hand, and a silent shape slip here would surface much later as a
    # confusing broadcasting error inside a jitted training step.
    where = f"dataset '{self.name}'"
    if self.task not in _TASKS:
      raise DataError(f"{where}: task must be one of {_TASKS}, got {self.task!r}")
    for split in ("train", "val", "test"):
      x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
      if x.shape[0] != y.shape[0]:
        raise DataError(
          f"{where}: x_{split} has {x.shape[0]} examples but y_{split} has {y.shape[0]}"
        )
      if x.shape[1:] != self.x_train.shape[1:]:
        raise DataError(
          f"{where}: x_{split} shape {x.shape[1:]} differs from x_train shape "
          f"{self.x_train.shape[1:]}"
        )
    mean = np.asarray(self.mean, dtype=np.float32)
    std = np.asarray(self.std, dtype=np.float32)
    expected = (self.x_train.shape[-1],)
    if mean.shape != expected or std.shape != expected:
      raise DataError(
        f"{where}: mean/std must have shape {expected}, got {mean.shape} and {std.shape}"
      )
    if not (np.all(np.isfinite(std)) and np.all(std > 0)):
      raise DataError(f"{where}: std must be finite and positive")
    if self.task == "regression" and self.num_classes != 1:
      raise DataError(f"{where}: regression datasets have num_classes 1, got {self.num_classes}")
    # Read-only copies: the dataclass is frozen, and the arrays are baked
    # into jitted functions as constants, so they must not change later.
    mean.flags.writeable = False
    std.flags.writeable = False
    object.__setattr__(self, "mean", mean)
    object.__setattr__(self, "std", std)
    object.__setattr__(self, "y_mean", float(self.y_mean))
    object.__setattr__(self, "y_std", float(self.y_std))

  @property
  def input_shape(self) -> tuple:
    """Shape of one example, e.g. ``(28, 28, 1)`` or ``(10,)``."""
    return tuple(self.x_train.shape[1:])

  @property
  def num_train(self) -> int:
    """Number of training examples."""
    return int(self.x_train.shape[0])

  def normalize(self, x) -> jax.Array:
    """Convert inputs to float32 and standardize them with the train stats.

    Works on host arrays and inside ``jax.jit`` (``mean`` / ``std`` are
    NumPy arrays, so they become compile-time constants).

    Args:
      x: A batch of inputs in the stored units, shape ``[B, *input_shape]``.

    Returns:
      float32 array ``(x - mean) / std`` with the same shape as ``x``.
    """
    return normalize(x, self.mean, self.std)

  def check_batch_size(self, batch_size: int) -> None:
    """Fail early when a batch size cannot work with this dataset.

    Args:
      batch_size: Training batch size.

    Raises:
      DataError: If ``batch_size`` is not a positive integer or the
        training split holds fewer examples than one batch.
    """
    if (
      isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1
    ):
      raise DataError(
        f"dataset '{self.name}': batch size must be a positive integer, got {batch_size!r}"
      )
    if self.num_train < batch_size:
      raise DataError(
        f"dataset '{self.name}': {self.num_train} training examples, fewer than one batch of "
        f"{batch_size}"
      )

  def summary(self) -> str:
    """One line describing the dataset.

    Returns:
      E.g. ``"digits: classification (10 classes), x uint8 (8, 8, 1),
      y int32, train 1258 / val 180 / test 359"``.
    """
    what = (
      f"classification ({self.num_classes} classes)"
      if self.task == "classification"
      else "regression"
    )
    return (
      f"{self.name}: {what}, x {self.x_train.dtype} {self.input_shape}, y {self.y_train.dtype}, "
      f"train {self.num_train} / val {self.num_val} / test {self.num_test}"
    )


def normalize(x, mean, std) -> jax.Array:
  """``(x - mean) / std`` in float32: inputs in stored units to what a model sees.

  The one place inputs are standardized (the population engine and
  :meth:`Dataset.normalize` both call it). It multiplies by ``1 / std``:
  inputs stay uint8 on the device and XLA fuses the conversion into the
  first layer's input.

  Args:
    x: inputs in the stored units (uint8 or float), ``[B, *input_shape]``.
    mean, std: per-channel (or per-feature) statistics.

  Returns:
    float32 array of ``x``'s shape.
  """
  mean = np.asarray(mean, np.float32)
  inv_std = 1.0 / np.asarray(std, np.float32)
  return (jnp.asarray(x).astype(jnp.float32) - mean) * inv_std


def resize_images(images: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
  """Resize NHWC images with bilinear interpolation, on the host.

  Uses pixel-centre alignment (like ``jax.image.resize(..., 'linear')``); when
  shrinking, the triangle kernel is widened by the scale factor so the result
  is antialiased rather than aliased.

  Args:
    images: ``[N, H, W, C]`` array, uint8 or float.
    size: Output side length, or ``(height, width)``.

  Returns:
    ``[N, size, size, C]`` array; uint8 input gives uint8 output (rounded
    and clipped to 0..255), anything else float32.
  """
  images = np.asarray(images)
  if images.ndim != 4:
    raise DataError(f"resize_images: expected NHWC images, got shape {images.shape}")
  out_h, out_w = (size, size) if isinstance(size, numbers.Integral) else size
  n, in_h, in_w, _ = images.shape
  if (in_h, in_w) == (out_h, out_w):
    return images if images.dtype == np.uint8 else images.astype(np.float32)
  w_h = _linear_weights(in_h, out_h)
  w_w = _linear_weights(in_w, out_w)
  is_uint8 = images.dtype == np.uint8
  out = np.empty((n, out_h, out_w, images.shape[3]), np.uint8 if is_uint8 else np.float32)
  # Separable resize as two small matrix products, in blocks of images so
  # the float32 temporaries stay bounded for large datasets.
  for start in range(0, n, _BLOCK_IMAGES):
    block = images[start : start + _BLOCK_IMAGES].astype(np.float32)
    block = np.einsum("oh,nhwc->nowc", w_h, block, optimize=True)
    block = np.einsum("pw,nowc->nopc", w_w, block, optimize=True)
    if is_uint8:
      block = np.clip(np.rint(block), 0, 255)
    out[start : start + _BLOCK_IMAGES] = block
  return out


def _linear_weights(in_len: int, out_len: int) -> np.ndarray:
  """[out_len, in_len] bilinear (triangle-kernel) resampling matrix."""
  scale = out_len / in_len
  # Widen the kernel when shrinking so every input pixel contributes
  # (antialiasing), as jax.image.resize does.
  width = max(1.0, 1.0 / scale)
  centres = (np.arange(out_len) + 0.5) / scale - 0.5
  dist = np.abs(np.arange(in_len)[None, :] - centres[:, None]) / width
  weights = np.maximum(0.0, 1.0 - dist)
  # Renormalizing rows clamps at the borders instead of fading to black.
  return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


# --------------------------------------------------------------------------
# Internals: a source's arrays, checks, splitting, statistics, assembly
# --------------------------------------------------------------------------


@dataclasses.dataclass
class _Raw:
  """A source's arrays after loading and conversion, before splitting."""

  name: str
  where: str  # Prefix for error messages, e.g. "file '/x.npz'" or "source 'digits'".
  task: str
  x: np.ndarray
  y: np.ndarray
  x_test: np.ndarray | None
  y_test: np.ndarray | None
  num_classes: int
  # DataWarning messages, issued by _assemble (so that they point at the caller).
  notes: list[str] = dataclasses.field(default_factory=list)
  # A validation split given with the data (dataset_from_arrays), not drawn from x / y.
  x_val: np.ndarray | None = None
  y_val: np.ndarray | None = None


def _is_int(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_label_range(labels: np.ndarray, num_classes: int | None, where: str) -> None:
  if not labels.size:
    return
  low, high = int(labels.min()), int(labels.max())
  if low < 0:
    raise DataError(f"{where}: negative label {low} (labels must be >= 0)")
  if num_classes is not None and high >= num_classes:
    raise DataError(f"{where}: labels out of range [0, {num_classes - 1}] (found {high})")


def _check_finite(array: np.ndarray, key: str, where: str) -> None:
  if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    raise DataError(f"{where}: {key} contains NaN/inf values ({bad} of {array.size})")


def _absent_runs(present: np.ndarray, k: int) -> list[tuple[int, int]]:
  """Inclusive (low, high) runs of 0..k-1 missing from sorted unique ``present``.

  Works from the gaps between present labels, so a stray huge label costs
  nothing (no arange up to it).
  """
  edges = np.concatenate([[-1], present[present < k].astype(np.int64), [k]])
  gaps = np.nonzero(np.diff(edges) > 1)[0]
  return [(int(edges[i]) + 1, int(edges[i + 1]) - 1) for i in gaps]


def _describe_runs(runs: list[tuple[int, int]], limit: int = 6) -> str:
  """'0..6', '3, 5..9', '8, 9', or the first few runs and '...'."""
  parts = []
  for low, high in runs[:limit]:
    parts.append(
      str(low) if low == high else f"{low}, {high}" if high == low + 1 else f"{low}..{high}"
    )
  if len(runs) > limit:
    parts.append("...")
  return ", ".join(parts)


def _describe_values(values: np.ndarray, limit: int = 6) -> str:
  """Sorted unique numbers as runs: '0..9, 100000' (whole-number floats without '.0')."""
  if values.dtype.kind == "f":
    values = values.astype(np.int64) if np.all(np.abs(values) < 2**62) else values
  if values.dtype.kind == "f":
    return ", ".join(str(v) for v in values[:limit]) + (", ..." if values.size > limit else "")
  breaks = np.nonzero(np.diff(values) != 1)[0]
  starts = np.concatenate([[0], breaks + 1])
  ends = np.concatenate([breaks, [values.size - 1]])
  return _describe_runs([(int(values[a]), int(values[b])) for a, b in zip(starts, ends)], limit)


def _count(fraction: float, n: int) -> int:
  # Round half up, but never zero: an empty split would break evaluation.
  return max(1, int(math.floor(fraction * n + 0.5)))


def _split(
  n: int, n_out: int, labels: np.ndarray | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """Seeded split of range(n) into (kept, taken-out) index arrays."""
  from sklearn.model_selection import train_test_split  # Lazy: slow import.

  stratify = None
  if labels is not None:
    _, counts = np.unique(labels, return_counts=True)
    # sklearn can stratify only if every class has >= 2 members and both
    # sides have room for one of each class; otherwise a plain shuffled
    # split is the documented fallback (no error).
    if counts.min() >= 2 and min(n_out, n - n_out) >= counts.size:
      stratify = labels
  kept, out = train_test_split(
    np.arange(n), test_size=n_out, random_state=seed, shuffle=True, stratify=stratify
  )
  return kept, out


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel (last axis) mean and std in float64, block by block."""
  flat = x.reshape(-1, x.shape[-1])
  total = np.zeros(flat.shape[1])
  low = np.full(flat.shape[1], np.inf)
  high = np.full(flat.shape[1], -np.inf)
  for start in range(0, flat.shape[0], _BLOCK_ROWS):
    block = flat[start : start + _BLOCK_ROWS].astype(np.float64)
    total += block.sum(axis=0)
    low, high = np.minimum(low, block.min(axis=0)), np.maximum(high, block.max(axis=0))
  mean = total / flat.shape[0]
  # Second pass over deviations: no cancellation when mean >> std.
  squares = np.zeros(flat.shape[1])
  for start in range(0, flat.shape[0], _BLOCK_ROWS):
    squares += ((flat[start : start + _BLOCK_ROWS].astype(np.float64) - mean) ** 2).sum(axis=0)
  std = np.sqrt(squares / flat.shape[0])
  # Exactly constant channels (min == max) get std 1: dividing by a
  # round-off-sized std would blow noise up instead of leaving it alone.
  std[low == high] = 1.0
  return mean, std


def _validate(raw: _Raw) -> None:
  where = raw.where
  parts = [("x_train", raw.x, "y_train", raw.y)]
  if raw.x_val is not None:
    parts.append(("x_val", raw.x_val, "y_val", raw.y_val))
  if raw.x_test is not None:
    parts.append(("x_test", raw.x_test, "y_test", raw.y_test))
  for x_key, x, y_key, y in parts:
    if x.shape[0] == 0 or x.size == 0:
      raise DataError(f"{where}: {x_key} is empty (shape {x.shape})")
    if x.shape[0] != y.shape[0]:
      raise DataError(f"{where}: {x_key} has {x.shape[0]} examples but {y_key} has {y.shape[0]}")
    _check_finite(x, x_key, where)
    _check_finite(y, y_key, where)
    if raw.task == "classification":
      _check_label_range(y, raw.num_classes, f"{where}: {y_key}")
  if raw.task == "classification":
    labels = np.unique(np.concatenate([y for _, _, _, y in parts]))
    if labels.size < 2:
      # Every example in one class: accuracy 1.0 means nothing.
      raise DataError(
        f"{where}: labels: a single class (label {int(labels[0])}); classification needs at "
        "least 2 classes"
      )


def _assemble(raw: _Raw, *, image_size, val_fraction, test_fraction, seed, max_train) -> Dataset:
  _validate(raw)
  if image_size is not None and raw.x.ndim != 4:
    raise DataError(
      f"{raw.where}: image_size applies to image data only, but x has shape {raw.x.shape}"
    )
  labels = raw.y if raw.task == "classification" else None
  train_idx, val_idx, test_idx = _split_indices(raw, labels, val_fraction, test_fraction, seed)
  if max_train is not None and max_train < train_idx.size:
    keep, _ = _split(
      train_idx.size,
      train_idx.size - max_train,
      None if labels is None else labels[train_idx],
      seed,
    )
    train_idx = train_idx[keep]
  x_train, y_train = raw.x[train_idx], raw.y[train_idx]
  x_val, y_val = (raw.x_val, raw.y_val) if val_idx is None else (raw.x[val_idx], raw.y[val_idx])
  x_test, y_test = (
    (raw.x_test, raw.y_test) if test_idx is None else (raw.x[test_idx], raw.y[test_idx])
  )
  if image_size is not None:
    # Resize after splitting and capping, so quick runs on big sources
    # only pay for the images they keep.
    x_train, x_val, x_test = (resize_images(a, image_size) for a in (x_train, x_val, x_test))
  _warn_notes(raw, (("train", y_train), ("val", y_val), ("test", y_test)))
  mean, std = _channel_stats(x_train)
  (y_train, y_val, y_test), y_mean, y_std = _targets(raw.task, y_train, y_val, y_test)
  # One transfer for everything; training steps then never copy data again.
  on_device = jax.device_put((x_train, y_train, x_val, y_val, x_test, y_test))
  return Dataset(
    raw.name,
    raw.task,
    *on_device,
    num_classes=raw.num_classes,
    mean=mean.astype(np.float32),
    std=std.astype(np.float32),
    y_mean=y_mean,
    y_std=y_std,
  )


def _split_indices(
  raw: _Raw, labels: np.ndarray | None, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
  """Indices into ``raw.x`` of the train, validation and test splits (None: given).

  Each split not given with the data is drawn from it: ``val_fraction`` and
  ``test_fraction`` of its examples; with both given, every example trains.
  """
  n = raw.x.shape[0]
  val_given, test_given = raw.x_val is not None, raw.x_test is not None
  if val_given and test_given:
    return np.arange(n), None, None
  if val_given:
    train_idx, test_idx = _carve(raw.where, n, "test_fraction", test_fraction, labels, seed)
    return train_idx, None, test_idx
  if test_given:
    train_idx, val_idx = _carve(raw.where, n, "val_fraction", val_fraction, labels, seed)
    return train_idx, val_idx, None
  n_test, n_val = _count(test_fraction, n), _count(val_fraction, n)
  if n - n_test - n_val < 1:
    raise DataError(
      f"{raw.where}: {n} examples, too few for test_fraction={test_fraction} and "
      f"val_fraction={val_fraction} plus at least one training example"
    )
  rest, test_idx = _split(n, n_test, labels, seed)
  keep, val_pos = _split(rest.size, n_val, None if labels is None else labels[rest], seed)
  return rest[keep], rest[val_pos], test_idx


def _carve(
  where: str, n: int, field: str, fraction: float, labels: np.ndarray | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """One split of ``fraction`` of ``n`` training examples (``field`` names it in the error)."""
  n_out = _count(fraction, n)
  if n - n_out < 1:
    raise DataError(f"{where}: {n} training examples, too few to carve {field}={fraction}")
  return _split(n, n_out, labels, seed)


def _warn_notes(raw: _Raw, splits) -> None:
  """Issues the source's notes, and one naming the classes some split lacks, as DataWarnings."""
  notes = list(raw.notes)
  if raw.task == "classification":
    lacking = _lacking_classes(raw.num_classes, splits)
    if lacking:
      notes.append(
        f"{raw.where}: classes of 0..{raw.num_classes - 1} missing from splits ({lacking}); "
        "a split's metrics say nothing about the classes it lacks"
      )
  for note in notes:
    warnings.warn(note, DataWarning, stacklevel=_caller_outside_package())


def _caller_outside_package() -> int:
  """The ``stacklevel`` at which the caller's warning names the first frame outside hpjax/data.

  That frame is the user's call of load_dataset / dataset_from_arrays.
  """
  level, frame = 2, sys._getframe(2)  # level 1: our caller, which warns
  while frame is not None and os.path.dirname(frame.f_code.co_filename) == _PACKAGE_DIR:
    level, frame = level + 1, frame.f_back
  return level


def _targets(task: str, *ys: np.ndarray) -> tuple[tuple[np.ndarray, ...], float, float]:
  """The splits' labels as int32, or their targets standardized; with that mean and std.

  Regression targets are standardized with the training split's (the first
  one's) mean and std; labels come with 0 and 1.
  """
  if task == "classification":
    return tuple(a.astype(np.int32) for a in ys), 0.0, 1.0
  # Standardize targets with train statistics so losses are comparable
  # across datasets (MSE of a mean predictor is ~1).
  y_train = ys[0]
  y_mean = float(np.mean(y_train))
  y_std = float(np.std(y_train))
  if y_train.min() == y_train.max() or not y_std > 0:
    y_std = 1.0
  return tuple(((a - y_mean) / y_std).astype(np.float32) for a in ys), y_mean, y_std


def _lacking_classes(num_classes: int, splits) -> str:
  """Which of 0..num_classes-1 the splits lack, e.g. 'no split has 11; val lacks 3, 7', or ''.

  A class absent from every split (possible with num_classes) is named once,
  not once per split.
  """
  present = {name: np.unique(labels) for name, labels in splits}
  everywhere = np.unique(np.concatenate(list(present.values())))
  parts = []
  nowhere = _absent_runs(everywhere, num_classes)
  if nowhere:
    parts.append(f"no split has {_describe_runs(nowhere)}")
  for name, labels in present.items():
    lacks = np.setdiff1d(everywhere, labels)
    if lacks.size:
      parts.append(f"{name} lacks {_describe_values(lacks)}")
  return "; ".join(parts)
