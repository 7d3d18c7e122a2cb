"""The built-in model families: ordinary models written as a user's would be.

:func:`builtin` is the default model factory of a population. Each family is
an ``nnx.Module`` built from an :class:`Arch` (its structural
hyperparameters) whose ``__call__(x, hp)`` reads the member's traced ones
(``activation``, ``dropout``) from ``hp``, exactly the contract of a user's
own model (see :mod:`hpjax.engine`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flax import nnx

from hpjax.models.arch import Arch
from hpjax.models.arch import AUTO_CONV_IMPL
from hpjax.models.arch import COMPUTE_DTYPES
from hpjax.models.arch import conv_impl_for_backend
from hpjax.models.arch import CONV_IMPLS
from hpjax.models.arch import FIELDS as ARCH_FIELDS
from hpjax.models.inception import Inception
from hpjax.models.mlp import MLP
from hpjax.models.resnet import ResNet
from hpjax.models.vgg import VGG
from hpjax.nn import ACTIVATIONS

# The built-in families by name: (class, needs image inputs). A family is built
# as ``cls(arch, input_shape=..., num_outputs=..., rngs=...)`` from an
# :class:`Arch`. Adding a family is one entry here plus its module
# (docs/architecture.md).
FAMILIES: dict[str, tuple] = {
  "vgg": (VGG, True),
  "resnet": (ResNet, True),
  "inception": (Inception, True),
  "mlp": (MLP, False),
}


def builtin(
  *,
  family: str = "vgg",
  input_shape: Sequence[int],
  num_outputs: int,
  rngs: nnx.Rngs,
  **structure: Any,
) -> nnx.Module:
  """One member of a built-in family: the default model of a population.

  An ordinary model factory, as a user's own would be: its keyword arguments
  are the structural hyperparameters of :mod:`hpjax.hparams` (``family`` and
  the fields of :class:`Arch`) plus the data's ``input_shape`` and
  ``num_outputs``, and the model is called as ``model(x, hp)``.

  Args:
    family: a name of :data:`FAMILIES` (``vgg``, ``resnet``, ``inception``,
      ``mlp``).
    input_shape: per-example input shape, ``(H, W, C)`` or ``(F,)``.
    num_outputs: classes, or 1 for regression.
    rngs: parameter initialisation keys.
    **structure: fields of :class:`Arch` (``depth``, ``width``,
      ``kernel_size``, ``dense``, ``convs_per_stage``, ``batch_norm``,
      ``conv_impl``, ``compute_dtype``); the others keep their defaults.

  Returns:
    The ``nnx.Module``.

  Raises:
    ValueError: an unknown family or structural name, or a CNN family on
      vector inputs.
  """
  if family not in FAMILIES:
    raise ValueError(f"family: unknown value {family!r}; allowed: {', '.join(FAMILIES)}")
  unknown = sorted(set(structure) - set(ARCH_FIELDS))
  if unknown:
    raise ValueError(
      f"{unknown[0]}: not a structural hyperparameter of the built-in models; "
      f"allowed: family, {', '.join(ARCH_FIELDS)}"
    )
  cls, images = FAMILIES[family]
  if images and len(input_shape) != 3:
    raise ValueError(
      f"family: {family!r} needs image inputs (H, W, C), got shape "
      f"{tuple(input_shape)}; use 'mlp' for vector data"
    )
  arch = Arch(**structure)
  return cls(arch, input_shape=tuple(input_shape), num_outputs=num_outputs, rngs=rngs)


__all__ = [
  "ACTIVATIONS",
  "AUTO_CONV_IMPL",
  "Arch",
  "COMPUTE_DTYPES",
  "CONV_IMPLS",
  "FAMILIES",
  "builtin",
  "conv_impl_for_backend",
]
