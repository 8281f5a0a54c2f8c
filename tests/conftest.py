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


import pytest  # pylint: disable=g-import-not-at-top,g-bad-import-order


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
