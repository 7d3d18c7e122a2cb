"""Drop-in Flax NNX layers that stay fast when vmapped over a population.

Each layer has its ``flax.nnx`` counterpart's constructor and parameters, so a
user's model can swap one for the other; see :mod:`hpjax.nn.conv`.
"""

from hpjax.nn.conv import Conv, conv

__all__ = ["Conv", "conv"]
