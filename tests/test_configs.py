"""Every experiment config loads and validates (no training)."""

import glob
import importlib
import os

import pytest

from hpjax import config as config_lib
from hpjax import fitness as fitness_lib
from hpjax import space as space_lib
from hpjax import tuner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
  os.path.basename(p)[:-3]
  for p in glob.glob(os.path.join(ROOT, "experiments", "configs", "*.py"))
  if not os.path.basename(p).startswith(("_", "common", "from_json"))
)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_and_validates(name):
  module = importlib.import_module(f"experiments.configs.{name}")
  assert "python -m experiments.tune" in module.__doc__  # the launch command
  cfg = config_lib.validate(module.get_config())
  task = "regression" if cfg["data"]["source"] == "diabetes" else "classification"
  space = space_lib.from_config(cfg["space"])
  members = tuner.draw_members(space, cfg["population"], cfg["seed"], cfg["init"])
  assert len(members) == cfg["population"]
  fitness = cfg["fitness"] or fitness_lib.TASK_METRIC[task].name
  tuner.controller_from_config(cfg, fitness, fitness_lib.check(fitness, task))


def test_config_list_is_not_empty():
  assert {
    "digits_sweep",
    "digits_pbt",
    "digits28_pbt",
    "digits_halving",
    "digits_lr_range",
    "mnist_pbt",
    "fashion_mnist_pbt",
    "cifar10_pbt",
    "diabetes_regression",
  } <= set(CONFIGS)


@pytest.mark.parametrize("init", ["random", "grid", "quasi_random"])
def test_initial_population_methods(init):
  module = importlib.import_module("experiments.configs.digits_sweep")
  cfg = config_lib.validate(module.get_config())
  cfg["init"] = init
  cfg["space"] = {
    "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
    "activation": {"type": "choice", "values": ["relu", "tanh", "sigmoid"]},
  }
  cfg["population"] = 6
  members = tuner.draw_members(space_lib.from_config(cfg["space"]), 6, 0, init)
  combos = {(m["optimizer"], m["activation"]) for m in members}
  if init == "grid":
    assert len(combos) == 6  # the full factorial, each once
  assert all(m["optimizer"] in ("sgd", "adam") for m in members)


def test_grid_with_wrong_population_says_how_many():
  space = space_lib.from_config(
    {
      "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
      "activation": {"type": "choice", "values": ["relu", "tanh", "sigmoid"]},
    }
  )
  with pytest.raises(ValueError, match="needs 6 members"):
    tuner.draw_members(space, 5, 0, "grid")
  with pytest.raises(ValueError, match="config.init: unknown value 'sobol'"):
    tuner.draw_members(space, 5, 0, "sobol")
  cfg = importlib.import_module("experiments.configs.digits_sweep").get_config().to_dict()
  cfg["init"] = "sobol"
  with pytest.raises(ValueError, match="config.init: unknown value 'sobol'; allowed: random"):
    config_lib.validate(cfg)


def test_from_json_config_reads_a_run_config(tmp_path):
  import json  # pylint: disable=g-import-not-at-top

  from experiments.configs import digits_pbt  # pylint: disable=g-import-not-at-top
  from experiments.configs import from_json  # pylint: disable=g-import-not-at-top

  path = tmp_path / "config.json"
  path.write_text(json.dumps(digits_pbt.get_config().to_dict()))
  cfg = from_json.get_config(str(path))
  assert cfg.population == 16 and cfg.controller.name == "pbt"
  assert tuple(cfg.space.batch_size["values"]) == (16, 32)
  with pytest.raises(ValueError, match="give the JSON file after a colon"):
    from_json.get_config()
  with pytest.raises(ValueError, match="cannot read"):
    from_json.get_config(str(tmp_path / "missing.json"))
  (tmp_path / "bad.json").write_text("{")
  with pytest.raises(ValueError, match="not valid JSON"):
    from_json.get_config(str(tmp_path / "bad.json"))
