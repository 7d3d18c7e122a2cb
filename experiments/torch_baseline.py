"""The peer baseline: PyTorch training the same members one at a time.

This is what a user of Optuna or Ray Tune runs today: one trial, one model,
one optimizer, on the CPU (or one GPU). Used by the benchmarks (``[bench]``
extra); the hpjax library itself never imports torch.

The models are twins of hpjax's: :func:`bench_cnn` of ``hpjax.models.VGG``
(conv-act-pool stages, a dense head) and :func:`resnet` of
``hpjax.models.ResNet`` (a stem, stages of basic residual blocks, global
average pooling). :func:`build_model` picks one from a built-in model's
structural hyperparameters (a dict).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import time
from typing import Any

import numpy as np


def _torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:  # pragma: no cover - depends on the extra
    raise ImportError(
      "the PyTorch baseline needs the [bench] extra: pip install -e '.[bench]'"
    ) from e
  return torch


def _activation(name: str):
  nn = _torch().nn
  acts = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "swish": nn.SiLU,
  }
  if name not in acts:
    raise ValueError(f"activation: unknown value {name!r}; allowed: {', '.join(acts)}")
  return acts[name]()


def bench_cnn(
  input_shape: Sequence[int],
  num_classes: int,
  activation: str,
  depth: int = 2,
  width: int = 16,
  dense: int = 64,
  kernel_size: int = 3,
  convs_per_stage: int = 1,
  batch_norm: bool = False,
):
  """The PyTorch twin of ``hpjax.models.VGG`` (conv-act-pool stages, dense head)."""
  nn = _torch().nn
  h, w, c = input_shape
  mods = []
  for s in range(depth):
    out = width * 2**s
    for _ in range(convs_per_stage):
      mods.append(nn.Conv2d(c, out, kernel_size, padding="same", bias=not batch_norm))
      if batch_norm:
        mods.append(nn.BatchNorm2d(out, momentum=0.1))
      mods.append(_activation(activation))
      c = out
    mods.append(nn.MaxPool2d(2))
    h, w = h // 2, w // 2
  mods += [
    nn.Flatten(),
    nn.Linear(c * h * w, dense),
    _activation(activation),
    nn.Linear(dense, num_classes),
  ]
  return nn.Sequential(*mods)


def resnet(
  input_shape: Sequence[int],
  num_classes: int,
  activation: str,
  depth: int = 2,
  width: int = 16,
  kernel_size: int = 3,
  blocks_per_stage: int = 1,
  batch_norm: bool = False,
):
  """The PyTorch twin of ``hpjax.models.ResNet`` (same layers, shapes and FLOPs)."""
  torch = _torch()
  nn = torch.nn
  pad = kernel_size // 2

  def norm(c):
    return nn.BatchNorm2d(c, momentum=0.1) if batch_norm else nn.Identity()

  class Block(nn.Module):
    """Two convolutions and a shortcut (identity, or a 1x1 projection)."""

    def __init__(self, cin, cout, stride):
      super().__init__()
      self.conv1 = nn.Conv2d(cin, cout, kernel_size, stride, pad, bias=not batch_norm)
      self.norm1 = norm(cout)
      self.conv2 = nn.Conv2d(cout, cout, kernel_size, 1, pad, bias=not batch_norm)
      self.norm2 = norm(cout)
      self.act = _activation(activation)
      self.proj = None
      if stride != 1 or cin != cout:
        self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=not batch_norm), norm(cout))

    def forward(self, x):
      y = self.act(self.norm1(self.conv1(x)))
      y = self.norm2(self.conv2(y))
      return self.act(y + (x if self.proj is None else self.proj(x)))

  c = input_shape[-1]
  mods = [
    nn.Conv2d(c, width, kernel_size, 1, pad, bias=not batch_norm),
    norm(width),
    _activation(activation),
  ]
  c = width
  for s in range(depth):
    out = width * 2**s
    for b in range(blocks_per_stage):
      mods.append(Block(c, out, 2 if (s > 0 and b == 0) else 1))
      c = out
  mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
  return nn.Sequential(*mods)


def build_model(
  model: Mapping[str, Any] | None, input_shape: Sequence[int], num_classes: int, activation: str
):
  """The twin of a built-in model, from its structural hyperparameters (None: the bench CNN).

  Args:
    model: structural hyperparameters of :func:`hpjax.models.builtin` (``family``,
      ``depth``, ``width``, ...; others are ignored), any subset;
      ``family`` ``vgg`` (default) or ``resnet``.
    input_shape: ``(H, W, C)``.
    num_classes: outputs.
    activation: activation name.

  Returns:
    A ``torch.nn.Module`` taking NCHW float input.
  """
  m = dict(model or {})
  family = m.get("family", "vgg")
  common = dict(
    depth=m.get("depth", 2),
    width=m.get("width", 16),
    kernel_size=m.get("kernel_size", 3),
    batch_norm=m.get("batch_norm", False),
  )
  if family == "vgg":
    return bench_cnn(
      input_shape,
      num_classes,
      activation,
      dense=m.get("dense", 64),
      convs_per_stage=m.get("convs_per_stage", 1),
      **common,
    )
  if family == "resnet":
    return resnet(
      input_shape, num_classes, activation, blocks_per_stage=m.get("convs_per_stage", 1), **common
    )
  raise ValueError(
    f"model.family: the PyTorch baseline has no twin of {family!r}; allowed: vgg, resnet"
  )


def make_optimizer(name: str, params, lr: float):
  """sgd / momentum / nesterov / rmsprop / adam / adamw with torch defaults."""
  torch = _torch()
  if name == "sgd":
    return torch.optim.SGD(params, lr=lr)
  if name in ("momentum", "nesterov"):
    return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=name == "nesterov")
  if name == "rmsprop":
    return torch.optim.RMSprop(params, lr=lr, alpha=0.9)
  if name == "adam":
    return torch.optim.Adam(params, lr=lr)
  if name == "adamw":
    return torch.optim.AdamW(params, lr=lr)
  raise ValueError(f"optimizer: unknown value {name!r}")


def resolve_device(device: str = "cpu") -> str:
  """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; others unchanged."""
  if device == "auto":
    return "cuda" if _torch().cuda.is_available() else "cpu"
  return device


def _sync(device: str) -> None:
  if device.startswith("cuda"):
    _torch().cuda.synchronize()


def _images(x: np.ndarray, device: str):
  torch = _torch()
  # A copy: arrays from JAX are read-only, and torch wants writable memory.
  xt = np.array(np.transpose(np.asarray(x), (0, 3, 1, 2)), np.float32, order="C")
  return (torch.from_numpy(xt) / 255.0).to(device)


def _accuracy(model, x, y: np.ndarray, batch: int = 512) -> float:
  torch = _torch()
  model.eval()
  with torch.no_grad():
    pred = torch.cat([model(x[i : i + batch]).argmax(-1) for i in range(0, x.shape[0], batch)])
  return float(np.mean(pred.cpu().numpy() == np.asarray(y)))


def train_member(
  x: np.ndarray,
  y: np.ndarray,
  *,
  activation: str,
  optimizer: str,
  lr: float,
  batch_size: int,
  epochs: int = 1,
  seed: int = 0,
  num_classes: int = 10,
  max_steps: int | None = None,
  x_val=None,
  y_val=None,
  x_test=None,
  y_test=None,
  model: Mapping[str, Any] | None = None,
  device: str = "cpu",
  on_epoch: Callable[[int, float], None] | None = None,
) -> dict:
  """Trains one member; returns steps, seconds and (optionally) accuracies.

  Args:
    x: ``[N, H, W, C]`` uint8 images (scaled here to [0, 1]).
    y: int labels.
    activation, optimizer, lr, batch_size, epochs: the member's hyperparameters.
    seed: torch seed (init and shuffling).
    num_classes: outputs.
    max_steps: stop after this many steps (timing runs).
    x_val, y_val: optional validation split for an accuracy after each epoch.
    x_test, y_test: optional test split, scored after the last epoch.
    model: structural hyperparameters as a dict (see :func:`build_model`).
    device: torch device (``cpu``, ``cuda``, or ``auto``).
    on_epoch: called as ``on_epoch(epoch, val_accuracy)`` (epochs from 1)
      after each epoch when a validation split is given; an exception it
      raises (an Optuna ``TrialPruned``, say) stops training and propagates.

  Returns:
    dict with ``steps``, ``seconds`` (training only, evaluation excluded),
    ``val_accuracy`` (list per epoch) and ``test_accuracy`` (or None).
  """
  torch = _torch()
  device = resolve_device(device)
  torch.manual_seed(seed)
  xt = _images(x, device)
  yt = torch.from_numpy(np.asarray(y, np.int64)).to(device)
  xv = _images(x_val, device) if x_val is not None else None
  net = build_model(model, x.shape[1:], num_classes, activation).to(device)
  opt = make_optimizer(optimizer, net.parameters(), lr)
  loss_fn = torch.nn.CrossEntropyLoss()
  n = xt.shape[0]
  steps, accs, train_s = 0, [], 0.0
  g = torch.Generator().manual_seed(seed)
  for epoch in range(1, epochs + 1):
    start = time.perf_counter()
    perm = torch.randperm(n, generator=g).to(device)
    net.train()
    for i in range(n // batch_size):
      idx = perm[i * batch_size : (i + 1) * batch_size]
      opt.zero_grad(set_to_none=True)
      loss = loss_fn(net(xt[idx]), yt[idx])
      loss.backward()
      opt.step()
      steps += 1
      if max_steps is not None and steps >= max_steps:
        break
    _sync(device)
    train_s += time.perf_counter() - start
    if xv is not None:
      accs.append(_accuracy(net, xv, y_val))
      if on_epoch is not None:
        on_epoch(epoch, accs[-1])
    if max_steps is not None and steps >= max_steps:
      break
  test_acc = _accuracy(net, _images(x_test, device), y_test) if x_test is not None else None
  return {"steps": steps, "seconds": train_s, "val_accuracy": accs, "test_accuracy": test_acc}


def member_steps_per_second(
  x: np.ndarray,
  y: np.ndarray,
  members: Sequence[dict],
  steps_per_member: int,
  threads: int | None = None,
  device: str = "cpu",
) -> float:
  """Throughput of training ``members`` one after another (member-steps/s).

  Args:
    x, y: training data.
    members: dicts with ``activation``, ``optimizer``, ``lr``, ``batch_size``
      and optionally ``model`` (structural hyperparameters, see :func:`build_model`).
    steps_per_member: timed steps per member (one warm-up member runs first).
    threads: torch intra-op threads (default: torch's choice, all cores).
    device: torch device (``cpu``, ``cuda``, or ``auto``).

  Returns:
    Total member-steps divided by total seconds.
  """
  torch = _torch()
  if threads:
    torch.set_num_threads(threads)
  train_member(x, y, max_steps=5, device=device, **members[0])  # warm-up (allocator, kernels)
  total_steps, total_s = 0, 0.0
  for i, m in enumerate(members):
    r = train_member(x, y, max_steps=steps_per_member, seed=i, device=device, **m)
    total_steps += r["steps"]
    total_s += r["seconds"]
  return total_steps / total_s
