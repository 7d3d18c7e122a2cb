"""Tuning a user's own model: hpjax.tune, stock flax.nnx layers, the user's names.

The reference for a population member is a plain single-model loop (the
user's module, ``nnx`` and ``optax``), written here from scratch.
"""

import json
import os

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hpjax
from hpjax import engine
from hpjax.data import normalize


class StockCNN(nnx.Module):
  """A user's model built from stock flax.nnx layers only, with its own NNX state."""

  def __init__(self, width: int, *, rngs: nnx.Rngs):
    # No bias before BatchNorm: its gradient is pure rounding noise, which Adam
    # would scale up to full steps (not comparable between two programs).
    self.conv = nnx.Conv(1, width, (3, 3), strides=(2, 2), use_bias=False, rngs=rngs)
    self.bn = nnx.BatchNorm(width, rngs=rngs)
    self.drop = nnx.Dropout(0.25, rngs=rngs)
    self.out = nnx.Linear(width * 16, 10, rngs=rngs)

  def __call__(self, x, hp):
    x = nnx.relu(self.bn(self.conv(x))) * hp["scale"]  # a traced hyperparameter of the user's
    return self.out(self.drop(x.reshape(x.shape[0], -1)))


SPACE = {
  "learning_rate": hpjax.Float(1e-3, 3e-2, log=True),
  "scale": hpjax.Float(0.5, 1.5),
  "width": hpjax.Choice((4, 6), structural=True),
}


@pytest.fixture(scope="module")
def one_batch():
  # 64 examples and batch size 64: an epoch is one step over the whole set.
  return hpjax.load_dataset("digits", seed=0, max_train=64)


def test_stock_layers_train_as_the_model_would_alone(one_batch):
  data = one_batch
  member = {"width": 4, "scale": 1.25, "learning_rate": 0.01, "optimizer": "adam", "batch_size": 64}
  pop = hpjax.Population([member], data, model=StockCNN, space=SPACE, seed=3, mesh=None)
  # The same member alone: its initial keys, an optax Adam, the whole training set.
  init = jax.random.fold_in(jax.random.wrap_key_data(engine.member_keys(3, [0])[0]), 0)
  model = StockCNN(4, rngs=nnx.Rngs(jax.random.fold_in(init, 1), params=init))
  model.train()
  optimizer = nnx.Optimizer(model, optax.adam(0.01), wrt=nnx.Param)
  x, y = normalize(data.x_train, data.mean, data.std), jnp.asarray(data.y_train)
  # The member's batch order (dropout masks depend on it): each epoch a
  # permutation drawn from its own key, which is split every epoch.
  key = jax.random.fold_in(jax.random.wrap_key_data(engine.member_keys(3, [0])[0]), 1)

  def loss_fn(m, order):
    out = m(x[order], {"scale": 1.25})
    return optax.softmax_cross_entropy_with_integer_labels(out, y[order]).mean()

  for _ in range(2):  # the second epoch also checks the carried BatchNorm and RNG state
    key, perm_key, _ = jax.random.split(key, 3)
    loss, grads = nnx.value_and_grad(loss_fn)(model, jax.random.permutation(perm_key, 64))
    optimizer.update(model, grads)
    got = pop.train_epoch()["train_loss"][0]
    np.testing.assert_allclose(got, loss, rtol=1e-5)
  params, rest = nnx.state(model, nnx.Param), nnx.state(model, nnx.Not(nnx.Param))
  state = pop.groups[0].state
  want = nnx.to_pure_dict(params)
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a)[0], b, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(
    state.model_state["bn"]["mean"][0], rest["bn"]["mean"][...], rtol=1e-5, atol=1e-6
  )
  count = rest["drop"]["rngs"]["count"][...]
  assert int(state.model_state["drop"]["rngs"]["count"][0]) == int(count) == 2


def _top2(outputs, y):
  top = jnp.argsort(outputs, axis=-1)[..., -2:]
  return jnp.any(top == y[..., None], axis=-1).astype(jnp.float32)


def _tune(workdir, **kw):
  digits = hpjax.load_dataset("digits", seed=0, max_train=256)
  x, y = np.asarray(digits.x_train), np.asarray(digits.y_train)  # the user's own arrays
  args = dict(
    data=(x, y),
    space=SPACE,
    population=4,
    epochs=3,
    controller=hpjax.PBT(),
    metric=hpjax.Metric("top2", _top2, "max"),
    batch_size=32,
    workdir=str(workdir),
    log=lambda s: None,
  )
  return hpjax.tune(StockCNN, **{**args, **kw})


@pytest.mark.xdist_group("api_run")
def test_tune_a_users_model_end_to_end(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("api") / "run"
  results = _tune(workdir)
  best = results.best
  assert best.fitness == "top2" and best.mode == "max"
  assert set(best.val) == {"top2", "loss"} and 0.0 <= best.val["top2"] <= 1.0
  assert best.hparams["width"] in (4, 6) and 0.5 <= best.hparams["scale"] <= 1.5
  df = results.dataframe()
  assert len(df) == 12 and {
    "epoch",
    "member",
    "val_top2",
    "train_top2",
    "scale",
    "width",
    "learning_rate",
  } <= set(df.columns)
  final = df[df.epoch == 3].set_index("member")["val_top2"]
  assert best.val["top2"] == pytest.approx(final.max())
  events = [json.loads(l) for l in open(workdir / "lineage.jsonl")]
  assert events and all(e["donor_fitness"] >= e["target_fitness"] for e in events)
  # Exploits stay within a width group; explore perturbs the user's traced scale.
  assert all(e["old_hparams"]["width"] == e["new_hparams"]["width"] for e in events)
  model = results.best_model()
  assert isinstance(model, StockCNN)
  x = np.asarray(hpjax.load_dataset("digits", seed=0).x_val[:5])
  direct = model(normalize(x, *_stats(workdir)), {"scale": best.hparams["scale"]})
  np.testing.assert_allclose(results.predict(x), direct, rtol=1e-5, atol=1e-5)
  # The same from disk, in a "new process": the exported model with the factory.
  again = hpjax.Results.load(str(workdir), model=StockCNN)
  np.testing.assert_allclose(again.predict(x), direct, rtol=1e-5, atol=1e-5)
  assert again.best == best
  # Every second of the run accounted to a phase, JAX's compile time measured.
  t = results.summary["timings"]
  assert {
    "config_and_data",
    "build",
    "train",
    "evaluate",
    "controller",
    "write",
    "checkpoint",
    "summary_and_export",
  } <= set(t["phases_s"])
  assert t["counts"]["train"] == 3 and t["accounted_s"] >= 0.95 * t["total_s"]
  assert t["jax_compile_s"] > 0 and t["programs_compiled"] > 0


def _stats(workdir):
  meta = json.load(open(os.path.join(workdir, "best", "model", "model.json")))
  return meta["mean"], meta["std"]


@pytest.mark.xdist_group("api_run")
def test_tune_relaunch_resumes_and_refuses_another_space(tmp_path):
  workdir = tmp_path / "run"
  first = _tune(workdir, epochs=1)
  extended = _tune(workdir, epochs=2)  # resumes the run, trains one more epoch
  rows = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  assert sorted({r["epoch"] for r in rows}) == [1, 2] and first.summary["epochs"] == 1
  straight = _tune(tmp_path / "straight", epochs=2)
  assert extended.best.val == straight.best.val
  with pytest.raises(ValueError, match=r"another config \(.*space"):
    _tune(workdir, space={**SPACE, "scale": hpjax.Float(0.5, 2.0)})


@pytest.mark.parametrize(
  "space, match",
  [
    (
      {**SPACE, "scael": hpjax.Float(0.5, 1.5)},
      r"space.scael: neither the model nor the loss reads .*did you mean 'scale'",
    ),
    (
      {**SPACE, "depth": hpjax.Choice((1, 2), structural=False)},
      r"space.depth.structural|model: StockCNN takes no argument 'depth'",
    ),
    (
      {**SPACE, "blocks": hpjax.Choice((1, 2), structural=True)},
      r"model: StockCNN takes no argument 'blocks'",
    ),
  ],
)
def test_a_users_mistakes_are_one_clear_line(tmp_path, space, match):
  with pytest.raises(ValueError, match=match):
    _tune(tmp_path / "run", space=space, population=2, epochs=1)
  assert not (tmp_path / "run").exists()


def test_bad_data_and_metric_are_one_clear_line(tmp_path):
  x = np.zeros((10, 8, 8, 1), np.uint8)
  with pytest.raises(hpjax.DataError, match="10 examples but y_train has 9"):
    hpjax.tune(StockCNN, (x, np.zeros(9, np.int32)), SPACE, workdir=str(tmp_path / "a"))
  with pytest.raises(ValueError, match="metric.name: must be an identifier other than 'loss'"):
    hpjax.Metric("loss", _top2, "max")
  with pytest.raises(
    ValueError, match="fitness: unknown value 'f1' for classification; allowed: accuracy, loss"
  ):
    hpjax.tune(StockCNN, "digits", SPACE, fitness="f1", workdir=str(tmp_path / "b"))
  assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_users_traced_name_changes_without_a_recompile_and_structural_forms_groups(one_batch):
  from jax._src import dispatch  # pylint: disable=g-import-not-at-top

  members = [
    {"width": w, "scale": s, "learning_rate": 0.01, "batch_size": 64}
    for w, s in ((4, 1.0), (6, 1.0), (4, 0.7))
  ]
  pop = hpjax.Population(members, one_batch, model=StockCNN, space=SPACE, seed=0, mesh=None)
  assert sorted(g.members for g in pop.groups) == [[0, 2], [1]]  # width: a group per value
  assert [dict(g.fns.spec.structural)["width"] for g in pop.groups] == [4, 6]
  events = []

  def listener(name, *args, **kwargs):
    del args, kwargs
    if name in (dispatch.JAXPR_TRACE_EVENT, dispatch.BACKEND_COMPILE_EVENT):
      events.append(name)

  def generation(scales):
    pop.train_epoch()
    pop.evaluate("val")
    pop.set_member_hparams(
      [dict(h, scale=s) for h, s in zip(pop.hparams(), scales)], donors=[2, 1, 2]
    )

  generation([1.1, 1.0, 0.9])  # the first generation compiles everything
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    generation([1.3, 0.8, 1.2])  # PBT-style: new traced values, a copy
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert events == [], f"{len(events)} traces/compiles after changing a user's traced value"
  assert [h["scale"] for h in pop.hparams()] == pytest.approx([1.3, 0.8, 1.2])


def _squared(outputs, y, hp):
  """A user's loss: MSE on one-hot targets (it reads no hyperparameter)."""
  del hp
  return jnp.mean(jnp.square(jax.nn.softmax(outputs) - jax.nn.one_hot(y, 10)), axis=-1)


def _error(outputs, y):
  return (jnp.argmax(outputs, -1) != y).astype(jnp.float32)


@pytest.mark.parametrize("mode", ["max", "min"])
def test_users_loss_and_metric_rank_in_the_metrics_direction(tmp_path, mode):
  metric = (
    hpjax.Metric("acc", lambda o, y: 1.0 - _error(o, y), "max")
    if mode == "max"
    else hpjax.Metric("error", _error, "min")
  )
  results = _tune(
    tmp_path / "run",
    loss=_squared,
    metric=[metric, hpjax.Metric("top2", _top2, "max")],
    controller=hpjax.Halving(grace_period=1, reduction_factor=2),
    epochs=2,
  )
  assert results.best.fitness == metric.name and results.best.mode == mode
  df = results.dataframe()
  assert {f"val_{metric.name}", "val_top2", f"train_{metric.name}"} <= set(df.columns)
  first = df[df.epoch == 1].set_index("member")[f"val_{metric.name}"]
  survivors = set(df[df.epoch == 2].member)
  best_two = set((first.nlargest(2) if mode == "max" else first.nsmallest(2)).index)
  assert survivors == best_two  # halving kept the best by the metric's own direction
  assert results.summary["fitness"] == metric.name


class _StopAfter(hpjax.writers.Writer):
  """Stands in for a kill: the process dies after ``epoch`` was checkpointed."""

  def __init__(self, epoch):
    self.stop_epoch = epoch

  def epoch(self, record):
    if record.epoch == self.stop_epoch + 1:
      raise KeyboardInterrupt


def test_load_results_opens_a_killed_run(tmp_path):
  workdir = tmp_path / "run"
  with pytest.raises(KeyboardInterrupt):
    _tune(workdir, writers=[_StopAfter(1)])
  assert not (workdir / "summary.json").exists()
  results = hpjax.load_results(str(workdir))
  assert not results.finished and results.summary["epochs"] >= 1
  df = results.dataframe()
  last = df[df.epoch == df.epoch.max()].set_index("member")["val_top2"]
  assert results.best.member == int(last.idxmax()) and results.best.test == {}
  assert isinstance(results.lineage(), list)
  with pytest.raises(ValueError, match="has not finished.*resume it to finish"):
    results.best_model()
  finished = _tune(workdir)  # the same call resumes and finishes
  assert hpjax.load_results(str(workdir)).finished and finished.best.test
