"""Suite-wide set-up: one persistent XLA compilation cache for the whole run.

Many tests compile the same programs (the tiny shapes model's train and evaluation
steps, in this process and in the subprocesses that test resuming, SIGKILL and several
devices). A cache in a fresh temporary directory, shared with those subprocesses and
with pytest-xdist's workers through the environment and removed at the end, compiles
each program once per run. A cache the user set for their own runs
(JAX_COMPILATION_CACHE_DIR) is neither read nor written: the suite starts cold.
"""
import os
import shutil
import tempfile

# The process that makes the directory owns it; xdist's workers and the tests'
# subprocesses inherit both variables and use the same directory.
_OWN_CACHE = "JMVAE_TEST_XLA_CACHE" not in os.environ
if _OWN_CACHE:
  os.environ["JMVAE_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="jmvae-test-xla-cache-")
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["JMVAE_TEST_XLA_CACHE"]
# Cache every program, however small or quick to compile (jax skips those under 1 s).
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import jax   # noqa: E402  (after the environment: jax reads it on import)

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
  if _OWN_CACHE:
    shutil.rmtree(os.environ.pop("JMVAE_TEST_XLA_CACHE"), ignore_errors=True)
