"""The command-line flags that `segjax.train` and `segjax.preprocess` share.

Apart from the trainer, so that preprocessing, which needs neither JAX nor a
device, starts without importing them: its processes take their share of the
input files from the flags and meet through the shard folder.
"""

from __future__ import annotations

import os
import pathlib
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from segjax import config_lib

CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file, e.g. configs/boundary.py[:variant,...].",
    lock_config=True,
)
WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output folder; default runs/<config file>[_<variants>]."
)
COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    None,
    "host:port of process 0 for a multi-process job (with --num_processes and "
    "--process_id); on a Cloud TPU pod leave all three unset. "
    "segjax.preprocess does not dial it: its processes meet in the shard "
    "folder.",
)
NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Processes in the job."
)
PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def parse_flags(argv: list[str], program: str = "segjax.train") -> list[str]:
  """absl flag parsing; a bad config file, variant, key or value is one line."""
  try:
    config_lib.check_overrides(argv[1:])
    return flags.FLAGS(argv)
  except (flags.Error, config_lib.ConfigError) as e:
    sys.exit(f"{program}: error: {str(e).splitlines()[0]}")


def default_workdir(config_spec: str) -> pathlib.Path:
  path, _, arg = config_spec.partition(":")
  name = pathlib.Path(path).stem + (f"_{arg.replace(',', '_')}" if arg else "")
  return pathlib.Path("runs") / name


def config_and_workdir():
  """(the parsed config, `--workdir` or the config file's default)."""
  if CONFIG.value is None:
    raise app.UsageError(
        "--config is required, e.g. --config=configs/boundary.py"
    )
  workdir = WORKDIR.value or default_workdir(
      config_flags.get_config_filename(flags.FLAGS["config"])
  )
  return CONFIG.value, workdir


def _explicit_job() -> tuple[str, int, int] | None:
  """(coordinator, processes, index) when the flags describe a job."""
  explicit = (COORDINATOR.value, NUM_PROCESSES.value, PROCESS_ID.value)
  if all(value is None for value in explicit):
    return None
  if any(value is None for value in explicit):
    raise app.UsageError(
        "--coordinator_address, --num_processes and --process_id go together"
    )
  if not 0 <= PROCESS_ID.value < NUM_PROCESSES.value:
    raise app.UsageError(
        f"--process_id={PROCESS_ID.value} is not in [0, --num_processes="
        f"{NUM_PROCESSES.value})"
    )
  return explicit


def _on_tpu_pod() -> bool:
  return len(os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1


def initialize_distributed() -> None:
  """Joins a multi-process job when one is described; single process otherwise.

  Explicit flags win; on a Cloud TPU pod slice (several TPU workers) JAX's
  no-argument auto-detection finds the coordinator. CPU processes exchange
  collectives through gloo.
  """
  import jax  # pylint: disable=g-import-not-at-top

  job = _explicit_job()
  if job is not None:
    coordinator, num_processes, process_id = job
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator, num_processes=num_processes, process_id=process_id
    )
  elif _on_tpu_pod():
    jax.distributed.initialize()


def job_share() -> tuple[int, int]:
  """(this process's index, the job's process count), for sharing work.

  From the flags when they describe the job, without contacting the others
  or importing JAX; on a TPU pod, JAX's (which joins the job to find out).
  """
  job = _explicit_job()
  if job is not None:
    return job[2], job[1]
  if _on_tpu_pod():
    import jax  # pylint: disable=g-import-not-at-top

    initialize_distributed()
    return jax.process_index(), jax.process_count()
  return 0, 1
