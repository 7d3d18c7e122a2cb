"""The peer baseline: PyTorch training the same members one at a time.

This is what a user of Optuna or Ray Tune runs today: one trial, one model,
one optimizer, on the CPU. Used by the benchmarks (``[bench]`` extra); the
hpjax library itself never imports torch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np


def _torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:  # pragma: no cover - depends on the extra
    raise ImportError("the PyTorch baseline needs the [bench] extra: "
                      "pip install -e '.[bench]'") from e
  return torch


def bench_cnn(input_shape: Sequence[int], num_classes: int, activation: str,
              depth: int = 2, width: int = 16, dense: int = 64, kernel_size: int = 3):
  """The PyTorch twin of ``hpjax.models.VGG`` (conv-act-pool stages, dense head)."""
  torch = _torch()
  nn = torch.nn
  acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU,
          "elu": nn.ELU, "leaky_relu": nn.LeakyReLU, "swish": nn.SiLU}
  h, w, c = input_shape
  mods = []
  for s in range(depth):
    out = width * 2 ** s
    mods += [nn.Conv2d(c, out, kernel_size, padding="same"), acts[activation](), nn.MaxPool2d(2)]
    c, h, w = out, h // 2, w // 2
  mods += [nn.Flatten(), nn.Linear(c * h * w, dense), acts[activation](), nn.Linear(dense, num_classes)]
  return nn.Sequential(*mods)


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


def train_member(x: np.ndarray, y: np.ndarray, *, activation: str, optimizer: str, lr: float,
                 batch_size: int, epochs: int = 1, seed: int = 0, num_classes: int = 10,
                 max_steps: int | None = None, x_val=None, y_val=None) -> dict:
  """Trains one member; returns steps, seconds and (optionally) val accuracy.

  Args:
    x: ``[N, H, W, C]`` uint8 or float images (normalised here to [0, 1]).
    y: int labels.
    activation, optimizer, lr, batch_size, epochs: the member's hyperparameters.
    seed: torch seed (init and shuffling).
    num_classes: outputs.
    max_steps: stop after this many steps (timing runs).
    x_val, y_val: optional validation split for an accuracy after each epoch.

  Returns:
    dict with ``steps``, ``seconds`` and ``val_accuracy`` (list per epoch).
  """
  torch = _torch()
  torch.manual_seed(seed)
  xt = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))).float() / 255.0
  yt = torch.from_numpy(np.asarray(y, np.int64))
  model = bench_cnn(x.shape[1:], num_classes, activation)
  opt = make_optimizer(optimizer, model.parameters(), lr)
  loss_fn = torch.nn.CrossEntropyLoss()
  n = xt.shape[0]
  steps, accs = 0, []
  g = torch.Generator().manual_seed(seed)
  start = time.perf_counter()
  for _ in range(epochs):
    perm = torch.randperm(n, generator=g)
    model.train()
    for i in range(n // batch_size):
      idx = perm[i * batch_size:(i + 1) * batch_size]
      opt.zero_grad(set_to_none=True)
      loss = loss_fn(model(xt[idx]), yt[idx])
      loss.backward()
      opt.step()
      steps += 1
      if max_steps is not None and steps >= max_steps:
        break
    if x_val is not None:
      model.eval()
      with torch.no_grad():
        xv = torch.from_numpy(np.ascontiguousarray(np.transpose(x_val, (0, 3, 1, 2)))).float() / 255.0
        pred = model(xv).argmax(-1).numpy()
      accs.append(float(np.mean(pred == np.asarray(y_val))))
    if max_steps is not None and steps >= max_steps:
      break
  return {"steps": steps, "seconds": time.perf_counter() - start, "val_accuracy": accs}


def member_steps_per_second(x: np.ndarray, y: np.ndarray, members: Sequence[dict],
                            steps_per_member: int, threads: int | None = None) -> float:
  """Throughput of training ``members`` one after another (member-steps/s).

  Args:
    x, y: training data.
    members: dicts with ``activation``, ``optimizer``, ``lr``, ``batch_size``.
    steps_per_member: timed steps per member (one warm-up member runs first).
    threads: torch intra-op threads (default: torch's choice, all cores).

  Returns:
    Total member-steps divided by total seconds.
  """
  torch = _torch()
  if threads:
    torch.set_num_threads(threads)
  train_member(x, y, max_steps=5, **members[0])  # warm-up (allocator, kernels)
  total_steps, total_s = 0, 0.0
  for i, m in enumerate(members):
    r = train_member(x, y, max_steps=steps_per_member, seed=i, **m)
    total_steps += r["steps"]
    total_s += r["seconds"]
  return total_steps / total_s
