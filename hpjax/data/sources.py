"""Where datasets come from: built-in sources, files and in-memory arrays.

:func:`load_dataset` reads one of the supported sources (:data:`SOURCES`);
:func:`dataset_from_arrays` takes the arrays themselves (what ``hpjax.tune``'s
``data`` argument becomes) and goes through the same steps. Both convert and
check the arrays (dtypes, shapes, the task, the class labels) and hand them to
:mod:`hpjax.data.dataset`, which splits them and returns the
:class:`~hpjax.data.dataset.Dataset`.

Sources:

* ``'digits'``: scikit-learn's embedded 8x8 digits (1797 images); pixels
  0..16 are stored as uint8 0..255.
* ``'mnist'``, ``'fashion_mnist'``: the four standard IDX files (plain or
  ``.gz``) in ``data_dir``.
* ``'cifar10'``: the python pickle batches ``data_batch_1..5`` and
  ``test_batch`` in ``data_dir`` or in ``data_dir/cifar-10-batches-py``.
  They are unpickled with a restricted unpickler (see
  :func:`hpjax.data.formats.read_cifar_batch`), so a crafted batch cannot run
  code.
* ``'npz'`` (path in ``data_dir``) or ``'npz:PATH'``: arrays ``x_train``,
  ``y_train`` and optionally ``x_val``, ``y_val`` (a validation split, then
  not drawn from the training arrays) and ``x_test``, ``y_test``, read with
  ``allow_pickle=False`` after their first bytes are checked; any other
  array is refused (it would otherwise be ignored without a word). With
  ``'npz:PATH'`` the path in the source wins and ``data_dir`` is ignored.
* ``'diabetes'``: scikit-learn's embedded diabetes regression data.
* ``'tfds:NAME'``: a TensorFlow Datasets dataset with ``image`` and
  ``label`` features (needs ``tensorflow-datasets``; ``data_dir`` is passed
  on as its data_dir). Its declared class count is used as ``num_classes``
  unless one is given.

Task and classes (npz, tfds and :func:`dataset_from_arrays`; the other
sources have a fixed task and 10 classes, or are regression):

* ``task='auto'``: integer (or bool) ``y`` means classification, float
  ``y`` regression. Float ``y`` holding only whole numbers is still
  regression, but gets a :class:`DataWarning`, since it is often class
  labels saved as floats; pass ``task`` to say which is meant.
* ``task='classification'``: ``y`` must be integers, or floats that are
  all whole numbers; ``task='regression'``: any numeric ``y`` is a target.
* Classes: without ``num_classes``, the labels (train and test together)
  must be exactly 0..K-1 with every class present, so that a stray label
  or an offset cannot silently change the number of outputs. With
  ``num_classes`` (which implies classification), labels must lie in
  ``0..num_classes-1`` and classes may be absent. Either way at least
  two classes must be present.
* A split (train / val / test) that lacks some class gets one
  :class:`DataWarning` listing what each split lacks: its metrics then
  say nothing about those classes.

Splits: sources without a test split lose ``test_fraction`` of all examples
to the test split and ``val_fraction`` of all examples to the validation
split. Sources with a test split keep it, and ``val_fraction`` of their
training examples becomes the validation split (``test_fraction`` is then
unused). Splits are seeded, and stratified by class for classification
(falling back to a plain shuffled split when a class is too small to
stratify).
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import numbers
import os
from typing import Any

import numpy as np

from hpjax.data.dataset import _absent_runs
from hpjax.data.dataset import _assemble
from hpjax.data.dataset import _check_finite
from hpjax.data.dataset import _check_label_range
from hpjax.data.dataset import _describe_runs
from hpjax.data.dataset import _describe_values
from hpjax.data.dataset import _is_int
from hpjax.data.dataset import _Raw
from hpjax.data.dataset import _TASKS
from hpjax.data.dataset import DataError
from hpjax.data.dataset import Dataset
from hpjax.data.formats import read_cifar_batch
from hpjax.data.formats import read_idx

SOURCES = ("digits", "mnist", "fashion_mnist", "cifar10", "npz", "diabetes", "tfds:NAME")

_TASK_OPTIONS = ("auto",) + _TASKS
_ALLOWED_HINT = "digits, mnist, fashion_mnist, cifar10, npz (or npz:PATH), diabetes, tfds:NAME"

# Standard MNIST / Fashion-MNIST file names (both datasets use the same ones).
_MNIST_FILES = {
  "train_images": "train-images-idx3-ubyte",
  "train_labels": "train-labels-idx1-ubyte",
  "test_images": "t10k-images-idx3-ubyte",
  "test_labels": "t10k-labels-idx1-ubyte",
}
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_CIFAR_SUBDIR = "cifar-10-batches-py"

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # A zip's first entry, or an empty zip.
_MIN_IMAGE_SIZE = 8


def load_dataset(
  source: str = "digits",
  *,
  data_dir: str | os.PathLike | None = None,
  image_size: int | None = None,
  val_fraction: float = 0.1,
  test_fraction: float = 0.2,
  seed: int = 0,
  max_train: int | None = None,
  num_classes: int | None = None,
  task: str = "auto",
) -> Dataset:
  """Load, check, split, and place a dataset on the device.

  The module docstring lists the sources and the rules for the task, the
  classes and the splits.

  Args:
    source: Which dataset; one of :data:`SOURCES`.
    data_dir: Directory (mnist, fashion_mnist, cifar10, tfds) or .npz file
      (npz). Ignored by digits and diabetes.
    image_size: Resize images to ``image_size x image_size`` (bilinear, on
      the host; antialiased when shrinking). Must be an int >= 8. Only
      for image data.
    val_fraction: Fraction for the validation split, in (0, 1).
    test_fraction: Fraction for the test split, in (0, 1), used only when
      the source has no test split of its own.
    seed: Non-negative int; same arguments give identical splits.
    max_train: Optionally keep only this many training examples (seeded,
      stratified subsample), for quick runs. The validation and test
      splits are not affected.
    num_classes: Number of classes (an int >= 2), for data where some
      classes may be absent; None: the labels must be 0..K-1 with every
      class present. Sources with a fixed class count accept only that
      count.
    task: ``'auto'``, ``'classification'`` or ``'regression'`` (see the
      module docstring). Sources with a fixed task accept only ``'auto'`` or
      theirs.

  Returns:
    The :class:`Dataset`.

  Raises:
    DataError: For any problem with the arguments or the data.
  """
  kind, arg = _parse_source(source)
  _check_options(image_size, val_fraction, test_fraction, seed, max_train, num_classes, task)
  raw = _load_raw(kind, arg, data_dir, num_classes, task)
  if kind not in ("npz", "tfds", "arrays"):
    _check_fixed_source(raw, num_classes, task)
  return _assemble(
    raw,
    image_size=image_size,
    val_fraction=val_fraction,
    test_fraction=test_fraction,
    seed=seed,
    max_train=max_train,
  )


def dataset_from_arrays(
  name: str,
  x_train: np.ndarray,
  y_train: np.ndarray,
  x_test: np.ndarray | None = None,
  y_test: np.ndarray | None = None,
  *,
  x_val: np.ndarray | None = None,
  y_val: np.ndarray | None = None,
  **options: Any,
) -> Dataset:
  """Build a :class:`Dataset` from in-memory arrays, with the npz rules.

  Same conversions, checks and splitting as ``load_dataset('npz:...')``:
  uint8 ``x`` stays uint8, other numeric ``x`` becomes float32; ``[N, H, W]``
  gets a channel axis, ``[N, H, W, C]`` must be NHWC, ``[N, F]`` are vectors;
  the task and class rules are those of :func:`load_dataset` (integer ``y``
  means classification with labels 0..K-1, float ``y`` regression).

  A split that is given is used as it is; one that is not is drawn from the
  training arrays (seeded, stratified for classification): the validation
  split is ``val_fraction`` of them, the test split ``test_fraction`` of them.
  Given splits go through the same checks as the training arrays (dtype,
  example shape, task, labels, lengths), and the classes are counted over
  all the splits together.

  Args:
    name: Name for the dataset and its error messages.
    x_train, y_train: Training inputs and labels / targets.
    x_test, y_test: Optional test split (both or neither).
    x_val, y_val: Optional validation split (both or neither); with it, no
      validation split is drawn from the training arrays and ``val_fraction``
      is unused. With both ``x_val`` and ``x_test``, every training example
      trains.
    **options: ``image_size``, ``val_fraction``, ``test_fraction``, ``seed``,
      ``max_train``, ``num_classes``, ``task``: :func:`load_dataset`'s, with
      its defaults.

  Returns:
    The :class:`Dataset`.

  Raises:
    DataError: For any problem with the arguments or the arrays.
  """
  if "data_dir" in options:
    raise TypeError("dataset_from_arrays() got an unexpected keyword argument 'data_dir'")
  arrays = {"x_train": x_train, "y_train": y_train}
  arrays.update(x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test)
  return load_dataset(_Arrays(name, arrays), **options)


@dataclasses.dataclass(frozen=True)
class _Arrays:
  """:func:`dataset_from_arrays`'s arrays, as :func:`load_dataset`'s source."""

  name: str
  arrays: dict[str, Any]


def _load_raw(kind: str, arg: Any, data_dir, num_classes, task) -> _Raw:
  """The arrays of a parsed source, converted and checked (:func:`_parse_source`)."""
  if kind == "digits":
    return _load_digits()
  if kind == "diabetes":
    return _load_diabetes()
  if kind in ("mnist", "fashion_mnist"):
    return _load_mnist(kind, data_dir)
  if kind == "cifar10":
    return _load_cifar10(data_dir)
  if kind == "npz":
    path = arg if arg is not None else _npz_path_from_data_dir(data_dir)
    return _load_npz(path, num_classes, task)
  if kind == "arrays":
    return _raw_from_given(arg, num_classes, task)
  return _load_tfds(arg, data_dir, num_classes, task)


def _raw_from_given(source: _Arrays, num_classes, task) -> _Raw:
  """:func:`dataset_from_arrays`'s arrays: its optional splits given in pairs."""
  where = f"dataset '{source.name}'"
  arrays = {"x_train": source.arrays["x_train"], "y_train": source.arrays["y_train"]}
  for split in ("val", "test"):
    x, y = source.arrays[f"x_{split}"], source.arrays[f"y_{split}"]
    if (x is None) != (y is None):
      have, lack = (f"x_{split}", f"y_{split}") if y is None else (f"y_{split}", f"x_{split}")
      raise DataError(f"{where}: {have} is given but {lack} is not (give both or neither)")
    if x is not None:
      arrays.update({f"x_{split}": x, f"y_{split}": y})
  return _raw_from_arrays(source.name, where, arrays, num_classes, task)


# --------------------------------------------------------------------------
# Internals: parsing, checks, loaders, conversion
# --------------------------------------------------------------------------


def _parse_source(source: Any) -> tuple[str, Any]:
  if isinstance(source, _Arrays):
    return "arrays", source
  if not isinstance(source, str):
    raise DataError(
      f"dataset source must be a string, got {type(source).__name__}; choose one of: "
      f"{_ALLOWED_HINT}"
    )
  text = source.strip()
  for prefix, kind in (("npz:", "npz"), ("tfds:", "tfds")):
    if text[: len(prefix)].lower() == prefix:
      arg = text[len(prefix) :].strip()
      if not arg:
        what = "path" if kind == "npz" else "name"
        raise DataError(f"dataset source {source!r} needs a {what} after '{prefix}'")
      return kind, arg
  key = text.lower().replace("-", "_")
  if key in ("digits", "mnist", "fashion_mnist", "cifar10", "npz", "diabetes"):
    return key, None
  raise DataError(f"unknown dataset source {source!r}; choose one of: {_ALLOWED_HINT}")


def _check_options(
  image_size, val_fraction, test_fraction, seed, max_train, num_classes=None, task="auto"
) -> None:
  if image_size is not None and (not _is_int(image_size) or image_size < _MIN_IMAGE_SIZE):
    raise DataError(f"image_size must be an int >= {_MIN_IMAGE_SIZE} or None, got {image_size!r}")
  for label, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0.0 < value < 1.0:
      raise DataError(f"{label} must be a number strictly between 0 and 1, got {value!r}")
  if not _is_int(seed) or seed < 0:
    raise DataError(f"seed must be a non-negative int, got {seed!r}")
  if max_train is not None and (not _is_int(max_train) or max_train < 1):
    raise DataError(f"max_train must be a positive int or None, got {max_train!r}")
  if num_classes is not None and (not _is_int(num_classes) or num_classes < 2):
    raise DataError(f"num_classes must be an int >= 2 or None, got {num_classes!r}")
  if task not in _TASK_OPTIONS:
    raise DataError(f"task must be one of {', '.join(_TASK_OPTIONS)}, got {task!r}")
  if num_classes is not None and task == "regression":
    raise DataError(f"num_classes={num_classes} is for classification, but task is 'regression'")


def _check_fixed_source(raw: _Raw, num_classes, task) -> None:
  """num_classes / task given for a source whose task and classes are fixed."""
  if task not in ("auto", raw.task):
    raise DataError(f"{raw.where}: is {raw.task} data; task={task!r} does not apply")
  if num_classes is not None and (raw.task != "classification" or num_classes != raw.num_classes):
    what = (
      f"has {raw.num_classes} classes" if raw.task == "classification" else "is regression data"
    )
    raise DataError(f"{raw.where}: {what}; num_classes={num_classes} does not apply")


def _require_dir(kind: str, data_dir, needs: str) -> str:
  if data_dir is None:
    raise DataError(f"source '{kind}' needs data_dir: a directory holding {needs}")
  directory = os.fspath(data_dir)
  if not os.path.exists(directory):
    raise DataError(f"source '{kind}': data_dir '{directory}' not found")
  if not os.path.isdir(directory):
    raise DataError(f"source '{kind}': data_dir '{directory}' is not a directory")
  return directory


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's embedded digits as (images ``[N, 8, 8]`` 0..16, labels).

  Read straight from the CSV file scikit-learn ships, without importing
  ``sklearn.datasets`` (about 2 s of a run's start on the 2-core CPU); its
  ``load_digits`` when the file is not where this scikit-learn keeps it.
  """
  spec = importlib.util.find_spec("sklearn")  # finds the package, imports nothing
  roots = list(spec.submodule_search_locations or []) if spec else []
  for root in roots:
    path = os.path.join(root, "datasets", "data", "digits.csv.gz")
    if os.path.exists(path):
      with gzip.open(path, "rt") as f:
        data = np.loadtxt(f, delimiter=",")
      return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

  digits = load_digits()
  return digits.images, digits.target


def _load_digits() -> _Raw:
  images, target = _digits_arrays()
  # Pixels are 0..16; rescale to the usual 8-bit range so every image source
  # shares the same units and dtype.
  x = np.clip(np.rint(images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., None]
  y = target.astype(np.int32)
  return _Raw("digits", "source 'digits'", "classification", x, y, None, None, 10)


def _load_diabetes() -> _Raw:
  from sklearn.datasets import load_diabetes  # Lazy: sklearn takes a while to import.

  x, y = load_diabetes(return_X_y=True)
  return _Raw(
    "diabetes",
    "source 'diabetes'",
    "regression",
    x.astype(np.float32),
    y.astype(np.float64),
    None,
    None,
    1,
  )


def _load_mnist(kind: str, data_dir) -> _Raw:
  names = ", ".join(_MNIST_FILES.values())
  directory = _require_dir(kind, data_dir, f"the IDX files {names} (plain or .gz)")
  paths, missing = {}, []
  for key, base in _MNIST_FILES.items():
    for candidate in (base, base + ".gz"):
      full = os.path.join(directory, candidate)
      if os.path.isfile(full):
        paths[key] = full
        break
    else:
      missing.append(f"{base} (looked for {base} and {base}.gz)")
  if missing:
    raise DataError(f"source '{kind}': data_dir '{directory}' lacks {'; '.join(missing)}")
  split = {}
  for part in ("train", "test"):
    images_path, labels_path = paths[f"{part}_images"], paths[f"{part}_labels"]
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.shape[0] != labels.shape[0]:
      raise DataError(
        f"source '{kind}': {images.shape[0]} images in '{images_path}' "
        f"but {labels.shape[0]} labels in '{labels_path}'"
      )
    _check_label_range(labels, 10, f"file '{labels_path}'")
    split[part] = (images[..., None], labels.astype(np.int32))
  (x, y), (x_test, y_test) = split["train"], split["test"]
  return _Raw(kind, f"source '{kind}'", "classification", x, y, x_test, y_test, 10)


def _load_cifar10(data_dir) -> _Raw:
  needs = f"data_batch_1..5 and test_batch (or a '{_CIFAR_SUBDIR}' folder with them)"
  directory = _require_dir("cifar10", data_dir, needs)
  names = _CIFAR_TRAIN + (_CIFAR_TEST,)
  # The official archive unpacks into cifar-10-batches-py/, so accept either
  # the files themselves or that folder inside data_dir.
  candidates = [directory, os.path.join(directory, _CIFAR_SUBDIR)]
  base = next(
    (d for d in candidates if any(os.path.isfile(os.path.join(d, n)) for n in names)), None
  )
  if base is None:
    raise DataError(
      f"source 'cifar10': no CIFAR-10 batches in '{candidates[0]}' or '{candidates[1]}' "
      f"(need {needs})"
    )
  missing = [n for n in names if not os.path.isfile(os.path.join(base, n))]
  if missing:
    raise DataError(
      f"source 'cifar10': missing {', '.join(missing)} in '{base}' "
      "(need data_batch_1..5 and test_batch)"
    )
  train = [read_cifar_batch(os.path.join(base, n)) for n in _CIFAR_TRAIN]
  x_test, y_test = read_cifar_batch(os.path.join(base, _CIFAR_TEST))
  x = np.concatenate([images for images, _ in train])
  y = np.concatenate([labels for _, labels in train])
  return _Raw("cifar10", "source 'cifar10'", "classification", x, y, x_test, y_test, 10)


def _npz_path_from_data_dir(data_dir) -> str:
  if data_dir is None:
    raise DataError(
      "source 'npz' needs a file: pass data_dir='/path/file.npz' or source='npz:/path/file.npz'"
    )
  return os.fspath(data_dir)


_NPZ_ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def _load_npz(path: str, num_classes=None, task="auto") -> _Raw:
  where = f"file '{path}'"
  if not os.path.exists(path):
    raise DataError(f"{where}: not found")
  if os.path.isdir(path):
    raise DataError(f"{where}: is a directory, expected a .npz file")
  # np.load picks the format from the first bytes and, for anything that is
  # neither a zip nor an .npy, assumes a pickle; with allow_pickle=False that
  # yields a misleading "pickled data" error. Sniff first, so each kind of
  # wrong file gets its own message.
  try:
    with open(path, "rb") as f:
      magic = f.read(6)
  except OSError as e:
    raise DataError(f"{where}: cannot read ({type(e).__name__}: {e.strerror})") from None
  if magic.startswith(_NPY_MAGIC):
    raise DataError(
      f"{where}: not an .npz archive (a plain .npy array?); save x_train, y_train, ... "
      "with np.savez"
    )
  if not magic.startswith(_ZIP_MAGICS):
    kind = " (it looks like a pickle, which is never loaded)" if magic[:1] == b"\x80" else ""
    raise DataError(
      f"{where}: not a NumPy .npz file: it does not start with the zip signature{kind}"
    )
  try:
    # allow_pickle=False: an .npz must not be able to run code on load.
    with np.load(path, allow_pickle=False) as archive:
      present = set(archive.files)
      for key in ("x_train", "y_train"):
        if key not in present:
          raise DataError(
            f"{where}: missing array '{key}' (has: {', '.join(sorted(present)) or 'nothing'})"
          )
      for split in ("val", "test"):
        if (f"x_{split}" in present) != (f"y_{split}" in present):
          have, lack = (f"x_{split}", f"y_{split}")[:: 1 if f"x_{split}" in present else -1]
          raise DataError(
            f"{where}: missing array '{lack}' ({have} is present, so {lack} is needed too)"
          )
      unknown = sorted(present - set(_NPZ_ARRAYS))
      if unknown:
        raise DataError(f"{where}: unknown array '{unknown[0]}'; allowed: {', '.join(_NPZ_ARRAYS)}")
      keys = [k for k in _NPZ_ARRAYS if k in present]
      arrays = {}
      for key in keys:
        try:
          arrays[key] = archive[key]
        except ValueError as e:
          if "allow_pickle" not in str(e):
            raise
          raise DataError(
            f"{where}: array '{key}' holds Python objects (dtype object), which are never "
            "unpickled; save numeric arrays"
          ) from None
  except DataError:
    raise
  except Exception as e:  # noqa: BLE001 - zip/format errors all mean "bad file".
    raise DataError(f"{where}: cannot read as .npz ({type(e).__name__}: {e})") from None
  return _raw_from_arrays(f"npz:{path}", where, arrays, num_classes, task)


def _load_tfds(name: str, data_dir, num_classes=None, task="auto") -> _Raw:
  source = f"tfds:{name}"
  try:
    import tensorflow_datasets as tfds
  except ImportError:
    raise DataError(
      f"source '{source}' needs tensorflow-datasets, which is not installed "
      "(pip install tensorflow-datasets)"
    ) from None
  try:
    splits, info = tfds.load(
      name,
      split=None,
      batch_size=-1,
      data_dir=None if data_dir is None else os.fspath(data_dir),
      with_info=True,
    )
    splits = tfds.as_numpy(splits)
  except Exception as e:  # noqa: BLE001 - any tfds failure is reported as one DataError line.
    raise DataError(f"source '{source}': tfds.load failed ({type(e).__name__}: {e})") from None
  if "train" not in splits:
    raise DataError(f"source '{source}': no 'train' split (has: {', '.join(sorted(splits))})")
  arrays = {}
  for split, prefix in (("train", "train"), ("test", "test")):
    if split not in splits:
      continue
    for feature, key in (("image", "x"), ("label", "y")):
      if feature not in splits[split]:
        raise DataError(f"source '{source}': split '{split}' lacks feature '{feature}'")
      arrays[f"{key}_{prefix}"] = np.asarray(splits[split][feature])
  try:
    declared = int(info.features["label"].num_classes)
  except Exception:  # noqa: BLE001 - no declared class count: labels must then be 0..K-1.
    declared = None
  # A declared class count plays the part of num_classes (classes may be
  # absent from the data); only for integer labels, which ClassLabel gives.
  if num_classes is None and task != "regression" and declared and declared >= 2:
    if np.asarray(arrays["y_train"]).dtype.kind in "biu":
      num_classes = declared
  return _raw_from_arrays(source, f"source '{source}'", arrays, num_classes, task)


def _raw_from_arrays(
  name: str, where: str, arrays: dict[str, Any], num_classes=None, task="auto"
) -> _Raw:
  """Convert and check user arrays (npz, tfds, in-memory) into a _Raw."""
  wanted = task
  if num_classes is not None and task == "auto":
    task = "classification"  # A class count says what the labels are.
  x = _convert_x(arrays["x_train"], "x_train", where)
  y, y_task = _convert_y(arrays["y_train"], "y_train", where, task)
  given = {}  # The splits given rather than drawn: "val" / "test" -> (x, y).
  for split in ("val", "test"):
    if f"x_{split}" not in arrays:
      continue
    x_split = _convert_x(arrays[f"x_{split}"], f"x_{split}", where)
    y_split, split_task = _convert_y(arrays[f"y_{split}"], f"y_{split}", where, task)
    if split_task != y_task:
      raise DataError(
        f"{where}: y_train means {y_task} but y_{split} means {split_task} (integer vs float "
        "labels; pass task='classification' or task='regression' to decide)"
      )
    if x_split.shape[1:] != x.shape[1:]:
      raise DataError(
        f"{where}: x_{split} example shape {x_split.shape[1:]} differs from x_train {x.shape[1:]}"
      )
    given[split] = (x_split, y_split)
  notes = []
  if any(x_split.dtype != x.dtype for x_split, _ in given.values()):
    notes += _scale_notes(where, {"x_train": x, **{f"x_{k}": v for k, (v, _) in given.items()}})
    # One stored dtype per dataset; uint8 only survives if all are 8-bit.
    x = x.astype(np.float32)
    given = {k: (x_split.astype(np.float32), y_split) for k, (x_split, y_split) in given.items()}
  x_val, y_val = given.get("val", (None, None))
  x_test, y_test = given.get("test", (None, None))
  labels = {"y_train": y, **{f"y_{k}": y_split for k, (_, y_split) in given.items()}}
  if y_task == "classification":
    num_classes = _class_count(labels, num_classes, where)
  else:
    num_classes = 1
    targets = np.concatenate(list(labels.values()))
    if wanted == "auto" and np.all(np.isfinite(targets)) and np.all(targets == np.round(targets)):
      # Class labels saved as floats would otherwise train a regressor
      # without a word; real targets that happen to be whole numbers
      # (counts, scores) are regression, so this warns, not fails.
      notes.append(
        f"{where}: y is float but holds only whole numbers "
        f"({_describe_values(np.unique(targets))}), so it is taken as regression targets; pass "
        "task='classification' if these are class labels (or save them as integers), "
        "task='regression' to silence this"
      )
  return _Raw(name, where, y_task, x, y, x_test, y_test, num_classes, notes, x_val, y_val)


def _scale_notes(where: str, xs: dict[str, np.ndarray]) -> list[str]:
  """A note when integer images (0..255) meet a float split already scaled to [0, 1].

  Every split is normalized with the training split's statistics: a test
  split scaled by 1/255 where the training one was not would be evaluated on
  inputs all near one value, and score near chance without an error.
  """
  ints = {k: v for k, v in xs.items() if v.dtype.kind in "iu" and v.size and v.max() > 1}
  unit = {
    k: v
    for k, v in xs.items()
    if v.dtype.kind == "f" and v.size and np.nanmin(v) >= 0 and np.nanmax(v) <= 1
  }
  if not ints or not unit:
    return []
  (a, va), (b, _) = next(iter(ints.items())), next(iter(unit.items()))
  return [
    f"{where}: {a} holds integers up to {int(va.max())} but {b} floats within [0, 1]: "
    "the splits look scaled differently (every split is normalized with x_train's "
    "statistics); give them in the same units"
  ]


def _class_count(labels: dict[str, np.ndarray], num_classes: int | None, where: str) -> int:
  """The number of classes of non-negative int labels, after checking them.

  Taking max(label) + 1 on trust would turn a dataset whose labels are all 7
  into an 8-way classifier, and one stray label of 100000 into a
  100001-way output; so without an explicit count the classes must be
  exactly 0..K-1.

  Args:
    labels: ``y_train`` and the given ``y_val`` / ``y_test``, by name.
    num_classes: the count given, or None.
    where: the error messages' prefix.
  """
  keys = "/".join(labels)
  # A single class is refused later, by _validate, for every source.
  present = np.unique(np.concatenate(list(labels.values())))
  if num_classes is not None:
    if present[-1] >= num_classes:
      bad = "/".join(k for k, v in labels.items() if v.max() >= num_classes)  # Who holds it.
      raise DataError(
        f"{where}: {bad}: label {int(present[-1])} is out of range for num_classes={num_classes} "
        f"(labels must be 0..{num_classes - 1})"
      )
    return num_classes
  k = int(present[-1]) + 1
  if present.size != k:
    missing = _absent_runs(present, k)
    raise DataError(
      f"{where}: {keys}: classes must be 0..K-1 with every class present; missing "
      f"{_describe_runs(missing)} ({k - present.size} of {k}; "
      f"present: {_describe_values(present)}); "
      "give num_classes to allow absent classes"
    )
  return k


def _convert_x(array: Any, key: str, where: str) -> np.ndarray:
  array = np.asarray(array)
  if array.ndim == 0 or array.size == 0:
    raise DataError(f"{where}: {key} is empty (shape {array.shape})")
  if array.dtype == np.uint8:
    pass
  elif array.dtype.kind in "biuf":
    array = array.astype(np.float32)
  else:
    raise DataError(f"{where}: {key} has unsupported dtype {array.dtype} (need numbers)")
  if array.ndim == 3:
    array = array[..., None]  # [N, H, W] grayscale -> NHWC with C=1.
  elif array.ndim == 4:
    h, c = array.shape[1], array.shape[3]
    if c not in (1, 2, 3, 4) and h in (1, 2, 3, 4):
      raise DataError(
        f"{where}: {key} shape {array.shape} looks channel-first (NCHW); images must be NHWC"
      )
  elif array.ndim != 2:
    raise DataError(
      f"{where}: {key} must be [N, F] vectors or [N, H, W] / [N, H, W, C] images, "
      f"got shape {array.shape}"
    )
  return array


def _convert_y(array: Any, key: str, where: str, task: str = "auto") -> tuple[np.ndarray, str]:
  """Labels as int32 (classification) or targets as float64 (regression), and which.

  ``task='auto'`` decides by dtype: integers (and bools) are labels, floats
  targets. ``'classification'`` also takes floats that are all whole numbers.
  """
  array = np.asarray(array)
  if array.ndim == 2 and array.shape[1] == 1:
    array = array[:, 0]
  if array.ndim != 1:
    raise DataError(f"{where}: {key} must have shape [N], got {array.shape}")
  if array.size == 0:
    raise DataError(f"{where}: {key} is empty (shape {array.shape})")
  kind = array.dtype.kind
  if kind not in "biuf":
    raise DataError(
      f"{where}: {key} has unsupported dtype {array.dtype} (need integer labels or float targets)"
    )
  if task == "regression" or (task == "auto" and kind == "f"):
    # float64 keeps the standardization exact; the result is cast to float32.
    return array.astype(np.float64), "regression"
  if kind == "b":
    return array.astype(np.int32), "classification"
  if kind == "f":
    _check_finite(array, key, where)
    fractional = array != np.round(array)
    if np.any(fractional):
      value = float(array[np.argmax(fractional)])
      raise DataError(
        f"{where}: {key} holds {value!r}, not a whole number, but task is 'classification' "
        "(class labels must be whole numbers)"
      )
  if array.min() < 0 or array.max() > np.iinfo(np.int32).max:
    # Report negatives with the standard label-range message.
    _check_label_range(array, None, f"{where}: {key}")
    raise DataError(f"{where}: {key} holds labels too large for int32 (max {array.max()})")
  return array.astype(np.int32), "classification"
