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
  """

  depth: int = 2
  width: int = 16
  kernel_size: int = 3
  dense: int = 64
  convs_per_stage: int = 1
  batch_norm: bool = False
  conv_impl: str = "auto"

  def __post_init__(self):
    if self.conv_impl not in CONV_IMPLS:
      raise ValueError(
        f"conv_impl: unknown value {self.conv_impl!r}; allowed: {', '.join(CONV_IMPLS)}"
      )

  @property
  def conv(self) -> str:
    """The implementation the convolutions run: ``conv_impl`` for this backend."""
    return conv_impl_for_backend(self.conv_impl)


FIELDS = tuple(f.name for f in dataclasses.fields(Arch))
