"""The population engine: isolation of members, hyperparameters acting,
determinism, no recompiles, and a real accuracy check."""

import dataclasses

import chex
import jax
from jax._src import dispatch  # event names of JAX's own compile monitoring
import numpy as np
import pytest

import hpjax
from hpjax import engine

TINY = dict(family="vgg", depth=1, width=4, dense=16)
ACTS = ("relu", "tanh", "sigmoid")


def _members():
  return [
    hpjax.Member(learning_rate=0.01, optimizer="adam", activation="relu", **TINY),
    hpjax.Member(learning_rate=0.1, optimizer="sgd", activation="tanh", **TINY),
    hpjax.Member(
      learning_rate=0.003, optimizer="rmsprop", activation="sigmoid", **TINY, weight_decay=1e-3
    ),
    hpjax.Member(
      learning_rate=0.02, optimizer="nesterov", activation="relu", **TINY, dropout=0.3, loss="mse"
    ),
  ]


def _make(data, members, seed=0, **kw):
  return hpjax.Population(
    members,
    data,
    seed=seed,
    candidates={"activation": ACTS, "loss": ("cross_entropy", "mse")},
    **kw,
  )


def _leaves(state):
  return [np.asarray(a) for a in jax.tree.leaves(state.params)]


def test_state_has_leading_population_axis(digits_small):
  p = _make(digits_small, _members())
  assert len(p.groups) == 1
  state = p.groups[0].state
  chex.assert_tree_shape_prefix(state, (4,))  # every leaf has the member axis
  hp = engine.get_hparams(state)
  np.testing.assert_array_equal(hp["optimizer"], [4, 0, 3, 2])
  np.testing.assert_array_equal(hp["activation"], [0, 1, 2, 0])
  np.testing.assert_array_equal(hp["loss"], [0, 0, 0, 1])
  assert p.hparams()[2]["optimizer"] == "rmsprop" and p.hparams()[3]["loss"] == "mse"


def test_vmap_never_mixes_members(digits_small):
  members = _members()
  together = _make(digits_small, members)
  together.train_epoch()
  together.train_epoch()
  fns = together.groups[0].fns
  full_hp = together.hparam_arrays(together.members)
  keys = engine.member_keys(0, range(4))
  for i in range(4):
    hp = {k: v[i : i + 1] for k, v in full_hp.items()}
    alone = fns.init(keys[i : i + 1], hp)
    for _ in range(2):
      alone, _ = fns.train_epoch(alone, digits_small.x_train, digits_small.y_train)
    for a, b in zip(_leaves(together.groups[0].state), _leaves(alone)):
      np.testing.assert_allclose(a[i], b[0], rtol=2e-4, atol=2e-5)


def test_learning_rate_zero_leaves_parameters_unchanged(digits_small):
  members = [m.replace(learning_rate=0.0) for m in _members()]
  p = _make(digits_small, members)
  before = _leaves(p.groups[0].state)
  metrics = p.train_epoch()
  after = _leaves(p.groups[0].state)
  for a, b in zip(before, after):
    np.testing.assert_array_equal(a, b)
  assert np.all(np.isfinite(metrics["train_loss"]))


def test_same_seed_same_numbers_other_seed_differs(digits_small):
  runs = []
  for seed in (3, 3, 4):
    p = _make(digits_small, _members(), seed=seed)
    m = p.train_epoch()
    runs.append((m["train_loss"], p.evaluate("val")["accuracy"], _leaves(p.groups[0].state)))
  np.testing.assert_array_equal(runs[0][0], runs[1][0])
  np.testing.assert_array_equal(runs[0][1], runs[1][1])
  for a, b in zip(runs[0][2], runs[1][2]):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(runs[0][0], runs[2][0])


def test_activation_index_changes_outputs(digits_small):
  p = _make(digits_small, [_members()[0].replace(activation=a) for a in ACTS])
  out = np.asarray(p.groups[0].fns.predict(p.groups[0].state, digits_small.x_val[:8]))
  # Same seed index differs per member, so compare against a hand-set state:
  state = p.groups[0].state
  same = engine.take(state, [0, 0, 0])
  same = engine.set_hparams(same, {"activation": np.array([0, 1, 2])})
  outs = np.asarray(p.groups[0].fns.predict(same, digits_small.x_val[:8]))
  assert not np.allclose(outs[0], outs[1]) and not np.allclose(outs[1], outs[2])
  np.testing.assert_allclose(outs[0], out[0], rtol=1e-6)


def test_selected_loss_is_the_one_computed(digits_small):
  import optax  # pylint: disable=g-import-not-at-top

  p = _make(digits_small, [_members()[0], _members()[0].replace(loss="mse")])
  # Member 1 copies member 0's weights: only the loss index differs. With a
  # learning rate of 0 an epoch's train loss is the selected loss over the whole
  # training set (256 examples, 8 batches of 32: every example once).
  g = p.groups[0]
  g.state = engine.set_hparams(
    engine.take(g.state, [0, 0]), {"loss": np.array([0, 1]), "learning_rate": np.zeros(2)}
  )
  logits = np.asarray(g.fns.predict(g.state, digits_small.x_train))[0]
  y = np.asarray(digits_small.y_train)
  ce = float(optax.softmax_cross_entropy_with_integer_labels(logits, y).mean())
  mse = float(np.mean(np.square(logits - np.eye(10)[y])))
  np.testing.assert_allclose(p.train_epoch()["train_loss"], [ce, mse], rtol=1e-4)
  # Validation loss is one objective for both (cross-entropy), whatever each trains with.
  val_logits = np.asarray(g.fns.predict(g.state, digits_small.x_val))[0]
  val_ce = float(
    optax.softmax_cross_entropy_with_integer_labels(
      val_logits, np.asarray(digits_small.y_val)
    ).mean()
  )
  np.testing.assert_allclose(p.evaluate("val")["loss"], [val_ce, val_ce], rtol=1e-4)


def test_structural_hyperparameters_split_groups(digits_small):
  members = [
    hpjax.Member(**TINY, batch_size=16),
    hpjax.Member(**TINY, batch_size=32),
    hpjax.Member(**TINY, batch_size=16, learning_rate=0.1),
  ]
  p = _make(digits_small, members, batch_mode="structural")
  assert sorted(g.members for g in p.groups) == [[0, 2], [1]]
  # Traced (the default when sizes are multiples): one program for all sizes.
  assert len(_make(digits_small, members).groups) == 1
  wide = [hpjax.Member({**TINY, "width": w}) for w in (4, 8, 4)]
  assert sorted(g.members for g in _make(digits_small, wide).groups) == [[0, 2], [1]]
  m = p.train_epoch()
  assert m["train_loss"].shape == (3,) and np.all(np.isfinite(m["train_loss"]))
  ev = p.evaluate("test")
  assert ev["accuracy"].shape == (3,)


def test_no_recompiles_after_first_epoch(digits_small):
  events = []

  def listener(name, *args, **kwargs):
    del args, kwargs
    if name in (dispatch.JAXPR_TRACE_EVENT, dispatch.BACKEND_COMPILE_EVENT):
      events.append(name)

  p = _make(digits_small, _members())

  def generation():
    p.train_epoch()
    p.evaluate("val")
    p.evaluate("test")
    g = p.groups[0]
    # A controller-style exploit (gather) and explore (new vectorized values).
    g.state = engine.set_hparams(
      engine.take(g.state, [1, 1, 2, 3]),
      {
        "learning_rate": np.full(4, 0.05, np.float32),
        "activation": np.array([2, 1, 0, 1], np.int32),
      },
    )
    p.hparams()

  generation()  # the first generation compiles everything
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    for _ in range(2):
      generation()
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert events == [], f"{len(events)} traces/compiles after the first epoch"


def test_bad_member_values(digits_small):
  with pytest.raises(ValueError, match="optimizer: unknown value 'lion'"):
    _make(digits_small, [hpjax.Member(optimizer="lion")])
  with pytest.raises(ValueError, match="activation: unknown value 'softplus'"):
    _make(digits_small, [hpjax.Member(activation="softplus")])
  with pytest.raises(ValueError, match="dropout: must be in"):
    _make(digits_small, [hpjax.Member(dropout=1.5)])
  with pytest.raises(hpjax.DataError, match="fewer than one batch"):
    _make(digits_small, [hpjax.Member(batch_size=10_000)])
  with pytest.raises(ValueError, match="members"):
    _make(digits_small, [])


def test_regression_population():
  data = hpjax.load_dataset("diabetes", seed=0)
  members = [
    hpjax.Member(family="mlp", depth=1, width=16, learning_rate=lr, loss=loss, batch_size=16)
    for lr, loss in ((1e-2, "mse"), (3e-2, "huber"))
  ]
  p = hpjax.Population(members, data, seed=0)
  first = p.evaluate("val")["mse"]
  for _ in range(5):
    p.train_epoch()
  last = p.evaluate("val")["mse"]
  assert np.all(last < first) and np.all(
    last < 1.0
  )  # standardized targets: 1.0 = predicting the mean


@pytest.mark.parametrize("chunk", [0, 1, 2])
def test_member_chunking_does_not_change_results(digits_small, chunk):
  p = _make(digits_small, _members())
  g = p.groups[0]
  ref_state, ref = g.fns.train_epoch(
    engine.take(g.state, np.arange(4)), digits_small.x_train, digits_small.y_train
  )
  fns = engine.group_functions(dataclasses.replace(g.fns.spec, member_chunk=chunk))
  state, got = fns.train_epoch(g.state, digits_small.x_train, digits_small.y_train)
  np.testing.assert_allclose(got["train_loss"], ref["train_loss"], rtol=1e-5)
  for a, b in zip(_leaves(state), _leaves(ref_state)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  # Evaluation runs members in the same chunks: same metrics as all at once.
  val = engine.pad_eval(digits_small.x_val, digits_small.y_val, g.fns.spec.eval_batch_size)
  at_once = engine.group_functions(dataclasses.replace(g.fns.spec, member_chunk=0))
  want = at_once.evaluate(ref_state, *val)
  got = fns.evaluate(ref_state, *val)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, err_msg=k)


@pytest.mark.parametrize("chunk", [0, 2])
def test_shared_order_feeds_every_member_the_same_batches(digits_small, chunk):
  # Two identical members (member 1 copies member 0) that keep different keys:
  # with their own orders they diverge; with a shared order they stay equal.
  member = hpjax.Member(learning_rate=0.05, optimizer="sgd", activation="tanh", **TINY)
  p = _make(digits_small, [member, member])
  g = p.groups[0]
  twins = engine.take(g.state, np.array([0, 0])).replace(key=g.state.key)
  results = {}
  for shared in (False, True):
    spec = dataclasses.replace(g.fns.spec, shared_order=shared, member_chunk=chunk)
    fns = engine.group_functions(spec)
    state, m = fns.train_epoch(
      engine.take(twins, np.arange(2)), digits_small.x_train, digits_small.y_train
    )
    results[shared] = (state, m)
  own_state, own = results[False]
  assert not np.allclose(_leaves(own_state)[0][0], _leaves(own_state)[0][1])
  shared_state, shared = results[True]
  assert shared["train_loss"][0] == shared["train_loss"][1]
  for leaf in _leaves(shared_state):
    np.testing.assert_array_equal(leaf[0], leaf[1])
  # The next epoch draws another shared order: training goes on, deterministically.
  again, m2 = engine.group_functions(
    dataclasses.replace(g.fns.spec, shared_order=True, member_chunk=chunk)
  ).train_epoch(shared_state, digits_small.x_train, digits_small.y_train)
  assert m2["train_loss"][0] == m2["train_loss"][1] < shared["train_loss"][0]


def test_population_shared_order_option(digits_small):
  p = hpjax.Population(
    _members()[:2], digits_small, candidates={"activation": ACTS}, shared_order=True
  )
  assert all(g.fns.spec.shared_order and g.fns.spec.order_seed == 0 for g in p.groups)
  p.train_epoch()
  assert np.all(np.isfinite(p.evaluate("val")["loss"]))


def test_batch_norm_statistics_live_in_the_state_and_dropout_acts(digits_small):
  bn = dict(family="vgg", depth=1, width=4, dense=16, batch_norm=True)
  members = [hpjax.Member(**bn, dropout=rate, learning_rate=0.01) for rate in (0.0, 0.5)]
  p = _make(digits_small, members)
  g = p.groups[0]
  stats0 = [np.asarray(a) for a in jax.tree.leaves(g.state.model_state)]
  assert stats0 and all(a.shape[0] == 2 for a in stats0)
  # Same initial weights and keys for both: only the dropout rate differs.
  g.state = engine.set_hparams(engine.take(g.state, [0, 0]), {"dropout": np.array([0.0, 0.5])})
  p.train_epoch()
  stats1 = [np.asarray(a) for a in jax.tree.leaves(g.state.model_state)]
  assert any(not np.allclose(a, b) for a, b in zip(stats0, stats1))
  w = [np.asarray(a) for a in jax.tree.leaves(g.state.params)]
  assert any(not np.allclose(a[0], a[1]) for a in w)
  acc = p.evaluate("val")["accuracy"]
  assert np.all(np.isfinite(acc))


def test_exploit_copies_donor_exactly_and_explore_sets_values(digits_small):
  p = _make(digits_small, _members())
  p.train_epoch()
  g = p.groups[0]
  before = jax.tree.map(np.asarray, g.state)
  hps = p.hparams()
  new = [dict(h) for h in hps]
  new[3] = dict(hps[0], learning_rate=0.123, activation="sigmoid", optimizer="sgd")
  p.set_member_hparams(new, donors=[0, 1, 2, 0])
  after = jax.tree.map(np.asarray, g.state)
  for a, b in zip(jax.tree.leaves(before.params), jax.tree.leaves(after.params)):
    np.testing.assert_array_equal(b[3], a[0])
    np.testing.assert_array_equal(b[:3], a[:3])
  family_before, schedule_before = before.opt_state.inner_state
  family_after, schedule_after = after.opt_state.inner_state
  for a, b in zip(jax.tree.leaves(schedule_before), jax.tree.leaves(schedule_after)):
    np.testing.assert_array_equal(b[3], a[0])
  # Member 3 changed family (its donor's adam -> sgd): that family starts fresh.
  for a, b in zip(jax.tree.leaves(family_before), jax.tree.leaves(family_after)):
    np.testing.assert_array_equal(b[:3], a[:3])
    np.testing.assert_array_equal(b[3], np.zeros_like(a[0]))
  h3 = p.hparams()[3]
  assert h3["learning_rate"] == pytest.approx(0.123) and h3["activation"] == "sigmoid"
  assert h3["optimizer"] == "sgd"
  assert {k: v for k, v in h3.items() if k not in ("learning_rate", "activation", "optimizer")} == {
    k: v for k, v in hps[0].items() if k not in ("learning_rate", "activation", "optimizer")
  }
  with pytest.raises(ValueError, match="activation: 'elu' is not among the compiled candidates"):
    p.set_member_hparams([dict(h, activation="elu") for h in hps])


def test_member_keys_fold_each_index_into_the_seeds_key(jax_compiles):
  # A from-scratch reference: one fold_in per member, as JAX's docs build keys.
  for seed in (0, 7, 2**31 + 3):
    ids = [5, 0, 31]
    want = [jax.random.key_data(jax.random.fold_in(jax.random.key(seed), i)) for i in ids]
    got = engine.member_keys(seed, ids)
    assert got.dtype == np.uint32 and got.shape == (3, 2)
    np.testing.assert_array_equal(got, np.stack(want))
  # Once compiled for a size, other seeds and indices compile nothing more.
  _, events = jax_compiles(lambda: jax.block_until_ready(engine.member_keys(11, [1, 2, 9])))
  assert events == [], f"{len(events)} traces/compiles for a member's keys"


def test_pad_eval_pads_on_the_host_without_compiling(jax_compiles):
  x = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
  y = np.arange(7, dtype=np.int32)
  (px, py, w), events = jax_compiles(lambda: engine.pad_eval(x, y, 5))
  assert events == [], f"{len(events)} programs traced/compiled to pad a split"
  assert all(isinstance(a, jax.Array) for a in (px, py, w))
  np.testing.assert_array_equal(px, np.concatenate([x, np.zeros((3, 3), np.float32)]))
  np.testing.assert_array_equal(py, np.concatenate([y, np.zeros(3, np.int32)]))
  np.testing.assert_array_equal(w, [1] * 7 + [0] * 3)
  assert px.dtype == x.dtype and py.dtype == y.dtype and w.dtype == np.float32
  # A split of whole chunks is not padded; `length` pads to a longer split's chunks.
  same, _, w_same = engine.pad_eval(x[:5], y[:5], 5)
  assert same.shape == (5, 3) and w_same.tolist() == [1] * 5
  longer, _, w_longer = engine.pad_eval(x, y, 5, length=12)
  assert longer.shape == (15, 3) and float(w_longer.sum()) == 7


def test_compile_ahead_leaves_nothing_to_compile_in_the_first_epoch(digits_small, jax_compiles):
  # Two groups (widths 4 and 6), 3 members and eval chunks of 37: shapes no
  # other test compiles, so nothing is in JAX's caches before this build.
  members = _members()[:2] + [hpjax.Member(learning_rate=0.05, **dict(TINY, width=6))]
  ahead, built = jax_compiles(
    lambda: _make(digits_small, members, eval_batch_size=37, compile_ahead=("val", "test"))
  )
  assert len(ahead.groups) == 2
  # Each group's programs compiled once each, at build.
  compiled = [fn for kind, fn in built if kind == "compile"]
  for fn in ("init", "train_epoch", "evaluate"):
    assert compiled.count(f"jit({fn})") == 2 * (2 if fn == "evaluate" else 1), (fn, compiled)

  def epoch(pop):
    return pop.train_epoch(), pop.evaluate("val"), pop.evaluate("test")

  got, events = jax_compiles(lambda: epoch(ahead))
  assert events == [], f"{len(events)} traces/compiles in the first epoch after compiling ahead"
  # The same programs: the same numbers as a population compiling each at its first call.
  want = epoch(_make(digits_small, members, eval_batch_size=37))
  for g, w in zip(got, want):
    assert g.keys() == w.keys()
    for k in w:
      np.testing.assert_array_equal(g[k], w[k], err_msg=k)


@pytest.mark.parametrize("bad", ["val", ("train",), ("val", "tests")])
def test_compile_ahead_names_known_splits(digits_small, bad):
  with pytest.raises(
    ValueError, match=r"compile_ahead: expected a sequence of splits of val, test"
  ):
    _make(digits_small, _members()[:1], compile_ahead=bad)


def test_member_tree_is_one_program_and_equals_indexing_each_leaf(jax_compiles):
  rng = np.random.default_rng(0)
  # Shapes no other test gathers: nothing cached before.
  host = {
    "w": rng.normal(size=(5, 3, 7)).astype(np.float32),
    "b": rng.normal(size=(5, 11)).astype(np.float32),
    "key": rng.integers(0, 2**31, size=(5, 2)).astype(np.uint32),
  }
  device = jax.tree.map(jax.numpy.asarray, host)
  got, events = jax_compiles(lambda: engine.member_tree(device, 3))
  compiled = [fn for kind, fn in events if kind == "compile"]
  assert len(compiled) == 1, compiled  # one gather for the whole tree, not one per leaf
  for tree in (got, engine.member_tree(host, 3)):
    assert jax.tree.structure(tree) == jax.tree.structure(host)
    for k, v in host.items():
      assert isinstance(tree[k], np.ndarray) and tree[k].dtype == v.dtype
      np.testing.assert_array_equal(tree[k], v[3])


def test_an_xla_option_this_jaxlib_does_not_know_is_dropped_with_a_warning(monkeypatch, caplog):
  # jaxlib 0.11's XLA refused xla_cpu_use_fusion_emitters on a GPU, and every
  # program compiled with it failed. An unknown option is now dropped.
  bogus = {"xla_backend_optimization_level": 0, "xla_hpjax_no_such_option": True}
  with pytest.raises(Exception, match="No such compile option: 'xla_hpjax_no_such_option'"):
    jax.jit(lambda: 0, compiler_options=bogus).lower().compile()
  with caplog.at_level("WARNING"):
    assert engine.supported_compiler_options(bogus) == {"xla_backend_optimization_level": 0}
  assert "xla_hpjax_no_such_option is not known to this jaxlib" in caplog.text
  assert engine.supported_compiler_options(None) is None
  # The engine's own programs get the options at first use, on the backend in use.
  monkeypatch.setitem(engine.INIT_COMPILER_OPTIONS, jax.default_backend(), bogus)
  add_one = engine.moving_jit(lambda x: x + 1)
  assert int(add_one(np.int32(1))) == 2
  assert add_one.lower(np.int32(1)).compile() is not None


def test_a_population_without_dropout_draws_no_masks_and_trains_the_same(digits_small):
  # Every rate 0 and no 'dropout' in the space: the program draws no dropout
  # masks, and computes what the program with masks computes (a rate of 0
  # keeps every unit, unscaled), bit for bit.
  members = _members()[:3]
  off = _make(digits_small, members)
  on = _make(digits_small, members, space={"dropout": hpjax.Float(0.0, 0.5)})
  assert not off.dropout and not off.groups[0].fns.spec.dropout
  assert on.dropout and on.groups[0].fns.spec.dropout
  sizes = [
    len(p.groups[0].fns.train_epoch.lower(p.groups[0].state, *p._train).as_text())
    for p in (off, on)
  ]
  assert sizes[0] < 0.9 * sizes[1], sizes  # the masks' random bits are gone
  for p in (off, on):
    p.train_epoch()
  assert off.evaluate("val").keys() == on.evaluate("val").keys()
  for k, v in on.evaluate("val").items():
    np.testing.assert_array_equal(off.evaluate("val")[k], v, err_msg=k)
  for a, b in zip(_leaves(off.groups[0].state), _leaves(on.groups[0].state)):
    np.testing.assert_array_equal(a, b)
  # A rate the program cannot apply is one clear error; with 'dropout' in the
  # space the same change is taken.
  with pytest.raises(
    ValueError, match=r"^dropout: 0.3 needs dropout compiled in.*'dropout' in the"
  ):
    off.set_member_hparams([dict(h, dropout=0.3) for h in off.hparams()])
  on.set_member_hparams([dict(h, dropout=0.3) for h in on.hparams()])
  assert [h["dropout"] for h in on.hparams()] == pytest.approx([0.3] * 3)


def test_dropout_at_a_python_zero_rate_returns_its_input():
  x = jax.numpy.arange(6.0).reshape(2, 3)
  assert hpjax.nn.dropout(x, 0, jax.random.key(0), True) is x
  assert hpjax.nn.dropout(x, 0.0, jax.random.key(0), True) is x
  # A traced 0 draws a mask and keeps every unit: the same values.
  traced = jax.jit(lambda r: hpjax.nn.dropout(x, r, jax.random.key(0), True))(0.0)
  np.testing.assert_array_equal(traced, x)
