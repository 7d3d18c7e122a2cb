r"""Fashion-MNIST: population-based training from a directory of IDX files.

The same run as ``mnist_pbt`` (same IDX file names, same search space) on
Fashion-MNIST; hpjax never downloads the files.

Launch::

  python -m experiments.tune --config=experiments/configs/fashion_mnist_pbt.py \
    --workdir=runs/fashion_mnist_pbt --config.data.data_dir=/path/to/fashion_mnist
"""

import ml_collections

from experiments.configs import mnist_pbt


def get_config() -> ml_collections.ConfigDict:
  c = mnist_pbt.get_config()
  c.data.source = "fashion_mnist"
  return c
