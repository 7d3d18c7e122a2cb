"""Model families of a population and the structural config that selects one.

A :class:`ModelConfig` is hashable: members whose configs (and batch sizes)
are equal share one compiled group. Everything per-member that does not change
shapes (activation, dropout rate) is passed at call time through
:class:`hpjax.models.layers.Context`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from flax import nnx

from hpjax.models import layers
from hpjax.models.layers import ACTIVATIONS, Context
from hpjax.models.mlp import MLP
from hpjax.models.vgg import VGG

FAMILIES = ("vgg", "resnet", "inception", "mlp")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Structural hyperparameters of a model (they change parameter shapes).

  Attributes:
    family: one of ``vgg``, ``resnet``, ``inception``, ``mlp``.
    depth: VGG stages / ResNet stages / Inception blocks / MLP hidden layers.
    width: channels of the first stage (CNNs) or hidden units (MLP).
    kernel_size: convolution kernel size (VGG, ResNet).
    dense: hidden units of the classifier head (VGG).
    convs_per_stage: convolutions per VGG stage / residual blocks per ResNet stage.
    batch_norm: add BatchNorm after each convolution / hidden layer.
    conv_impl: ``'slices'`` (im2col + matmul, fast under vmap on CPU) or ``'xla'``.
  """

  family: str = "vgg"
  depth: int = 2
  width: int = 16
  kernel_size: int = 3
  dense: int = 64
  convs_per_stage: int = 1
  batch_norm: bool = False
  conv_impl: str = "slices"

  def validate(self) -> "ModelConfig":
    """Raises ValueError (one line naming the field) on a bad value."""
    if self.family not in FAMILIES:
      raise ValueError(f"model.family: unknown value {self.family!r}; allowed: {', '.join(FAMILIES)}")
    for name in ("depth", "width", "kernel_size", "dense", "convs_per_stage"):
      v = getattr(self, name)
      if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"model.{name}: must be a positive integer, got {v!r}")
    if self.conv_impl not in layers.CONV_IMPLS:
      raise ValueError(f"model.conv_impl: unknown value {self.conv_impl!r}; "
                       f"allowed: {', '.join(layers.CONV_IMPLS)}")
    return self


def build_model(config: ModelConfig, input_shape: Sequence[int], num_outputs: int,
                activations: Sequence[str], rngs: nnx.Rngs) -> nnx.Module:
  """Builds one member's model.

  Args:
    config: the structural config.
    input_shape: per-example input shape, ``(H, W, C)`` or ``(F,)``.
    num_outputs: classes, or 1 for regression.
    activations: candidate activation names (per-member index chooses one).
    rngs: parameter initialisation keys.

  Returns:
    An ``nnx.Module`` called as ``model(x, ctx)``.
  """
  config.validate()
  activations = layers.check_activations(activations)
  if config.family != "mlp" and len(input_shape) != 3:
    raise ValueError(f"model.family: {config.family!r} needs image inputs (H, W, C), "
                     f"got shape {tuple(input_shape)}; use 'mlp' for vector data")
  kw = dict(activations=activations, rngs=rngs)
  if config.family == "vgg":
    return VGG(input_shape, num_outputs, depth=config.depth, width=config.width,
               kernel_size=config.kernel_size, convs_per_stage=config.convs_per_stage,
               dense=config.dense, batch_norm=config.batch_norm,
               conv_impl=config.conv_impl, **kw)
  if config.family == "mlp":
    return MLP(input_shape, num_outputs, depth=config.depth, width=config.width,
               batch_norm=config.batch_norm, **kw)
  if config.family == "resnet":
    from hpjax.models.resnet import ResNet  # pylint: disable=g-import-not-at-top
    return ResNet(input_shape, num_outputs, depth=config.depth, width=config.width,
                  kernel_size=config.kernel_size, blocks_per_stage=config.convs_per_stage,
                  batch_norm=config.batch_norm, conv_impl=config.conv_impl, **kw)
  from hpjax.models.inception import Inception  # pylint: disable=g-import-not-at-top
  return Inception(input_shape, num_outputs, depth=config.depth, width=config.width,
                   batch_norm=config.batch_norm, conv_impl=config.conv_impl, **kw)


__all__ = ["ACTIVATIONS", "Context", "FAMILIES", "ModelConfig", "build_model", "layers"]
