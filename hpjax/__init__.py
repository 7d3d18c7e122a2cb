"""hpjax: tune hyperparameters by training a whole population at once.

Members are Flax NNX models with their own hyperparameters, vmapped and
jit-compiled together (see :mod:`hpjax.population`).
"""

from hpjax import optim
from hpjax.data import DataError, Dataset, load_dataset
from hpjax.models import ModelConfig
from hpjax.optim import Schedule
from hpjax.population import Member, Population, PopulationState, GroupSpec, group_functions

__version__ = "0.1.0"

__all__ = [
    "DataError", "Dataset", "GroupSpec", "Member", "ModelConfig", "Population",
    "PopulationState", "Schedule", "group_functions", "load_dataset", "optim",
]
