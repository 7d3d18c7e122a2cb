r"""Engine throughput at whole epochs: the benchmark's throughput and levers parts.

The bench CNN on digits 28x28, batch 32, 39 steps per call (a whole epoch):
32 members vmapped together against the same members one at a time (hpjax's
jitted single-member epoch, and PyTorch where installed), then the levers
(the optimizer family fixed per group, a shared minibatch order, member
chunks) on 32 members. Any flag of ``experiments/benchmark.py`` applies::

  python -m experiments.bench_engine
  python -m experiments.bench_engine --workloads=digits8 --lever_workload=digits8 --steps=digits8=39
"""

from experiments import benchmark

if __name__ == "__main__":
  benchmark.cli(
    "experiments.bench_engine",
    parts=("throughput", "levers"),
    workloads=("digits28",),
    populations=(1, 32),
    steps={"digits28": 39},
    torch_steps=40,
    lever_workload="digits28",
    lever_population=32,
  )
