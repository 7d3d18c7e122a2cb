r"""The peer tuner: Optuna (TPE + median pruning) driving PyTorch, one trial at a time.

The same task as ``experiments/configs/digits28_pbt.py``: scikit-learn digits
resized to 28x28 with hpjax's own splits (``hpjax.data.load_dataset('digits',
image_size=28, seed=0)``, handed to torch as NumPy arrays, so train,
validation and test are identical), the bench CNN, the same search space
(learning rate 1e-4..1e-1 log, optimizer sgd/rmsprop/adam, activation
relu/tanh/sigmoid, batch size 8/16/32) and the same budget (32 trials x 10
epochs). Each trial reports its validation accuracy after every epoch, and
the median pruner stops trials below the running median.

Records, for the time-to-accuracy comparison in ``experiments/benchmark.py``,
the wall time from the start (data loading included) at which any trial
first reached ``--target`` validation accuracy, and the best reached.

Launch (needs the ``[bench]`` extra)::

  python -m experiments.optuna_torch --trials=32 --epochs=10 --out=/tmp/optuna.json
"""

from __future__ import annotations

from collections.abc import Callable
import json
import time
from typing import Any

from absl import app
from absl import flags

SPACE = {
  "learning_rate": (1e-4, 1e-1),
  "optimizer": ("sgd", "rmsprop", "adam"),
  "activation": ("relu", "tanh", "sigmoid"),
  "batch_size": (8, 16, 32),
}


def load_arrays(image_size: int = 28, seed: int = 0) -> dict[str, Any]:
  """hpjax's digits splits as NumPy arrays (the splits hpjax's tuner trains on).

  Args:
    image_size: side of the resized images (8: native).
    seed: the split seed (``config.seed`` of the hpjax run).

  Returns:
    ``x_train``, ``y_train``, ``x_val``, ``y_val``, ``x_test``, ``y_test``.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top

  from hpjax.data import load_dataset  # pylint: disable=g-import-not-at-top

  d = load_dataset("digits", image_size=None if image_size == 8 else image_size, seed=seed)
  return {
    k: np.asarray(getattr(d, k))
    for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
  }


def run_study(
  *,
  trials: int = 32,
  epochs: int = 10,
  target: float = 0.97,
  seed: int = 0,
  image_size: int = 28,
  device: str = "cpu",
  threads: int | None = None,
  log: Callable[[str], None] = print,
) -> dict[str, Any]:
  """Runs the Optuna + PyTorch study and times it.

  Args:
    trials: Optuna trials (each one member trained on its own).
    epochs: epochs per trial (unless pruned).
    target: validation accuracy whose first crossing is timed.
    seed: TPE sampler seed and data split seed.
    image_size: digits resized to this side.
    device: torch device (``cpu``, ``cuda``, ``auto``).
    threads: torch intra-op threads (default: torch's choice).
    log: progress lines.

  Returns:
    A dict: ``wall_s`` (the whole study, data loading included),
    ``time_to_target_s`` (None if never reached), ``best_val_accuracy``
    (the highest any trial reached after any epoch), ``best_trial`` (Optuna's
    best by final validation accuracy: its params, value and test accuracy),
    ``trials_complete`` / ``trials_pruned``, ``member_epochs`` and ``curve``
    (``[seconds, trial, epoch, val_accuracy]`` rows).
  """
  import optuna  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  from experiments import torch_baseline  # pylint: disable=g-import-not-at-top

  if threads:
    torch.set_num_threads(threads)
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  start = time.perf_counter()
  data = load_arrays(image_size, seed)
  curve: list[list[float]] = []
  first: list[float] = []
  tests: dict[int, float | None] = {}

  def objective(trial: optuna.Trial) -> float:
    hp = dict(
      lr=trial.suggest_float("learning_rate", *SPACE["learning_rate"], log=True),
      optimizer=trial.suggest_categorical("optimizer", SPACE["optimizer"]),
      activation=trial.suggest_categorical("activation", SPACE["activation"]),
      batch_size=trial.suggest_categorical("batch_size", SPACE["batch_size"]),
    )

    def on_epoch(epoch: int, acc: float) -> None:
      now = time.perf_counter() - start
      curve.append([now, trial.number, epoch, acc])
      if acc >= target and not first:
        first.append(now)
      trial.report(acc, epoch)
      if trial.should_prune():
        raise optuna.TrialPruned()

    r = torch_baseline.train_member(
      data["x_train"],
      data["y_train"],
      epochs=epochs,
      seed=seed + trial.number,
      x_val=data["x_val"],
      y_val=data["y_val"],
      x_test=data["x_test"],
      y_test=data["y_test"],
      device=device,
      on_epoch=on_epoch,
      **hp,
    )
    tests[trial.number] = r["test_accuracy"]
    return r["val_accuracy"][-1]

  study = optuna.create_study(
    direction="maximize",
    sampler=optuna.samplers.TPESampler(seed=seed),
    pruner=optuna.pruners.MedianPruner(),
  )
  study.optimize(
    objective,
    n_trials=trials,
    callbacks=[
      lambda s, t: log(
        f"trial {t.number:3d} {t.state.name.lower():8s} "
        f"val {t.value if t.value is not None else float('nan'):.4f} "
        f"{time.perf_counter() - start:7.1f} s"
      )
    ],
  )
  wall = time.perf_counter() - start
  states = [t.state for t in study.trials]
  best = study.best_trial
  return {
    "tuner": f"Optuna {optuna.__version__} (TPE + median pruner), PyTorch {torch.__version__}",
    "trials": trials,
    "epochs": epochs,
    "target": target,
    "wall_s": wall,
    "time_to_target_s": first[0] if first else None,
    "best_val_accuracy": max((c[3] for c in curve), default=None),
    "best_trial": {
      "number": best.number,
      "params": best.params,
      "val_accuracy": best.value,
      "test_accuracy": tests.get(best.number),
    },
    "trials_complete": states.count(optuna.trial.TrialState.COMPLETE),
    "trials_pruned": states.count(optuna.trial.TrialState.PRUNED),
    "member_epochs": len(curve),
    "curve": curve,
  }


def _define_flags() -> None:
  """The app's flags, defined only when run as a program (the benchmark imports this module)."""
  flags.DEFINE_integer("trials", 32, "Optuna trials.")
  flags.DEFINE_integer("epochs", 10, "Epochs per trial (unless pruned).")
  flags.DEFINE_float("target", 0.97, "Validation accuracy whose first crossing is timed.")
  flags.DEFINE_integer("seed", 0, "Sampler and data-split seed.")
  flags.DEFINE_integer("image_size", 28, "Digits resized to this side (8: native).")
  flags.DEFINE_string("torch_device", "cpu", "cpu, cuda or auto.")
  flags.DEFINE_integer("torch_threads", 0, "Torch intra-op threads (0: torch's default).")
  flags.DEFINE_string("out", None, "Write the result as JSON here.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  f = flags.FLAGS
  r = run_study(
    trials=f.trials,
    epochs=f.epochs,
    target=f.target,
    seed=f.seed,
    image_size=f.image_size,
    device=f.torch_device,
    threads=f.torch_threads or None,
  )
  tta = r["time_to_target_s"]
  print(
    f"\n{r['tuner']}: {r['trials_complete']} complete, {r['trials_pruned']} pruned, "
    f"{r['member_epochs']} member-epochs in {r['wall_s']:.1f} s; "
    f"val accuracy >= {r['target']} after "
    + (f"{tta:.1f} s" if tta is not None else "never")
    + f"; best val {r['best_val_accuracy']:.4f}; best trial (final val "
    f"{r['best_trial']['val_accuracy']:.4f}) test {r['best_trial']['test_accuracy']:.4f}"
  )
  if f.out:
    with open(f.out, "w") as fp:
      json.dump(r, fp, indent=2)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
