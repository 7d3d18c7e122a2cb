r"""Data streamed from the host against the same data in memory: the benchmark's stream part.

32 members of the bench CNN on digits 28x28, a whole epoch (39 steps of 32)
per timed call, the shared minibatch order in both paths; the stream's
batches go through ``hpjax.data.Stream`` 1, 4, 8 and 39 to a jitted call.
Every variant is built and warmed up, then they take turns for
``--stream_rounds`` epochs each and the best epoch is reported. Any flag of
``experiments/benchmark.py`` applies::

  python -m experiments.bench_stream
  python -m experiments.bench_stream --stream_population=8 --stream_rounds=5
"""

from experiments import benchmark

if __name__ == "__main__":
  benchmark.cli("experiments.bench_stream", parts=("stream",))
