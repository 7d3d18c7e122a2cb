r"""Diabetes (embedded in scikit-learn): regression with an MLP, MSE or Huber per member.

Targets are standardized, so a validation MSE of 1.0 is predicting the mean.

Launch::

  python -m experiments.tune --config=experiments/configs/diabetes_regression.py --workdir=runs/diabetes
"""

import ml_collections

from experiments.configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.base_config()
  c.population = 16
  c.epochs = 30
  c.batch_size = 16
  c.fitness = "mse"
  c.data.source = "diabetes"
  c.model.family = "mlp"
  c.model.depth = 2
  c.model.width = 64
  c.space = ml_collections.ConfigDict(
    dict(
      learning_rate=dict(type="float", lo=1e-4, hi=3e-2, log=True),
      optimizer=dict(type="choice", values=("sgd", "adam", "adamw")),
      activation=dict(type="choice", values=("relu", "tanh", "elu")),
      loss=dict(type="choice", values=("mse", "huber")),
      weight_decay=dict(type="float", lo=1e-6, hi=1e-2, log=True),
    )
  )
  c.controller = ml_collections.ConfigDict(
    dict(
      name="pbt",
      interval=3,
      burn_in=3,
      quantile_fraction=0.25,
      perturbation_factors=(0.8, 1.2),
      resample_probability=0.25,
    )
  )
  return c
