"""Tests for hpjax.data: loaders, splits, normalization, file formats, errors."""

import gzip
import os
import pickle
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpjax.data import DataError
from hpjax.data import Dataset
from hpjax.data import dataset_from_arrays
from hpjax.data import DataWarning
from hpjax.data import load_dataset
from hpjax.data import read_cifar_batch
from hpjax.data import read_idx
from hpjax.data import resize_images
from hpjax.data import SOURCES
from hpjax.data import write_cifar_batch
from hpjax.data import write_idx
from hpjax.data.testing import write_fake_cifar10
from hpjax.data.testing import write_fake_mnist

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def digits():
  return load_dataset("digits")


def host(ds, name):
  return np.asarray(getattr(ds, name))


def raises_one_line(match, fn, *args, must_name=None, **kwargs):
  """Assert fn raises a single-line DataError matching `match` (and naming `must_name`)."""
  with pytest.raises(DataError, match=match) as info:
    fn(*args, **kwargs)
  message = str(info.value)
  assert "\n" not in message and message.strip() == message
  if must_name is not None:
    assert str(must_name) in message
  return message


# ---------------------------------------------------------------- digits


def test_sources_constant():
  assert SOURCES == ("digits", "mnist", "fashion_mnist", "cifar10", "npz", "diabetes", "tfds:NAME")


def test_digits_default_shapes_and_dtypes(digits):
  ds = digits
  assert isinstance(ds, Dataset)
  assert (ds.name, ds.task, ds.num_classes) == ("digits", "classification", 10)
  assert ds.input_shape == (8, 8, 1)
  assert ds.num_train + ds.num_val + ds.num_test == 1797
  assert (ds.num_val, ds.num_test) == (180, 359)
  for split in SPLITS:
    assert getattr(ds, f"x_{split}").dtype == jnp.uint8
    assert getattr(ds, f"y_{split}").dtype == jnp.int32
    assert isinstance(getattr(ds, f"x_{split}"), jax.Array)
  # 0..16 pixels are rescaled to the full 8-bit range.
  assert host(ds, "x_train").max() == 255 and host(ds, "x_train").min() == 0
  assert ds.mean.dtype == np.float32 and ds.mean.shape == (1,) and ds.std.shape == (1,)
  np.testing.assert_allclose(ds.mean, host(ds, "x_train").astype(np.float64).mean(), rtol=1e-5)
  np.testing.assert_allclose(ds.std, host(ds, "x_train").astype(np.float64).std(), rtol=1e-5)
  assert (ds.y_mean, ds.y_std) == (0.0, 1.0)
  summary = ds.summary()
  assert "\n" not in summary and "digits" in summary and "uint8" in summary and "1258" in summary


def test_digits_stratified(digits):
  all_y = np.concatenate([host(digits, f"y_{s}") for s in SPLITS])
  overall = np.bincount(all_y, minlength=10) / all_y.size
  for split in SPLITS:
    counts = np.bincount(host(digits, f"y_{split}"), minlength=10)
    assert counts.min() > 0, split
    np.testing.assert_allclose(counts / counts.sum(), overall, atol=0.01)


def test_splits_are_disjoint_and_cover_everything(digits):
  rows = np.concatenate([host(digits, f"x_{s}").reshape(-1, 64) for s in SPLITS])
  from sklearn.datasets import load_digits

  original = np.rint(load_digits().images.reshape(-1, 64) * 255 / 16).astype(np.uint8)
  # Same multiset of images (sorted row-wise), so nothing is lost or duplicated.
  key = lambda a: a[np.lexsort(a.T[::-1])]
  np.testing.assert_array_equal(key(rows), key(original))


def test_determinism(digits):
  again = load_dataset("digits", seed=0)
  for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
    np.testing.assert_array_equal(host(digits, name), host(again, name))
  other = load_dataset("digits", seed=1)
  assert not np.array_equal(host(digits, "y_test"), host(other, "y_test"))
  assert not np.array_equal(host(digits, "x_val"), host(other, "x_val"))


def test_max_train_stratified_subsample(digits):
  ds = load_dataset("digits", max_train=100)
  assert ds.num_train == 100
  assert np.bincount(host(ds, "y_train"), minlength=10).min() >= 9
  # Validation and test splits are untouched by the cap.
  np.testing.assert_array_equal(host(ds, "y_test"), host(digits, "y_test"))
  np.testing.assert_array_equal(host(ds, "y_val"), host(digits, "y_val"))


@pytest.mark.parametrize("size", [28, 32])
def test_digits_resize(size):
  ds = load_dataset("digits", image_size=size, max_train=64)
  for split in SPLITS:
    x = getattr(ds, f"x_{split}")
    assert x.dtype == jnp.uint8 and x.shape[1:] == (size, size, 1)
  assert ds.x_train.shape[0] == 64
  assert ds.input_shape == (size, size, 1)


def test_resize_images_matches_jax_linear():
  x = np.random.default_rng(0).uniform(0, 255, (3, 8, 10, 2)).astype(np.float32)
  for out in [(28, 28), (5, 4), (13, 21)]:
    ours = resize_images(x, out)
    ref = np.asarray(jax.image.resize(x, (3, *out, 2), "linear"))
    np.testing.assert_allclose(ours, ref, atol=1e-3)
  u8 = resize_images(x.astype(np.uint8), 16)
  assert u8.dtype == np.uint8 and u8.shape == (3, 16, 16, 2)
  # A constant image stays exactly constant (weights sum to 1, borders clamp).
  flat = np.full((1, 8, 8, 1), 200, np.uint8)
  assert np.all(resize_images(flat, 32) == 200)


def test_normalize_inside_jit(digits):
  z = jax.jit(digits.normalize)(digits.x_train)
  assert z.dtype == jnp.float32 and z.shape == digits.x_train.shape
  assert abs(float(z.mean())) < 1e-4
  assert abs(float(z.std()) - 1.0) < 1e-3


def test_stratification_falls_back_for_tiny_class():
  x = np.random.default_rng(0).normal(size=(60, 2)).astype(np.float32)
  y = np.r_[np.zeros(30), np.ones(29), [2]].astype(np.int64)  # class 2 has a single member
  ds = dataset_from_arrays("tiny", x, y, max_train=20)
  assert ds.num_classes == 3 and ds.num_train == 20 and ds.num_val + ds.num_test == 18


def test_constant_feature_gets_unit_std():
  x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
  x[:, 1] = 7.0
  y = np.arange(50) % 2
  ds = dataset_from_arrays("const", x, y)
  assert ds.std[1] == 1.0 and np.all(ds.std > 0)
  assert np.all(np.isfinite(np.asarray(ds.normalize(ds.x_train))))


def test_check_batch_size():
  ds = load_dataset("digits", max_train=100)
  ds.check_batch_size(100)
  raises_one_line(
    r"dataset 'digits': 100 training examples, fewer than one batch of 128",
    ds.check_batch_size,
    128,
  )
  raises_one_line("positive integer", ds.check_batch_size, 0)


# ---------------------------------------------------------------- IDX / MNIST


def test_read_idx_hand_built_header(tmp_path):
  # Built byte by byte from the format description, independent of write_idx.
  body = np.arange(12, dtype=np.uint8)
  dims = b"".join(d.to_bytes(4, "big") for d in (2, 2, 3))
  raw = bytes([0, 0, 8, 3]) + dims + body.tobytes()
  path = tmp_path / "x-idx3-ubyte"
  path.write_bytes(raw)
  np.testing.assert_array_equal(read_idx(path, ndim=3), body.reshape(2, 2, 3))
  write_idx(tmp_path / "y.gz", body.reshape(2, 2, 3))
  assert gzip.decompress((tmp_path / "y.gz").read_bytes()) == raw


@pytest.mark.parametrize("source", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("gz", [False, True])
def test_mnist_round_trip(tmp_path, source, gz):
  directory = write_fake_mnist(tmp_path, n_train=60, n_test=20, gz=gz)
  suffix = ".gz" if gz else ""
  names = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
  )
  assert sorted(os.listdir(directory)) == sorted(f"{n}{suffix}" for n in names)
  x_train = read_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", ndim=3)
  y_train = read_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", ndim=1)
  x_test = read_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", ndim=3)
  y_test = read_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", ndim=1)
  ds = load_dataset(source, data_dir=directory)
  assert ds.name == source and ds.num_classes == 10 and ds.input_shape == (28, 28, 1)
  assert ds.x_train.dtype == jnp.uint8 and ds.y_train.dtype == jnp.int32
  # The source's own test split is kept as is, in order.
  np.testing.assert_array_equal(host(ds, "x_test"), x_test[..., None])
  np.testing.assert_array_equal(host(ds, "y_test"), y_test)
  # Validation is carved from the 60 training images.
  assert (ds.num_train, ds.num_val) == (54, 6)
  y_seen = np.concatenate([host(ds, "y_train"), host(ds, "y_val")])
  np.testing.assert_array_equal(
    np.bincount(y_seen, minlength=10), np.bincount(y_train, minlength=10)
  )
  x_seen = np.concatenate([host(ds, "x_train"), host(ds, "x_val")])[..., 0]
  assert {r.tobytes() for r in x_seen} == {r.tobytes() for r in x_train}


def test_mnist_resize_to_32(tmp_path):
  ds = load_dataset("mnist", data_dir=write_fake_mnist(tmp_path), image_size=32)
  assert ds.input_shape == (32, 32, 1) and ds.x_test.dtype == jnp.uint8


# ---------------------------------------------------------------- CIFAR-10


def _write_cifar(directory, n=10, seed=0):
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  written = {}
  for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    write_cifar_batch(os.path.join(directory, name), images, labels)
    written[name] = (images, labels)
  return written


def test_cifar_batch_layout_is_channel_first_rows(tmp_path):
  images = np.zeros((2, 32, 32, 3), np.uint8)
  images[..., 0] = np.arange(32)[None, :, None]  # red varies along H
  images[..., 1] = np.arange(32)[None, None, :]  # green varies along W
  images[..., 2] = 200
  images[1] = 255 - images[0]
  write_cifar_batch(tmp_path / "b", images, [3, 7])
  with open(tmp_path / "b", "rb") as f:
    batch = pickle.load(f, encoding="bytes")
  assert set(batch) == {b"data", b"labels", b"batch_label", b"filenames"}
  data = batch[b"data"]
  assert data.dtype == np.uint8 and data.shape == (2, 3072) and batch[b"labels"] == [3, 7]
  for c in range(3):  # row = R plane, then G plane, then B plane, each row-major
    np.testing.assert_array_equal(data[:, c * 1024 : (c + 1) * 1024], images[..., c].reshape(2, -1))
  x, y = read_cifar_batch(tmp_path / "b")
  np.testing.assert_array_equal(x, images)
  np.testing.assert_array_equal(y, [3, 7])


@pytest.mark.parametrize("subfolder", [False, True])
def test_cifar10_round_trip(tmp_path, subfolder):
  written = _write_cifar(tmp_path / "cifar-10-batches-py" if subfolder else tmp_path)
  ds = load_dataset("cifar10", data_dir=tmp_path)
  assert ds.input_shape == (32, 32, 3) and ds.x_train.dtype == jnp.uint8 and ds.num_classes == 10
  np.testing.assert_array_equal(host(ds, "x_test"), written["test_batch"][0])
  np.testing.assert_array_equal(host(ds, "y_test"), written["test_batch"][1])
  assert ds.num_train + ds.num_val == 50 and ds.num_val == 5
  train_images = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
  train_labels = np.concatenate([written[f"data_batch_{i}"][1] for i in range(1, 6)])
  expected = {img.tobytes(): int(lab) for img, lab in zip(train_images, train_labels)}
  for x_name, y_name in (("x_train", "y_train"), ("x_val", "y_val")):
    for img, lab in zip(host(ds, x_name), host(ds, y_name)):
      assert expected[img.tobytes()] == lab
  assert ds.mean.shape == (3,) and ds.std.shape == (3,)


def test_write_fake_cifar10_loads(tmp_path):
  directory = write_fake_cifar10(tmp_path / "c", n_per_batch=12)
  ds = load_dataset("cifar10", data_dir=directory, image_size=16)
  assert ds.num_test == 12 and ds.num_train + ds.num_val == 60
  assert ds.input_shape == (16, 16, 3)


# ---------------------------------------------------------------- npz / diabetes


def test_npz_uint8_images_with_test(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (40, 6, 9), dtype=np.uint8)
  y = np.arange(40) % 4
  xt = rng.integers(0, 256, (8, 6, 9), dtype=np.uint8)
  yt = np.arange(8) % 4
  path = tmp_path / "img.npz"
  np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
  for ds in (load_dataset("npz", data_dir=path), load_dataset(f"npz:{path}")):
    assert ds.name == f"npz:{path}" and ds.task == "classification" and ds.num_classes == 4
    assert ds.input_shape == (6, 9, 1) and ds.x_train.dtype == jnp.uint8
    np.testing.assert_array_equal(host(ds, "x_test"), xt[..., None])
    assert (ds.num_train, ds.num_val) == (36, 4)


def test_npz_validation_arrays_are_the_validation_split(tmp_path):
  # x_val / y_val in the file are the validation split (they were ignored,
  # and one drawn from x_train instead); an array of another name is refused.
  rng = np.random.default_rng(3)
  x, xv = rng.normal(size=(40, 3)), rng.normal(size=(30, 3)) + 100.0
  y, yv = np.arange(40) % 2, np.arange(30) % 2
  path = _npz(tmp_path, x_train=x, y_train=y, x_val=xv, y_val=yv)
  ds = load_dataset(f"npz:{path}", test_fraction=0.25)
  assert (ds.num_train, ds.num_val, ds.num_test) == (30, 30, 10)
  np.testing.assert_allclose(host(ds, "x_val"), xv.astype(np.float32))
  np.testing.assert_array_equal(host(ds, "y_val"), yv)
  assert host(ds, "x_train").max() < 50  # no validation example among the training ones
  bad = _npz(tmp_path, "v.npz", x_train=x, y_train=y, x_val=xv)
  raises_one_line(r"missing array 'y_val'", load_dataset, f"npz:{bad}", must_name=bad)
  extra = _npz(tmp_path, "x.npz", x_train=x, y_train=y, x_valid=xv)
  raises_one_line(
    r"unknown array 'x_valid'; allowed: x_train, y_train, x_val, y_val, x_test, y_test",
    load_dataset,
    f"npz:{extra}",
    must_name=extra,
  )


def test_npz_float_vectors_without_test(tmp_path):
  rng = np.random.default_rng(1)
  x = rng.normal(3.0, 2.0, (100, 5))  # float64 on disk -> float32 stored
  y = (np.arange(100) % 3).astype(np.int64)
  path = tmp_path / "vec.npz"
  np.savez(path, x_train=x, y_train=y)
  ds = load_dataset("npz", data_dir=path, val_fraction=0.1, test_fraction=0.2)
  assert ds.x_train.dtype == jnp.float32 and ds.input_shape == (5,) and ds.num_classes == 3
  assert (ds.num_train, ds.num_val, ds.num_test) == (70, 10, 20)
  assert ds.mean.shape == (5,)
  z = np.asarray(ds.normalize(ds.x_train))
  np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-5)
  np.testing.assert_allclose(z.std(axis=0), 1, atol=1e-4)


def test_npz_regression(tmp_path):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(80, 4)).astype(np.float32)
  y = 50 + 10 * x[:, 0] + rng.normal(size=80)
  path = tmp_path / "reg.npz"
  np.savez(path, x_train=x, y_train=y)
  ds = load_dataset(f"npz:{path}")
  assert ds.task == "regression" and ds.num_classes == 1
  y_train = host(ds, "y_train")
  assert y_train.dtype == np.float32 and y_train.ndim == 1
  assert abs(y_train.mean()) < 1e-5 and abs(y_train.std() - 1) < 1e-4
  assert 40 < ds.y_mean < 60 and ds.y_std > 1
  # Undoing the standardization gives back original targets.
  original = np.sort(y)
  restored = np.sort(np.concatenate([host(ds, f"y_{s}") for s in SPLITS]) * ds.y_std + ds.y_mean)
  np.testing.assert_allclose(restored, original, rtol=1e-5)


def test_diabetes_regression():
  ds = load_dataset("diabetes")
  assert ds.task == "regression" and ds.num_classes == 1 and ds.input_shape == (10,)
  assert ds.num_train + ds.num_val + ds.num_test == 442
  assert (
    ds.x_train.dtype == jnp.float32 and ds.y_train.dtype == jnp.float32 and ds.y_train.ndim == 1
  )
  assert abs(float(ds.y_train.mean())) < 1e-5 and abs(float(ds.y_train.std()) - 1) < 1e-4
  assert ds.y_std > 1 and ds.mean.shape == (10,)


# ---------------------------------------------------------------- errors


def test_error_unknown_source():
  msg = raises_one_line(r"unknown dataset source 'imagenet'", load_dataset, "imagenet")
  for name in ("digits", "mnist", "fashion_mnist", "cifar10", "npz", "diabetes", "tfds:NAME"):
    assert name in msg


def test_error_tfds_not_installed(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes the import fail
  raises_one_line(
    r"source 'tfds:mnist' needs tensorflow-datasets, which is not installed "
    r"\(pip install tensorflow-datasets\)",
    load_dataset,
    "tfds:mnist",
  )


def test_error_data_dir_missing_or_absent(tmp_path):
  raises_one_line(r"source 'mnist' needs data_dir", load_dataset, "mnist")
  raises_one_line(r"source 'cifar10' needs data_dir", load_dataset, "cifar10")
  raises_one_line(r"source 'npz' needs a file", load_dataset, "npz")
  absent = tmp_path / "nope"
  raises_one_line("not found", load_dataset, "mnist", data_dir=absent, must_name=absent)
  raises_one_line("not found", load_dataset, f"npz:{absent}.npz", must_name=absent)


def test_error_mnist_missing_file(tmp_path):
  write_fake_mnist(tmp_path)
  os.remove(tmp_path / "t10k-labels-idx1-ubyte")
  msg = raises_one_line(
    r"t10k-labels-idx1-ubyte", load_dataset, "mnist", data_dir=tmp_path, must_name=tmp_path
  )
  assert "t10k-labels-idx1-ubyte.gz" in msg  # says which names it looked for


def test_error_idx_wrong_magic(tmp_path):
  write_fake_mnist(tmp_path)
  path = tmp_path / "train-images-idx3-ubyte"
  raw = bytearray(path.read_bytes())
  raw[3] = 2  # claims a 2-D file
  path.write_bytes(bytes(raw))
  raises_one_line(
    r"magic number 0x00000802, expected 0x00000803",
    load_dataset,
    "mnist",
    data_dir=tmp_path,
    must_name=path,
  )


def test_error_idx_truncated(tmp_path):
  write_fake_mnist(tmp_path, gz=True)
  path = tmp_path / "t10k-images-idx3-ubyte.gz"
  data = gzip.decompress(path.read_bytes())[:-100]
  path.write_bytes(gzip.compress(data))
  raises_one_line(r"truncated IDX data", load_dataset, "mnist", data_dir=tmp_path, must_name=path)


def test_error_mnist_count_mismatch(tmp_path):
  write_fake_mnist(tmp_path, n_train=60)
  labels = tmp_path / "train-labels-idx1-ubyte"
  write_idx(labels, read_idx(labels, ndim=1)[:59])
  raises_one_line(
    r"60 images in .* but 59 labels in", load_dataset, "mnist", data_dir=tmp_path, must_name=labels
  )


def test_error_mnist_label_out_of_range(tmp_path):
  write_fake_mnist(tmp_path)
  labels = tmp_path / "t10k-labels-idx1-ubyte"
  y = read_idx(labels, ndim=1)
  y[0] = 10
  write_idx(labels, y)
  raises_one_line(
    r"labels out of range \[0, 9\] \(found 10\)",
    load_dataset,
    "mnist",
    data_dir=tmp_path,
    must_name=labels,
  )


def test_error_cifar_missing_batch_and_bad_labels(tmp_path):
  _write_cifar(tmp_path, n=4)
  os.remove(tmp_path / "data_batch_3")
  raises_one_line(
    r"missing data_batch_3", load_dataset, "cifar10", data_dir=tmp_path, must_name=tmp_path
  )
  write_cifar_batch(tmp_path / "data_batch_3", np.zeros((4, 32, 32, 3), np.uint8), [0, 1, 2, 11])
  raises_one_line(
    r"labels out of range", load_dataset, "cifar10", data_dir=tmp_path, must_name="data_batch_3"
  )


def _npz(tmp_path, name="d.npz", **arrays):
  path = tmp_path / name
  np.savez(path, **arrays)
  return path


def test_error_npz_missing_key(tmp_path):
  x = np.zeros((10, 3), np.float32)
  path = _npz(tmp_path, x_train=x)
  raises_one_line(r"missing array 'y_train'", load_dataset, f"npz:{path}", must_name=path)
  path = _npz(tmp_path, "e.npz", x_train=x, y_train=np.arange(10) % 2, x_test=x)
  raises_one_line(r"missing array 'y_test'", load_dataset, "npz", data_dir=path, must_name=path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_error_nan_inf_in_x(tmp_path, bad):
  x = np.ones((20, 3), np.float32)
  x[5, 1] = bad
  path = _npz(tmp_path, x_train=x, y_train=np.arange(20) % 2)
  raises_one_line(r"x_train contains NaN/inf values", load_dataset, f"npz:{path}", must_name=path)


def test_error_nan_inf_in_y_and_test(tmp_path):
  x = np.ones((20, 3), np.float32)
  y = np.linspace(0, 1, 20)
  y[3] = np.nan
  path = _npz(tmp_path, x_train=x, y_train=y)
  raises_one_line(r"y_train contains NaN/inf values", load_dataset, f"npz:{path}", must_name=path)
  xt = np.ones((5, 3), np.float32)
  xt[0, 0] = np.inf
  path = _npz(
    tmp_path, "f.npz", x_train=x, y_train=np.arange(20) % 2, x_test=xt, y_test=np.arange(5) % 2
  )
  raises_one_line(r"x_test contains NaN/inf values", load_dataset, f"npz:{path}", must_name=path)


def test_error_npz_bad_labels_counts_and_empty(tmp_path):
  x = np.zeros((10, 3), np.float32)
  path = _npz(tmp_path, "neg.npz", x_train=x, y_train=np.array([0, 1, -1, 0, 1, 0, 1, 0, 1, 0]))
  raises_one_line(r"negative label -1", load_dataset, f"npz:{path}", must_name=path)
  path = _npz(tmp_path, "count.npz", x_train=x, y_train=np.arange(9) % 2)
  raises_one_line(
    r"x_train has 10 examples but y_train has 9", load_dataset, f"npz:{path}", must_name=path
  )
  path = _npz(
    tmp_path, "empty.npz", x_train=np.zeros((0, 3), np.float32), y_train=np.zeros(0, np.int64)
  )
  raises_one_line(r"x_train is empty", load_dataset, f"npz:{path}", must_name=path)
  path = _npz(
    tmp_path, "nchw.npz", x_train=np.zeros((10, 3, 16, 16), np.uint8), y_train=np.arange(10) % 2
  )
  raises_one_line(r"channel-first", load_dataset, f"npz:{path}", must_name=path)
  bad = tmp_path / "junk.npz"
  bad.write_bytes(b"not a zip file at all")
  raises_one_line(r"not a NumPy \.npz file", load_dataset, f"npz:{bad}", must_name=bad)


def test_error_bad_options():
  raises_one_line("val_fraction", load_dataset, "digits", val_fraction=0.0)
  raises_one_line("test_fraction", load_dataset, "digits", test_fraction=1.0)
  raises_one_line("image_size", load_dataset, "digits", image_size=4)
  raises_one_line("max_train", load_dataset, "digits", max_train=0)
  raises_one_line(
    r"source 'diabetes': image_size applies to image data only",
    load_dataset,
    "diabetes",
    image_size=28,
  )
  raises_one_line("too few", load_dataset, "digits", val_fraction=0.5, test_fraction=0.5)


def test_data_error_folds_newlines():
  err = DataError("file x: line one\nline two")
  assert str(err) == "file x: line one line two" and isinstance(err, ValueError)


# ---------------------------------------------------------------- classes, tasks, npz kinds


def _vectors(n=50, seed=0):
  return np.random.default_rng(seed).normal(size=(n, 3)).astype(np.float32)


def test_error_classes_must_be_contiguous_without_num_classes(tmp_path):
  x = _vectors()
  # All labels 7: once an 8-way classifier with 'test accuracy 1.0000'.
  path = _npz(tmp_path, "sevens.npz", x_train=x, y_train=np.full(50, 7))
  raises_one_line(
    r"classes must be 0\.\.K-1 with every class present; missing 0\.\.6 \(7 of 8; present: 7\)",
    load_dataset,
    f"npz:{path}",
    must_name=path,
  )
  # A single class is an error even where it is class 0 or num_classes allows absent classes.
  raises_one_line(
    r"a single class \(label 0\); classification needs at least 2",
    dataset_from_arrays,
    "zeros",
    x,
    np.zeros(50, np.int64),
  )
  raises_one_line(
    r"a single class \(label 7\)", load_dataset, f"npz:{path}", num_classes=10, must_name=path
  )
  # One stray label: once a 100001-way output without a word.
  y = np.arange(50) % 10
  y[3] = 100000
  msg = raises_one_line(
    r"classes must be 0\.\.K-1 with every class present; missing 10\.\.99999",
    dataset_from_arrays,
    "stray",
    x,
    y,
  )
  assert "present: 0..9, 100000" in msg and "give num_classes" in msg and "dataset 'stray'" in msg
  # Labels 1..3 (an off-by-one export): class 0 missing.
  path = _npz(tmp_path, "offset.npz", x_train=x, y_train=np.arange(50) % 3 + 1)
  raises_one_line(
    r"missing 0 \(1 of 4; present: 1\.\.3\)", load_dataset, "npz", data_dir=path, must_name=path
  )
  # The test split counts too: a class only in y_test is still a class.
  path = _npz(
    tmp_path,
    "split.npz",
    x_train=x,
    y_train=np.arange(50) % 2,
    x_test=x[:4],
    y_test=np.array([0, 1, 3, 3]),
  )
  raises_one_line(
    r"y_train/y_test: classes must be .* missing 2 ", load_dataset, f"npz:{path}", must_name=path
  )


def test_num_classes_allows_absent_classes_and_bounds_labels():
  x = _vectors()
  expected = r"dataset 'wide': classes of 0\.\.11 missing from splits \(no split has 10, 11"
  with pytest.warns(DataWarning, match=expected):
    ds = dataset_from_arrays("wide", x, np.arange(50) % 10, num_classes=12)
  assert ds.num_classes == 12 and ds.task == "classification"
  raises_one_line(
    r"label 12 is out of range for num_classes=12 \(labels must be 0\.\.11\)",
    dataset_from_arrays,
    "over",
    x,
    np.arange(50) % 13,
    num_classes=12,
  )
  raises_one_line(
    r"a single class \(label 0\)", dataset_from_arrays, "one", x, np.zeros(50, int), num_classes=3
  )
  raises_one_line(
    r"num_classes must be an int >= 2",
    dataset_from_arrays,
    "n",
    x,
    np.arange(50) % 2,
    num_classes=1,
  )
  raises_one_line(
    r"source 'digits': has 10 classes; num_classes=12 does not apply",
    load_dataset,
    "digits",
    num_classes=12,
  )
  raises_one_line(r"source 'diabetes': is regression data", load_dataset, "diabetes", num_classes=3)


def test_split_lacking_a_class_warns():
  x = _vectors(60)
  # Class 2 has one member: one split only.
  y = np.r_[np.zeros(30), np.ones(29), [2]].astype(np.int64)
  with pytest.warns(DataWarning) as record:
    ds = dataset_from_arrays("tiny", x, y, seed=0)
  assert ds.num_classes == 3
  (warning,) = [w for w in record if issubclass(w.category, DataWarning)]
  message = str(warning.message)
  assert "dataset 'tiny'" in message and "lacks 2" in message and "\n" not in message
  assert warning.filename == __file__  # points at the caller, not at hpjax/data.py
  with warnings.catch_warnings():
    warnings.simplefilter("error", DataWarning)
    dataset_from_arrays("balanced", x, np.arange(60) % 3)  # every split has every class: no warning


def test_float_labels_task_rule(tmp_path):
  x = _vectors()
  whole = (np.arange(50) % 3).astype(np.float64)
  path = _npz(tmp_path, "float_labels.npz", x_train=x, y_train=whole)
  # Default: float means regression, but whole numbers only get a warning naming the file.
  with pytest.warns(
    DataWarning, match=r"y is float but holds only whole numbers \(0\.\.2\)"
  ) as record:
    ds = load_dataset(f"npz:{path}")
  assert ds.task == "regression" and str(path) in str(record[0].message)
  ds = load_dataset(f"npz:{path}", task="classification")
  assert ds.task == "classification" and ds.num_classes == 3 and ds.y_train.dtype == jnp.int32
  assert ds.num_classes == 3 and load_dataset(f"npz:{path}", num_classes=4).num_classes == 4
  with warnings.catch_warnings():
    warnings.simplefilter("error", DataWarning)
    assert load_dataset(f"npz:{path}", task="regression").task == "regression"
    # Targets with fractions are plainly regression: no warning.
    assert dataset_from_arrays("reg", x, whole + 0.25).task == "regression"
  assert dataset_from_arrays("ints", x, np.arange(50) % 3, task="regression").task == "regression"
  raises_one_line(
    r"y_train holds 0\.5, not a whole number, but task is 'classification'",
    dataset_from_arrays,
    "half",
    x,
    whole + 0.5,
    task="classification",
  )
  raises_one_line(
    r"task must be one of auto, classification, regression", load_dataset, "digits", task="cls"
  )
  raises_one_line(
    r"source 'digits': is classification data; task='regression' does not apply",
    load_dataset,
    "digits",
    task="regression",
  )
  path = _npz(
    tmp_path, "mixed.npz", x_train=x, y_train=np.arange(50) % 3, x_test=x[:3], y_test=whole[:3]
  )
  raises_one_line(
    r"y_train means classification but y_test means regression .*task=",
    load_dataset,
    f"npz:{path}",
    must_name=path,
  )


def test_error_npz_wrong_kinds_of_file(tmp_path):
  text = tmp_path / "notes.npz"
  text.write_text("x_train,y_train\n1,2\n")
  msg = raises_one_line(r"not a NumPy \.npz file", load_dataset, f"npz:{text}", must_name=text)
  assert "pickle" not in msg  # once: "Cannot load file containing pickled data"
  npy = tmp_path / "renamed.npz"
  with open(npy, "wb") as f:
    np.save(f, _vectors())
  # Once: "'numpy.ndarray' object does not support the context manager protocol".
  raises_one_line(
    r"not an \.npz archive \(a plain \.npy array\?\)", load_dataset, f"npz:{npy}", must_name=npy
  )
  pickled = tmp_path / "pickled.npz"
  pickled.write_bytes(pickle.dumps({"x_train": [1]}))
  raises_one_line(
    r"not a NumPy \.npz file.*a pickle, which is never loaded",
    load_dataset,
    f"npz:{pickled}",
    must_name=pickled,
  )


def test_tfds_declared_class_count(monkeypatch):
  class Label:
    num_classes = 5

  class Info:
    features = {"label": Label()}

  def fake_tfds(labels):
    def load(name, **kwargs):
      del name, kwargs
      images = np.zeros((len(labels), 8, 8, 1), np.uint8)
      return {"train": {"image": images, "label": np.asarray(labels)}}, Info()

    return type(sys)("tensorflow_datasets"), load

  module, load = fake_tfds(np.arange(40) % 3)  # classes 3 and 4 absent: fine, 5 are declared
  module.load, module.as_numpy = load, lambda splits: splits
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)
  with pytest.warns(DataWarning, match="no split has 3, 4"):
    assert load_dataset("tfds:fake").num_classes == 5
  module.load = fake_tfds(np.arange(40) % 7)[1]  # label 6 beyond the declared 5 classes
  raises_one_line(
    r"source 'tfds:fake': y_train: label 6 is out of range for num_classes=5",
    load_dataset,
    "tfds:fake",
  )


def test_error_cifar_single_class(tmp_path):
  _write_cifar(tmp_path, n=4)
  for name in (
    "data_batch_1",
    "data_batch_2",
    "data_batch_3",
    "data_batch_4",
    "data_batch_5",
    "test_batch",
  ):
    write_cifar_batch(tmp_path / name, np.zeros((4, 32, 32, 3), np.uint8), [3, 3, 3, 3])
  raises_one_line(
    r"source 'cifar10': labels: a single class \(label 3\)",
    load_dataset,
    "cifar10",
    data_dir=tmp_path,
  )


# ---------------------------------------------------------------- a given validation split


def _labelled(n, seed, k=3):
  return _vectors(n, seed), np.arange(n) % k


def test_given_val_and_test_splits_are_used_as_they_are():
  (x, y), (xv, yv), (xt, yt) = _labelled(60, 0), _labelled(12, 1), _labelled(15, 2)
  ds = dataset_from_arrays("given", x, y, xt, yt, x_val=xv, y_val=yv, val_fraction=0.5)
  # Nothing is drawn from the training arrays: every example trains, in its order.
  assert (ds.num_train, ds.num_val, ds.num_test) == (60, 12, 15)
  np.testing.assert_array_equal(host(ds, "x_train"), x)
  np.testing.assert_array_equal(host(ds, "y_train"), y)
  np.testing.assert_array_equal(host(ds, "x_val"), xv)
  np.testing.assert_array_equal(host(ds, "y_val"), yv)
  np.testing.assert_array_equal(host(ds, "x_test"), xt)
  assert host(ds, "y_val").dtype == np.int32 and ds.num_classes == 3
  # Statistics come from the training split alone.
  np.testing.assert_allclose(ds.mean, x.mean(axis=0), rtol=1e-5, atol=1e-6)


def test_given_val_split_and_a_drawn_test_split():
  (x, y), (xv, yv) = _labelled(60, 0), _labelled(12, 1)
  ds = dataset_from_arrays("val_only", x, y, x_val=xv, y_val=yv, seed=3)
  np.testing.assert_array_equal(host(ds, "x_val"), xv)
  # The test split is test_fraction of the training arrays; the rest trains.
  assert (ds.num_train, ds.num_val, ds.num_test) == (48, 12, 12)
  rows = {tuple(r) for r in np.concatenate([host(ds, "x_train"), host(ds, "x_test")])}
  assert rows == {tuple(r) for r in x}
  assert sorted(np.bincount(host(ds, "y_test"))) == [4, 4, 4]  # stratified
  again = dataset_from_arrays("val_only", x, y, x_val=xv, y_val=yv, seed=3, val_fraction=0.5)
  np.testing.assert_array_equal(host(again, "x_test"), host(ds, "x_test"))  # val_fraction unused


def test_given_val_split_dtypes_and_regression_targets():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)
  labels = np.arange(40) % 2
  val = rng.integers(0, 256, (10, 8, 8), dtype=np.uint8)
  ds = dataset_from_arrays("u8", images, labels, x_val=val, y_val=np.arange(10) % 2)
  assert ds.x_val.dtype == np.uint8 and ds.x_val.shape == (10, 8, 8, 1)
  # One stored dtype per dataset: a float split makes every split float32
  # (this one, divided by 255 where x_train is not, is also flagged).
  with pytest.warns(DataWarning, match="scaled differently"):
    ds = dataset_from_arrays("mixed", images, labels, x_val=val / 255.0, y_val=np.arange(10) % 2)
  assert {a.dtype for a in (ds.x_train, ds.x_val, ds.x_test)} == {np.dtype(np.float32)}
  # Regression: the given targets are standardized with the training split's statistics.
  x, xv = _vectors(50, 0), _vectors(10, 1)
  y, yv = rng.normal(5.0, 2.0, 50), rng.normal(5.0, 2.0, 10)
  ds = dataset_from_arrays("reg", x, y, x_val=xv, y_val=yv)
  assert ds.task == "regression" and ds.num_val == 10
  np.testing.assert_allclose(host(ds, "y_val"), (yv - ds.y_mean) / ds.y_std, rtol=1e-5, atol=1e-6)


def test_given_val_split_is_checked_like_the_training_arrays():
  x, y = _labelled(60, 0)
  xv, yv = _labelled(12, 1)

  def check(match, name, **kwargs):
    message = raises_one_line(match, dataset_from_arrays, "given", x, y, **kwargs)
    assert name in message and message.startswith("dataset 'given': ")

  check(r"x_val is given but y_val is not \(give both or neither\)", "x_val", x_val=xv)
  check(r"y_val is given but x_val is not", "y_val", y_val=yv)
  check(r"y_test is given but x_test is not", "y_test", y_test=yv)
  check(
    r"x_val example shape \(2,\) differs from x_train \(3,\)", "x_val", x_val=xv[:, :2], y_val=yv
  )
  check(r"x_val has 12 examples but y_val has 11", "x_val", x_val=xv, y_val=yv[:11])
  check(r"x_val has unsupported dtype", "x_val", x_val=xv.astype(str), y_val=yv)
  check(r"x_val is empty", "x_val", x_val=xv[:0], y_val=yv[:0])
  check(
    r"x_val contains NaN/inf values \(1 of 36\)",
    "x_val",
    x_val=np.where(xv == xv[0, 0], np.nan, xv),
    y_val=yv,
  )
  check(r"y_val must have shape \[N\]", "y_val", x_val=xv, y_val=np.stack([yv, yv], 1))
  check(
    r"y_train means classification but y_val means regression",
    "y_val",
    x_val=xv,
    y_val=yv + 0.5,
  )
  check(r"y_val: negative label -1", "y_val", x_val=xv, y_val=yv - 1)
  check(
    r"y_val: label 5 is out of range for num_classes=3",
    "y_val",
    x_val=xv,
    y_val=np.r_[yv[:-1], 5],
    num_classes=3,
  )
  check(
    r"y_train/y_val: classes must be 0\.\.K-1 with every class present; missing 3",
    "y_val",
    x_val=xv,
    y_val=np.r_[yv[:-1], 4],
  )


def test_tune_data_dict_takes_a_validation_split():
  from hpjax import tuner  # pylint: disable=g-import-not-at-top

  (x, y), (xv, yv) = _labelled(60, 0), _labelled(12, 1)
  ds = tuner._dataset({"x_train": x, "y_train": y, "x_val": xv, "y_val": yv}, seed=0)
  np.testing.assert_array_equal(host(ds, "x_val"), xv)
  assert (ds.num_train, ds.num_test) == (48, 12)


def test_splits_given_in_different_units_are_flagged():
  # uint8 training images with a test split already divided by 255: each
  # split is normalized with x_train's statistics, so the test inputs would
  # all sit near one value and score near chance, without a word.
  rng = np.random.default_rng(5)
  x = rng.integers(0, 256, (40, 4, 4), dtype=np.uint8)
  y = np.arange(40) % 2
  xt = rng.integers(0, 256, (10, 4, 4), dtype=np.uint8)
  yt = np.arange(10) % 2
  with pytest.warns(
    DataWarning, match=r"x_train holds integers up to \d+ but x_test floats within"
  ):
    dataset_from_arrays("mixed", x, y, xt.astype(np.float32) / 255.0, yt)
  with warnings.catch_warnings():
    warnings.simplefilter("error", DataWarning)
    dataset_from_arrays("same", x, y, xt.astype(np.float32), yt)  # same units: no note
