"""Defaults shared by the experiment configs (each config starts from these)."""

import ml_collections
from ml_collections import config_dict

from hpjax import config as config_lib


def base_config() -> ml_collections.ConfigDict:
  """A digits run of the bench CNN with no search space and no controller.

  Every field of :func:`hpjax.config.defaults` (one home for the launcher's
  fields and defaults). ``progress`` (None: bars only on a terminal) is a
  typed placeholder, so ``--config.progress=False`` works; ``hparam_schedule``
  (a list) is left out: it comes from a JSON config (``from_json.py``).
  """
  fields = config_lib.defaults()
  fields["progress"] = config_dict.placeholder(bool)
  del fields["hparam_schedule"]
  return ml_collections.ConfigDict(fields)
