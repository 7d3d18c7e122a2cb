r"""Digits (8x8, embedded in scikit-learn): population-based training, the default.

16 members of the bench CNN over learning rate (1e-4..1e-1, log), optimizer
(sgd / rmsprop / adam), activation (relu / tanh / sigmoid) and batch size
(16 / 32, both in one compiled program), 10 epochs; after every epoch the
worst quarter copies a member of the best quarter and perturbs its
hyperparameters. About a minute on 2 CPU cores.

Launch::

  python -m experiments.tune --config=experiments/configs/digits_pbt.py --workdir=runs/digits_pbt
"""

import ml_collections

from experiments.configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.base_config()
  c.population = 16
  c.space = ml_collections.ConfigDict(
    dict(
      learning_rate=dict(type="float", lo=1e-4, hi=1e-1, log=True),
      optimizer=dict(type="choice", values=("sgd", "rmsprop", "adam")),
      activation=dict(type="choice", values=("relu", "tanh", "sigmoid")),
      batch_size=dict(type="choice", values=(16, 32), ordered=True),
    )
  )
  c.controller = ml_collections.ConfigDict(
    dict(
      name="pbt",
      interval=1,
      burn_in=0,
      quantile_fraction=0.25,
      perturbation_factors=(0.8, 1.2),
      resample_probability=0.25,
    )
  )
  return c
