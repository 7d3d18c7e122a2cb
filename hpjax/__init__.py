"""hpjax: tune hyperparameters by training a whole population at once.

One call tunes your own Flax NNX model on your own data::

  results = hpjax.tune(MyModel, (x, y), {"learning_rate": hpjax.Float(1e-4, 1e-1, log=True)},
                       population=32, epochs=10, controller=hpjax.PBT())

Members are vmapped and jit-compiled together (:mod:`hpjax.engine`), a
controller (:mod:`hpjax.controllers`) prunes, copies and perturbs them between
epochs, and a whole population is checkpointed and resumed
(:mod:`hpjax.tuner`).
"""

from hpjax import optim
from hpjax.controllers import Halving, PBT, Sweep
from hpjax.data import DataError, Dataset, dataset_from_arrays, load_dataset
from hpjax.engine import GroupSpec, PopulationState, group_functions
from hpjax.fitness import Metric
from hpjax.hparams import HParams, TracedChoice
from hpjax.optim import EpochSchedule
from hpjax.population import Member, Population
from hpjax.results import Results
from hpjax.space import Choice, Fixed, Float, Int
from hpjax.tuner import tune

__version__ = "0.2.0"

__all__ = [
    "Choice", "DataError", "Dataset", "EpochSchedule", "Fixed", "Float", "GroupSpec", "HParams",
    "Halving", "Int", "Member", "Metric", "PBT", "Population", "PopulationState", "Results",
    "Sweep", "TracedChoice", "dataset_from_arrays", "group_functions",
    "load_dataset", "optim", "tune",
]
