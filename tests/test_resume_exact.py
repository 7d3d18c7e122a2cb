"""A crashed or killed run, relaunched, equals a run that was never stopped.

Each test stops a real run (a writer raising at an epoch, as a crash or a
kill would stop it between a checkpoint and the next), relaunches it in the
same workdir, and compares what it wrote against a run that went straight
through: the logs row by row, the counters in the summary.
"""

import json
import os
import resource

import pytest
import tiny_configs

from experiments.compare_workdirs import compare
from hpjax import tuner
from hpjax import writers as writers_lib


def _digits(**overrides):
  from experiments.configs import digits_pbt  # pylint: disable=g-import-not-at-top

  return tiny_configs.digits(digits_pbt, **overrides)


class _Crash(writers_lib.Writer):
  """Raises once epoch ``at`` is trained: the run stops before that epoch's checkpoint."""

  def __init__(self, at):
    self.at = at

  def epoch(self, record):
    if record.epoch == self.at:
      raise RuntimeError(f"crash at epoch {record.epoch}")


def _run(config, workdir, crash_at=None):
  exp = tuner.from_config(config)
  if crash_at is None:
    return tuner.execute(exp, workdir, log=lambda s: None)
  exp.writers = (_Crash(crash_at),)
  with pytest.raises(RuntimeError, match="crash at epoch"):
    tuner.execute(exp, workdir, log=lambda s: None)
  return None


def _rows(workdir, name):
  return [json.loads(l) for l in open(os.path.join(workdir, name)) if l.strip()]


def test_a_crashed_extension_writes_its_first_decision_once(tmp_path):
  # Extending a finished 2-epoch run makes the decision its last epoch
  # skipped; a crash in epoch 3 (before the next checkpoint) must not leave
  # that decision's events in the lineage to be written again on relaunch.
  straight, extended = str(tmp_path / "straight"), str(tmp_path / "extended")
  _run(_digits(population=4, epochs=4), straight)
  _run(_digits(population=4, epochs=2), extended)
  _run(_digits(population=4, epochs=4), extended, crash_at=3)
  _run(_digits(population=4, epochs=4), extended)
  want = [e["epoch"] for e in _rows(straight, "lineage.jsonl")]
  assert want and [e["epoch"] for e in _rows(extended, "lineage.jsonl")] == want
  assert not compare(straight, extended)


@pytest.mark.parametrize("controller", [None, {"name": "halving", "grace_period": 1}])
def test_a_relaunch_with_fewer_epochs_than_trained_and_decided_is_refused(tmp_path, controller):
  # A 6-epoch run stopped in epoch 4 holds the decision made after epoch 3;
  # a 3-epoch run makes none there. Ending the stopped run at 3 would report
  # and export a population no 3-epoch run has: refused, nothing changed.
  def config(epochs):
    c = _digits(population=6, epochs=epochs)
    if controller:
      c["controller"] = controller
    return c

  workdir = str(tmp_path / "run")
  _run(config(6), workdir, crash_at=4)
  before = {
    f: open(os.path.join(workdir, f), "rb").read() for f in ("metrics.jsonl", "lineage.jsonl")
  }
  for epochs in (3, 2):
    with pytest.raises(ValueError, match=rf"^config.epochs: {epochs} .* 3 epochs trained"):
      _run(config(epochs), workdir)
  for f, content in before.items():
    assert open(os.path.join(workdir, f), "rb").read() == content
  # Ending it later than its checkpoint is a run of that length.
  straight = str(tmp_path / "straight")
  _run(config(4), straight)
  _run(config(4), workdir)
  assert not compare(straight, workdir)


def test_a_failed_rewrite_of_the_logs_on_resume_leaves_them_whole(tmp_path):
  workdir = str(tmp_path / "run")
  config = _digits(population=4, epochs=4)
  _run(config, workdir, crash_at=4)  # the newest checkpoint: epoch 3
  path = os.path.join(workdir, "metrics.jsonl")
  before = open(path, "rb").read()
  soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
  resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))  # a full disk, as the kernel says it
  try:
    with pytest.raises(ValueError, match="metrics.jsonl: cannot be rewritten to resume"):
      _run(config, workdir)
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
  assert open(path, "rb").read() == before
  straight = str(tmp_path / "straight")
  _run(config, straight)
  _run(config, workdir)
  assert not compare(straight, workdir)


def test_a_resumed_population_counts_the_batch_sizes_its_members_train_with(tmp_path):
  # PBT moves traced batch sizes; after a resume the population must count
  # each member's steps with its current size, not the one it started with.
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  config = _digits(population=6, epochs=4)
  a = _run(config, straight)
  _run(config, resumed, crash_at=4)
  b = _run(config, resumed)
  assert [m["batch_size"] for m in b.population.members] == [
    h["batch_size"] for h in b.population.hparams()
  ]
  assert b.population.members == a.population.members
  last = [r for r in _rows(resumed, "metrics.jsonl") if r["epoch"] == 4]
  trained = sum(b.population.data.num_train // r["hparams"]["batch_size"] for r in last)
  assert b.population.steps_per_epoch() == a.population.steps_per_epoch() == trained
