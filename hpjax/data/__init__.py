"""Datasets for hpjax: load, validate, split, and normalize.

Everything a population-based tuning run needs from its data lives here:

* :func:`load_dataset` reads one of the supported sources (:data:`SOURCES`),
  checks it, splits it into train / validation / test (seeded, stratified for
  classification), optionally resizes images and caps the training set, and
  returns a :class:`Dataset` whose arrays sit on the accelerator already;
  :func:`dataset_from_arrays` does the same for in-memory arrays, with the
  validation and test splits given or drawn (:mod:`hpjax.data.sources`).
* :class:`Dataset` carries the splits plus the training split's per-channel
  (images) or per-feature (vectors) mean and standard deviation, so that
  :meth:`Dataset.normalize` can run inside ``jax.jit``; :class:`DataError`
  (one line naming the file or source) and :class:`DataWarning` report bad
  or doubtful input (:mod:`hpjax.data.dataset`).
* :class:`Stream` is training data larger than the device: an iterable of
  host batches per epoch (a tf.data or grain pipeline, a generator), put on
  the device ahead of the step that trains on them, with the validation and
  test splits in memory (:mod:`hpjax.data.stream`).
* :func:`read_idx`, :func:`write_idx`, :func:`read_cifar_batch` and
  :func:`write_cifar_batch` read and write the real on-disk formats
  (:mod:`hpjax.data.formats`); :mod:`hpjax.data.testing` writes tiny fake
  MNIST and CIFAR-10 copies with them, for tests.

No file this package parses can run code: CIFAR-10's pickles go through an
unpickler that resolves only the few numpy names the real batches use (uint8
arrays only), ``.npz`` files are read with ``allow_pickle=False`` and IDX
files are parsed byte by byte. (``tfds:NAME`` is left to TensorFlow Datasets.)
"""

from hpjax.data.dataset import DataError
from hpjax.data.dataset import Dataset
from hpjax.data.dataset import DataWarning
from hpjax.data.dataset import normalize
from hpjax.data.dataset import resize_images
from hpjax.data.formats import read_cifar_batch
from hpjax.data.formats import read_idx
from hpjax.data.formats import write_cifar_batch
from hpjax.data.formats import write_idx
from hpjax.data.sources import dataset_from_arrays
from hpjax.data.sources import load_dataset
from hpjax.data.sources import SOURCES
from hpjax.data.stream import Stream

__all__ = [
  "SOURCES",
  "DataError",
  "DataWarning",
  "Dataset",
  "Stream",
  "load_dataset",
  "dataset_from_arrays",
  "normalize",
  "resize_images",
  "read_idx",
  "write_idx",
  "read_cifar_batch",
  "write_cifar_batch",
]
