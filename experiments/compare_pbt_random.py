r"""PBT against a random sweep of the same size and compute, side by side in one run.

Both arms start from the *same* initial members (the config's random draw
with the same seed) and train the same number of member-epochs; the only
difference is the controller: ``pbt`` (exploit/explore every generation) or
``none`` (each member keeps its hyperparameters). Prints a markdown table and
writes JSON::

  python -m experiments.compare_pbt_random --config=experiments/configs/digits28_pbt.py \
      --workdir=runs/compare --out=runs/compare/compare.json

``--seeds=0,1,2`` repeats the pair over seeds (each seed draws other members).
"""

from __future__ import annotations

import json
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import numpy as np

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/digits28_pbt.py",
                                          "A PBT experiment config.", lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", "runs/compare_pbt_random", "Where both arms run.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds; each gives one PBT run and one sweep.")
_OUT = flags.DEFINE_string("out", "", "JSON output (default WORKDIR/compare.json).")


def _final_fitness(workdir: str, fitness: str, epochs: int) -> np.ndarray:
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return np.array([r[f"val_{fitness}"] for r in rows if r["epoch"] == epochs])


def compare(config, workdir: str, seeds: list[int], log=print) -> list[dict]:
  """Runs both arms for each seed; returns one result row per (seed, arm)."""
  from hpjax import tuner  # pylint: disable=g-import-not-at-top
  base = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  if base.get("controller", {}).get("name") != "pbt":
    raise ValueError("config.controller.name: must be 'pbt' (the sweep arm is derived from it)")
  results = []
  for seed in seeds:
    for arm in ("pbt", "random"):
      cfg = json.loads(json.dumps(base))
      cfg["seed"] = int(seed)
      cfg["progress"] = False
      if arm == "random":
        cfg["controller"] = {"name": "none"}
      out = os.path.join(workdir, f"seed{seed}_{arm}")
      summary = tuner.run(cfg, out, log=lambda s: None)
      fit = _final_fitness(out, summary["fitness"], int(cfg["epochs"]))
      row = {"seed": int(seed), "arm": arm, "best_val": float(summary["val"][summary["fitness"]]),
             "test_of_best": float(summary["test"].get(summary["fitness"], float("nan"))),
             "median_val": float(np.nanmedian(fit)), "worst_val": float(np.nanmin(fit)),
             "member_epochs": summary["member_epochs"], "wall_s": summary["wall_time_s"]}
      log(f"seed {seed} {arm:6s}: best val {row['best_val']:.4f} (test {row['test_of_best']:.4f}), "
          f"median {row['median_val']:.4f}, {row['member_epochs']} member-epochs, "
          f"{row['wall_s']:.0f} s")
      results.append(row)
  return results


def table(results: list[dict]) -> str:
  lines = ["| seed | arm | best val | test of best | median val | member-epochs | wall s |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
  for r in results:
    lines.append(f"| {r['seed']} | {r['arm']} | {r['best_val']:.4f} | {r['test_of_best']:.4f} | "
                 f"{r['median_val']:.4f} | {r['member_epochs']} | {r['wall_s']:.0f} |")
  return "\n".join(lines)


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  results = compare(_CONFIG.value, _WORKDIR.value, [int(s) for s in _SEEDS.value])
  print(table(results))
  out = _OUT.value or os.path.join(_WORKDIR.value, "compare.json")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    json.dump(results, f, indent=2)


if __name__ == "__main__":
  app.run(main)
