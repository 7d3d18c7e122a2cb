"""Tiny fake datasets in the real on-disk formats, for tests and smoke runs.

:func:`write_fake_mnist` and :func:`write_fake_cifar10` write a few learnable
images as the standard MNIST IDX files and CIFAR-10 python batches, so tests
(and experiments that need a copy of a file-based dataset) exercise the real
parsers without any download. Not part of :mod:`hpjax.data`'s public API.
"""

from __future__ import annotations

import os

import numpy as np

from hpjax.data.formats import _CIFAR_SIDE
from hpjax.data.formats import write_cifar_batch
from hpjax.data.formats import write_idx
from hpjax.data.sources import _CIFAR_TEST
from hpjax.data.sources import _CIFAR_TRAIN


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
  directory, rng = _start(directory, seed)
  suffix = ".gz" if gz else ""
  for split, n in (("train", n_train), ("test", n_test)):
    images, labels = _fake_images(n, 28, 28, 1, rng)
    prefix = "train" if split == "train" else "t10k"
    write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte{suffix}"), images[..., 0])
    write_idx(
      os.path.join(directory, f"{prefix}-labels-idx1-ubyte{suffix}"), labels.astype(np.uint8)
    )
  return directory


def write_fake_cifar10(
  directory: str | os.PathLike, n_per_batch: int = 12, *, seed: int = 0
) -> str:
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
  directory, rng = _start(directory, seed)
  for i, name in enumerate(_CIFAR_TRAIN + (_CIFAR_TEST,)):
    images, labels = _fake_images(n_per_batch, _CIFAR_SIDE, _CIFAR_SIDE, 3, rng)
    label = "testing batch 1 of 1" if name == _CIFAR_TEST else f"training batch {i + 1} of 5"
    write_cifar_batch(os.path.join(directory, name), images, labels, batch_label=label)
  return directory


def _start(directory: str | os.PathLike, seed: int) -> tuple[str, np.random.Generator]:
  """The directory, created if needed, as a string, and the generator of its images."""
  directory = os.fspath(directory)
  os.makedirs(directory, exist_ok=True)
  return directory, np.random.default_rng(seed)


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
