"""Traced hyperparameter values: what is reported and logged is exactly what trains.

A traced float lives in the population's state as a float32; a float choice
must still read back as its choice, an explored value must be logged as the
float32 it trains with (inside its bounds), a batch size must fit the
training set, and a space entry the model never reads is refused. The
references are numpy's float32 rounding and the values the device state holds.
"""

import json

from flax import nnx
import numpy as np
import pytest

import hpjax
from hpjax import engine
from hpjax import hparams as hp_lib
from hpjax.controllers import base as base_lib
from hpjax.controllers import pbt

LR_CHOICES = (1e-3, 3e-3, 1e-2, 3e-2)


class MLP(nnx.Module):
  """A user's model that reads no hyperparameter (``model(x)``)."""

  def __init__(self, *, rngs, input_shape=(8, 8, 1), num_outputs=10):
    self.l1 = nnx.Linear(int(np.prod(input_shape)), 8, rngs=rngs)
    self.l2 = nnx.Linear(8, num_outputs, rngs=rngs)

  def __call__(self, x):
    return self.l2(nnx.relu(self.l1(x.reshape(x.shape[0], -1))))


def _ignores_hp(outputs, y, hp):
  """A user's loss that reads no hyperparameter."""
  del hp
  return hpjax.losses.per_example_loss("cross_entropy", outputs, y, outputs.shape[-1])


@pytest.fixture(scope="module")
def data():
  return hpjax.load_dataset("digits", seed=0, max_train=64)


def _f32(v):
  return float(np.float32(v))


def _state_values(pop, name):
  """Per member, the traced value the device state holds (what trains), as a Python float."""
  out = [None] * pop.size
  for g in pop.groups:
    values = np.asarray(engine.get_hparams(g.state)[name])
    for j, i in enumerate(g.members):
      out[i] = float(values[j])
  return out


# ---------------------------------------------------------------------------
# The rounding itself, against numpy.


def test_stored_is_numpys_float32_kept_inside_the_bounds():
  rng = np.random.default_rng(0)
  for v in np.exp(rng.uniform(np.log(1e-5), np.log(1.0), 50)):
    assert hp_lib.stored("learning_rate", float(v)) == _f32(v)
  # float32(0.1) = 0.10000000149 > 0.1: a value clipped to hi=0.1 stays at or below it.
  space = {"learning_rate": hpjax.Float(1e-3, 0.1)}
  below = float(np.nextafter(np.float32(0.1), np.float32(0)))
  assert _f32(0.1) > 0.1 and below < 0.1
  assert hp_lib.stored("learning_rate", 0.1, space) == below
  # ... and at or above lo (float32(0.7) < 0.7).
  space = {"weight_decay": hpjax.Float(0.7, 0.9)}
  above = float(np.nextafter(np.float32(0.7), np.float32(1)))
  assert _f32(0.7) < 0.7 and hp_lib.stored("weight_decay", 0.7, space) == above
  # The table's open bound: a rate just below 1 must not round to 1 (keep 0).
  rate = hp_lib.stored("dropout", 1 - 1e-9)
  assert rate < 1.0 and rate == float(np.nextafter(np.float32(1), np.float32(0)))
  # A value already outside a bound is only rounded (the checks refuse it elsewhere).
  assert hp_lib.stored("learning_rate", 0.2, {"learning_rate": hpjax.Float(1e-3, 0.1)}) == _f32(0.2)
  # Listed values, structural and non-float names stay as given.
  assert hp_lib.stored("learning_rate", 0.03, {"learning_rate": hpjax.Choice(LR_CHOICES)}) == 0.03
  assert hp_lib.stored("batch_size", 48) == 48 and hp_lib.stored("activation", "tanh") == "tanh"
  scale = {"scale": hpjax.Float(0.5, 1.5)}
  assert hp_lib.stored("scale", 0.7, scale) == _f32(0.7)
  assert hp_lib.stored("width", 6) == 6


def test_decode_returns_a_listed_float_not_its_float32():
  lr = hp_lib.BUILTIN["learning_rate"]
  for c in LR_CHOICES:
    assert hp_lib.decode(lr, np.float32(c), LR_CHOICES) == c
  assert hp_lib.decode(lr, np.float32(0.02), LR_CHOICES) == _f32(0.02)
  own = hpjax.Choice((0.1, 0.7)).hparam("scale")  # a user's float choice: its own choices
  assert hp_lib.decode(own, np.float32(0.7)) == 0.7


# ---------------------------------------------------------------------------
# A: a traced float choice reads back as its choice, everywhere.


def test_a_float_choice_is_reported_as_its_values_and_pbt_explores_it(data, tmp_path):
  space = {"learning_rate": hpjax.Choice(LR_CHOICES)}
  res = hpjax.tune(
    MLP,
    data,
    space,
    population=4,
    epochs=3,
    batch_size=32,
    controller=hpjax.PBT(quantile_fraction=0.5, resample_probability=0.0),
    workdir=str(tmp_path),
    log=lambda s: None,
    shard=False,
  )
  assert res.best.hparams["learning_rate"] in LR_CHOICES
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert len(rows) == 12
  assert all(r["hparams"]["learning_rate"] in LR_CHOICES for r in rows)
  events = [json.loads(l) for l in open(tmp_path / "lineage.jsonl")]
  assert events  # PBT exploited (it used to fail at the first one)
  for e in events:
    assert e["new_hparams"]["learning_rate"] in LR_CHOICES
    assert e["old_hparams"]["learning_rate"] in LR_CHOICES


def test_float_choices_one_float32_cannot_hold_apart_are_refused(data):
  space = {"learning_rate": hpjax.Choice((0.1, 0.1 + 1e-12))}
  with pytest.raises(
    ValueError, match=r"^space.learning_rate: 0.1 and 0.1000000000010\d* are one float32"
  ):
    hpjax.Population([dict(learning_rate=0.1)], data, model=MLP, space=space, mesh=None)


# ---------------------------------------------------------------------------
# B: an explored value is logged as the float32 the member trains with.


def test_explored_values_are_planned_as_they_train_inside_their_bounds(data):
  space = {
    "learning_rate": hpjax.Float(1e-3, 0.1, log=True),
    "weight_decay": hpjax.Float(0.0, 1e-3),
  }
  members = [
    dict(learning_rate=0.1, weight_decay=1e-3, optimizer="sgd"),
    dict(learning_rate=0.0123, weight_decay=3e-4, optimizer="sgd"),
  ]
  pop = hpjax.Population(members, data, model=MLP, space=space, mesh=None)
  hps = pop.hparams()
  # The initial members: at the bound 0.1 and 1e-3, stored at or below it.
  assert hps[0]["learning_rate"] == float(np.nextafter(np.float32(0.1), np.float32(0)))
  assert hps[0]["weight_decay"] <= 1e-3
  assert _state_values(pop, "learning_rate") == [h["learning_rate"] for h in hps]
  cfg = hpjax.PBT(quantile_fraction=0.5, resample_probability=0.0, perturbation_factors=(1.2,))
  plan = pbt.exploit_explore(
    np.array([0.9, 0.1]), hps, space, pop.group_ids(), cfg, np.random.default_rng(0), 1
  )
  (event,) = plan.events
  assert event["target"] == 1 and event["donor"] == 0
  new = event["new_hparams"]
  # numpy reference: donor * 1.2 clipped to hi in float64, then the float32 at or below hi.
  for name, hi in (("learning_rate", 0.1), ("weight_decay", 1e-3)):
    clipped = min(hps[0][name] * 1.2, hi)
    want = _f32(clipped)
    if want > hi:
      want = float(np.nextafter(np.float32(want), np.float32(0)))
    assert new[name] == want and new[name] <= hi, name
  pop.set_member_hparams(plan.hparams, donors=plan.donors)
  after = pop.hparams()
  # What is logged is what the next metrics row reports and what the state trains with.
  for name in space:
    assert after[1][name] == new[name]
    assert _state_values(pop, name)[1] == new[name]


def _users_explore(hp, rng):
  # A user's explore: a float64 value no float32 holds, as a user computes it.
  return {**hp, "learning_rate": float(hp["learning_rate"]) * 1.1 + 1e-9}


class _UsersPBT(hpjax.PBT):
  """A user's controller: PBT with its own explore, whose plan holds float64 values."""

  def decide(self, view):
    plan = pbt.exploit_explore(
      view.fitness,
      view.hparams,
      view.space,
      view.groups,
      self,
      view.rng,
      view.generation,
      mode=view.mode,
      structural=view.structural,
      explore_fn=_users_explore,
    )
    return base_lib.Decision(donors=plan.donors, hparams=plan.hparams, events=plan.events)


@pytest.mark.parametrize("controller", [hpjax.PBT, _UsersPBT], ids=["pbt", "users_explore"])
def test_a_pbt_runs_lineage_equals_the_next_metrics_rows(data, tmp_path, controller):
  space = {
    "learning_rate": hpjax.Float(1e-3, 1e-1, log=True),
    "optimizer": hpjax.Choice(("sgd", "adam")),
    "weight_decay": hpjax.Float(0.0, 1e-3),
  }
  hpjax.tune(
    MLP,
    data,
    space,
    population=4,
    epochs=3,
    batch_size=32,
    controller=controller(quantile_fraction=0.25, resample_probability=0.0),
    workdir=str(tmp_path),
    log=lambda s: None,
    shard=False,
  )
  rows = {(r["epoch"], r["member"]): r for r in map(json.loads, open(tmp_path / "metrics.jsonl"))}
  events = [json.loads(l) for l in open(tmp_path / "lineage.jsonl")]
  assert events
  for e in events:
    nxt = rows[(e["epoch"] + 1, e["target"])]["hparams"]
    for name, value in e["new_hparams"].items():
      assert nxt[name] == value, (e["epoch"], name)


# ---------------------------------------------------------------------------
# C: a batch size must fit the training set.


def test_set_member_hparams_refuses_a_batch_larger_than_the_training_set(data):
  members = [dict(batch_size=8, learning_rate=0.05), dict(batch_size=16, learning_rate=0.05)]
  pop = hpjax.Population(members, data, model=MLP, mesh=None)
  assert pop.batch_traced and pop.micro == 8 and data.num_train == 64
  hps = pop.hparams()
  with pytest.raises(
    ValueError,
    match=r"^batch_size: 72 is more than the 64 training examples; allowed: a multiple of 8 up to 64$",
  ):
    pop.set_member_hparams([hps[0], dict(hps[1], batch_size=72)])
  assert [h["batch_size"] for h in pop.hparams()] == [8, 16]  # nothing changed
  pop.set_member_hparams([hps[0], dict(hps[1], batch_size=64)])  # the whole set: allowed
  assert [h["batch_size"] for h in pop.hparams()] == [8, 64]


@pytest.mark.parametrize(
  "space, candidates, match",
  [
    ({"batch_size": hpjax.Choice((16, 256), ordered=True)}, None, r"^space.batch_size: 256 "),
    ({"batch_size": hpjax.Int(16, 80)}, None, r"^space.batch_size: 80 "),
    ({"batch_size": hpjax.Fixed(128)}, None, r"^space.batch_size: 128 "),
    (None, {"batch_size": (8, 16, 96)}, r"^candidates.batch_size: 96 "),
  ],
)
def test_batch_sizes_a_controller_could_reach_must_fit_the_training_set(
  data, space, candidates, match
):
  with pytest.raises(
    ValueError,
    match=match + r"is more than the 64 training examples; allowed: batch sizes up to 64$",
  ):
    hpjax.Population(
      [dict(batch_size=16)], data, model=MLP, space=space, candidates=candidates, mesh=None
    )


# ---------------------------------------------------------------------------
# F: a space entry nothing reads is refused; names read elsewhere are not.


@pytest.mark.parametrize(
  "name, dim",
  [
    ("activation", hpjax.Choice(("relu", "tanh"))),
    ("dropout", hpjax.Float(0.0, 0.5)),
  ],
)
def test_a_builtin_model_name_a_users_model_never_reads_is_refused(data, name, dim):
  space = {"learning_rate": hpjax.Float(1e-3, 1e-1), name: dim}
  with pytest.raises(ValueError, match=rf"^space.{name}: neither the model nor the loss reads"):
    hpjax.Population([dict(learning_rate=0.01)], data, model=MLP, space=space, mesh=None)


def test_a_loss_name_a_users_loss_never_reads_is_refused(data):
  space = {"label_smoothing": hpjax.Float(0.0, 0.2)}
  with pytest.raises(ValueError, match=r"^space.label_smoothing: neither the model nor the loss"):
    hpjax.Population([{}], data, model=MLP, loss=_ignores_hp, space=space, mesh=None)


def test_names_the_optimizer_loop_or_builtin_loss_and_models_read_are_accepted(data):
  space = {
    "learning_rate": hpjax.Float(1e-3, 1e-1),
    "optimizer": hpjax.Choice(("sgd", "adam")),
    "momentum": hpjax.Float(0.5, 0.9),
    "weight_decay": hpjax.Float(0.0, 1e-3),
    "batch_size": hpjax.Choice((16, 32)),
    "loss": hpjax.Choice(("cross_entropy", "mse")),
    "label_smoothing": hpjax.Float(0.0, 0.2),
  }
  pop = hpjax.Population([dict(batch_size=16)], data, model=MLP, space=space, mesh=None)
  assert pop.size == 1
  builtin = {"activation": hpjax.Choice(("relu", "tanh")), "dropout": hpjax.Float(0.0, 0.5)}
  tiny = dict(family="mlp", depth=1, width=8)
  pop = hpjax.Population([tiny], data, space=builtin, mesh=None)
  assert pop.size == 1
