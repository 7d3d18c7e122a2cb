"""PBT with halving rungs: the cut, then PBT among the survivors, in one decision."""

import json

import numpy as np
import pytest

import hpjax
from hpjax import tuner
from hpjax.controllers import View
from hpjax.space import Choice
from hpjax.space import Float

SPACE = {"learning_rate": Float(1e-4, 1e-1, log=True), "optimizer": Choice(("sgd", "adam"))}


def _view(fitness, epoch, mode="max"):
  p = len(fitness)
  hparams = [{"learning_rate": 1e-3 * (i + 1), "optimizer": "adam"} for i in range(p)]
  return View(
    epoch=epoch,
    generation=epoch,
    seed=0,
    fitness=np.asarray(fitness, float),
    mode=mode,
    hparams=hparams,
    groups=np.zeros(p, int),
    space=SPACE,
    structural=(),
    max_epochs=9,
  )


def test_cut_then_pbt_among_the_survivors():
  c = hpjax.PBTHalving(hpjax.PBT(quantile_fraction=0.5), hpjax.Halving(1, 2))
  f = [0.1, 0.9, 0.5, 0.7, 0.2, 0.8, 0.3, 0.6]
  d = c.decide(_view(f, 1))  # a rung (1) and a PBT decision
  assert d.keep.tolist() == [1, 3, 5, 7]  # the best half survives
  assert [e["member"] for e in d.events if e.get("event") == "pruned"] == [0, 2, 4, 6]
  copies = [e for e in d.events if "donor" in e]
  # Among survivors (0.9, 0.7, 0.8, 0.6) the bottom half (0.7, 0.6) copies the top (0.9, 0.8).
  assert sorted(e["target"] for e in copies) == [3, 7]
  assert all(e["donor"] in (1, 5) for e in copies)
  assert d.donors[[0, 2, 4, 6]].tolist() == [0, 2, 4, 6]  # the pruned copy nobody
  assert "pruned 4, 4 left" in d.note and "replaced 2" in d.note
  d2 = c.decide(_view(f, 3))  # epoch 3: not a rung of grace 1, eta 2 (1, 2, 4): PBT only
  assert d2.keep is None and len(d2.replaced) == 4
  minimised = c.decide(_view(f, 1, mode="min"))
  assert minimised.keep.tolist() == [0, 2, 4, 6]


@pytest.mark.xdist_group("hybrid_run")
def test_hybrid_run_spends_fewer_member_epochs(tmp_path):
  from experiments.configs import digits_pbt  # pylint: disable=g-import-not-at-top

  c = digits_pbt.get_config().to_dict()
  c.update(population=8, epochs=4, progress=False, report=False, tensorboard=False)
  c["data"]["max_train"] = 200
  c["model"].update(width=4, depth=1, dense=16)
  c["controller"] = {
    "name": "pbt_halving",
    "pbt": {"quantile_fraction": 0.25},
    "halving": {"grace_period": 1, "reduction_factor": 2, "min_members": 2},
  }
  summary = tuner.run(c, str(tmp_path / "run"), log=lambda s: None)
  assert summary["members_at_end"] == 2  # 8 -> 4 (epoch 1) -> 2 (epoch 2)
  assert summary["member_epochs"] == 8 + 4 + 2 + 2
  events = [json.loads(l) for l in open(tmp_path / "run" / "lineage.jsonl")]
  assert sum(e.get("event") == "pruned" for e in events) == 6
  assert any("donor" in e for e in events)
  config = json.load(open(tmp_path / "run" / "config.json"))
  assert config["controller"]["name"] == "pbt_halving"
