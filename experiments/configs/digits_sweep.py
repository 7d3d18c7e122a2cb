r"""Digits (embedded in scikit-learn, 8x8): a random sweep trained side by side.

16 members of the bench CNN with their own learning rate, optimizer and
activation, trained together for 10 epochs; no download, a few minutes on
two CPU cores.

Launch::

  python -m experiments.tune --config=experiments/configs/digits_sweep.py --workdir=runs/digits_sweep

Override any field on the command line, e.g. ``--config.population=32``.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.population = 16
  c.epochs = 10
  c.batch_size = 32
  c.eval_batch_size = 256
  c.fitness = "accuracy"
  c.data = ml_collections.ConfigDict(dict(
      source="digits", data_dir="", image_size=0, val_fraction=0.1, test_fraction=0.2,
      max_train=0))
  c.model = ml_collections.ConfigDict(dict(
      family="vgg", depth=2, width=16, kernel_size=3, dense=64, convs_per_stage=1,
      batch_norm=False, conv_impl="slices"))
  c.schedule = ml_collections.ConfigDict(dict(kind="constant", warmup_epochs=0.0, alpha=0.0))
  c.space = ml_collections.ConfigDict(dict(
      learning_rate=dict(type="float", lo=1e-4, hi=1e-1, log=True),
      optimizer=dict(type="choice", values=("sgd", "rmsprop", "adam")),
      activation=dict(type="choice", values=("relu", "tanh", "sigmoid")),
  ))
  return c
