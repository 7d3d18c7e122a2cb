r"""Your own model, data, loss and metric through the launcher, by import string.

A CNN of stock Flax NNX layers (``my_model.py``) on arrays a function returns
(``my_data.py``: scikit-learn's digits), trained with a focal loss and
ranked by its own validation error (``my_objectives.py``). Population-based
training over the learning rate, the model's own input-noise level (traced:
PBT perturbs it) and its width (``channels``, structural: a compiled group
per value); ``hidden`` is a structural constant in ``config.model``. 16
members, 10 epochs.

An import string (``"module.path:name"``) is imported from the current
directory, PYTHONPATH or installed packages and runs that module's code,
like this file itself. Nothing in hpjax changes for it.

Launch::

  python -m experiments.tune --config=experiments/examples/my_config.py --workdir=runs/my_cnn
"""

import ml_collections

from experiments.configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.base_config()
  c.population = 16
  c.epochs = 10
  c.batch_size = 32
  c.data.source = "experiments.examples.my_data:digits"
  # The model's structural constructor arguments, and no built-in ones.
  c.model = ml_collections.ConfigDict(dict(factory="experiments.examples.my_model:CNN", hidden=32))
  c.loss = "experiments.examples.my_objectives:focal_loss"
  c.metric = "experiments.examples.my_objectives:METRICS"
  c.fitness = "error"
  c.space = ml_collections.ConfigDict(
    dict(
      learning_rate=dict(type="float", lo=1e-3, hi=3e-2, log=True),
      noise=dict(type="float", lo=0.0, hi=0.5),  # read as hp["noise"]
      channels=dict(type="choice", values=(8, 16), structural=True),
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
