"""Where a run's wall time goes: phases, and JAX's own compile time.

A run accounts every second to a phase (``data``, ``build``, ``train``,
``evaluate``, ``controller``, ``write``, ``checkpoint``, ``final``,
``export``, ``report``, ...) with :meth:`Phases.phase`, and listens to JAX's
monitoring events for the time spent tracing and compiling programs (which
happens inside the phases that first call them). ``summary.json['timings']``
holds the result, so a benchmark can show where a run's seconds went.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import time

import jax

# JAX's monitoring event names for tracing and compiling a program.
_TRACE = "/jax/core/compile/jaxpr_trace_duration"
_COMPILE = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT = "/jax/compilation_cache/cache_hits"


class Phases:
  """Wall seconds per phase of a run, and JAX's trace and compile seconds inside them.

  Use as a context manager: JAX's compile events are counted while it is
  open. Phases nest: time inside an inner phase is not counted in the
  outer one.
  """

  def __init__(self):
    self.seconds: dict[str, float] = {}
    self.counts: dict[str, int] = {}
    self.trace_s = 0.0
    self.compile_s = 0.0
    self.programs = 0
    self.cache_hits = 0
    self._stack: list[list] = []
    self._start = time.perf_counter()

  def _on_duration(self, event: str, duration: float, **kwargs) -> None:
    del kwargs
    if event == _TRACE:
      self.trace_s += duration
    elif event == _COMPILE:
      self.compile_s += duration
      self.programs += 1

  def _on_event(self, event: str, **kwargs) -> None:
    del kwargs
    if event == _CACHE_HIT:
      self.cache_hits += 1

  def __enter__(self) -> "Phases":
    jax.monitoring.register_event_duration_secs_listener(self._on_duration)
    jax.monitoring.register_event_listener(self._on_event)
    return self

  def __exit__(self, *exc) -> None:
    _unregister(self._on_duration, self._on_event)

  @contextlib.contextmanager
  def phase(self, name: str) -> Iterator[None]:
    """Counts the wall time of the block to ``name`` (minus nested phases)."""
    entry = [name, time.perf_counter(), 0.0]  # name, start, time in nested phases
    self._stack.append(entry)
    try:
      yield
    finally:
      self._stack.pop()
      spent = time.perf_counter() - entry[1]
      self.seconds[name] = self.seconds.get(name, 0.0) + spent - entry[2]
      self.counts[name] = self.counts.get(name, 0) + 1
      if self._stack:
        self._stack[-1][2] += spent

  def summary(self) -> dict:
    """The JSON record: seconds per phase, their total, and JAX's compile work."""
    total = time.perf_counter() - self._start
    return {
      "phases_s": {k: round(v, 3) for k, v in self.seconds.items()},
      "counts": dict(self.counts),
      "accounted_s": round(sum(self.seconds.values()), 3),
      "total_s": round(total, 3),
      "jax_trace_s": round(self.trace_s, 3),
      "jax_compile_s": round(self.compile_s, 3),
      "programs_compiled": self.programs,
      "compile_cache_hits": self.cache_hits,
    }


def _unregister(duration_listener, event_listener) -> None:
  # jax.monitoring has no public removal of a plain event listener in every
  # version; the duration one has unregister_event_duration_listener.
  try:
    jax.monitoring.unregister_event_duration_listener(duration_listener)
  except (AttributeError, ValueError, AssertionError):
    pass
  try:
    jax.monitoring.unregister_event_listener(event_listener)
  except (AttributeError, ValueError, AssertionError):
    pass
