"""Extending a finished run (a relaunch with more epochs) equals a run planned that
long, or is refused before anything changes."""

import json
import os

import pytest
import tiny_configs

from hpjax import tuner


def _rows(workdir, name="metrics.jsonl"):
  rows = [json.loads(l) for l in open(os.path.join(workdir, name))]
  for r in rows:
    r.pop("wall_s", None)
  return rows


def _quiet(config, workdir):
  return tuner.run(config, workdir, log=lambda s: None)


def _cosine(**overrides):
  from experiments.configs import digits_pbt  # pylint: disable=g-import-not-at-top

  c = tiny_configs.digits(digits_pbt, population=4, **overrides)
  c["space"].pop("batch_size")
  c["schedule"]["kind"] = "cosine"
  return c


def test_cosine_run_tied_to_its_length_cannot_be_extended(tmp_path):
  workdir = str(tmp_path / "run")
  _quiet(_cosine(epochs=1), workdir)
  before = {
    f: open(os.path.join(workdir, f), "rb").read()
    for f in ("metrics.jsonl", "lineage.jsonl", "config.json", "summary.json")
  }
  steps = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  with pytest.raises(
    ValueError,
    match=r"config.epochs: .* was started with epochs=1 and a cosine "
    r"learning-rate schedule .* running it for 3 would change the rate of every "
    r"step; use a new --workdir \(set schedule.decay_epochs",
  ):
    _quiet(_cosine(epochs=3), workdir)
  for f, content in before.items():
    assert open(os.path.join(workdir, f), "rb").read() == content
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == steps


def test_cosine_with_its_own_length_extends_like_a_straight_run(tmp_path):
  straight, extended = str(tmp_path / "straight"), str(tmp_path / "extended")
  a = _quiet(_cosine(epochs=3, schedule={"decay_epochs": 3.0}), straight)
  _quiet(_cosine(epochs=1, schedule={"decay_epochs": 3.0}), extended)
  b = _quiet(_cosine(epochs=3, schedule={"decay_epochs": 3.0}), extended)
  assert _rows(extended) == _rows(straight)
  assert _rows(extended, "lineage.jsonl") == _rows(straight, "lineage.jsonl")
  assert a["val"] == b["val"] and a["best_member"] == b["best_member"]


def test_halving_extension_makes_the_rung_at_the_old_last_epoch(tmp_path):
  from experiments.configs import digits_halving  # pylint: disable=g-import-not-at-top

  straight, extended = str(tmp_path / "straight"), str(tmp_path / "extended")
  config = lambda epochs: tiny_configs.digits(digits_halving, population=9, epochs=epochs)
  a = _quiet(config(4), straight)  # rungs after epochs 1 and 3: 9 -> 3 -> 1
  first = _quiet(config(3), extended)  # one rung: 9 -> 3
  assert first["members_at_end"] == 3
  b = _quiet(config(4), extended)
  assert (b["members_at_end"], b["member_epochs"]) == (a["members_at_end"], a["member_epochs"])
  assert (a["members_at_end"], a["member_epochs"]) == (1, 9 + 3 + 3 + 1)
  assert _rows(extended) == _rows(straight)
  assert _rows(extended, "lineage.jsonl") == _rows(straight, "lineage.jsonl")
  assert a["best_member"] == b["best_member"] and a["val"] == b["val"]
