"""The vectorized optimizer families against plain optax, and schedules."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hpjax import optim

HP = dict(
  learning_rate=0.05, momentum=0.8, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.01, rms_decay=0.7
)

REFERENCES = {
  "sgd": optax.chain(optax.add_decayed_weights(0.01), optax.sgd(0.05)),
  "momentum": optax.chain(optax.add_decayed_weights(0.01), optax.sgd(0.05, momentum=0.8)),
  "nesterov": optax.chain(
    optax.add_decayed_weights(0.01), optax.sgd(0.05, momentum=0.8, nesterov=True)
  ),
  "rmsprop": optax.chain(optax.add_decayed_weights(0.01), optax.rmsprop(0.05, decay=0.7, eps=1e-6)),
  "adam": optax.chain(optax.add_decayed_weights(0.01), optax.adam(0.05, b1=0.8, b2=0.99, eps=1e-6)),
  "adamw": optax.adamw(0.05, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.01),
}


def _params():
  return {"w": jax.random.normal(jax.random.key(0), (3, 4)), "b": jnp.linspace(-1, 1, 4)}


def _grads(i, params):
  return jax.tree.map(lambda p: jax.random.normal(jax.random.key(100 + i), p.shape), params)


@pytest.mark.parametrize("family", optim.FAMILIES)
def test_family_matches_plain_optax(family):
  params = _params()
  ours = optim.make_optimizer(optimizer=optim.family_index(family), **HP)
  ref = REFERENCES[family]
  s1, s2, p1, p2 = ours.init(params), ref.init(params), params, params
  for i in range(4):  # several steps: moments and bias correction included
    g = _grads(i, params)
    u1, s1 = ours.update(g, s1, p1)
    u2, s2 = ref.update(g, s2, p2)
    p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    if i == 0:
      np.testing.assert_allclose(u1["w"], u2["w"], rtol=1e-5, atol=1e-7)
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_mixed_families_under_vmap_match_each_alone():
  params = _params()
  fams = jnp.arange(len(optim.FAMILIES))
  lrs = jnp.linspace(0.01, 0.1, len(optim.FAMILIES))
  stacked = jax.tree.map(lambda p: jnp.stack([p] * len(optim.FAMILIES)), params)

  def one(p, fam, lr):
    opt = optim.make_optimizer(learning_rate=lr, optimizer=fam)
    s = opt.init(p)
    for i in range(3):
      u, s = opt.update(_grads(i, params), s, p)
      p = optax.apply_updates(p, u)
    return p

  batched = jax.jit(jax.vmap(one))(stacked, fams, lrs)
  for i, fam in enumerate(optim.FAMILIES):
    alone = one(params, i, lrs[i])
    np.testing.assert_allclose(batched["w"][i], alone["w"], rtol=1e-5, atol=1e-6, err_msg=fam)


def test_learning_rate_zero_leaves_params_unchanged():
  params = _params()
  for fam in range(len(optim.FAMILIES)):
    opt = optim.make_optimizer(learning_rate=0.0, optimizer=fam, weight_decay=0.1)
    u, _ = opt.update(_grads(0, params), opt.init(params), params)
    new = optax.apply_updates(params, u)
    np.testing.assert_array_equal(new["w"], params["w"])


@pytest.mark.parametrize("family", ["sgd", "adamw"])
def test_weight_decay_shrinks_weights(family):
  params = _params()
  zeros = jax.tree.map(jnp.zeros_like, params)
  opt = optim.make_optimizer(
    learning_rate=0.1, optimizer=optim.family_index(family), weight_decay=0.5
  )
  u, _ = opt.update(zeros, opt.init(params), params)
  new = optax.apply_updates(params, u)
  np.testing.assert_allclose(new["w"], params["w"] * (1 - 0.1 * 0.5), rtol=1e-6)
  opt0 = optim.make_optimizer(learning_rate=0.1, optimizer=optim.family_index(family))
  u0, _ = opt0.update(zeros, opt0.init(params), params)
  np.testing.assert_array_equal(optax.apply_updates(params, u0)["w"], params["w"])


def test_hyperparams_are_injected_and_settable():
  params = _params()
  opt = optim.make_optimizer(learning_rate=0.1, optimizer=0)
  state = opt.init(params)
  assert set(state.hyperparams) == set(optim.HPARAMS) | {"lr_scale"}
  assert state.hyperparams["learning_rate"].dtype == jnp.float32
  state = optax.tree_utils.tree_set(state, learning_rate=jnp.float32(0.0))
  u, _ = opt.update(_grads(0, params), state, params)
  np.testing.assert_array_equal(u["w"], np.zeros((3, 4)))


@pytest.mark.parametrize(
  "kind,expected",
  [
    ("constant", [1.0, 1.0, 1.0, 1.0]),
    ("warmup", [0.0, 0.5, 1.0, 1.0]),
  ],
)
def test_schedule_factor(kind, expected):
  s = optim.EpochSchedule(kind=kind, warmup_epochs=2.0, total_epochs=10.0)
  np.testing.assert_allclose(s.factor(jnp.array([0.0, 1.0, 2.0, 5.0])), expected, atol=1e-6)


@pytest.mark.parametrize("kind", ["cosine", "warmup_cosine"])
def test_epoch_schedules_match_optax_at_every_step(kind):
  # 7 updates per epoch over 3 epochs: progress = step / 7 epochs.
  s = optim.EpochSchedule(
    kind=kind, warmup_epochs=1.0 if kind == "warmup_cosine" else 0.0, total_epochs=3.0, alpha=0.1
  )
  if kind == "cosine":
    ref = optax.cosine_decay_schedule(1.0, 21, 0.1)
  else:
    ref = optax.warmup_cosine_decay_schedule(0.0, 1.0, 7, 21, end_value=0.1)
  steps = np.arange(25)
  np.testing.assert_allclose(s.factor(steps / 7.0), [float(ref(i)) for i in steps], atol=1e-6)


def test_lr_scale_scales_updates():
  params = _params()
  opt = optim.make_optimizer(learning_rate=1.0, optimizer=0)
  s = opt.init(params)
  ones = jax.tree.map(jnp.ones_like, params)
  for factor in (1.0, 0.5, 0.0):
    u, s = opt.update(ones, optim.with_lr_scale(s, factor), params)
    assert -float(u["b"][0]) == pytest.approx(factor)


def test_bad_names_and_values():
  with pytest.raises(ValueError, match="optimizer: unknown value 'lion'; allowed: sgd"):
    optim.family_index("lion")
  with pytest.raises(ValueError, match="schedule: unknown value 'step'"):
    optim.EpochSchedule(kind="step").validate()
  with pytest.raises(ValueError, match="schedule.warmup_epochs: must be > 0"):
    optim.EpochSchedule(kind="warmup").validate()
  with pytest.raises(ValueError, match="schedule.total_epochs: must exceed warmup_epochs"):
    optim.EpochSchedule(kind="cosine", total_epochs=0.0).validate()
  with pytest.raises(ValueError, match="unknown"):
    optim.make_optimizer(learning_rat=0.1)
