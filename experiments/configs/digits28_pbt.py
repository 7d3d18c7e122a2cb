r"""Digits (embedded in scikit-learn) resized to 28x28: population-based training.

32 members of the bench CNN over learning rate (1e-4..1e-1, log), optimizer
(sgd / rmsprop / adam), activation (relu / tanh / sigmoid) and batch size
(8 / 16 / 32) for 10 epochs, every batch size in one compiled program; after
every epoch the worst quarter copies a member of the best quarter and perturbs
its hyperparameters (batch size included: a neighbouring size). Every member's learning rate follows a cosine decay over the
10 epochs (PBT perturbs the base rate); measured against a constant rate in
docs/tuning.md.

The project's reference scenario: on it, before hpjax existed, Optuna
(TPE + median pruner) reached 0.976 validation accuracy in 33 s and Ray Tune's
PBT 0.986 in 837 s on a 2-core machine (docs/tuning.md).

Launch::

  python -m experiments.tune --config=experiments/configs/digits28_pbt.py --workdir=runs/digits28_pbt
"""

import ml_collections

from experiments.configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.base_config()
  c.population = 32
  c.data.image_size = 28
  c.schedule.kind = "cosine"
  c.space = ml_collections.ConfigDict(
    dict(
      learning_rate=dict(type="float", lo=1e-4, hi=1e-1, log=True),
      optimizer=dict(type="choice", values=("sgd", "rmsprop", "adam")),
      activation=dict(type="choice", values=("relu", "tanh", "sigmoid")),
      batch_size=dict(type="choice", values=(8, 16, 32), ordered=True),
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
