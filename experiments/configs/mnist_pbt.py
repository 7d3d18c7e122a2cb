r"""MNIST: population-based training from a directory of IDX files.

``--config.data.data_dir`` must hold train-images-idx3-ubyte,
train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte
(optionally ``.gz``); hpjax never downloads them.

Launch::

  python -m experiments.tune --config=experiments/configs/mnist_pbt.py --workdir=runs/mnist_pbt \
    --config.data.data_dir=/path/to/mnist
"""

import ml_collections

from experiments.configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.base_config()
  c.population = 16
  c.epochs = 8
  c.data.source = "mnist"
  c.space = ml_collections.ConfigDict(
    dict(
      learning_rate=dict(type="float", lo=1e-4, hi=1e-1, log=True),
      optimizer=dict(type="choice", values=("momentum", "rmsprop", "adam")),
      activation=dict(type="choice", values=("relu", "tanh", "gelu")),
      dropout=dict(type="float", lo=0.0, hi=0.5),
    )
  )
  c.controller = ml_collections.ConfigDict(
    dict(
      name="pbt",
      interval=1,
      burn_in=1,
      quantile_fraction=0.25,
      perturbation_factors=(0.8, 1.2),
      resample_probability=0.25,
    )
  )
  return c
