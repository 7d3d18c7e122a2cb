"""Defaults shared by the experiment configs (each config starts from these)."""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """A digits run of the bench CNN with no search space and no controller."""
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
  # decay_epochs: length of a cosine decay; 0 means config.epochs (a run whose
  # schedule follows its length cannot be extended: see hpjax/tuner.py).
  c.schedule = ml_collections.ConfigDict(dict(kind="constant", warmup_epochs=0.0, alpha=0.0,
                                              decay_epochs=0.0))
  c.init = "random"
  c.space = ml_collections.ConfigDict()
  c.controller = ml_collections.ConfigDict(dict(name="none"))
  c.lr_range_test = False
  c.checkpoint = ml_collections.ConfigDict(dict(every=1, keep=3))
  c.tensorboard = True  # WORKDIR/tensorboard/member_NNN event files
  c.report = True  # plots and report.json in WORKDIR at the end
  c.shared_order = False  # True: all members of a group see the same minibatches
  # Split the population over all devices when there are several (hpjax.distributed).
  c.shard = True
  return c
