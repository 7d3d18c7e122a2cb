"""Controllers: host-side decisions that change a population while it trains.

A controller is a pure function of host arrays (fitness, hyperparameters,
group ids) and an explicit ``numpy.random.Generator``; the tuner applies its
decisions to the device state (one gather per group, see
:func:`hpjax.controllers.pbt.apply_plan_indices`).
"""

from hpjax.controllers.pbt import (PBTConfig, Plan, apply_plan_indices, exploit_explore,
                                   quantile_size, rank, should_decide)

__all__ = ["PBTConfig", "Plan", "apply_plan_indices", "exploit_explore", "quantile_size",
           "rank", "should_decide"]
from hpjax.controllers import halving, lr_range
from hpjax.controllers.halving import Cut, HalvingConfig
from hpjax.controllers.lr_range import RangeResult
