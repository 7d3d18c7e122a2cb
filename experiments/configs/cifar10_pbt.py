r"""CIFAR-10: population-based training of ResNet-style members.

``--config.data.data_dir`` must hold the python-pickle batches
(data_batch_1..5, test_batch, or their cifar-10-batches-py/ folder); hpjax
never downloads them. Meant for a GPU; on a CPU lower the population.

Launch::

  python -m experiments.tune --config=experiments/configs/cifar10_pbt.py --workdir=runs/cifar10_pbt \
    --config.data.data_dir=/path/to/cifar-10-batches-py
"""

import ml_collections

from experiments.configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.base_config()
  c.population = 16
  c.epochs = 30
  c.batch_size = 128
  c.data.source = "cifar10"
  c.model.family = "resnet"
  c.model.depth = 3
  c.model.width = 16
  c.model.convs_per_stage = 2
  c.model.batch_norm = True
  c.schedule.kind = "warmup_cosine"
  c.schedule.warmup_epochs = 1.0
  c.space = ml_collections.ConfigDict(
    dict(
      learning_rate=dict(type="float", lo=1e-3, hi=3e-1, log=True),
      optimizer=dict(type="choice", values=("momentum", "nesterov", "adamw")),
      weight_decay=dict(type="float", lo=1e-5, hi=1e-2, log=True),
      label_smoothing=dict(type="float", lo=0.0, hi=0.2),
    )
  )
  c.controller = ml_collections.ConfigDict(
    dict(
      name="pbt",
      interval=2,
      burn_in=2,
      quantile_fraction=0.25,
      perturbation_factors=(0.8, 1.2),
      resample_probability=0.25,
    )
  )
  return c
