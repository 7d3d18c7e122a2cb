"""The built-in model families: ordinary models written as a user's would be.

:func:`builtin` is the default model factory of a population. Each family is
an ``nnx.Module`` whose constructor takes structural hyperparameters and
whose ``__call__(x, hp)`` reads the member's traced ones (``activation``,
``dropout``) from ``hp``, exactly the contract of a user's own model (see
:mod:`hpjax.engine`).
"""

from __future__ import annotations

from collections.abc import Sequence

from flax import nnx

from hpjax.models.mlp import MLP
from hpjax.models.vgg import VGG
from hpjax.nn import ACTIVATIONS


def _vgg(kw, *, kernel_size, convs_per_stage, dense, conv_impl):
  return VGG(
    kernel_size=kernel_size, convs_per_stage=convs_per_stage, dense=dense, conv_impl=conv_impl, **kw
  )


def _resnet(kw, *, kernel_size, convs_per_stage, dense, conv_impl):
  del dense
  from hpjax.models.resnet import ResNet  # pylint: disable=g-import-not-at-top

  return ResNet(
    kernel_size=kernel_size, blocks_per_stage=convs_per_stage, conv_impl=conv_impl, **kw
  )


def _inception(kw, *, kernel_size, convs_per_stage, dense, conv_impl):
  del kernel_size, convs_per_stage, dense
  from hpjax.models.inception import Inception  # pylint: disable=g-import-not-at-top

  return Inception(conv_impl=conv_impl, **kw)


def _mlp(kw, *, kernel_size, convs_per_stage, dense, conv_impl):
  del kernel_size, convs_per_stage, dense, conv_impl
  return MLP(**kw)


# The built-in families by name: (builder, needs image inputs). A builder takes
# the common arguments (input_shape, num_outputs, depth, width, batch_norm,
# rngs) as a dict and the family-specific ones as keywords. Adding a family is
# one entry here plus its module (docs/architecture.md).
FAMILIES: dict[str, tuple] = {
  "vgg": (_vgg, True),
  "resnet": (_resnet, True),
  "inception": (_inception, True),
  "mlp": (_mlp, False),
}


# What conv_impl='auto' runs in the built-in models, by backend. Measured in the
# population engine (bench CNN, 28x28, P=32, chunks of 2 members; 2026-11-29,
# docs/benchmarks.md): on CPU the im2col ('slices') trains 8% faster than
# hpjax.nn.Conv's per-member dispatch and several times faster than XLA's
# grouped convolution. Not yet measured on GPUs (experiments/gpu_check.sh
# times 'slices' against 'xla'): until then 'auto' keeps 'slices' there too.
AUTO_CONV_IMPL = {"cpu": "slices"}


def conv_impl_for_backend(name: str) -> str:
  """The convolution a built-in model runs for ``conv_impl=name`` on this backend."""
  if name != "auto":
    return name
  import jax  # pylint: disable=g-import-not-at-top

  return AUTO_CONV_IMPL.get(jax.default_backend(), "slices")


def builtin(
  *,
  family: str = "vgg",
  depth: int = 2,
  width: int = 16,
  kernel_size: int = 3,
  dense: int = 64,
  convs_per_stage: int = 1,
  batch_norm: bool = False,
  conv_impl: str = "auto",
  input_shape: Sequence[int],
  num_outputs: int,
  rngs: nnx.Rngs,
) -> nnx.Module:
  """One member of a built-in family: the default model of a population.

  An ordinary model factory, as a user's own would be: its keyword arguments
  are the structural hyperparameters of :mod:`hpjax.hparams` (``family``,
  ``depth``, ``width``, ``kernel_size``, ``dense``, ``convs_per_stage``,
  ``batch_norm``, ``conv_impl``) plus the data's ``input_shape`` and
  ``num_outputs``, and the model is called as ``model(x, hp)``.

  Args:
    family: a name of :data:`FAMILIES` (``vgg``, ``resnet``, ``inception``,
      ``mlp``).
    depth: VGG stages / ResNet stages / Inception blocks / MLP hidden layers.
    width: channels of the first stage (CNNs) or hidden units (MLP).
    kernel_size: convolution kernel size (VGG, ResNet).
    dense: hidden units of the classifier head (VGG).
    convs_per_stage: convolutions per VGG stage / residual blocks per ResNet stage.
    batch_norm: add BatchNorm after each convolution / hidden layer.
    conv_impl: the convolutions' implementation: ``'slices'`` (im2col and
      one matmul), ``'xla'`` (XLA's convolution; grouped under vmap), or
      ``'auto'``: the one measured fastest in a population on this backend
      (:data:`AUTO_CONV_IMPL`).
    input_shape: per-example input shape, ``(H, W, C)`` or ``(F,)``.
    num_outputs: classes, or 1 for regression.
    rngs: parameter initialisation keys.

  Returns:
    The ``nnx.Module``.

  Raises:
    ValueError: an unknown family, or a CNN family on vector inputs.
  """
  if family not in FAMILIES:
    raise ValueError(f"family: unknown value {family!r}; allowed: {', '.join(FAMILIES)}")
  build, images = FAMILIES[family]
  if images and len(input_shape) != 3:
    raise ValueError(
      f"family: {family!r} needs image inputs (H, W, C), got shape "
      f"{tuple(input_shape)}; use 'mlp' for vector data"
    )
  kw = dict(
    input_shape=tuple(input_shape),
    num_outputs=num_outputs,
    depth=depth,
    width=width,
    batch_norm=batch_norm,
    rngs=rngs,
  )
  return build(
    kw,
    kernel_size=kernel_size,
    convs_per_stage=convs_per_stage,
    dense=dense,
    conv_impl=conv_impl_for_backend(conv_impl),
  )


__all__ = ["ACTIVATIONS", "FAMILIES", "builtin"]
