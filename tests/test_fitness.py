"""One fitness convention: the metric's direction ranks everything, and validation
loss is one objective for every member."""

import json
import os

import numpy as np
import optax
import pytest

import hpjax
from hpjax import fitness
from hpjax import tuner

TINY = dict(family="vgg", depth=1, width=4, dense=16)


def test_direction_follows_the_metric():
  assert fitness.direction("accuracy") == "max"
  assert fitness.direction("loss") == "min" and fitness.direction("mse") == "min"
  with pytest.raises(ValueError, match="fitness: unknown value 'f1'; allowed: accuracy"):
    fitness.direction("f1")
  assert fitness.check("loss", "classification") == "min"
  with pytest.raises(
    ValueError,
    match="config.fitness: unknown value 'mse' for classification; allowed: accuracy, loss",
  ):
    fitness.check("mse", "classification")
  with pytest.raises(ValueError, match="allowed: mse, loss"):
    fitness.check("accuracy", "regression")


def test_resolve_mode_refuses_a_contradiction():
  assert fitness.resolve_mode(None, "min", "loss", "m") == "min"
  assert fitness.resolve_mode("max", "max", "accuracy", "m") == "max"
  with pytest.raises(
    ValueError, match="config.controller.mode: 'max' contradicts fitness 'loss', which is minimised"
  ):
    fitness.resolve_mode("max", "min", "loss", "config.controller.mode")
  with pytest.raises(ValueError, match="m: unknown value 'up'"):
    fitness.resolve_mode("up", "min", "loss", "m")


@pytest.mark.parametrize("mode,expected", [("max", [2, 0, 3, 1, 4]), ("min", [3, 0, 2, 1, 4])])
def test_rank_puts_non_finite_last_and_keeps_ties_in_order(mode, expected):
  f = np.array([0.5, np.nan, 0.9, 0.1, np.inf])
  if mode == "min":
    f[2] = 0.5  # a tie with member 0: the lower index first
  assert fitness.rank(f, mode).tolist() == expected
  assert fitness.best(f, mode) == expected[0]
  assert fitness.is_better(0.6, 0.5, "max") and fitness.is_better(0.4, 0.5, "min")
  assert fitness.is_better(0.4, None, "min") and not fitness.is_better(np.nan, 0.5, "min")


def test_validation_loss_is_one_objective_for_every_member(digits_small):
  # Members that train with smoothed cross-entropy and with MSE report the same
  # validation objective: plain cross-entropy of their predictions.
  members = [
    hpjax.Member(**TINY, learning_rate=0.01, loss="cross_entropy", label_smoothing=0.2),
    hpjax.Member(**TINY, learning_rate=0.01, loss="mse"),
    hpjax.Member(**TINY, learning_rate=0.01, loss="cross_entropy"),
  ]
  pop = hpjax.Population(
    members,
    digits_small,
    seed=0,
    candidates={"activation": ("relu",), "loss": ("cross_entropy", "mse")},
    mesh=None,
  )
  pop.train_epoch()
  val = pop.evaluate("val")
  g = pop.groups[0]
  logits = np.asarray(g.fns.predict(g.state, digits_small.x_val))
  for i in range(3):
    ce = optax.softmax_cross_entropy_with_integer_labels(logits[i], digits_small.y_val).mean()
    np.testing.assert_allclose(val["loss"][i], ce, rtol=1e-5)


def _config(**overrides):
  from experiments.configs import digits_pbt  # pylint: disable=g-import-not-at-top

  c = digits_pbt.get_config().to_dict()
  c.update(population=8, epochs=3, progress=False, report=False, tensorboard=False)
  c["data"]["max_train"] = 256
  c["model"].update(width=4, depth=1, dense=16)
  c["space"].pop("batch_size")
  c["controller"]["quantile_fraction"] = 0.5
  for k, v in overrides.items():
    c[k] = v
  return c


@pytest.mark.xdist_group("fitness_loss_run")
def test_pbt_on_loss_copies_the_lowest_losses(tmp_path):
  workdir = str(tmp_path / "run")
  summary = tuner.run(_config(fitness="loss"), workdir, log=lambda s: None)
  events = [json.loads(l) for l in open(os.path.join(workdir, "lineage.jsonl"))]
  assert events
  for e in events:  # a lower validation loss is better: donors beat targets
    assert e["donor_fitness"] <= e["target_fitness"]
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  last = {r["member"]: r["val_loss"] for r in rows if r["epoch"] == 3}
  assert summary["best_member"] == min(last, key=last.get)
  assert summary["ranking"][0] == summary["best_member"]
  assert summary["val"]["loss"] == pytest.approx(min(last.values()))


@pytest.mark.parametrize(
  "overrides,message",
  [
    (
      dict(fitness="f1"),
      "config.fitness: unknown value 'f1' for classification; allowed: accuracy, loss",
    ),
    (dict(fitness="mse"), "config.fitness: unknown value 'mse' for classification"),
  ],
)
def test_bad_fitness_is_an_error_before_anything_is_written(tmp_path, overrides, message):
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match=message):
    tuner.run(_config(**overrides), str(workdir), log=lambda s: None)
  assert not workdir.exists()


def test_contradicting_controller_mode_is_an_error_at_start_up(tmp_path):
  c = _config(fitness="loss")
  c["controller"]["mode"] = "max"
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match="config.controller.mode: 'max' contradicts fitness 'loss'"):
    tuner.run(c, str(workdir), log=lambda s: None)
  assert not workdir.exists()
  c["controller"]["mode"] = "min"  # agreeing is fine (checked without training)
  assert tuner.controller_from_config(c, "loss", "min") == tuner.PBT(quantile_fraction=0.5)


def test_regression_accuracy_fitness_is_refused(tmp_path):
  from experiments.configs import diabetes_regression  # pylint: disable=g-import-not-at-top

  c = diabetes_regression.get_config().to_dict()
  c["fitness"] = "accuracy"
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match="config.fitness: unknown value 'accuracy' for regression"):
    tuner.run(c, str(workdir), log=lambda s: None)
  assert not workdir.exists()
