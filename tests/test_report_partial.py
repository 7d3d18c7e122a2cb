"""Reports on a launcher run before it wrote summary.json: ranked as the tuner ranks.

While a run is going (or after it was killed) there is no ``summary.json``;
the launcher's ``config.json`` holds the raw ``fitness`` (``""``: the first
metric) and no direction. The run records its resolved fitness and mode
before its first epoch, so a partial report, and ``hpjax.load_results``,
rank by the tuner's metric in the tuner's direction, a user's metric
included (named like a built-in one but with another direction, or first in
a list).
"""

import json
import os
import sys
import textwrap

import numpy as np
import pytest

import hpjax
from hpjax import fitness as fitness_lib
from hpjax import report
from hpjax import tuner
from hpjax.writers import Writer

_MODULE = "report_partial_metrics"
_METRICS = """
import jax.numpy as jnp
import hpjax
from hpjax import fitness

def _err(outputs, targets):
  return (jnp.argmax(outputs, -1) != targets).astype(jnp.float32)

def _hit(outputs, targets):
  return (jnp.argmax(outputs, -1) == targets).astype(jnp.float32)

ERR = hpjax.Metric("err", _err, "min")
# Named like the built-in accuracy, minimised.
LOW_ACCURACY = hpjax.Metric("accuracy", _hit, "min")
USER_FIRST = [LOW_ACCURACY, ERR]
BUILTIN_SECOND = [ERR, fitness.ACCURACY]
"""


@pytest.fixture(scope="module")
def metrics_module(tmp_path_factory):
  """A user's metrics module on sys.path (the launcher imports ``module:object``)."""
  path = tmp_path_factory.mktemp("user_metrics")
  (path / f"{_MODULE}.py").write_text(textwrap.dedent(_METRICS))
  sys.path.insert(0, str(path))
  yield _MODULE
  sys.path.remove(str(path))
  sys.modules.pop(_MODULE, None)


def _config(**overrides):
  from experiments.configs import digits_pbt  # pylint: disable=g-import-not-at-top

  c = digits_pbt.get_config().to_dict()
  c.update(
    population=4,
    epochs=2,
    progress=False,
    report=False,
    tensorboard=False,
    shard=False,
    controller={"name": "none"},
  )
  c["space"].pop("batch_size")
  c["data"]["max_train"] = 128
  c["model"].update(width=4, depth=1, dense=16)
  c.update(overrides)
  return c


class _PartialReports(Writer):
  """After each epoch's row is written: the partial report, and the tuner's own ranking."""

  def __init__(self, workdir):
    self.workdir = workdir
    self.seen = []

  def epoch(self, record):
    assert not os.path.exists(os.path.join(self.workdir, "summary.json"))
    got = report.summarize(report.load_run(self.workdir))
    order = fitness_lib.rank(record.fitness, record.mode)
    want = (record.fitness_name, record.mode, [record.ids[i] for i in order])
    self.seen.append(((got["fitness"], got["mode"], [r["member"] for r in got["ranking"]]), want))


CASES = {
  # (config.fitness, config.metric object): the fitness and mode the tuner ranks by.
  "default_fitness_user_metric": ("", "ERR", "err", "min"),
  "named_user_fitness": ("err", "ERR", "err", "min"),
  "user_metric_first_named_like_a_builtin": ("", "USER_FIRST", "accuracy", "min"),
  "builtin_metric_second": ("", "BUILTIN_SECOND", "err", "min"),
}


def _run(tmp_path, module, case):
  fitness, metric, _, _ = CASES[case]
  exp = tuner.from_config(_config(fitness=fitness, metric=f"{module}:{metric}"))
  workdir = str(tmp_path / case)
  probe = _PartialReports(workdir)
  exp.writers = (probe,)
  summary = tuner.execute(exp, workdir, log=lambda s: None).summary
  return workdir, summary, probe


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_partial_run_ranks_as_the_tuner(tmp_path, metrics_module, case):
  workdir, summary, probe = _run(tmp_path, metrics_module, case)
  _, _, name, mode = CASES[case]
  assert (summary["fitness"], summary["mode"]) == (name, mode)
  assert len(probe.seen) == 2  # during the run: after epochs 1 and 2
  for got, want in probe.seen:
    assert got == want
  # Killed before summary.json was written: the same ranking.
  os.remove(os.path.join(workdir, "summary.json"))
  partial = report.summarize(report.load_run(workdir))
  assert (partial["fitness"], partial["mode"]) == (name, mode)
  assert [r["member"] for r in partial["ranking"]] == summary["ranking"]
  assert partial["val"][name] == pytest.approx(summary["val"][name])
  best = hpjax.load_results(workdir).best
  assert (best.member, best.fitness, best.mode) == (summary["best_member"], name, mode)


def test_an_older_workdir_without_the_recorded_fitness(tmp_path, metrics_module):
  workdir, _, _ = _run(tmp_path, metrics_module, "named_user_fitness")
  for name in os.listdir(workdir):
    if name in ("summary.json", "run.json"):
      os.remove(os.path.join(workdir, name))
  # A user's metric that the run recorded no direction for: one clear line.
  with pytest.raises(report.ReportError) as info:
    report.summarize(report.load_run(workdir))
  message = str(info.value)
  assert "\n" not in message and "'err'" in message and "direction" in message
  with pytest.raises(ValueError, match="no run to load .*direction"):
    hpjax.load_results(workdir)


def test_an_older_builtin_workdir_keeps_its_fitness(tmp_path):
  # No run.json and no summary.json (hpjax before run.json): the metric is
  # known by its name, as before.
  workdir = tmp_path / "old"
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps({"population": 2, "epochs": 1, "fitness": ""}))
  rows = [
    {"epoch": 1, "member": m, "val_loss": loss, "val_accuracy": acc}
    for m, loss, acc in ((0, 1.0, 0.5), (1, 2.0, 0.7))
  ]
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  run = report.load_run(workdir)
  assert (run.fitness, run.mode) == ("accuracy", "max")
  assert report.summarize(run)["best_member"] == 1
  assert np.isclose(report.summarize(run)["val"]["accuracy"], 0.7)
