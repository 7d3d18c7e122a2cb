"""Every experiment config loads and validates (no training)."""

import glob
import importlib
import os

import pytest

from hpjax import space as space_lib
from hpjax import tuner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "experiments", "configs", "*.py"))
                 if not os.path.basename(p).startswith(("_", "common")))


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_and_validates(name):
  module = importlib.import_module(f"experiments.configs.{name}")
  assert "python -m experiments.tune" in module.__doc__  # the launch command
  cfg = tuner._plain(module.get_config())  # pylint: disable=protected-access
  members, space = tuner.build_members(cfg, "classification")
  assert len(members) == cfg["population"]
  space_lib.check_structural_fits(space, cfg["population"])
  tuner._controller(cfg, space)  # pylint: disable=protected-access


def test_config_list_is_not_empty():
  assert {"digits_sweep", "digits_pbt"} <= set(CONFIGS)
