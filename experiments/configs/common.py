"""Defaults shared by the experiment configs (each config starts from these)."""

import ml_collections

from hpjax import config as config_lib


def base_config() -> ml_collections.ConfigDict:
  """A digits run of the bench CNN with no search space and no controller.

  Every field of :func:`hpjax.config.defaults` (one home for the launcher's
  fields and defaults) except those whose default is None (``progress``:
  automatic; ``hparam_schedule``: none), which are set from a JSON config.
  """
  fields = {k: v for k, v in config_lib.defaults().items() if v is not None}
  return ml_collections.ConfigDict(fields)
