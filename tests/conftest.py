"""Suite-wide set-up: one persistent XLA compilation cache for the whole run.

Many tests compile the same programs (the tiny shapes model's train and evaluation
steps, in this process and in the subprocesses that test resuming, SIGKILL and several
devices). A cache in a fresh temporary directory, shared with those subprocesses through
the environment and removed at the end, compiles each program once per run. A cache the
user already set (JAX_COMPILATION_CACHE_DIR) is used as it is and left in place.
"""
import os
import shutil
import tempfile

_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jmvae-test-xla-cache-")
# Cache every program, however small or quick to compile (jax skips those under 1 s).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax   # noqa: E402  (after the environment: jax reads it on import)

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                  int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]))


def pytest_unconfigure(config):
  if _OWN_CACHE:
    shutil.rmtree(os.environ.pop("JAX_COMPILATION_CACHE_DIR"), ignore_errors=True)
