"""Launcher configs shrunk for tests: one home for the tiny digits runs several test files use."""

from typing import Any


def digits(config_module, **overrides: Any) -> dict[str, Any]:
  """``config_module``'s config as a dict, with a tiny model and 200 training examples.

  ``overrides``: top-level fields (a dict value updates that section).
  """
  c = config_module.get_config().to_dict()
  c.update(progress=False, report=False, tensorboard=False)
  c["data"]["max_train"] = 200
  c["model"].update(width=4, depth=1, dense=16)
  for k, v in overrides.items():
    if isinstance(v, dict):
      c[k].update(v)
    else:
      c[k] = v
  return c
