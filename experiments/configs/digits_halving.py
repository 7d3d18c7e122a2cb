r"""Digits (8x8): successive halving over a random population of 27.

Rungs after epochs 1, 3 and 9 each keep the best third (27 -> 9 -> 3 -> 1);
the survivors are compacted into a smaller population, and the pruned
members' last metrics stay in ``metrics.jsonl`` and ``lineage.jsonl``.

Launch::

  python -m experiments.tune --config=experiments/configs/digits_halving.py --workdir=runs/digits_halving
"""

import ml_collections

from experiments.configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.base_config()
  c.population = 27
  c.epochs = 12
  c.space = ml_collections.ConfigDict(
    dict(
      learning_rate=dict(type="float", lo=1e-4, hi=1e-1, log=True),
      optimizer=dict(type="choice", values=("sgd", "momentum", "rmsprop", "adam")),
      activation=dict(type="choice", values=("relu", "tanh", "sigmoid", "gelu")),
    )
  )
  c.controller = ml_collections.ConfigDict(
    dict(name="halving", grace_period=1, reduction_factor=3, min_members=1)
  )
  return c
