"""Replaying a schedule in which traced hyperparameters change (batch size, dropout).

The exported best schedule of a PBT run changes whatever PBT explored:
``digits_pbt`` traces batch sizes 16 / 32, so the best lineage may switch
between them. The one-member replay must compile every value the schedule
switches to, train exactly as the original member did, and refuse a schedule
it cannot follow before it trains (or writes) anything.
"""

import dataclasses
import json
import os

import pytest

from hpjax import lineage
from hpjax import tuner
from hpjax.controllers import Controller
from hpjax.controllers import Decision


@dataclasses.dataclass(frozen=True)
class _SwitchOnce(Controller):
  """Changes member 0's hyperparameters after epoch 1 (no copy): a lineage PBT could leave."""

  change: tuple = ()
  name = "switch_once"

  def acts_at(self, epoch):
    return epoch == 1

  def decide(self, view):
    return Decision(hparams=[dict(self.change)])


def _config(**overrides):
  from experiments.configs import digits_pbt  # pylint: disable=g-import-not-at-top

  c = digits_pbt.get_config().to_dict()
  c.update(
    population=1,
    epochs=2,
    progress=False,
    report=False,
    tensorboard=False,
    shard=False,
    controller={"name": "none"},
    space={},
  )
  c["data"]["max_train"] = 128
  c["model"].update(width=4, depth=1, dense=16)
  c.update(overrides)
  return c


def _rows(workdir):
  return lineage.read_jsonl(os.path.join(workdir, "metrics.jsonl"))


@pytest.mark.parametrize(
  "start, change",
  [
    # PBT moved the lineage from batch size 16 to 32 (and dropout 0 to 0.1).
    (16, {"batch_size": 32, "dropout": 0.1, "learning_rate": 0.02}),
    # Always 32, in a run that compiled 16 and 32: micro-batches of 16 still.
    (32, {"dropout": 0.1, "learning_rate": 0.02}),
  ],
)
def test_replay_of_the_exported_schedule_equals_the_original_training(tmp_path, start, change):
  # The original: batch size traced (16 / 32) and dropout compiled, as in a
  # PBT run over them; its member trains epoch 1 at ``start`` without
  # dropout, then takes ``change``.
  space = {
    "batch_size": {"type": "choice", "values": [16, 32], "ordered": True},
    "dropout": {"type": "float", "lo": 0.0, "hi": 0.5},
  }
  exp = tuner.from_config(_config(space=space))
  exp.members[0].update(batch_size=start, dropout=0.0, learning_rate=0.01)
  exp.controller = _SwitchOnce(tuple(change.items()))
  original = str(tmp_path / "original")
  tuner.execute(exp, original, log=lambda s: None)
  with open(os.path.join(original, "best", "config.json")) as f:
    retrain = json.load(f)
  sizes = [e["hparams"]["batch_size"] for e in retrain["hparam_schedule"]]
  assert sizes == [start, change.get("batch_size", start)]

  replay = str(tmp_path / "replay")
  summary = tuner.run(retrain, replay, log=lambda s: None)
  before, after = _rows(original), _rows(replay)
  assert [r["epoch"] for r in after] == [1, 2] and summary["epochs"] == 2
  for key in ("batch_size", "dropout", "learning_rate"):
    assert [r["hparams"][key] for r in after] == [r["hparams"][key] for r in before]
  # The same programs and keys: the same numbers, epoch by epoch.
  for key in ("train_loss", "val_loss", "val_accuracy"):
    assert [r[key] for r in after] == [r[key] for r in before], key


def _refused(tmp_path, schedule, **overrides):
  workdir = tmp_path / "refused"
  cfg = _config(hparam_schedule=schedule, **overrides)
  with pytest.raises(ValueError) as info:
    tuner.run(cfg, str(workdir), log=lambda s: None)
  assert not workdir.exists()  # refused before anything was trained or written
  message = str(info.value)
  assert "\n" not in message
  return message


def test_a_batch_size_the_replay_cannot_switch_to_is_refused_before_training(tmp_path):
  hp = {"learning_rate": 0.01, "optimizer": "adam", "batch_size": 16}
  message = _refused(tmp_path, [hp, {**hp, "batch_size": 24}])
  assert message.startswith("config.hparam_schedule[1]: batch_size: 24 is not a multiple of 16")


def test_a_batch_size_larger_than_the_training_split_is_refused_before_training(tmp_path):
  hp = {"learning_rate": 0.01, "optimizer": "adam", "batch_size": 16}
  message = _refused(tmp_path, [hp, hp, {**hp, "batch_size": 256}], epochs=3)
  assert message.startswith("config.hparam_schedule[2]: batch_size: ")
  assert "fewer than one batch of 256" in message


def test_the_built_replay_checks_every_epoch_of_its_schedule(tmp_path):
  # The last check before training: each epoch's values against what the
  # population compiled (what the loop's set_member_hparams would refuse).
  hp = {"learning_rate": 0.01, "optimizer": "adam", "batch_size": 16}
  exp = tuner.from_config(_config(hparam_schedule=[hp, {**hp, "batch_size": 32}]))
  pop = tuner.build_population(exp)
  tuner.check_replay_fits(pop, exp.hparam_schedule)  # batch size traced: 16 -> 32 fits
  for change, words in (
    ({"width": 8}, "width: structural, so a replay cannot change it (4 -> 8)"),
    ({"dropout": 0.1}, "dropout: 0.1 needs dropout compiled in"),
    ({"optimizer": "sgd"}, "optimizer: 'sgd' is not among the families compiled"),
    ({"batch_size": 40}, "batch_size: 40 is not a multiple of 16"),
  ):
    with pytest.raises(ValueError, match=r"^config\.hparam_schedule\[2\]: ") as info:
      tuner.check_replay_fits(pop, [*exp.hparam_schedule, {**hp, **change}])
    assert words in str(info.value)
