"""Controllers: decisions that change a population between epochs.

Every controller follows one small protocol (:mod:`hpjax.controllers.base`):
``acts_at(epoch)`` and ``decide(view) -> Decision``; the run loop applies the
decision without knowing which controller made it. :class:`Sweep` never acts,
:class:`PBT` copies and perturbs (:mod:`hpjax.controllers.pbt`),
:class:`Halving` drops the weakest at rungs (:mod:`hpjax.controllers.halving`),
:class:`PBTHalving` does both (:mod:`hpjax.controllers.hybrid`).
The learning-rate range test is an analysis of a sweep's curves
(:mod:`hpjax.controllers.lr_range`).
"""

from hpjax.controllers.base import Controller
from hpjax.controllers.base import Decision
from hpjax.controllers.base import Sweep
from hpjax.controllers.base import View
from hpjax.controllers.halving import Halving
from hpjax.controllers.hybrid import PBTHalving
from hpjax.controllers.pbt import PBT

__all__ = ["Controller", "Decision", "Halving", "PBT", "PBTHalving", "Sweep", "View"]
