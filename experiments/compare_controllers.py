r"""Controllers side by side on one scenario: PBT, a random sweep, halving, PBT with rungs.

Every arm starts from the *same* initial members (the config's random draw
with the same seed); the only difference is the controller:

* ``pbt``: the config's own PBT settings (exploit/explore every generation);
* ``random``: ``none`` (each member keeps its hyperparameters);
* ``halving``: successive halving (``--grace``, ``--eta``, ``--min_members``);
* ``pbt_halving``: the config's PBT, with halving's rungs cutting the
  population (:class:`hpjax.PBTHalving`).

Prints a markdown table (best validation accuracy, the test accuracy of that
member, the median over the members alive at the end, member-epochs trained
and wall time) and writes JSON::

  python -m experiments.compare_controllers --config=experiments/configs/digits28_pbt.py \
      --arms=pbt,random --seeds=0,1,2 --workdir=runs/compare

Each seed draws other members.
"""

from __future__ import annotations

import json
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import numpy as np

ARMS = ("pbt", "random", "halving", "pbt_halving")

_CONFIG = config_flags.DEFINE_config_file(
  "config", "experiments/configs/digits28_pbt.py", "A PBT experiment config.", lock_config=False
)
_WORKDIR = flags.DEFINE_string("workdir", "runs/compare_controllers", "Where the arms run.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds; each runs every arm.")
_ARMS = flags.DEFINE_list("arms", ["pbt", "random"], f"Arms, of {', '.join(ARMS)}.")
_GRACE = flags.DEFINE_integer("grace", 2, "Halving arms: epochs before the first rung.")
_ETA = flags.DEFINE_integer("eta", 2, "Halving arms: the reduction factor.")
_MIN_MEMBERS = flags.DEFINE_integer("min_members", 4, "Halving arms: members never cut below.")
_OUT = flags.DEFINE_string("out", "", "JSON output (default WORKDIR/compare.json).")


def _final_fitness(workdir: str, fitness: str, epochs: int) -> np.ndarray:
  """The fitness of the members alive at the last epoch."""
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return np.array([r[f"val_{fitness}"] for r in rows if r["epoch"] == epochs])


def arm_controller(arm: str, pbt: dict, halving: dict) -> dict:
  """The config's ``controller`` section of an arm."""
  if arm not in ARMS:
    raise ValueError(f"--arms: unknown value {arm!r}; allowed: {', '.join(ARMS)}")
  return {
    "pbt": pbt,
    "random": {"name": "none"},
    "halving": {"name": "halving", **halving},
    "pbt_halving": {
      "name": "pbt_halving",
      "pbt": {k: v for k, v in pbt.items() if k != "name"},
      "halving": halving,
    },
  }[arm]


def compare(
  config,
  workdir: str,
  seeds: list[int],
  arms=("pbt", "random"),
  halving: dict | None = None,
  log=print,
) -> list[dict]:
  """Runs every arm for each seed; returns one result row per (seed, arm)."""
  from hpjax import tuner  # pylint: disable=g-import-not-at-top

  base = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  if base.get("controller", {}).get("name") != "pbt":
    raise ValueError("config.controller.name: must be 'pbt' (the other arms derive from it)")
  halving = dict(halving or {"grace_period": 2, "reduction_factor": 2, "min_members": 4})
  results = []
  for seed in seeds:
    for arm in arms:
      cfg = json.loads(json.dumps(base))
      cfg.update(seed=int(seed), progress=False, report=False, tensorboard=False)
      cfg["controller"] = arm_controller(arm, base["controller"], halving)
      out = os.path.join(workdir, f"seed{seed}_{arm}")
      summary = tuner.run(cfg, out, log=lambda s: None)
      fit = _final_fitness(out, summary["fitness"], int(cfg["epochs"]))
      row = {
        "seed": int(seed),
        "arm": arm,
        "best_val": float(summary["val"][summary["fitness"]]),
        "test_of_best": float(summary["test"].get(summary["fitness"], float("nan"))),
        "median_val": float(np.nanmedian(fit)),
        "members_at_end": int(len(fit)),
        "member_epochs": summary["member_epochs"],
        "wall_s": summary["wall_time_s"],
        "timings": summary.get("timings"),
      }
      log(
        f"seed {seed} {arm:11s}: best val {row['best_val']:.4f} (test "
        f"{row['test_of_best']:.4f}), median {row['median_val']:.4f}, "
        f"{row['member_epochs']} member-epochs, {row['wall_s']:.0f} s"
      )
      results.append(row)
  return results


def table(results: list[dict]) -> str:
  """The markdown table of :func:`compare`'s rows."""
  lines = [
    "| seed | arm | best val | test of best | median val (alive) | member-epochs | wall s |",
    "| --- | --- | --- | --- | --- | --- | --- |",
  ]
  for r in results:
    lines.append(
      f"| {r['seed']} | {r['arm']} | {r['best_val']:.4f} | {r['test_of_best']:.4f} | "
      f"{r['median_val']:.4f} ({r['members_at_end']}) | {r['member_epochs']} | "
      f"{r['wall_s']:.0f} |"
    )
  return "\n".join(lines)


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  halving = {
    "grace_period": _GRACE.value,
    "reduction_factor": _ETA.value,
    "min_members": _MIN_MEMBERS.value,
  }
  results = compare(
    _CONFIG.value, _WORKDIR.value, [int(s) for s in _SEEDS.value], arms=_ARMS.value, halving=halving
  )
  print(table(results))
  out = _OUT.value or os.path.join(_WORKDIR.value, "compare.json")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    json.dump(results, f, indent=2)


if __name__ == "__main__":
  app.run(main)
