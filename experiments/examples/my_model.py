"""A user's own model: a small CNN of stock Flax NNX layers.

The launcher builds it from ``config.model.factory`` (an import string,
``"experiments.examples.my_model:CNN"``): once per member, with the member's
structural hyperparameters as keyword arguments (``channels`` from the
search space, ``hidden`` from ``config.model``), plus ``input_shape`` and
``num_outputs`` because the constructor asks for them. It then calls
``model(x, hp)``, where ``hp`` holds the member's traced hyperparameters.
"""

from flax import nnx
import jax


class CNN(nnx.Module):
  """Two convolutions (BatchNorm after the first), dropout and two dense layers.

  ``hp["noise"]``, a hyperparameter of this model's own, is the standard
  deviation of Gaussian noise added to the inputs in training: a per-member
  traced value, so PBT changes it without a recompile.
  """

  def __init__(self, channels: int, hidden: int, *, input_shape, num_outputs, rngs: nnx.Rngs):
    height, width, colors = input_shape
    # No bias before BatchNorm: its own offset takes that role.
    self.conv1 = nnx.Conv(colors, channels, (3, 3), use_bias=False, rngs=rngs)
    self.norm1 = nnx.BatchNorm(channels, rngs=rngs)
    self.conv2 = nnx.Conv(channels, 2 * channels, (3, 3), strides=(2, 2), rngs=rngs)
    self.drop = nnx.Dropout(0.2, rngs=rngs)
    features = 2 * channels * -(-height // 2) * -(-width // 2)  # SAME padding, stride 2
    self.hidden = nnx.Linear(features, hidden, rngs=rngs)
    self.out = nnx.Linear(hidden, num_outputs, rngs=rngs)

  def __call__(self, x, hp):
    if hp.train:  # a static flag: evaluation traces no noise at all
      x = x + hp["noise"] * jax.random.normal(hp.next_key(), x.shape)
    x = nnx.relu(self.norm1(self.conv1(x)))
    x = nnx.relu(self.conv2(x))
    x = self.drop(x.reshape(x.shape[0], -1))
    return self.out(nnx.relu(self.hidden(x)))
