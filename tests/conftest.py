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

# Past either limit the test process frees JAX's compiled executables.
MAX_RESIDENT_BYTES = 2 * 2**30
# Each CPU executable holds ~9 memory mappings; Linux allows a process 65530
# (vm.max_map_count), and XLA aborts the process when a mapping fails.
MAX_MEMORY_MAPS = 20_000


def _resident_bytes_and_maps() -> tuple[int, int]:
  """This process's resident memory and memory mappings (Linux; else 0)."""
  try:
    with open("/proc/self/statm") as f:
      resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/maps") as f:
      return resident, sum(1 for _ in f)
  except OSError:
    return 0, 0


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
  resident, maps = _resident_bytes_and_maps()
  if resident > MAX_RESIDENT_BYTES or maps > MAX_MEMORY_MAPS:
    import jax  # pylint: disable=g-import-not-at-top

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
