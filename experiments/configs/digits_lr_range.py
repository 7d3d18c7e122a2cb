r"""Digits (8x8): a learning-rate range test, 16 rates trained side by side.

Sixteen members, identical but for a constant learning rate log-spaced from
1e-5 to 1 (a grid), train for 6 epochs together. The analysis
(``hpjax.controllers.lr_range``) reads each member's validation loss, from
before training to the last epoch, and the report names the rate where it
fell fastest, the useful range around it, the rates that are too high (the
loss blew up, or it made no progress: here, with adam, the rates from 0.046
up collapse to chance, final validation losses 2.30-2.39 near ln(10) = 2.30,
from 2.53 before training) and where it barely moves (too low).

Launch::

  python -m experiments.tune --config=experiments/configs/digits_lr_range.py --workdir=runs/digits_lr_range
"""

import ml_collections

from experiments.configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.base_config()
  c.population = 16
  c.epochs = 6
  c.init = "grid"
  c.space = ml_collections.ConfigDict(
    dict(
      learning_rate=dict(type="float", lo=1e-5, hi=1.0, log=True, points=16),
      optimizer=dict(type="fixed", value="adam"),
      activation=dict(type="fixed", value="relu"),
    )
  )
  c.lr_range_test = True
  return c
