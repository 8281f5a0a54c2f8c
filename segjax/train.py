r"""Trains, evaluates and checkpoints a text segmentation model.

  python -m segjax.train --config=configs/boundary.py --workdir=runs/boundary
  python -m segjax.train --config=configs/boundary.py:aggressive \
      --config.loss.boundary_weight=3.0 --config.train.num_steps=2000

Reruns with the same `--workdir` resume from its latest checkpoint. Writes
`config.json`, `metrics.jsonl`, `tensorboard/` and `checkpoints/` there.
"""

from __future__ import annotations

import os
import pathlib
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from segjax import checkpoints
from segjax import config_lib
from segjax import data
from segjax import metric_writers
from segjax import trainer

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file, e.g. configs/boundary.py[:variant,...].",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output folder; default runs/<config file>[_<variants>]."
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    None,
    "host:port of process 0 for a multi-process job (with --num_processes and "
    "--process_id); on a Cloud TPU pod leave all three unset.",
)
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Processes in the job."
)
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def initialize_distributed() -> None:
  """Joins a multi-process job when one is described; single process otherwise.

  Explicit flags win; on a Cloud TPU pod slice (several TPU workers) JAX's
  no-argument auto-detection finds the coordinator. CPU processes exchange
  collectives through gloo.
  """
  explicit = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise app.UsageError(
          "--coordinator_address, --num_processes and "
          "--process_id go together"
      )
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        _COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value,
        process_id=_PROCESS_ID.value,
    )
  elif len(os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1:
    jax.distributed.initialize()


def default_workdir(config_spec: str) -> pathlib.Path:
  path, _, arg = config_spec.partition(":")
  name = pathlib.Path(path).stem + (f"_{arg.replace(',', '_')}" if arg else "")
  return pathlib.Path("runs") / name


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing; a bad config file, variant, key or value is one line."""
  try:
    config_lib.check_overrides(argv[1:])
    return flags.FLAGS(argv)
  except (flags.Error, config_lib.ConfigError) as e:
    sys.exit(f"segjax.train: error: {str(e).splitlines()[0]}")


def main(argv: list[str]) -> None:
  metric_writers.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None:
    raise app.UsageError(
        "--config is required, e.g. --config=configs/boundary.py"
    )
  workdir = _WORKDIR.value or default_workdir(
      config_flags.get_config_filename(flags.FLAGS["config"])
  )
  initialize_distributed()
  start = time.time()
  try:
    results = trainer.train_and_evaluate(_CONFIG.value, workdir)
  except (
      config_lib.ConfigError,
      data.DataError,
      checkpoints.CheckpointError,
      metric_writers.WriteError,
      trainer.TrainingDiverged,
  ) as e:
    sys.exit(f"segjax.train: error: {e}")
  except jax.errors.JaxRuntimeError as e:
    line = trainer.out_of_memory_line(e, _CONFIG.value)
    if line is None:
      raise
    sys.exit(f"segjax.train: error: {line}")
  logging.info(
      "Finished in %.0f s; outputs in %s", time.time() - start, workdir
  )
  if results.get("preempted"):
    logging.info(
        "Stopped by SIGTERM after saving step %d; rerun the same "
        "command to resume",
        results["step"],
    )
  elif "test_pk" in results and jax.process_index() == 0:
    print(
        f"test Pk {results['test_pk']:.4f}  WindowDiff "
        f"{results['test_window_diff']:.4f}  boundary F1 "
        f"{results['test_boundary_f1']:.4f}  (threshold "
        f"{results['test_threshold']:.2f}, {time.time() - start:.0f} s)"
    )


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
