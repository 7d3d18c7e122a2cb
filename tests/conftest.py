"""Shared test setup: a persistent compilation cache and small shared fixtures.

JAX compiles are the slow part of this suite on 2 CPU cores. The persistent
compilation cache lets compiled programs be reused across test modules (and
across runs on the same machine); fixtures are module- or session-scoped so
that each distinct program is traced once.
"""

import os

import jax
import pytest

_CACHE = os.environ.get("HPJAX_TEST_CACHE_DIR",
                        os.path.join(os.path.dirname(os.path.dirname(__file__)), ".jax_cache"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


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
