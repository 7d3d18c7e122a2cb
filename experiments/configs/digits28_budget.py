r"""Digits at 28x28, the digits28_pbt search, on a budget: PBT whose population is halved.

The same 32 members, space (learning rate, optimizer, activation, batch size
8/16/32) and 10 epochs as ``digits28_pbt.py``; PBT exploits and explores after
every epoch as there, and successive-halving rungs after epochs 1 and 2 keep
the better half each time (32 -> 16 -> 8), so the run trains 112
member-epochs instead of 320, fewer than the 144 Optuna's median pruner
spends, with PBT's strength kept among the survivors (docs/tuning.md compares
them; rungs after epochs 2 and 4, 144 member-epochs, tuned no better on seeds
0-2).

Evaluation runs in chunks of 45 examples: the validation split (180) is 4
chunks with no padding where the default 256 padded it to 256 rows every
epoch; measured 2.0 s of evaluation per run against 3.8 s, the same ranking
(docs/benchmarks.md).

Launch::

  python -m experiments.tune --config=experiments/configs/digits28_budget.py --workdir=runs/digits28_budget
"""

import ml_collections

from experiments.configs import digits28_pbt


def get_config() -> ml_collections.ConfigDict:
  c = digits28_pbt.get_config()
  pbt = c.controller.to_dict()
  del pbt["name"]
  c.controller = ml_collections.ConfigDict(
    dict(
      name="pbt_halving", pbt=pbt, halving=dict(grace_period=1, reduction_factor=2, min_members=8)
    )
  )
  c.eval_batch_size = 45
  return c
