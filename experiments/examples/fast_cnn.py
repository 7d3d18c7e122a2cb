"""A user's CNN written with hpjax's layers: the benchmark's bench CNN, outside hpjax.

conv16-pool-conv32-pool-dense64-dense10, the member's activation and
dropout rate read from ``hp`` as the built-in models do. ``conv`` picks the
convolution layer: ``hpjax.nn.Conv`` (the default: fast under the
population's ``vmap``) or stock ``flax.nnx.Conv`` (same constructor, same
parameters). The benchmark's levers part trains it beside the built-in
bench CNN (``python -m experiments.bench_engine``).
"""

from flax import nnx
import jax

from hpjax import nn


class FastCNN(nnx.Module):
  """Two 3x3 convolutions, each followed by the activation and a 2x2 max pool; two dense layers."""

  def __init__(self, *, input_shape, num_outputs, conv: str = "hpjax", rngs: nnx.Rngs):
    if conv not in ("hpjax", "nnx"):
      raise ValueError(f"conv: unknown value {conv!r}; allowed: hpjax, nnx")
    layer = nn.Conv if conv == "hpjax" else nnx.Conv
    height, width, colors = input_shape
    self.conv1 = layer(colors, 16, (3, 3), rngs=rngs)
    self.conv2 = layer(16, 32, (3, 3), rngs=rngs)
    self.hidden = nnx.Linear((height // 4) * (width // 4) * 32, 64, rngs=rngs)
    self.out = nnx.Linear(64, num_outputs, rngs=rngs)

  def __call__(self, x: jax.Array, hp) -> jax.Array:
    act = hp["activation"]
    x = nn.max_pool(nn.activation(self.conv1(x), act), 2)
    x = nn.max_pool(nn.activation(self.conv2(x), act), 2)
    x = nn.activation(self.hidden(x.reshape(x.shape[0], -1)), act)
    x = nn.dropout(x, hp["dropout"], hp.next_key(), hp.train)
    return self.out(x)
