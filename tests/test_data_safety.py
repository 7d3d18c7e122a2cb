"""Data files never run code: crafted CIFAR-10 pickles are refused, real ones load.

A CIFAR-10 python batch is a pickle, and a pickle can call any importable
function while it loads. These tests write batches whose unpickling would
create a marker file (through ``os.system``) and check that neither the
loader nor the real launcher runs it, and that it is reported in one line
naming the file and the refused global. They also check that batches in the
real format (Python 2 / numpy 1.x names, ``encoding='bytes'`` keys) and the
ones :func:`hpjax.data.write_cifar_batch` writes still load.
"""

import os
import pickle
import shlex
import struct
import subprocess
import sys

import numpy as np
import pytest

from hpjax.data import DataError
from hpjax.data import load_dataset
from hpjax.data import read_cifar_batch
from hpjax.data import write_cifar_batch
from hpjax.data.testing import write_fake_cifar10

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR_CONFIG = os.path.join(ROOT, "experiments", "configs", "cifar10_pbt.py")
BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


class _CreatesFile:
  """Unpickles into a call of os.system that creates ``marker``."""

  def __init__(self, marker):
    self.marker = os.fspath(marker)

  def __reduce__(self):
    return (os.system, (f"touch {shlex.quote(self.marker)}",))


def _write_crafted_cifar(directory, marker, slot="labels"):
  """A CIFAR-10 directory whose every batch runs ``touch marker`` when unpickled.

  ``slot`` is the dict entry that holds the payload: ``'labels'`` (the old
  loader then fails right after running it, so the launcher stops fast) or
  ``'batch_label'`` (the batch is otherwise valid and loads).
  """
  write_fake_cifar10(directory, n_per_batch=12)
  for name in BATCHES:
    path = os.path.join(directory, name)
    with open(path, "rb") as f:
      batch = pickle.load(f, encoding="bytes")  # Our own file, just written.
    batch[slot.encode()] = _CreatesFile(marker)
    with open(path, "wb") as f:
      pickle.dump(batch, f, protocol=2)
  return directory


def _py2_batch(data, labels, batch_label=b"training batch 1 of 5"):
  """The bytes Python 2's cPickle (protocol 2) wrote for the real batches.

  The distributed files were written by Python 2 with numpy 1.x: keys and
  pixel data are Python 2 ``str`` (opcodes U / T, loaded as bytes with
  ``encoding='bytes'``), and the array is rebuilt through
  ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and
  ``numpy.dtype``. Python 3 cannot write that, so it is assembled here.
  """

  def py2_str(b):
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b

  def py_int(n):
    if 0 <= n < 256:
      return b"K" + bytes([n])
    if 0 <= n < 65536:
      return b"M" + struct.pack("<H", n)
    return b"J" + struct.pack("<i", n)

  # Opcodes: c GLOBAL, ( MARK, t / \x85 / \x86 / \x87 TUPLE / 1 / 2 / 3, R REDUCE,
  # b BUILD, N None, \x89 False, ] EMPTY_LIST, e APPENDS, } EMPTY_DICT,
  # u SETITEMS, . STOP.
  n, width = data.shape
  array = b"".join(
    [
      # _reconstruct(ndarray, (0,), 'b'), then BUILD with its state
      # (1, (n, width), dtype('u1', 0, 1) with the dtype's own state, False, raw bytes).
      b"cnumpy.core.multiarray\n_reconstruct\n",
      b"cnumpy\nndarray\n" + py_int(0) + b"\x85" + py2_str(b"b") + b"\x87R",
      b"(" + py_int(1) + py_int(n) + py_int(width) + b"\x86",
      b"cnumpy\ndtype\n" + py2_str(b"u1") + py_int(0) + py_int(1) + b"\x87R",
      b"(" + py_int(3) + py2_str(b"|") + b"NNN" + py_int(-1) + py_int(-1) + py_int(0) + b"tb",
      b"\x89" + py2_str(data.tobytes()) + b"tb",
    ]
  )
  label_list = b"]" + b"(" + b"".join(py_int(int(v)) for v in labels) + b"e"
  filenames = b"]" + b"(" + b"".join(py2_str(f"img_{i}.png".encode()) for i in range(n)) + b"e"
  items = [
    py2_str(b"data") + array,
    py2_str(b"labels") + label_list,
    py2_str(b"batch_label") + py2_str(batch_label),
    py2_str(b"filenames") + filenames,
  ]
  return b"\x80\x02}(" + b"".join(items) + b"u."


def _fake_rows(n, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (n, 3072), dtype=np.uint8), (np.arange(n) % 10)[rng.permutation(n)]


# ---------------------------------------------------------------- crafted files


@pytest.mark.parametrize("slot", ["labels", "batch_label"])
def test_loader_refuses_crafted_batch_and_runs_nothing(tmp_path, slot):
  marker = tmp_path / "PWNED"
  directory = _write_crafted_cifar(tmp_path / "cifar", marker, slot)
  with pytest.raises(DataError) as info:
    load_dataset("cifar10", data_dir=directory)
  message = str(info.value)
  assert not marker.exists(), "unpickling the crafted batch ran its command"
  assert "\n" not in message
  # The first file read is data_batch_1; the global is os.system (posix.system on Linux).
  assert os.path.join(directory, "data_batch_1") in message
  assert f"refused to unpickle global '{os.system.__module__}.system'" in message


def test_launcher_refuses_crafted_batch_and_runs_nothing(tmp_path):
  marker = tmp_path / "PWNED"
  directory = _write_crafted_cifar(tmp_path / "cifar", marker)
  workdir = tmp_path / "run"
  # The launcher environment of tests/test_launcher.py: CPU, the suite's cache.
  cache = os.environ.get("HPJAX_TEST_CACHE_DIR", os.path.join(ROOT, ".jax_cache"))
  env = dict(os.environ, HPJAX_CACHE_MIN_SECS="0", HPJAX_CACHE_DIR=cache, JAX_PLATFORMS="cpu")
  r = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.tune",
      f"--config={CIFAR_CONFIG}",
      f"--config.data.data_dir={directory}",
      f"--workdir={workdir}",
      # Small, so that a loader that does run the payload also gets
      # through (or out of) training quickly.
      "--config.report=False",
      "--config.population=2",
      "--config.epochs=2",
      "--config.batch_size=16",
      "--config.model.width=4",
      "--config.model.depth=1",
      "--config.model.convs_per_stage=1",
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert not marker.exists(), "the launcher ran the crafted batch's command"
  assert r.returncode != 0, r.stdout[-2000:]
  errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, r.stderr[-3000:]
  assert os.path.join(directory, "data_batch_1") in errors[0]
  assert f"'{os.system.__module__}.system'" in errors[0]
  assert not workdir.exists()  # Data is checked before the workdir is touched.


def test_refused_globals_and_dtypes_name_the_file(tmp_path):
  rows, labels = _fake_rows(4)
  cases = {
    # A global outside the allowed set, anywhere in the file (protocol 2
    # writes Python 3's builtins under their Python 2 name).
    "global '__builtin__.eval'": {b"data": rows, b"labels": labels.tolist(), b"x": eval},
    # numpy scalars are not part of the format (labels are Python ints).
    "multiarray.scalar'": {b"data": rows, b"labels": list(labels)},
    # numpy's array reconstruction is allowed, but only for uint8 data.
    "dtype 'f8'": {b"data": rows.astype(np.float64), b"labels": labels.tolist()},
    "dtype 'O8'": {b"data": rows, b"labels": np.array(labels.tolist(), dtype=object)},
  }
  for expected, batch in cases.items():
    path = tmp_path / "batch"
    with open(path, "wb") as f:
      pickle.dump(batch, f, protocol=2)
    with pytest.raises(DataError, match="refused to unpickle") as info:
      read_cifar_batch(path)
    message = str(info.value)
    assert expected in message and str(path) in message and "\n" not in message


# ---------------------------------------------------------------- real formats still load


def test_python2_format_batch_loads_like_pickle_load(tmp_path):
  rows, labels = _fake_rows(7)
  path = tmp_path / "data_batch_1"
  path.write_bytes(_py2_batch(rows, labels))
  # The reference: what the standard unpickler makes of it, keys as bytes.
  with open(path, "rb") as f:
    reference = pickle.load(f, encoding="bytes")
  assert set(reference) == {b"data", b"labels", b"batch_label", b"filenames"}
  assert (
    reference[b"data"].dtype == np.uint8 and reference[b"batch_label"] == b"training batch 1 of 5"
  )
  np.testing.assert_array_equal(reference[b"data"], rows)
  x, y = read_cifar_batch(path)
  np.testing.assert_array_equal(x, rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
  np.testing.assert_array_equal(y, labels)
  assert x.dtype == np.uint8 and y.dtype == np.int32


def test_python2_format_directory_loads(tmp_path):
  directory = tmp_path / "cifar-10-batches-py"
  directory.mkdir()
  for i, name in enumerate(BATCHES):
    rows, labels = _fake_rows(20, seed=i)
    (directory / name).write_bytes(_py2_batch(rows, labels))
  ds = load_dataset("cifar10", data_dir=tmp_path)
  assert ds.num_classes == 10 and ds.num_test == 20 and ds.num_train + ds.num_val == 100


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("keys", ["bytes", "str"])
def test_python3_pickles_of_batches_load(tmp_path, protocol, keys):
  images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
  write_cifar_batch(tmp_path / "ours", images, [0, 1, 2, 3, 4])
  np.testing.assert_array_equal(read_cifar_batch(tmp_path / "ours")[0], images)
  with open(tmp_path / "ours", "rb") as f:
    batch = pickle.load(f, encoding="bytes")
  if keys == "str":
    batch = {k.decode(): v for k, v in batch.items()}
  with open(tmp_path / "again", "wb") as f:
    pickle.dump(batch, f, protocol=protocol)  # protocol 5: numpy's _frombuffer path
  x, y = read_cifar_batch(tmp_path / "again")
  np.testing.assert_array_equal(x, images)
  np.testing.assert_array_equal(y, [0, 1, 2, 3, 4])


# ---------------------------------------------------------------- npz never unpickles


def test_npz_with_object_array_is_refused_without_unpickling(tmp_path):
  marker = tmp_path / "PWNED"
  path = tmp_path / "d.npz"
  y = np.empty(4, dtype=object)
  y[:] = [_CreatesFile(marker)] * 4
  np.savez(path, x_train=np.zeros((4, 3), np.float32), y_train=y)
  with pytest.raises(DataError, match=r"array 'y_train' holds Python objects") as info:
    load_dataset(f"npz:{path}")
  assert str(path) in str(info.value) and not marker.exists()
