"""The structure of a built-in model: one home for its structural hyperparameters.

Every built-in family is built from an :class:`Arch` and reads the fields it
uses (a VGG its ``dense`` head, a ResNet its ``kernel_size``, an MLP neither),
so one ``Arch`` describes a member whatever its family. The hyperparameter
table (:mod:`hpjax.hparams`) takes these fields' defaults from here.
"""

from __future__ import annotations

import dataclasses

# The values of ``conv_impl``: 'slices' (im2col and one matmul), 'xla' (XLA's
# convolution; grouped under vmap), or 'auto' (by backend, below).
CONV_IMPLS = ("auto", "slices", "xla")

# What conv_impl='auto' runs in the built-in models, by backend, as measured
# in the population engine (docs/benchmarks.md):
# - cpu: on the 2-core VM (bench CNN, 28x28, P=32, chunks of 2 members;
#   2026-11-29) the im2col ('slices') trains 8% faster than hpjax.nn.Conv's
#   per-member dispatch and several times faster than XLA's grouped
#   convolution.
# - gpu: on an NVIDIA H200 (jax 0.11.2, experiments/gpu_check.sh,
#   2026-11-30), 'slices' against 'xla' in float32: the bench CNN at 28x28
#   6.5x as fast at P=64 (48038 against 7388 member-steps/s) and 1.9x at P=1,
#   the ResNet on 32x32x3 2.4x at P=64 and 2.2x at P=1. In bfloat16 the
#   ResNet's grouped convolution is the faster (9291 against 7957 at P=64)
#   but the bench CNN's is not (42118 against 62237): 'auto' keeps 'slices'.
# Other backends (TPU: not measured) run 'slices' too.
AUTO_CONV_IMPL = {"cpu": "slices", "gpu": "slices"}

# The values of ``compute_dtype``: the dtype the built-in models compute in.
# 'float32' everywhere, or 'bfloat16' mixed precision: parameters, optimizer
# state and gradients' updates stay float32; convolutions, dense layers,
# activations and BatchNorm's normalisation run in bfloat16 (BatchNorm's
# statistics are reduced in float32), and the logits are returned in float32,
# so losses and metrics are float32. For accelerators: on an H200 bfloat16
# trained the bench CNN 1.30x and the ResNet 1.18x as fast (slices, P=64); on
# the 2-core CPU, 0.43x and 0.40x (docs/benchmarks.md).
COMPUTE_DTYPES = ("float32", "bfloat16")


def conv_impl_for_backend(name: str) -> str:
  """The convolution a built-in model runs for ``conv_impl=name`` on this backend."""
  if name != "auto":
    return name
  import jax  # pylint: disable=g-import-not-at-top

  return AUTO_CONV_IMPL.get(jax.default_backend(), "slices")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Arch:
  """A built-in model's structural hyperparameters.

  Attributes:
    depth: VGG stages / ResNet stages / Inception blocks / MLP hidden layers.
    width: channels of the first stage (CNNs) or hidden units (MLP).
    kernel_size: convolution kernel size (VGG, ResNet).
    dense: hidden units of the classifier head (VGG).
    convs_per_stage: convolutions per VGG stage / residual blocks per ResNet
      stage.
    batch_norm: BatchNorm after each convolution / hidden layer.
    conv_impl: the convolutions' implementation, one of :data:`CONV_IMPLS`;
      ``'auto'`` runs the one measured fastest in a population on this
      backend (:data:`AUTO_CONV_IMPL`).
    compute_dtype: one of :data:`COMPUTE_DTYPES`; ``'bfloat16'`` computes in
      bfloat16 with float32 parameters and float32 logits.
  """

  depth: int = 2
  width: int = 16
  kernel_size: int = 3
  dense: int = 64
  convs_per_stage: int = 1
  batch_norm: bool = False
  conv_impl: str = "auto"
  compute_dtype: str = "float32"

  def __post_init__(self):
    if self.conv_impl not in CONV_IMPLS:
      raise ValueError(
        f"conv_impl: unknown value {self.conv_impl!r}; allowed: {', '.join(CONV_IMPLS)}"
      )
    if self.compute_dtype not in COMPUTE_DTYPES:
      raise ValueError(
        f"compute_dtype: unknown value {self.compute_dtype!r}; allowed: {', '.join(COMPUTE_DTYPES)}"
      )

  @property
  def conv(self) -> str:
    """The implementation the convolutions run: ``conv_impl`` for this backend."""
    return conv_impl_for_backend(self.conv_impl)

  @property
  def dtype(self):
    """The layers' computation dtype: None (float32, as inferred) or bfloat16."""
    if self.compute_dtype == "float32":
      return None  # the layers' default: the same program as before the option
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

    return jnp.dtype(self.compute_dtype)

  def logits(self, y):
    """The model's output in float32, whatever it computed in."""
    return y if self.dtype is None else y.astype("float32")


FIELDS = tuple(f.name for f in dataclasses.fields(Arch))
