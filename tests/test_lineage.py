"""Schedules traced through PBT copies, their export, replay, and the exported best model."""

import json
import os

import numpy as np
import pytest

from hpjax import checkpoint
from hpjax import lineage
from hpjax import tuner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _row(epoch, member, lr):
  return {
    "epoch": epoch,
    "member": member,
    "val_accuracy": 0.5,
    "hparams": {"learning_rate": lr, "optimizer": "sgd", "batch_size": 16, "model": {}},
  }


def _rows(epochs, members):
  # Member m trains with learning rate m + epoch / 10: every row is distinguishable.
  return [_row(e, m, m + e / 10) for e in range(1, epochs + 1) for m in range(members)]


def test_schedule_without_copies_is_the_members_own_rows():
  sched = lineage.member_schedule(_rows(3, 2), [], 1)
  assert [s["epoch"] for s in sched] == [1, 2, 3]
  assert [s["trained_by"] for s in sched] == [1, 1, 1]
  assert [s["hparams"]["learning_rate"] for s in sched] == [1.1, 1.2, 1.3]


def test_schedule_follows_copies_back_through_donors():
  # After epoch 1 member 2 copies 0; after epoch 3 member 1 copies 2.
  events = [{"epoch": 1, "target": 2, "donor": 0}, {"epoch": 3, "target": 1, "donor": 2}]
  sched = lineage.member_schedule(_rows(5, 3), events, 1)
  assert [s["trained_by"] for s in sched] == [0, 2, 2, 1, 1]
  assert [s["hparams"]["learning_rate"] for s in sched] == [0.1, 2.2, 2.3, 1.4, 1.5]
  changes = lineage.schedule_changes(sched)
  assert [c["epoch"] for c in changes] == [2, 3, 4, 5]
  assert changes[0]["copied_from"] == 0 and changes[0]["changes"]["learning_rate"] == [0.1, 2.2]


def test_copy_after_the_last_epoch_means_the_donors_weights():
  events = [{"epoch": 2, "target": 0, "donor": 1}]
  sched = lineage.member_schedule(_rows(2, 2), events, 0, last_epoch=2)
  assert [s["trained_by"] for s in sched] == [1, 1]


def test_halving_events_and_self_copies_are_ignored():
  events = [{"epoch": 1, "event": "pruned", "member": 1}, {"epoch": 1, "target": 0, "donor": 0}]
  sched = lineage.member_schedule(_rows(2, 2), events, 0)
  assert [s["trained_by"] for s in sched] == [0, 0]


def test_schedule_errors_name_the_problem():
  with pytest.raises(ValueError, match="no metrics rows for member 7"):
    lineage.member_schedule(_rows(2, 2), [], 7)
  rows = [r for r in _rows(3, 2) if not (r["epoch"] == 2 and r["member"] == 0)]
  with pytest.raises(ValueError, match="no row for member 0 at epoch 2"):
    lineage.member_schedule(rows, [], 0)
  old = [{k: v for k, v in r.items() if k != "hparams"} for r in _rows(2, 1)]
  with pytest.raises(ValueError, match="no 'hparams'"):
    lineage.member_schedule(old, [], 0)


def test_check_schedule_validates_and_pads():
  doc = {
    "schedule": [
      {"epoch": 1, "hparams": {"learning_rate": 0.1, "batch_size": 16}},
      {"epoch": 2, "hparams": {"learning_rate": 0.2, "batch_size": 16}},
    ]
  }
  per_epoch = lineage.check_schedule(doc, 4)
  assert [h["learning_rate"] for h in per_epoch] == [0.1, 0.2, 0.2, 0.2]
  assert lineage.check_schedule([{"learning_rate": 0.3}], 2) == [{"learning_rate": 0.3}] * 2
  with pytest.raises(ValueError, match="config.hparam_schedule: must be a non-empty list"):
    lineage.check_schedule([], 2)
  with pytest.raises(ValueError, match=r"hparam_schedule\[1\]: must be a mapping"):
    lineage.check_schedule([{"learning_rate": 0.1}, 3], 2)
  with pytest.raises(ValueError, match=r"hparam_schedule\[1\].width: structural"):
    lineage.check_schedule([{"width": 16}, {"width": 32}], 2)
  # Batch size is traced: a schedule may change it.
  assert len(lineage.check_schedule([{"batch_size": 16}, {"batch_size": 32}], 2)) == 2


def test_read_jsonl_skips_a_torn_last_line(tmp_path):
  p = tmp_path / "m.jsonl"
  p.write_text('{"a": 1}\n{"a": 2}\n{"a": ')
  assert lineage.read_jsonl(str(p)) == [{"a": 1}, {"a": 2}]
  assert lineage.read_jsonl(str(tmp_path / "missing.jsonl")) == []


def test_read_jsonl_notes_what_it_skips(tmp_path):
  # The one JSON-lines reader (hpjax.report reads workdirs with it too).
  p = tmp_path / "m.jsonl"
  p.write_text('{"a": 1}\n[1, 2]\n\n{"a": 2}\n{"a": ')
  notes = []
  assert lineage.read_jsonl(str(p), notes) == [{"a": 1}, {"a": 2}]
  assert notes == ["m.jsonl: skipped 2 unreadable line(s): 2, 5"]
  p.write_text('{"a": 1}\n{"a": \n\n')
  notes = []
  assert lineage.read_jsonl(str(p), notes) == [{"a": 1}]
  assert notes == ["m.jsonl: skipped the truncated last line 2"]


def _tiny_config(**overrides):
  from experiments.configs import digits_pbt  # pylint: disable=g-import-not-at-top

  c = digits_pbt.get_config().to_dict()
  c.update(population=6, epochs=3, progress=False, report=False)
  c["data"]["max_train"] = 300
  c["model"].update(width=4, depth=1, dense=16)
  c.update(overrides)
  return c


@pytest.fixture(scope="module")
def pbt_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("pbt"))
  summary = tuner.run(_tiny_config(), workdir, log=lambda s: None)
  return workdir, summary


@pytest.mark.xdist_group("lineage_pbt_run")
def test_run_exports_the_best_members_schedule(pbt_run):
  workdir, summary = pbt_run
  doc = json.load(open(os.path.join(workdir, "best", "schedule.json")))
  assert doc["member"] == summary["best_member"] and doc["epochs"] == 3
  # Recomputed independently: walk the lineage file backwards by hand.
  metrics = lineage.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  events = lineage.read_jsonl(os.path.join(workdir, "lineage.jsonl"))
  cur, expected = summary["best_member"], []
  for epoch in (3, 2, 1):
    row = next(r for r in metrics if r["epoch"] == epoch and r["member"] == cur)
    expected.append(row["hparams"]["learning_rate"])
    donor = [e["donor"] for e in events if e["epoch"] == epoch - 1 and e["target"] == cur]
    cur = donor[0] if donor else cur
  assert [s["hparams"]["learning_rate"] for s in doc["schedule"]] == expected[::-1]
  # The last epoch's hyperparameters are the ones the summary reports.
  assert doc["schedule"][-1]["hparams"]["learning_rate"] == pytest.approx(
    summary["hyperparameters"]["learning_rate"]
  )
  retrain = json.load(open(os.path.join(workdir, "best", "config.json")))
  assert retrain["population"] == 1 and retrain["controller"] == {"name": "none"}
  assert len(retrain["hparam_schedule"]) == 3


@pytest.mark.xdist_group("lineage_pbt_run")
def test_exported_model_reproduces_the_best_members_accuracy(pbt_run, digits):
  workdir, summary = pbt_run
  params, state, meta = checkpoint.load_model(os.path.join(workdir, "best", "model"))
  assert meta["member"] == summary["best_member"] and params
  from hpjax import data as data_lib  # pylint: disable=g-import-not-at-top
  from hpjax.results import Results  # pylint: disable=g-import-not-at-top

  data = data_lib.load_dataset("digits", seed=0, max_train=300)
  # Rebuilt from the files alone (a new process would do the same).
  logits = Results.load(workdir).predict(data.x_val)
  accuracy = float(np.mean(np.argmax(logits, -1) == np.asarray(data.y_val)))
  assert accuracy == pytest.approx(summary["val"]["accuracy"], abs=1e-6)
  assert accuracy > 0.2  # a trained model, not a fresh one


def test_replay_applies_the_schedule_each_epoch(tmp_path):
  hp = {"learning_rate": 0.05, "optimizer": "sgd", "activation": "tanh", "batch_size": 16}
  schedule = [
    {"epoch": 1, "hparams": hp},
    {"epoch": 2, "hparams": {**hp, "learning_rate": 0.0}},  # frozen
    {"epoch": 3, "hparams": {**hp, "optimizer": "adam", "learning_rate": 0.01}},
  ]
  cfg = _tiny_config(population=1, space={}, controller={"name": "none"}, hparam_schedule=schedule)
  summary = tuner.run(cfg, str(tmp_path / "replay"), log=lambda s: None)
  rows = lineage.read_jsonl(str(tmp_path / "replay" / "metrics.jsonl"))
  assert [r["hparams"]["learning_rate"] for r in rows] == pytest.approx([0.05, 0.0, 0.01])
  assert [r["hparams"]["optimizer"] for r in rows] == ["sgd", "sgd", "adam"]
  # Learning rate 0 in epoch 2: the weights, hence the validation metrics, stay.
  assert rows[1]["val_loss"] == rows[0]["val_loss"]
  assert rows[2]["val_loss"] != rows[1]["val_loss"]
  assert summary["members"] == 1


def test_replay_refuses_a_population_or_a_controller(tmp_path):
  schedule = [{"learning_rate": 0.05}]
  with pytest.raises(ValueError, match="config.population: must be 1 when replaying"):
    tuner.run(
      _tiny_config(controller={"name": "none"}, hparam_schedule=schedule),
      str(tmp_path / "a"),
      log=lambda s: None,
    )
  with pytest.raises(ValueError, match="config.controller.name: must be 'none'"):
    tuner.run(
      _tiny_config(population=1, hparam_schedule=schedule), str(tmp_path / "b"), log=lambda s: None
    )
  with pytest.raises(ValueError, match="config.space: must be empty when replaying"):
    tuner.run(
      _tiny_config(population=1, controller={"name": "none"}, hparam_schedule=schedule),
      str(tmp_path / "d"),
      log=lambda s: None,
    )
  with pytest.raises(
    ValueError, match=r"config.hparam_schedule\[0\]: activation: unknown value .softsign."
  ):
    tuner.run(
      _tiny_config(
        population=1,
        controller={"name": "none"},
        space={},
        hparam_schedule=[{"activation": "softsign"}],
      ),
      str(tmp_path / "c"),
      log=lambda s: None,
    )
  assert not any((tmp_path / d).exists() for d in "abcd")
