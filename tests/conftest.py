"""Shared test setup: a persistent compilation cache and small shared fixtures.

JAX compiles are the slow part of this suite on 2 CPU cores. XLA's backend
optimisations are turned off (see below). The persistent
compilation cache lets compiled programs be reused across test modules (and
across runs on the same machine); fixtures are module- or session-scoped so
that each distinct program is traced once.
"""

import os

# Tests compile far more than they run: XLA's backend optimisations (LLVM)
# cost more than they save on these tiny models (a cold launcher run: 35 s of
# CPU with them, 15 s without). Set before jax is imported so that every
# subprocess the tests start (launcher, benchmark children, multi-process
# runs) inherits it; JAX_DISABLE_MOST_OPTIMIZATIONS=0 tests optimised code.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest

_CACHE = os.environ.get(
  "HPJAX_TEST_CACHE_DIR", os.path.join(os.path.dirname(os.path.dirname(__file__)), ".jax_cache")
)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@pytest.fixture(scope="session")
def jax_compiles():
  """``run(fn)``: ``fn()``'s result and the ``(event, function)`` of each trace and compile it caused.

  ``event`` is ``"trace"`` or ``"compile"``; ``function`` is JAX's name of
  the program (``"jit(train_epoch)"``).
  """
  from jax._src import dispatch  # pylint: disable=g-import-not-at-top

  from hpjax import engine  # pylint: disable=g-import-not-at-top

  # hpjax checks its XLA options once per process by compiling a trivial
  # program (engine.supported_compiler_options): done here, before counting.
  engine.init_compiler_options()
  engine.step_compiler_options()
  kinds = {dispatch.JAXPR_TRACE_EVENT: "trace", dispatch.BACKEND_COMPILE_EVENT: "compile"}

  def run(fn):
    events = []

    def listener(name, *args, fun_name="", **kwargs):
      del args, kwargs
      if name in kinds:
        events.append((kinds[name], fun_name))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
      return fn(), events
    finally:
      jax.monitoring.unregister_event_duration_listener(listener)

  return run


@pytest.fixture(scope="session")
def digits():
  """The embedded digits data at 8x8 (default splits, seed 0)."""
  from hpjax.data import load_dataset  # pylint: disable=g-import-not-at-top

  return load_dataset("digits", seed=0)


@pytest.fixture(scope="session")
def digits_small():
  """Digits capped to 256 training examples: fast epochs for engine tests."""
  from hpjax.data import load_dataset  # pylint: disable=g-import-not-at-top

  return load_dataset("digits", seed=0, max_train=256)
