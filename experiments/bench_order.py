r"""The shared-minibatch-order and member-chunk levers: the benchmark's levers part.

32 members of the bench CNN on digits 28x28, a whole epoch (39 steps of 32)
per call; every variant is compiled and warmed up, then the variants take
turns for ``--lever_rounds`` calls each and the best call is reported. Any
flag of ``experiments/benchmark.py`` applies::

  python -m experiments.bench_order
  python -m experiments.bench_order --lever_population=8 --lever_rounds=5
"""

from experiments import benchmark

if __name__ == "__main__":
  benchmark.cli(
    "experiments.bench_order",
    parts=("levers",),
    lever_workload="digits28",
    lever_population=32,
    lever_rounds=3,
    steps={"digits28": 39},
  )
