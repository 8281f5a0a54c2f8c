"""Test setup: 4 simulated CPU devices and a shared compilation cache.

Both are set before JAX is imported anywhere, and subprocesses (CLI and
multi-process tests) inherit them through the environment. Most end-to-end
runs compile the same tiny programs, so the persistent cache turns a ~20 s
compile into a ~1 s load after the first run.
"""

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    str(
        pathlib.Path(__file__).resolve().parent.parent / ".pytest_cache" / "jax"
    ),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import gc  # pylint: disable=g-import-not-at-top,g-bad-import-order

import pytest  # pylint: disable=g-import-not-at-top,g-bad-import-order

# Past this (or `trainer.MAX_MEMORY_MAPS`) the test process frees JAX's
# compiled executables.
MAX_RESIDENT_BYTES = 2 * 2**30


def _resident_bytes() -> int:
  """This process's resident memory (Linux; else 0)."""
  try:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
  except OSError:
    return 0


@pytest.fixture(autouse=True)
def _bounded_compiled_code():
  """Frees compiled executables once the process holds too many.

  JAX keeps every executable compiled in a process, and the tests compile
  thousands of models and steps: the suite ran out of memory mappings (XLA
  aborted it while compiling, late in the run) after growing past 5 GB.
  Clearing only past a limit keeps the reuse of compiled steps between
  neighbouring tests.
  """
  yield
  import jax  # pylint: disable=g-import-not-at-top
  from segjax import trainer  # pylint: disable=g-import-not-at-top

  if (
      _resident_bytes() > MAX_RESIDENT_BYTES
      or trainer.memory_maps() > trainer.MAX_MEMORY_MAPS
  ):
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
  """A tiny finished run (8 steps of `:smoke`), shared read-only by the
  evaluate, segment and Segmenter tests."""
  from e2e_helpers import tiny_config  # pylint: disable=g-import-not-at-top
  from segjax import trainer  # pylint: disable=g-import-not-at-top

  workdir = tmp_path_factory.mktemp("trained")
  trainer.train_and_evaluate(
      tiny_config(
          **{
              "train.num_steps": 8,
              "train.eval_every": 4,
              "train.checkpoint_every": 4,
          }
      ),
      workdir,
  )
  return workdir
