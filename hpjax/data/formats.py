"""The on-disk formats of MNIST (IDX) and CIFAR-10 (python pickle batches).

:func:`read_idx` / :func:`write_idx` and :func:`read_cifar_batch` /
:func:`write_cifar_batch` read and write the real formats, so tests and
generated copies exercise the same parsers as the downloaded files.

No file read here can run code: IDX files are parsed byte by byte, and
CIFAR-10's pickles go through an unpickler that resolves only the few numpy
names the real batches use (uint8 arrays only), each to a checking stand-in.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
from typing import Sequence
import zlib

import numpy as np

from hpjax.data.dataset import _check_label_range
from hpjax.data.dataset import _is_int
from hpjax.data.dataset import DataError

_CIFAR_SIDE = 32

_IDX_UBYTE = 0x08  # IDX type code for unsigned bytes, the only one MNIST uses.


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
    raise DataError(f"{where}: too short to be an IDX file ({len(raw)} bytes)")
  magic = int.from_bytes(raw[:4], "big")
  found_ndim = raw[3]
  if ndim is not None:
    expected = (_IDX_UBYTE << 8) | ndim
    if magic != expected:
      raise DataError(
        f"{where}: bad IDX magic number 0x{magic:08X}, expected 0x{expected:08X} (uint8, {ndim}-D)"
      )
  elif raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE or found_ndim == 0:
    raise DataError(
      f"{where}: bad IDX magic number 0x{magic:08X}, expected 0x000008NN (uint8, NN dimensions)"
    )
  header_len = 4 + 4 * found_ndim
  if len(raw) < header_len:
    raise DataError(f"{where}: truncated IDX header ({len(raw)} bytes, need {header_len})")
  shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=found_ndim, offset=4))
  expected_bytes = math.prod(shape)
  present = len(raw) - header_len
  if present != expected_bytes:
    problem = (
      "truncated IDX data" if present < expected_bytes else "IDX data longer than its header says"
    )
    raise DataError(
      f"{where}: {problem}: header shape {shape} needs {expected_bytes} bytes, found {present}"
    )
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
    raise ValueError(
      f"write_idx: need a uint8 array of rank >= 1, got {array.dtype} with shape {array.shape}"
    )
  header = bytes([0, 0, _IDX_UBYTE, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
  payload = header + np.ascontiguousarray(array).tobytes()
  path = os.fspath(path)
  if path.endswith(".gz"):
    # mtime=0 makes the bytes reproducible run to run.
    with open(path, "wb") as raw_file, gzip.GzipFile(fileobj=raw_file, mode="wb", mtime=0) as f:
      f.write(payload)
  else:
    with open(path, "wb") as f:
      f.write(payload)


def _read_bytes(path: str) -> bytes:
  where = f"file '{path}'"
  try:
    if path.endswith(".gz"):
      with gzip.open(path, "rb") as f:
        return f.read()
    with open(path, "rb") as f:
      return f.read()
  except FileNotFoundError:
    raise DataError(f"{where}: not found") from None
  except (OSError, EOFError, zlib.error) as e:
    # Covers corrupt or truncated gzip streams as well as I/O errors.
    raise DataError(f"{where}: cannot read ({type(e).__name__}: {e})") from None


# --------------------------------------------------------------------------
# Internals: CIFAR-10's restricted unpickler
# --------------------------------------------------------------------------


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
    super().__init__(file, encoding="bytes")
    self._where = where

  def find_class(self, module: str, name: str):
    found = _CIFAR_GLOBALS.get((module, name))
    if found is None:
      raise DataError(
        f"{self._where}: refused to unpickle global '{module}.{name}': a CIFAR-10 batch holds "
        "only a dict of ints, bytes, lists and uint8 numpy arrays, so this file is not one (or "
        "was crafted)"
      )
    # A fresh object per lookup: a pickle can also apply state to what a
    # global resolves to (BUILD), which must not reach shared objects.
    return _NdarrayName() if found is _NdarrayName else _StandIn(found)


class _CifarRefused(Exception):
  """A stand-in was called with something a CIFAR-10 batch never holds."""


class _StandIn:
  """A callable a CIFAR-10 pickle may use in place of a numpy function."""

  __slots__ = ("_fn",)

  def __init__(self, fn):
    self._fn = fn

  def __call__(self, *args):
    return self._fn(*args)

  def __setstate__(self, state):
    raise _CifarRefused("state applied to a numpy function")


class _NdarrayName:
  """What ``numpy.ndarray`` unpickles to: a marker, never the class itself.

  Handing out ``numpy.ndarray`` would let a pickle call its constructor
  directly (any dtype, any buffer); the marker can only be passed to the
  reconstruct stand-in.
  """

  __slots__ = ()

  def __setstate__(self, state):
    raise _CifarRefused("state applied to numpy.ndarray")


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

  __slots__ = ("array",)

  def __init__(self):
    self.array = None

  def __setstate__(self, state):
    if not isinstance(state, tuple) or len(state) not in (4, 5):
      raise _CifarRefused("a numpy array with an unknown state layout")
    shape, dtype, is_fortran, raw = state[-4:]
    self.array = _uint8_array(raw, dtype, shape, "F" if is_fortran else "C")


def _uint8_array(raw, dtype, shape, order) -> np.ndarray:
  if not isinstance(dtype, _Uint8Dtype):
    raise _CifarRefused("a numpy array without a uint8 dtype")
  if not (isinstance(shape, tuple) and all(_is_int(d) and d >= 0 for d in shape)):
    raise _CifarRefused(f"a numpy array of shape {shape!r}")
  if isinstance(raw, str):
    raw = raw.encode("latin1")  # What numpy itself does with Python 2 str data.
  if (
    not isinstance(raw, (bytes, bytearray))
    or len(raw) != math.prod(shape)
    or order not in ("C", "F")
  ):
    raise _CifarRefused(f"a numpy array of shape {shape} without {math.prod(shape)} bytes of data")
  return np.frombuffer(raw, dtype=np.uint8).reshape(shape, order=order)


def _reconstruct_stub(subtype, shape, typecode):
  del shape, typecode  # numpy's placeholder arguments; the state carries the array.
  if not isinstance(subtype, _NdarrayName):
    raise _CifarRefused("numpy _reconstruct of something other than numpy.ndarray")
  return _ArrayStub()


def _dtype_stub(name, align=False, copy=False):
  del align, copy
  if name not in ("u1", b"u1"):
    raise _CifarRefused(f"numpy dtype {name!r} (only uint8 is allowed)")
  return _Uint8Dtype()


def _frombuffer_stub(buffer, dtype, shape, order):
  # numpy >= 1.23 pickles arrays this way with pickle protocol 5.
  return _uint8_array(buffer, dtype, shape, order)


def _latin1_encode(text, encoding="latin1", errors="strict"):
  # Python 3 pickles bytes with protocols 0-2 as _codecs.encode(str, 'latin1').
  if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
    raise _CifarRefused(f"_codecs.encode with encoding {encoding!r}")
  return text.encode("latin1")


# (module, name) -> stand-in. numpy 1.x names its array module numpy.core,
# numpy 2.x numpy._core; a batch may come from either.
_CIFAR_GLOBALS = {
  ("numpy.core.multiarray", "_reconstruct"): _reconstruct_stub,
  ("numpy._core.multiarray", "_reconstruct"): _reconstruct_stub,
  ("numpy.core.numeric", "_frombuffer"): _frombuffer_stub,
  ("numpy._core.numeric", "_frombuffer"): _frombuffer_stub,
  ("numpy", "ndarray"): _NdarrayName,
  ("numpy", "dtype"): _dtype_stub,
  ("_codecs", "encode"): _latin1_encode,
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
    with open(path, "rb") as f:
      batch = _CifarUnpickler(f, where).load()
  except FileNotFoundError:
    raise DataError(f"{where}: not found") from None
  except DataError:
    raise
  except _CifarRefused as e:
    raise DataError(
      f"{where}: refused to unpickle {e}: not a CIFAR-10 batch (or a crafted one)"
    ) from None
  except Exception as e:  # noqa: BLE001 - unpickling can fail in many ways; all mean "bad file".
    raise DataError(f"{where}: not a readable CIFAR-10 batch ({type(e).__name__}: {e})") from None
  if not isinstance(batch, dict):
    raise DataError(
      f"{where}: not a CIFAR-10 batch (unpickled a {type(batch).__name__}, expected a dict)"
    )
  data, labels = _dict_get(batch, "data"), _dict_get(batch, "labels")
  for key, value in (("data", data), ("labels", labels)):
    if value is None:
      raise DataError(f"{where}: CIFAR-10 batch lacks key b'{key}'")
  data, labels = _unstub(data, "data", where), _unstub(labels, "labels", where)
  data = np.asarray(data)
  plane = _CIFAR_SIDE * _CIFAR_SIDE
  if data.ndim != 2 or data.shape[1] != 3 * plane:
    raise DataError(f"{where}: b'data' must have shape [N, {3 * plane}], got {data.shape}")
  if data.dtype != np.uint8:
    if data.dtype.kind not in "iu" or (data.size and (data.min() < 0 or data.max() > 255)):
      raise DataError(f"{where}: b'data' must hold uint8 pixels, got {data.dtype}")
    data = data.astype(np.uint8)
  labels = np.asarray(labels)
  if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
    raise DataError(
      f"{where}: b'labels' must be a list of ints, got {labels.dtype} with shape {labels.shape}"
    )
  if labels.shape[0] != data.shape[0]:
    raise DataError(
      f"{where}: {data.shape[0]} images in b'data' but {labels.shape[0]} labels in b'labels'"
    )
  _check_label_range(labels, 10, where)
  # Rows are channel-first (3, 32, 32) planes; the library stores NHWC.
  images = data.reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), labels.astype(np.int32)


def _dict_get(mapping: dict, key: str):
  # Real batches unpickle with bytes keys; accept str keys from other writers.
  value = mapping.get(key.encode())
  return mapping.get(key) if value is None else value


def write_cifar_batch(
  path: str | os.PathLike,
  images_nhwc_uint8: np.ndarray,
  labels: Sequence[int],
  *,
  batch_label: str = "hpjax batch",
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
  if (
    images.dtype != np.uint8
    or images.ndim != 4
    or images.shape[1:] != (_CIFAR_SIDE, _CIFAR_SIDE, 3)
  ):
    raise ValueError(
      f"write_cifar_batch: need uint8 [N, 32, 32, 3] images, got {images.dtype} {images.shape}"
    )
  labels = [int(label) for label in labels]
  if len(labels) != images.shape[0]:
    raise ValueError(f"write_cifar_batch: {images.shape[0]} images but {len(labels)} labels")
  batch = {
    b"batch_label": batch_label.encode(),
    b"labels": labels,
    # NHWC -> one row of channel-first planes per image, as in the real files.
    b"data": np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(images.shape[0], -1),
    b"filenames": [f"image_{i:05d}.png".encode() for i in range(images.shape[0])],
  }
  with open(os.fspath(path), "wb") as f:
    # Protocol 2 is what the distributed (Python 2 era) batches use.
    pickle.dump(batch, f, protocol=2)
