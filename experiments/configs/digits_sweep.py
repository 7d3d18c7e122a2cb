r"""Digits (embedded in scikit-learn, 8x8): a random sweep trained side by side.

16 members of the bench CNN with their own learning rate, optimizer and
activation, trained together for 10 epochs; no download, a few minutes on
two CPU cores.

Launch::

  python -m experiments.tune --config=experiments/configs/digits_sweep.py --workdir=runs/digits_sweep

Override any field on the command line, e.g. ``--config.population=32``.
"""

import ml_collections

from experiments.configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.base_config()
  c.space = ml_collections.ConfigDict(
    dict(
      learning_rate=dict(type="float", lo=1e-4, hi=1e-1, log=True),
      optimizer=dict(type="choice", values=("sgd", "rmsprop", "adam")),
      activation=dict(type="choice", values=("relu", "tanh", "sigmoid")),
    )
  )
  return c
