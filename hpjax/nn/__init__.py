"""Layers fast under ``vmap`` over a population, and the per-member choices models read.

* :class:`Conv` (and :func:`conv`): ``nnx.Conv``'s constructor and
  parameters, fast both alone and vmapped over members (a stock ``nnx.Conv``
  whose kernel is vmapped becomes a grouped convolution, several times
  slower on XLA:CPU: docs/benchmarks.md);
* :func:`max_pool`, :func:`max_pool_same`: pooling with a cheap gradient;
* :func:`activation`: the member's activation, a traced choice;
* :func:`dropout`: dropout at the member's traced rate.

Use them in your own model where the stock ``flax.nnx`` layer would be slow in
a population (convolutions, pooling) or where a value should be tuned per
member without a recompile (activation, dropout rate). Stock layers work too,
with the same numbers.
"""

from hpjax.nn.activations import activation
from hpjax.nn.activations import ACTIVATIONS
from hpjax.nn.conv import Conv
from hpjax.nn.conv import conv
from hpjax.nn.dropout import dropout
from hpjax.nn.pooling import max_pool
from hpjax.nn.pooling import max_pool_same

__all__ = ["ACTIVATIONS", "Conv", "activation", "conv", "dropout", "max_pool", "max_pool_same"]
