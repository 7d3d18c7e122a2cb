"""Datasets for hpjax: load, validate, split, and normalize.

Everything a population-based tuning run needs from its data lives here:

* :func:`load_dataset` reads one of the supported sources (:data:`SOURCES`),
  checks it, splits it into train / validation / test (seeded, stratified for
  classification), optionally resizes images and caps the training set, and
  returns a :class:`Dataset` whose arrays sit on the accelerator already.
* :class:`Dataset` carries the splits plus the per-channel (images) or
  per-feature (vectors) mean and standard deviation of the *training* split, so
  that :meth:`Dataset.normalize` can run inside ``jax.jit`` with the statistics
  baked in as constants.
* :class:`DataError` is raised for every problem with the input, always with a
  one-line message that names the file or source and what is wrong, so that a
  command-line tool can print it as it is. :class:`DataWarning` flags data
  that loads but may not mean what was intended (a split without some class,
  float labels that look like class numbers).
* :func:`write_idx`, :func:`write_cifar_batch`, :func:`write_fake_mnist` and
  :func:`write_fake_cifar10` write small files in the real on-disk formats, so
  tests (here and elsewhere in the project) exercise the real parsers without
  any download.

Storage conventions: images are NHWC (grayscale gets ``C == 1``) and stay
``uint8`` when the source is 8-bit (a quarter of the device memory of float32;
:meth:`Dataset.normalize` converts per batch). Everything else is float32.
Classification labels are int32; regression targets are float32 of shape
``[N]``, standardized with the training split's mean and standard deviation.

No file this module parses can run code: CIFAR-10's pickles go through an
unpickler that resolves only the few numpy names the real batches use (uint8
arrays only), ``.npz`` files are read with ``allow_pickle=False`` and IDX
files are parsed byte by byte. (``tfds:NAME`` is left to TensorFlow Datasets.)
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import numbers
import os
import pickle
import warnings
import zlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    'SOURCES',
    'DataError',
    'DataWarning',
    'Dataset',
    'load_dataset',
    'dataset_from_arrays',
    'resize_images',
    'read_idx',
    'write_idx',
    'read_cifar_batch',
    'write_cifar_batch',
    'write_fake_mnist',
    'write_fake_cifar10',
]

SOURCES = ('digits', 'mnist', 'fashion_mnist', 'cifar10', 'npz', 'diabetes', 'tfds:NAME')

_TASKS = ('classification', 'regression')
_TASK_OPTIONS = ('auto',) + _TASKS
_ALLOWED_HINT = 'digits, mnist, fashion_mnist, cifar10, npz (or npz:PATH), diabetes, tfds:NAME'

# Standard MNIST / Fashion-MNIST file names (both datasets use the same ones).
_MNIST_FILES = {
    'train_images': 'train-images-idx3-ubyte',
    'train_labels': 'train-labels-idx1-ubyte',
    'test_images': 't10k-images-idx3-ubyte',
    'test_labels': 't10k-labels-idx1-ubyte',
}
_CIFAR_TRAIN = tuple(f'data_batch_{i}' for i in range(1, 6))
_CIFAR_TEST = 'test_batch'
_CIFAR_SUBDIR = 'cifar-10-batches-py'
_CIFAR_SIDE = 32

_IDX_UBYTE = 0x08  # IDX type code for unsigned bytes, the only one MNIST uses.
_NPY_MAGIC = b'\x93NUMPY'
_ZIP_MAGICS = (b'PK\x03\x04', b'PK\x05\x06')  # A zip's first entry, or an empty zip.
_MIN_IMAGE_SIZE = 8

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
        super().__init__(' '.join(str(message).split('\n')).replace('\r', ' ').strip())


class DataWarning(UserWarning):
    """Data that loads but may not be what was meant (a python ``warnings`` category).

    Issued, with a one-line message naming the source, when a split lacks some
    classes or when float labels hold only whole numbers; filter it with
    ``warnings.filterwarnings('ignore', category=DataWarning)``.
    """


# --------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
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
        for split in ('train', 'val', 'test'):
            x, y = getattr(self, f'x_{split}'), getattr(self, f'y_{split}')
            if x.shape[0] != y.shape[0]:
                raise DataError(f'{where}: x_{split} has {x.shape[0]} examples but y_{split} has {y.shape[0]}')
            if x.shape[1:] != self.x_train.shape[1:]:
                raise DataError(
                    f'{where}: x_{split} shape {x.shape[1:]} differs from x_train shape {self.x_train.shape[1:]}'
                )
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        expected = (self.x_train.shape[-1],)
        if mean.shape != expected or std.shape != expected:
            raise DataError(f'{where}: mean/std must have shape {expected}, got {mean.shape} and {std.shape}')
        if not (np.all(np.isfinite(std)) and np.all(std > 0)):
            raise DataError(f'{where}: std must be finite and positive')
        if self.task == 'regression' and self.num_classes != 1:
            raise DataError(f'{where}: regression datasets have num_classes 1, got {self.num_classes}')
        # Read-only copies: the dataclass is frozen, and the arrays are baked
        # into jitted functions as constants, so they must not change later.
        mean.flags.writeable = False
        std.flags.writeable = False
        object.__setattr__(self, 'mean', mean)
        object.__setattr__(self, 'std', std)
        object.__setattr__(self, 'y_mean', float(self.y_mean))
        object.__setattr__(self, 'y_std', float(self.y_std))

    @property
    def input_shape(self) -> tuple:
        """Shape of one example, e.g. ``(28, 28, 1)`` or ``(10,)``."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_train(self) -> int:
        """Number of training examples."""
        return int(self.x_train.shape[0])

    @property
    def num_val(self) -> int:
        """Number of validation examples."""
        return int(self.x_val.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test examples."""
        return int(self.x_test.shape[0])

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
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise DataError(f"dataset '{self.name}': batch size must be a positive integer, got {batch_size!r}")
        if self.num_train < batch_size:
            raise DataError(
                f"dataset '{self.name}': {self.num_train} training examples, fewer than one batch of {batch_size}"
            )

    def summary(self) -> str:
        """One line describing the dataset.

        Returns:
            E.g. ``"digits: classification (10 classes), x uint8 (8, 8, 1),
            y int32, train 1258 / val 180 / test 359"``.
        """
        what = f'classification ({self.num_classes} classes)' if self.task == 'classification' else 'regression'
        return (
            f'{self.name}: {what}, x {self.x_train.dtype} {self.input_shape}, y {self.y_train.dtype}, '
            f'train {self.num_train} / val {self.num_val} / test {self.num_test}'
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


# --------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------


def load_dataset(
    source: str = 'digits',
    *,
    data_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_train: int | None = None,
    num_classes: int | None = None,
    task: str = 'auto',
) -> Dataset:
    """Load, check, split, and place a dataset on the device.

    Sources (see :data:`SOURCES`):

    * ``'digits'``: scikit-learn's embedded 8x8 digits (1797 images); pixels
      0..16 are stored as uint8 0..255.
    * ``'mnist'``, ``'fashion_mnist'``: the four standard IDX files (plain or
      ``.gz``) in ``data_dir``.
    * ``'cifar10'``: the python pickle batches ``data_batch_1..5`` and
      ``test_batch`` in ``data_dir`` or in ``data_dir/cifar-10-batches-py``.
      They are unpickled with a restricted unpickler (see
      :func:`read_cifar_batch`), so a crafted batch cannot run code.
    * ``'npz'`` (path in ``data_dir``) or ``'npz:PATH'``: arrays ``x_train``,
      ``y_train`` and optionally ``x_test``, ``y_test`` (read with
      ``allow_pickle=False``). With ``'npz:PATH'`` the path in the source
      wins and ``data_dir`` is ignored.
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

    Sources without a test split lose ``test_fraction`` of all examples to the
    test split and ``val_fraction`` of all examples to the validation split.
    Sources with a test split keep it, and ``val_fraction`` of their training
    examples becomes the validation split (``test_fraction`` is then unused).
    Splits are seeded, and stratified by class for classification (falling
    back to a plain shuffled split when a class is too small to stratify).

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
        task: ``'auto'``, ``'classification'`` or ``'regression'`` (see
            above). Sources with a fixed task accept only ``'auto'`` or theirs.

    Returns:
        The :class:`Dataset`.

    Raises:
        DataError: For any problem with the arguments or the data.
    """
    kind, arg = _parse_source(source)
    _check_options(image_size, val_fraction, test_fraction, seed, max_train, num_classes, task)
    if kind == 'digits':
        raw = _load_digits()
    elif kind == 'diabetes':
        raw = _load_diabetes()
    elif kind in ('mnist', 'fashion_mnist'):
        raw = _load_mnist(kind, data_dir)
    elif kind == 'cifar10':
        raw = _load_cifar10(data_dir)
    elif kind == 'npz':
        raw = _load_npz(arg if arg is not None else _npz_path_from_data_dir(data_dir), num_classes, task)
    else:  # 'tfds'
        raw = _load_tfds(arg, data_dir, num_classes, task)
    if kind not in ('npz', 'tfds'):
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
    image_size: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_train: int | None = None,
    num_classes: int | None = None,
    task: str = 'auto',
) -> Dataset:
    """Build a :class:`Dataset` from in-memory arrays, with the npz rules.

    Same conversions, checks and splitting as ``load_dataset('npz:...')``:
    uint8 ``x`` stays uint8, other numeric ``x`` becomes float32; ``[N, H, W]``
    gets a channel axis, ``[N, H, W, C]`` must be NHWC, ``[N, F]`` are vectors;
    the task and class rules are those of :func:`load_dataset` (integer ``y``
    means classification with labels 0..K-1, float ``y`` regression).

    Args:
        name: Name for the dataset and its error messages.
        x_train, y_train: Training inputs and labels / targets.
        x_test, y_test: Optional test split (both or neither).
        image_size, val_fraction, test_fraction, seed, max_train, num_classes,
            task: As for :func:`load_dataset`.

    Returns:
        The :class:`Dataset`.

    Raises:
        DataError: For any problem with the arguments or the arrays.
    """
    _check_options(image_size, val_fraction, test_fraction, seed, max_train, num_classes, task)
    arrays = {'x_train': x_train, 'y_train': y_train}
    if x_test is not None or y_test is not None:
        arrays.update(x_test=x_test, y_test=y_test)
    raw = _raw_from_arrays(name, f"dataset '{name}'", arrays, num_classes, task)
    return _assemble(
        raw,
        image_size=image_size,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        max_train=max_train,
    )


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
        raise DataError(f'resize_images: expected NHWC images, got shape {images.shape}')
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
        block = np.einsum('oh,nhwc->nowc', w_h, block, optimize=True)
        block = np.einsum('pw,nowc->nopc', w_w, block, optimize=True)
        if is_uint8:
            block = np.clip(np.rint(block), 0, 255)
        out[start : start + _BLOCK_IMAGES] = block
    return out


# --------------------------------------------------------------------------
# IDX and CIFAR-10 file formats
# --------------------------------------------------------------------------


def read_idx(path: str | os.PathLike, ndim: int | None = None) -> np.ndarray:
    """Read a uint8 IDX file (the MNIST format), plain or gzip-compressed.

    The header is big-endian: a magic number ``0x000008NN`` (``08`` = unsigned
    byte, ``NN`` = number of dimensions), then each dimension as a uint32,
    then the data in row-major order.

    Args:
        path: File path; gzip is assumed when it ends with ``.gz``.
        ndim: Expected number of dimensions (3 for images, 1 for labels), or
            None to accept any.

    Returns:
        The uint8 array.

    Raises:
        DataError: Unreadable file, wrong magic number, or a data size that
            does not match the header.
    """
    path = os.fspath(path)
    where = f"file '{path}'"
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f'{where}: too short to be an IDX file ({len(raw)} bytes)')
    magic = int.from_bytes(raw[:4], 'big')
    found_ndim = raw[3]
    if ndim is not None:
        expected = (_IDX_UBYTE << 8) | ndim
        if magic != expected:
            raise DataError(
                f'{where}: bad IDX magic number 0x{magic:08X}, expected 0x{expected:08X} (uint8, {ndim}-D)'
            )
    elif raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE or found_ndim == 0:
        raise DataError(f'{where}: bad IDX magic number 0x{magic:08X}, expected 0x000008NN (uint8, NN dimensions)')
    header_len = 4 + 4 * found_ndim
    if len(raw) < header_len:
        raise DataError(f'{where}: truncated IDX header ({len(raw)} bytes, need {header_len})')
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype='>u4', count=found_ndim, offset=4))
    expected_bytes = math.prod(shape)
    present = len(raw) - header_len
    if present != expected_bytes:
        problem = 'truncated IDX data' if present < expected_bytes else 'IDX data longer than its header says'
        raise DataError(f'{where}: {problem}: header shape {shape} needs {expected_bytes} bytes, found {present}')
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape).copy()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (the MNIST format).

    Args:
        path: Destination; written gzip-compressed when it ends with ``.gz``.
        array: uint8 array, 1-D for labels or 3-D ``[N, H, W]`` for images
            (any rank from 1 to 255 is written the same way).

    Raises:
        ValueError: If the array is not uint8 or has rank 0.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8 or not 1 <= array.ndim <= 255:
        raise ValueError(f'write_idx: need a uint8 array of rank >= 1, got {array.dtype} with shape {array.shape}')
    header = bytes([0, 0, _IDX_UBYTE, array.ndim]) + np.asarray(array.shape, dtype='>u4').tobytes()
    payload = header + np.ascontiguousarray(array).tobytes()
    path = os.fspath(path)
    if path.endswith('.gz'):
        # mtime=0 makes the bytes reproducible run to run.
        with open(path, 'wb') as raw_file, gzip.GzipFile(fileobj=raw_file, mode='wb', mtime=0) as f:
            f.write(payload)
    else:
        with open(path, 'wb') as f:
            f.write(payload)


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 batch and refuses everything a batch does not hold.

    A pickle may name any importable callable and have it called with any
    arguments while loading (``os.system`` included), so a plain
    ``pickle.load`` of a downloaded file runs whatever the file says. This
    unpickler resolves only the globals the real batches (Python 2, numpy 1.x)
    and :func:`write_cifar_batch` (Python 3, numpy 1.x or 2.x) use, and each
    to a checking stand-in rather than to the numpy function itself (see
    ``_CIFAR_GLOBALS``). Any other global (or a persistent id, which has no
    loader here) ends the load with a :class:`DataError` naming the file and
    the global. Plain values (dicts, lists, ints, bytes, str) need no global.
    """

    def __init__(self, file, where: str):
        # encoding='bytes': Python 2 str objects (the real batches' keys and
        # raw pixels) load as bytes, exactly as with pickle.load(f, encoding='bytes').
        super().__init__(file, encoding='bytes')
        self._where = where

    def find_class(self, module: str, name: str):
        found = _CIFAR_GLOBALS.get((module, name))
        if found is None:
            raise DataError(
                f"{self._where}: refused to unpickle global '{module}.{name}': a CIFAR-10 batch holds only "
                'a dict of ints, bytes, lists and uint8 numpy arrays, so this file is not one (or was crafted)'
            )
        # A fresh object per lookup: a pickle can also apply state to what a
        # global resolves to (BUILD), which must not reach shared objects.
        return _NdarrayName() if found is _NdarrayName else _StandIn(found)


class _CifarRefused(Exception):
    """A stand-in was called with something a CIFAR-10 batch never holds."""


class _StandIn:
    """A callable a CIFAR-10 pickle may use in place of a numpy function."""

    __slots__ = ('_fn',)

    def __init__(self, fn):
        self._fn = fn

    def __call__(self, *args):
        return self._fn(*args)

    def __setstate__(self, state):
        raise _CifarRefused('state applied to a numpy function')


class _NdarrayName:
    """What ``numpy.ndarray`` unpickles to: a marker, never the class itself.

    Handing out ``numpy.ndarray`` would let a pickle call its constructor
    directly (any dtype, any buffer); the marker can only be passed to the
    reconstruct stand-in.
    """

    __slots__ = ()

    def __setstate__(self, state):
        raise _CifarRefused('state applied to numpy.ndarray')


class _Uint8Dtype:
    """What ``numpy.dtype('u1', ...)`` unpickles to; other dtypes are refused.

    Its pickled state (byte order, flags) means nothing for single bytes and
    is ignored rather than handed to numpy.
    """

    __slots__ = ()

    def __setstate__(self, state):
        del state


class _ArrayStub:
    """What ``_reconstruct(ndarray, ...)`` unpickles to, until its state arrives.

    numpy pickles an array as an empty shell plus a state tuple
    ``(version, shape, dtype, is_fortran, raw_bytes)`` applied afterwards; the
    stub checks that tuple and builds the uint8 array itself.
    """

    __slots__ = ('array',)

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _CifarRefused('a numpy array with an unknown state layout')
        shape, dtype, is_fortran, raw = state[-4:]
        self.array = _uint8_array(raw, dtype, shape, 'F' if is_fortran else 'C')


def _uint8_array(raw, dtype, shape, order) -> np.ndarray:
    if not isinstance(dtype, _Uint8Dtype):
        raise _CifarRefused('a numpy array without a uint8 dtype')
    if not (isinstance(shape, tuple) and all(_is_int(d) and d >= 0 for d in shape)):
        raise _CifarRefused(f'a numpy array of shape {shape!r}')
    if isinstance(raw, str):
        raw = raw.encode('latin1')  # What numpy itself does with Python 2 str data.
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != math.prod(shape) or order not in ('C', 'F'):
        raise _CifarRefused(f'a numpy array of shape {shape} without {math.prod(shape)} bytes of data')
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape, order=order)


def _reconstruct_stub(subtype, shape, typecode):
    del shape, typecode  # numpy's placeholder arguments; the state carries the array.
    if not isinstance(subtype, _NdarrayName):
        raise _CifarRefused('numpy _reconstruct of something other than numpy.ndarray')
    return _ArrayStub()


def _dtype_stub(name, align=False, copy=False):
    del align, copy
    if name not in ('u1', b'u1'):
        raise _CifarRefused(f'numpy dtype {name!r} (only uint8 is allowed)')
    return _Uint8Dtype()


def _frombuffer_stub(buffer, dtype, shape, order):
    # numpy >= 1.23 pickles arrays this way with pickle protocol 5.
    return _uint8_array(buffer, dtype, shape, order)


def _latin1_encode(text, encoding='latin1', errors='strict'):
    # Python 3 pickles bytes with protocols 0-2 as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1') or errors != 'strict':
        raise _CifarRefused(f'_codecs.encode with encoding {encoding!r}')
    return text.encode('latin1')


# (module, name) -> stand-in. numpy 1.x names its array module numpy.core,
# numpy 2.x numpy._core; a batch may come from either.
_CIFAR_GLOBALS = {
    ('numpy.core.multiarray', '_reconstruct'): _reconstruct_stub,
    ('numpy._core.multiarray', '_reconstruct'): _reconstruct_stub,
    ('numpy.core.numeric', '_frombuffer'): _frombuffer_stub,
    ('numpy._core.numeric', '_frombuffer'): _frombuffer_stub,
    ('numpy', 'ndarray'): _NdarrayName,
    ('numpy', 'dtype'): _dtype_stub,
    ('_codecs', 'encode'): _latin1_encode,
}


def _unstub(value, key: str, where: str):
    if isinstance(value, _ArrayStub):
        if value.array is None:
            raise DataError(f"{where}: b'{key}' is a numpy array without data")
        return value.array
    return value


def read_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python pickle batch, without running code from it.

    The batch is a pickled dict (loaded with ``encoding='bytes'``) whose
    ``b'data'`` is uint8 ``[N, 3072]``, each row the red, green and blue 32x32
    planes in row-major order, and whose ``b'labels'`` lists N ints in 0..9.
    It is unpickled by a restricted unpickler that resolves only numpy's array
    reconstruction (uint8 data only) and the latin-1 bytes helper of Python 3
    pickles; any other global in the file is refused before it is imported,
    so a crafted file cannot run code.

    Args:
        path: Batch file path.

    Returns:
        ``(images, labels)``: uint8 ``[N, 32, 32, 3]`` (NHWC) and int32 ``[N]``.

    Raises:
        DataError: Unreadable file, a refused global or dtype, missing keys,
            bad shapes or labels.
    """
    path = os.fspath(path)
    where = f"file '{path}'"
    try:
        with open(path, 'rb') as f:
            batch = _CifarUnpickler(f, where).load()
    except FileNotFoundError:
        raise DataError(f'{where}: not found') from None
    except DataError:
        raise
    except _CifarRefused as e:
        raise DataError(f'{where}: refused to unpickle {e}: not a CIFAR-10 batch (or a crafted one)') from None
    except Exception as e:  # noqa: BLE001 - unpickling can fail in many ways; all mean "bad file".
        raise DataError(f'{where}: not a readable CIFAR-10 batch ({type(e).__name__}: {e})') from None
    if not isinstance(batch, dict):
        raise DataError(f'{where}: not a CIFAR-10 batch (unpickled a {type(batch).__name__}, expected a dict)')
    data, labels = _dict_get(batch, 'data'), _dict_get(batch, 'labels')
    for key, value in (('data', data), ('labels', labels)):
        if value is None:
            raise DataError(f"{where}: CIFAR-10 batch lacks key b'{key}'")
    data, labels = _unstub(data, 'data', where), _unstub(labels, 'labels', where)
    data = np.asarray(data)
    plane = _CIFAR_SIDE * _CIFAR_SIDE
    if data.ndim != 2 or data.shape[1] != 3 * plane:
        raise DataError(f"{where}: b'data' must have shape [N, {3 * plane}], got {data.shape}")
    if data.dtype != np.uint8:
        if data.dtype.kind not in 'iu' or (data.size and (data.min() < 0 or data.max() > 255)):
            raise DataError(f"{where}: b'data' must hold uint8 pixels, got {data.dtype}")
        data = data.astype(np.uint8)
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in 'iu'):
        raise DataError(f"{where}: b'labels' must be a list of ints, got {labels.dtype} with shape {labels.shape}")
    if labels.shape[0] != data.shape[0]:
        raise DataError(f"{where}: {data.shape[0]} images in b'data' but {labels.shape[0]} labels in b'labels'")
    _check_label_range(labels, 10, where)
    # Rows are channel-first (3, 32, 32) planes; the library stores NHWC.
    images = data.reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int32)


def write_cifar_batch(
    path: str | os.PathLike,
    images_nhwc_uint8: np.ndarray,
    labels: Sequence[int],
    *,
    batch_label: str = 'hpjax batch',
) -> None:
    """Write images as a CIFAR-10 python pickle batch (the real format).

    Args:
        path: Destination file.
        images_nhwc_uint8: uint8 ``[N, 32, 32, 3]`` images.
        labels: N integer labels.
        batch_label: Stored as ``b'batch_label'``.

    Raises:
        ValueError: Wrong image dtype / shape or label count.
    """
    images = np.asarray(images_nhwc_uint8)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (_CIFAR_SIDE, _CIFAR_SIDE, 3):
        raise ValueError(f'write_cifar_batch: need uint8 [N, 32, 32, 3] images, got {images.dtype} {images.shape}')
    labels = [int(label) for label in labels]
    if len(labels) != images.shape[0]:
        raise ValueError(f'write_cifar_batch: {images.shape[0]} images but {len(labels)} labels')
    batch = {
        b'batch_label': batch_label.encode(),
        b'labels': labels,
        # NHWC -> one row of channel-first planes per image, as in the real files.
        b'data': np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(images.shape[0], -1),
        b'filenames': [f'image_{i:05d}.png'.encode() for i in range(images.shape[0])],
    }
    with open(os.fspath(path), 'wb') as f:
        # Protocol 2 is what the distributed (Python 2 era) batches use.
        pickle.dump(batch, f, protocol=2)


def write_fake_mnist(
    directory: str | os.PathLike,
    n_train: int = 60,
    n_test: int = 20,
    *,
    gz: bool = False,
    seed: int = 0,
) -> str:
    """Write a tiny MNIST-format dataset: the four standard IDX files.

    Images are 28x28 uint8 with a bright blob whose position depends on the
    class (plus noise and jitter), so a small model can learn them. Labels
    cycle through 0..9 in a random order, so classes are balanced.

    Args:
        directory: Created if needed.
        n_train, n_test: Number of training / test images.
        gz: Write ``.gz`` files instead of plain ones.
        seed: Seed for the random images and label order.

    Returns:
        ``directory`` as a string, ready for ``load_dataset('mnist', data_dir=...)``.
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    suffix = '.gz' if gz else ''
    for split, n in (('train', n_train), ('test', n_test)):
        images, labels = _fake_images(n, 28, 28, 1, rng)
        prefix = 'train' if split == 'train' else 't10k'
        write_idx(os.path.join(directory, f'{prefix}-images-idx3-ubyte{suffix}'), images[..., 0])
        write_idx(os.path.join(directory, f'{prefix}-labels-idx1-ubyte{suffix}'), labels.astype(np.uint8))
    return directory


def write_fake_cifar10(directory: str | os.PathLike, n_per_batch: int = 12, *, seed: int = 0) -> str:
    """Write a tiny CIFAR-10-format dataset: ``data_batch_1..5`` and ``test_batch``.

    Images are 32x32x3 uint8 with a class-dependent blob position and colour
    (plus noise), so a small model can learn them.

    Args:
        directory: Created if needed.
        n_per_batch: Images in each of the six batch files.
        seed: Seed for the random images and label order.

    Returns:
        ``directory`` as a string, ready for ``load_dataset('cifar10', data_dir=...)``.
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, name in enumerate(_CIFAR_TRAIN + (_CIFAR_TEST,)):
        images, labels = _fake_images(n_per_batch, _CIFAR_SIDE, _CIFAR_SIDE, 3, rng)
        label = 'testing batch 1 of 1' if name == _CIFAR_TEST else f'training batch {i + 1} of 5'
        write_cifar_batch(os.path.join(directory, name), images, labels, batch_label=label)
    return directory


# --------------------------------------------------------------------------
# Internals: sources
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


def _parse_source(source: Any) -> tuple[str, str | None]:
    if not isinstance(source, str):
        raise DataError(f'dataset source must be a string, got {type(source).__name__}; choose one of: {_ALLOWED_HINT}')
    text = source.strip()
    for prefix, kind in (('npz:', 'npz'), ('tfds:', 'tfds')):
        if text[: len(prefix)].lower() == prefix:
            arg = text[len(prefix) :].strip()
            if not arg:
                what = 'path' if kind == 'npz' else 'name'
                raise DataError(f"dataset source {source!r} needs a {what} after '{prefix}'")
            return kind, arg
    key = text.lower().replace('-', '_')
    if key in ('digits', 'mnist', 'fashion_mnist', 'cifar10', 'npz', 'diabetes'):
        return key, None
    raise DataError(f'unknown dataset source {source!r}; choose one of: {_ALLOWED_HINT}')


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_options(image_size, val_fraction, test_fraction, seed, max_train, num_classes=None, task='auto') -> None:
    if image_size is not None and (not _is_int(image_size) or image_size < _MIN_IMAGE_SIZE):
        raise DataError(f'image_size must be an int >= {_MIN_IMAGE_SIZE} or None, got {image_size!r}')
    for label, value in (('val_fraction', val_fraction), ('test_fraction', test_fraction)):
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0.0 < value < 1.0:
            raise DataError(f'{label} must be a number strictly between 0 and 1, got {value!r}')
    if not _is_int(seed) or seed < 0:
        raise DataError(f'seed must be a non-negative int, got {seed!r}')
    if max_train is not None and (not _is_int(max_train) or max_train < 1):
        raise DataError(f'max_train must be a positive int or None, got {max_train!r}')
    if num_classes is not None and (not _is_int(num_classes) or num_classes < 2):
        raise DataError(f'num_classes must be an int >= 2 or None, got {num_classes!r}')
    if task not in _TASK_OPTIONS:
        raise DataError(f"task must be one of {', '.join(_TASK_OPTIONS)}, got {task!r}")
    if num_classes is not None and task == 'regression':
        raise DataError(f"num_classes={num_classes} is for classification, but task is 'regression'")


def _check_fixed_source(raw: _Raw, num_classes, task) -> None:
    """num_classes / task given for a source whose task and classes are fixed."""
    if task not in ('auto', raw.task):
        raise DataError(f"{raw.where}: is {raw.task} data; task={task!r} does not apply")
    if num_classes is not None and (raw.task != 'classification' or num_classes != raw.num_classes):
        what = f'has {raw.num_classes} classes' if raw.task == 'classification' else 'is regression data'
        raise DataError(f'{raw.where}: {what}; num_classes={num_classes} does not apply')


def _require_dir(kind: str, data_dir, needs: str) -> str:
    if data_dir is None:
        raise DataError(f"source '{kind}' needs data_dir: a directory holding {needs}")
    directory = os.fspath(data_dir)
    if not os.path.exists(directory):
        raise DataError(f"source '{kind}': data_dir '{directory}' not found")
    if not os.path.isdir(directory):
        raise DataError(f"source '{kind}': data_dir '{directory}' is not a directory")
    return directory


def _read_bytes(path: str) -> bytes:
    where = f"file '{path}'"
    try:
        if path.endswith('.gz'):
            with gzip.open(path, 'rb') as f:
                return f.read()
        with open(path, 'rb') as f:
            return f.read()
    except FileNotFoundError:
        raise DataError(f'{where}: not found') from None
    except (OSError, EOFError, zlib.error) as e:
        # Covers corrupt or truncated gzip streams as well as I/O errors.
        raise DataError(f'{where}: cannot read ({type(e).__name__}: {e})') from None


def _load_digits() -> _Raw:
    from sklearn.datasets import load_digits  # Lazy: sklearn takes a while to import.

    digits = load_digits()
    # Pixels are 0..16; rescale to the usual 8-bit range so every image source
    # shares the same units and dtype.
    x = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., None]
    y = digits.target.astype(np.int32)
    return _Raw('digits', "source 'digits'", 'classification', x, y, None, None, 10)


def _load_diabetes() -> _Raw:
    from sklearn.datasets import load_diabetes  # Lazy: sklearn takes a while to import.

    x, y = load_diabetes(return_X_y=True)
    return _Raw(
        'diabetes', "source 'diabetes'", 'regression', x.astype(np.float32), y.astype(np.float64), None, None, 1
    )


def _load_mnist(kind: str, data_dir) -> _Raw:
    names = ', '.join(_MNIST_FILES.values())
    directory = _require_dir(kind, data_dir, f'the IDX files {names} (plain or .gz)')
    paths, missing = {}, []
    for key, base in _MNIST_FILES.items():
        for candidate in (base, base + '.gz'):
            full = os.path.join(directory, candidate)
            if os.path.isfile(full):
                paths[key] = full
                break
        else:
            missing.append(f'{base} (looked for {base} and {base}.gz)')
    if missing:
        raise DataError(f"source '{kind}': data_dir '{directory}' lacks {'; '.join(missing)}")
    split = {}
    for part in ('train', 'test'):
        images_path, labels_path = paths[f'{part}_images'], paths[f'{part}_labels']
        images = read_idx(images_path, ndim=3)
        labels = read_idx(labels_path, ndim=1)
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"source '{kind}': {images.shape[0]} images in '{images_path}' "
                f"but {labels.shape[0]} labels in '{labels_path}'"
            )
        _check_label_range(labels, 10, f"file '{labels_path}'")
        split[part] = (images[..., None], labels.astype(np.int32))
    (x, y), (x_test, y_test) = split['train'], split['test']
    return _Raw(kind, f"source '{kind}'", 'classification', x, y, x_test, y_test, 10)


def _load_cifar10(data_dir) -> _Raw:
    needs = f"data_batch_1..5 and test_batch (or a '{_CIFAR_SUBDIR}' folder with them)"
    directory = _require_dir('cifar10', data_dir, needs)
    names = _CIFAR_TRAIN + (_CIFAR_TEST,)
    # The official archive unpacks into cifar-10-batches-py/, so accept either
    # the files themselves or that folder inside data_dir.
    candidates = [directory, os.path.join(directory, _CIFAR_SUBDIR)]
    base = next((d for d in candidates if any(os.path.isfile(os.path.join(d, n)) for n in names)), None)
    if base is None:
        raise DataError(
            f"source 'cifar10': no CIFAR-10 batches in '{candidates[0]}' or '{candidates[1]}' (need {needs})"
        )
    missing = [n for n in names if not os.path.isfile(os.path.join(base, n))]
    if missing:
        raise DataError(
            f"source 'cifar10': missing {', '.join(missing)} in '{base}' (need data_batch_1..5 and test_batch)"
        )
    train = [read_cifar_batch(os.path.join(base, n)) for n in _CIFAR_TRAIN]
    x_test, y_test = read_cifar_batch(os.path.join(base, _CIFAR_TEST))
    x = np.concatenate([images for images, _ in train])
    y = np.concatenate([labels for _, labels in train])
    return _Raw('cifar10', "source 'cifar10'", 'classification', x, y, x_test, y_test, 10)


def _npz_path_from_data_dir(data_dir) -> str:
    if data_dir is None:
        raise DataError("source 'npz' needs a file: pass data_dir='/path/file.npz' or source='npz:/path/file.npz'")
    return os.fspath(data_dir)


def _load_npz(path: str, num_classes=None, task='auto') -> _Raw:
    where = f"file '{path}'"
    if not os.path.exists(path):
        raise DataError(f'{where}: not found')
    if os.path.isdir(path):
        raise DataError(f'{where}: is a directory, expected a .npz file')
    # np.load picks the format from the first bytes and, for anything that is
    # neither a zip nor an .npy, assumes a pickle; with allow_pickle=False that
    # yields a misleading "pickled data" error. Sniff first, so each kind of
    # wrong file gets its own message.
    try:
        with open(path, 'rb') as f:
            magic = f.read(6)
    except OSError as e:
        raise DataError(f'{where}: cannot read ({type(e).__name__}: {e.strerror})') from None
    if magic.startswith(_NPY_MAGIC):
        raise DataError(f'{where}: not an .npz archive (a plain .npy array?); save x_train, y_train, ... with np.savez')
    if not magic.startswith(_ZIP_MAGICS):
        kind = ' (it looks like a pickle, which is never loaded)' if magic[:1] == b'\x80' else ''
        raise DataError(f'{where}: not a NumPy .npz file: it does not start with the zip signature{kind}')
    try:
        # allow_pickle=False: an .npz must not be able to run code on load.
        with np.load(path, allow_pickle=False) as archive:
            present = set(archive.files)
            for key in ('x_train', 'y_train'):
                if key not in present:
                    raise DataError(f"{where}: missing array '{key}' (has: {', '.join(sorted(present)) or 'nothing'})")
            if ('x_test' in present) != ('y_test' in present):
                have, lack = ('x_test', 'y_test') if 'x_test' in present else ('y_test', 'x_test')
                raise DataError(f"{where}: missing array '{lack}' ({have} is present, so {lack} is needed too)")
            keys = [k for k in ('x_train', 'y_train', 'x_test', 'y_test') if k in present]
            arrays = {}
            for key in keys:
                try:
                    arrays[key] = archive[key]
                except ValueError as e:
                    if 'allow_pickle' not in str(e):
                        raise
                    raise DataError(
                        f"{where}: array '{key}' holds Python objects (dtype object), which are never unpickled; "
                        'save numeric arrays'
                    ) from None
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - zip/format errors all mean "bad file".
        raise DataError(f'{where}: cannot read as .npz ({type(e).__name__}: {e})') from None
    return _raw_from_arrays(f'npz:{path}', where, arrays, num_classes, task)


def _load_tfds(name: str, data_dir, num_classes=None, task='auto') -> _Raw:
    source = f'tfds:{name}'
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError(
            f"source '{source}' needs tensorflow-datasets, which is not installed (pip install tensorflow-datasets)"
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
    if 'train' not in splits:
        raise DataError(f"source '{source}': no 'train' split (has: {', '.join(sorted(splits))})")
    arrays = {}
    for split, prefix in (('train', 'train'), ('test', 'test')):
        if split not in splits:
            continue
        for feature, key in (('image', 'x'), ('label', 'y')):
            if feature not in splits[split]:
                raise DataError(f"source '{source}': split '{split}' lacks feature '{feature}'")
            arrays[f'{key}_{prefix}'] = np.asarray(splits[split][feature])
    try:
        declared = int(info.features['label'].num_classes)
    except Exception:  # noqa: BLE001 - no declared class count: labels must then be 0..K-1.
        declared = None
    # A declared class count plays the part of num_classes (classes may be
    # absent from the data); only for integer labels, which ClassLabel gives.
    if num_classes is None and task != 'regression' and declared and declared >= 2:
        if np.asarray(arrays['y_train']).dtype.kind in 'biu':
            num_classes = declared
    return _raw_from_arrays(source, f"source '{source}'", arrays, num_classes, task)


def _raw_from_arrays(name: str, where: str, arrays: dict[str, Any], num_classes=None, task='auto') -> _Raw:
    """Convert and check user arrays (npz, tfds, in-memory) into a _Raw."""
    wanted = task
    if num_classes is not None and task == 'auto':
        task = 'classification'  # A class count says what the labels are.
    x = _convert_x(arrays['x_train'], 'x_train', where)
    y, y_task = _convert_y(arrays['y_train'], 'y_train', where, task)
    x_test = y_test = None
    if 'x_test' in arrays:
        x_test = _convert_x(arrays['x_test'], 'x_test', where)
        y_test, test_task = _convert_y(arrays['y_test'], 'y_test', where, task)
        if test_task != y_task:
            raise DataError(
                f"{where}: y_train means {y_task} but y_test means {test_task} (integer vs float labels; "
                "pass task='classification' or task='regression' to decide)"
            )
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(f'{where}: x_test example shape {x_test.shape[1:]} differs from x_train {x.shape[1:]}')
        if x.dtype != x_test.dtype:
            # One stored dtype per dataset; uint8 only survives if both are 8-bit.
            x, x_test = x.astype(np.float32), x_test.astype(np.float32)
    notes = []
    if y_task == 'classification':
        num_classes = _class_count(y, y_test, num_classes, where)
    else:
        num_classes = 1
        targets = y if y_test is None else np.concatenate([y, y_test])
        if wanted == 'auto' and np.all(np.isfinite(targets)) and np.all(targets == np.round(targets)):
            # Class labels saved as floats would otherwise train a regressor
            # without a word; real targets that happen to be whole numbers
            # (counts, scores) are regression, so this warns, not fails.
            notes.append(
                f"{where}: y is float but holds only whole numbers ({_describe_values(np.unique(targets))}), "
                "so it is taken as regression targets; pass task='classification' if these are class labels "
                "(or save them as integers), task='regression' to silence this"
            )
    return _Raw(name, where, y_task, x, y, x_test, y_test, num_classes, notes)


def _class_count(y: np.ndarray, y_test: np.ndarray | None, num_classes: int | None, where: str) -> int:
    """The number of classes of non-negative int labels, after checking them.

    Taking max(label) + 1 on trust would turn a dataset whose labels are all 7
    into an 8-way classifier, and one stray label of 100000 into a
    100001-way output; so without an explicit count the classes must be
    exactly 0..K-1.
    """
    labels = y if y_test is None else np.concatenate([y, y_test])
    keys = 'y_train' if y_test is None else 'y_train/y_test'
    present = np.unique(labels)  # A single class is refused later, by _validate, for every source.
    if num_classes is not None:
        if present[-1] >= num_classes:
            raise DataError(
                f'{where}: {keys}: label {int(present[-1])} is out of range for num_classes={num_classes} '
                f'(labels must be 0..{num_classes - 1})'
            )
        return num_classes
    k = int(present[-1]) + 1
    if present.size != k:
        missing = _absent_runs(present, k)
        raise DataError(
            f'{where}: {keys}: classes must be 0..K-1 with every class present; missing '
            f'{_describe_runs(missing)} ({k - present.size} of {k}; present: {_describe_values(present)}); '
            'give num_classes to allow absent classes'
        )
    return k


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
        parts.append(str(low) if low == high else f'{low}, {high}' if high == low + 1 else f'{low}..{high}')
    if len(runs) > limit:
        parts.append('...')
    return ', '.join(parts)


def _describe_values(values: np.ndarray, limit: int = 6) -> str:
    """Sorted unique numbers as runs: '0..9, 100000' (whole-number floats without '.0')."""
    if values.dtype.kind == 'f':
        values = values.astype(np.int64) if np.all(np.abs(values) < 2**62) else values
    if values.dtype.kind == 'f':
        return ', '.join(str(v) for v in values[:limit]) + (', ...' if values.size > limit else '')
    breaks = np.nonzero(np.diff(values) != 1)[0]
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [values.size - 1]])
    return _describe_runs([(int(values[a]), int(values[b])) for a, b in zip(starts, ends)], limit)


def _convert_x(array: Any, key: str, where: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 0 or array.size == 0:
        raise DataError(f'{where}: {key} is empty (shape {array.shape})')
    if array.dtype == np.uint8:
        pass
    elif array.dtype.kind in 'biuf':
        array = array.astype(np.float32)
    else:
        raise DataError(f'{where}: {key} has unsupported dtype {array.dtype} (need numbers)')
    if array.ndim == 3:
        array = array[..., None]  # [N, H, W] grayscale -> NHWC with C=1.
    elif array.ndim == 4:
        h, c = array.shape[1], array.shape[3]
        if c not in (1, 2, 3, 4) and h in (1, 2, 3, 4):
            raise DataError(f'{where}: {key} shape {array.shape} looks channel-first (NCHW); images must be NHWC')
    elif array.ndim != 2:
        raise DataError(
            f'{where}: {key} must be [N, F] vectors or [N, H, W] / [N, H, W, C] images, got shape {array.shape}'
        )
    return array


def _convert_y(array: Any, key: str, where: str, task: str = 'auto') -> tuple[np.ndarray, str]:
    """Labels as int32 (classification) or targets as float64 (regression), and which.

    ``task='auto'`` decides by dtype: integers (and bools) are labels, floats
    targets. ``'classification'`` also takes floats that are all whole numbers.
    """
    array = np.asarray(array)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise DataError(f'{where}: {key} must have shape [N], got {array.shape}')
    if array.size == 0:
        raise DataError(f'{where}: {key} is empty (shape {array.shape})')
    kind = array.dtype.kind
    if kind not in 'biuf':
        raise DataError(f'{where}: {key} has unsupported dtype {array.dtype} (need integer labels or float targets)')
    if task == 'regression' or (task == 'auto' and kind == 'f'):
        # float64 keeps the standardization exact; the result is cast to float32.
        return array.astype(np.float64), 'regression'
    if kind == 'b':
        return array.astype(np.int32), 'classification'
    if kind == 'f':
        _check_finite(array, key, where)
        fractional = array != np.round(array)
        if np.any(fractional):
            value = float(array[np.argmax(fractional)])
            raise DataError(
                f"{where}: {key} holds {value!r}, not a whole number, but task is 'classification' "
                '(class labels must be whole numbers)'
            )
    if array.min() < 0 or array.max() > np.iinfo(np.int32).max:
        # Report negatives with the standard label-range message.
        _check_label_range(array, None, f'{where}: {key}')
        raise DataError(f'{where}: {key} holds labels too large for int32 (max {array.max()})')
    return array.astype(np.int32), 'classification'


def _check_label_range(labels: np.ndarray, num_classes: int | None, where: str) -> None:
    if not labels.size:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise DataError(f'{where}: negative label {low} (labels must be >= 0)')
    if num_classes is not None and high >= num_classes:
        raise DataError(f'{where}: labels out of range [0, {num_classes - 1}] (found {high})')


def _fake_images(n: int, height: int, width: int, channels: int, rng: np.random.Generator):
    """Random-but-learnable images: class-dependent blob position and colour."""
    labels = rng.permutation(np.arange(n) % 10)
    # Classes sit on a 5 x 2 grid of blob centres, jittered by up to a pixel.
    cx = (labels % 5 + 0.5) * (width / 5) + rng.uniform(-1, 1, n)
    cy = (labels // 5 + 0.5) * (height / 2) + rng.uniform(-1, 1, n)
    yy, xx = np.mgrid[0:height, 0:width]
    sigma = width / 14
    dist2 = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2
    blob = np.exp(-dist2 / (2 * sigma**2))
    # Per-class colour so colour images also differ by channel.
    colours = 0.35 + 0.65 * ((np.arange(10)[:, None] * np.array([1, 3, 7])[None, :channels]) % 10) / 9
    noise = rng.uniform(0, 40, (n, height, width, channels))
    images = noise + 215 * blob[..., None] * colours[labels][:, None, None, :]
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), labels.astype(np.int64)


# --------------------------------------------------------------------------
# Internals: splitting, statistics, assembly
# --------------------------------------------------------------------------


def _count(fraction: float, n: int) -> int:
    # Round half up, but never zero: an empty split would break evaluation.
    return max(1, int(math.floor(fraction * n + 0.5)))


def _split(n: int, n_out: int, labels: np.ndarray | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
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
    kept, out = train_test_split(np.arange(n), test_size=n_out, random_state=seed, shuffle=True, stratify=stratify)
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


def _check_finite(array: np.ndarray, key: str, where: str) -> None:
    if array.dtype.kind == 'f' and not np.all(np.isfinite(array)):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise DataError(f'{where}: {key} contains NaN/inf values ({bad} of {array.size})')


def _validate(raw: _Raw) -> None:
    where = raw.where
    parts = [('x_train', raw.x, 'y_train', raw.y)]
    if raw.x_test is not None:
        parts.append(('x_test', raw.x_test, 'y_test', raw.y_test))
    for x_key, x, y_key, y in parts:
        if x.shape[0] == 0 or x.size == 0:
            raise DataError(f'{where}: {x_key} is empty (shape {x.shape})')
        if x.shape[0] != y.shape[0]:
            raise DataError(f'{where}: {x_key} has {x.shape[0]} examples but {y_key} has {y.shape[0]}')
        _check_finite(x, x_key, where)
        _check_finite(y, y_key, where)
        if raw.task == 'classification':
            _check_label_range(y, raw.num_classes, f'{where}: {y_key}')
    if raw.task == 'classification':
        labels = np.unique(raw.y if raw.y_test is None else np.concatenate([raw.y, raw.y_test]))
        if labels.size < 2:
            # Every example in one class: accuracy 1.0 means nothing.
            raise DataError(
                f'{where}: labels: a single class (label {int(labels[0])}); classification needs at least 2 classes'
            )


def _assemble(raw: _Raw, *, image_size, val_fraction, test_fraction, seed, max_train) -> Dataset:
    _validate(raw)
    where = raw.where
    if image_size is not None and raw.x.ndim != 4:
        raise DataError(f'{where}: image_size applies to image data only, but x has shape {raw.x.shape}')
    classification = raw.task == 'classification'
    n = raw.x.shape[0]
    labels = raw.y if classification else None
    if raw.x_test is None:
        n_test, n_val = _count(test_fraction, n), _count(val_fraction, n)
        if n - n_test - n_val < 1:
            raise DataError(
                f'{where}: {n} examples, too few for test_fraction={test_fraction} and val_fraction={val_fraction} '
                'plus at least one training example'
            )
        rest, test_idx = _split(n, n_test, labels, seed)
        keep, val_pos = _split(rest.size, n_val, None if labels is None else labels[rest], seed)
        train_idx, val_idx = rest[keep], rest[val_pos]
        x_test, y_test = raw.x[test_idx], raw.y[test_idx]
    else:
        n_val = _count(val_fraction, n)
        if n - n_val < 1:
            raise DataError(f'{where}: {n} training examples, too few to carve val_fraction={val_fraction}')
        train_idx, val_idx = _split(n, n_val, labels, seed)
        x_test, y_test = raw.x_test, raw.y_test
    if max_train is not None and max_train < train_idx.size:
        keep, _ = _split(
            train_idx.size, train_idx.size - max_train, None if labels is None else labels[train_idx], seed
        )
        train_idx = train_idx[keep]
    x_train, y_train = raw.x[train_idx], raw.y[train_idx]
    x_val, y_val = raw.x[val_idx], raw.y[val_idx]

    if image_size is not None:
        # Resize after splitting and capping, so quick runs on big sources
        # only pay for the images they keep.
        x_train, x_val, x_test = (resize_images(a, image_size) for a in (x_train, x_val, x_test))

    notes = list(raw.notes)
    if classification:
        lacking = _lacking_classes(raw.num_classes, (('train', y_train), ('val', y_val), ('test', y_test)))
        if lacking:
            notes.append(
                f'{where}: classes of 0..{raw.num_classes - 1} missing from splits ({lacking}); '
                "a split's metrics say nothing about the classes it lacks"
            )
    for note in notes:
        # stacklevel 3: the warning points at the caller of load_dataset /
        # dataset_from_arrays, the only callers of this function.
        warnings.warn(note, DataWarning, stacklevel=3)

    mean, std = _channel_stats(x_train)
    y_mean, y_std = 0.0, 1.0
    if classification:
        y_train, y_val, y_test = (a.astype(np.int32) for a in (y_train, y_val, y_test))
    else:
        # Standardize targets with train statistics so losses are comparable
        # across datasets (MSE of a mean predictor is ~1).
        y_mean = float(np.mean(y_train))
        y_std = float(np.std(y_train))
        if y_train.min() == y_train.max() or not y_std > 0:
            y_std = 1.0
        y_train, y_val, y_test = (((a - y_mean) / y_std).astype(np.float32) for a in (y_train, y_val, y_test))

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
        parts.append(f'no split has {_describe_runs(nowhere)}')
    for name, labels in present.items():
        lacks = np.setdiff1d(everywhere, labels)
        if lacks.size:
            parts.append(f'{name} lacks {_describe_values(lacks)}')
    return '; '.join(parts)


def _dict_get(mapping: dict, key: str):
    # Real batches unpickle with bytes keys; accept str keys from other writers.
    value = mapping.get(key.encode())
    return mapping.get(key) if value is None else value


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
