"""Test setup: 4 simulated CPU devices, and a session-scoped trained run.

The device count is set before JAX is imported anywhere; subprocesses (CLI
and multi-process tests) inherit it through the environment.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# No persistent compilation cache: in jax 0.10.2 reading back one of this
# suite's cached executables aborted the process (in
# compilation_cache.get_executable_and_time, reproducibly from a fresh clone).


import gc  # pylint: disable=g-import-not-at-top,g-bad-import-order

import pytest  # pylint: disable=g-import-not-at-top,g-bad-import-order

# Above this resident size the test process frees JAX's compiled executables.
MAX_RESIDENT_BYTES = 2 * 2**30


def _resident_bytes() -> int:
  """This process's resident memory (Linux); 0 where /proc is missing."""
  try:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
  except OSError:
    return 0


@pytest.fixture(autouse=True)
def _bounded_memory():
  """Frees compiled executables once the process holds too much memory.

  JAX keeps every executable compiled in a process, and the tests compile
  many models: over the whole suite that grew past 5 GB, more than a 2-core
  CI runner's 7 GB allow with the subprocesses the tests start (CI aborted
  the suite). Clearing only past a threshold keeps the reuse of compiled
  steps between neighbouring tests.
  """
  yield
  if _resident_bytes() > MAX_RESIDENT_BYTES:
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
