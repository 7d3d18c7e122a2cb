r"""The programs around the training step: the benchmark's programs part.

Why ``hpjax.engine.INIT_COMPILER_OPTIONS`` exists: a group's ``init`` runs
once per run, so the time XLA's backend (LLVM) spends optimising it is never
paid back. The group's ``init`` and ``evaluate`` are compiled with XLA's
default options and with the backend optimisations off, alternating, in a
fresh process without a persistent compilation cache, and called; then the validation pass at its own padded
length or the test set's, in member chunks or all at once, and at other eval
batch sizes. Any flag of ``experiments/benchmark.py`` applies::

  python -m experiments.bench_init                                   # 8 members, digits 8x8
  python -m experiments.bench_init --programs_workload=digits28 --programs_population=32
"""

from experiments import benchmark

if __name__ == "__main__":
  benchmark.cli(
    "experiments.bench_init",
    parts=("programs",),
    programs_workload="digits8",
    programs_population=8,
  )
