"""Batch size as a per-member hyperparameter: one program, micro-batches, exact updates.

References are plain single-model loops (the same model, optax, the member's
batch order), written here from scratch.
"""

from flax import nnx
import jax
from jax._src import dispatch  # event names of JAX's own compile monitoring
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hpjax
from hpjax import engine
from hpjax import models
from hpjax.data import normalize
from hpjax.hparams import HParams
from hpjax.hparams import TracedChoice

TINY = dict(family="vgg", depth=1, width=4, dense=16)
SIZES = (8, 16, 32)


@pytest.fixture(scope="module")
def data():
  return hpjax.load_dataset("digits", seed=0, max_train=64)


def _population(data, batch_norm=False, mode="auto", **kw):
  members = [
    {**TINY, "batch_size": b, "learning_rate": 0.02, "optimizer": "adam", "batch_norm": batch_norm}
    for b in SIZES
  ]
  return hpjax.Population(
    members, data, seed=5, candidates={"activation": ("relu",)}, mesh=None, batch_mode=mode, **kw
  )


def _reference(data, member, batch_size, epochs, batch_norm=False, micro=None):
  """Member ``member`` trained alone: its init, its batch order, optax Adam.

  With ``micro``, each batch is fed as micro-batches of that size (BatchNorm
  normalizes each one) and their gradients are averaged into one update.
  """
  key = jax.random.wrap_key_data(engine.member_keys(5, [member])[0])
  model = models.builtin(
    **TINY,
    batch_norm=batch_norm,
    input_shape=data.input_shape,
    num_outputs=10,
    rngs=nnx.Rngs(
      jax.random.fold_in(jax.random.fold_in(key, 0), 1), params=jax.random.fold_in(key, 0)
    ),
  )
  model.train()
  opt = nnx.Optimizer(model, optax.adam(0.02), wrt=nnx.Param)
  x, y = normalize(data.x_train, data.mean, data.std), jnp.asarray(data.y_train)
  hp = HParams({"activation": TracedChoice(0, ("relu",)), "dropout": 0.0})

  def loss_fn(m, idx):
    return optax.softmax_cross_entropy_with_integer_labels(m(x[idx], hp), y[idx]).mean()

  epoch_key = jax.random.fold_in(key, 1)
  n = x.shape[0]
  for _ in range(epochs):
    epoch_key, perm_key, _ = jax.random.split(epoch_key, 3)
    perm = jax.random.permutation(perm_key, n)
    for j in range(n // batch_size):
      batch = perm[j * batch_size : (j + 1) * batch_size]
      parts = [batch] if micro is None else np.split(batch, batch_size // micro)
      grads = None
      for part in parts:
        _, g = nnx.value_and_grad(loss_fn)(model, part)
        grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
      opt.update(model, jax.tree.map(lambda a: a / len(parts), grads))  # noqa: B023 - called at once
  return model


def _params(pop, i):
  return jax.tree.map(lambda a: np.asarray(a[i]), pop.groups[0].state.params)


def test_every_batch_size_in_one_program_equals_each_alone(data):
  pop = _population(data)
  assert pop.batch_traced and len(pop.groups) == 1 and pop.groups[0].fns.spec.batch_size == 8
  for _ in range(2):
    pop.train_epoch()
  for i, b in enumerate(SIZES):
    want = nnx.to_pure_dict(nnx.state(_reference(data, i, b, 2), nnx.Param))
    for got, ref in zip(jax.tree.leaves(_params(pop, i)), jax.tree.leaves(want)):
      np.testing.assert_allclose(got, ref, rtol=1e-4, atol=2e-6)


def test_structural_mode_keeps_a_group_per_size(data):
  pop = _population(data, mode="structural")
  assert not pop.batch_traced and len(pop.groups) == 3
  pop.train_epoch()
  want = nnx.to_pure_dict(nnx.state(_reference(data, 1, 16, 1), nnx.Param))
  for got, ref in zip(jax.tree.leaves(_params_of(pop, 1)), jax.tree.leaves(want)):
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=2e-6)


def _params_of(pop, member):
  g = next(g for g in pop.groups if member in g.members)
  return jax.tree.map(lambda a: np.asarray(a[g.members.index(member)]), g.state.params)


def test_batch_norm_normalizes_each_micro_batch(data):
  # "Ghost batch norm": a member of batch 32 with micro-batches of 8 sees
  # BatchNorm statistics of each 8 examples, and its running averages advance
  # per micro-batch; its update is the mean of the 4 micro-batch gradients.
  pop = _population(data, batch_norm=True)
  pop.train_epoch()
  ref = _reference(data, 2, 32, 1, batch_norm=True, micro=8)
  for got, want in zip(
    jax.tree.leaves(_params(pop, 2)), jax.tree.leaves(nnx.to_pure_dict(nnx.state(ref, nnx.Param)))
  ):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-6)
  stats = nnx.to_pure_dict(nnx.state(ref, nnx.BatchStat))
  got = jax.tree.map(lambda a: np.asarray(a[2]), pop.groups[0].state.model_state)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(stats)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_batch_size_changes_without_a_recompile(data):
  events = []

  def listener(name, *args, **kwargs):
    del args, kwargs
    if name in (dispatch.JAXPR_TRACE_EVENT, dispatch.BACKEND_COMPILE_EVENT):
      events.append(name)

  pop = _population(data)
  pop.train_epoch()
  pop.evaluate("val")
  # The first copy compiles its gather once (as in any run's first generation).
  pop.set_member_hparams([dict(h) for h in pop.hparams()], donors=[0, 0, 2])
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    hps = pop.hparams()
    hps[0]["batch_size"], hps[2]["batch_size"] = 32, 16  # PBT's explore, or a copy
    pop.set_member_hparams(hps, donors=[1, 1, 2])
    m = pop.train_epoch()
    pop.evaluate("val")
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert events == [], f"{len(events)} traces/compiles after a batch-size change"
  assert [h["batch_size"] for h in pop.hparams()] == [32, 16, 16]
  assert pop.steps_per_epoch() == 64 // 32 + 64 // 16 + 64 // 16
  assert np.all(np.isfinite(m["train_loss"]))
  with pytest.raises(ValueError, match="batch_size: 12 is not a multiple of 8"):
    pop.set_member_hparams([dict(h, batch_size=12) for h in pop.hparams()])


def test_sizes_that_are_not_multiples_fall_back_to_groups(data):
  members = [{**TINY, "batch_size": b} for b in (12, 16)]
  pop = hpjax.Population(members, data, seed=0, mesh=None)
  assert not pop.batch_traced and len(pop.groups) == 2
  with pytest.raises(ValueError, match="batch_mode 'traced' needs every size to be a multiple"):
    hpjax.Population(members, data, seed=0, mesh=None, batch_mode="traced")
