"""PBT decisions applied to a real population: diverged members are repaired."""

import jax
import jax.numpy as jnp
import numpy as np

import hpjax
from hpjax import space as space_lib
from hpjax.controllers import pbt

TINY = dict(family="vgg", depth=1, width=4, dense=16)


def test_diverged_members_are_replaced_and_training_goes_on(digits_small):
  members = [
    hpjax.Member(**TINY, optimizer="sgd", learning_rate=1e4),
    hpjax.Member(**TINY, optimizer="adam", learning_rate=1e-2),
    hpjax.Member(**TINY, optimizer="sgd", learning_rate=1e4),
    hpjax.Member(**TINY, optimizer="adam", learning_rate=2e-2),
  ]
  pop = hpjax.Population(members, digits_small, seed=0, candidates={"activation": ("relu",)})
  for _ in range(4):  # tiny members on 256 examples: 4 epochs to clear 0.4 (0.60, 0.79)
    pop.train_epoch()
  # Member 2 blew up completely: its weights are not finite any more.
  g = pop.groups[0]
  poisoned = jax.tree.map(lambda a: a.at[2].set(jnp.nan), g.state.params)
  g.state = g.state.replace(params=poisoned)
  val = pop.evaluate("val")
  assert np.isnan(val["accuracy"][2]) and not np.isfinite(val["loss"][2])
  # lr = 1e4: diverged (not finite) or dead units (chance-level accuracy).
  assert np.isnan(val["accuracy"][0]) or val["accuracy"][0] < 0.3
  assert val["accuracy"][[1, 3]].min() > 0.4

  space = {"learning_rate": space_lib.Float(1e-4, 1e4, log=True)}
  cfg = pbt.PBT(quantile_fraction=0.5, resample_probability=0.0)
  plan = pbt.exploit_explore(
    val["accuracy"],
    pop.hparams(),
    space,
    pop.group_ids(),
    cfg,
    np.random.default_rng(0),
    generation=1,
  )
  replaced = sorted(int(t) for t in np.flatnonzero(plan.donors != np.arange(4)))
  assert replaced == [0, 2]
  assert set(plan.donors[[0, 2]].tolist()) <= {1, 3}
  pop.set_member_hparams(plan.hparams, donors=plan.donors)
  hps = pop.hparams()
  for i in (0, 2):
    ratio = hps[i]["learning_rate"] / hps[int(plan.donors[i])]["learning_rate"]
    assert min(abs(ratio - 0.8), abs(ratio - 1.2)) < 1e-5  # explore: perturbed by a factor
  pop.train_epoch()
  after = pop.evaluate("val")
  assert np.isfinite(after["loss"]).all() and after["accuracy"].min() > 0.4
