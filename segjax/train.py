r"""Trains, evaluates and checkpoints a text segmentation model.

  python -m segjax.train --config=configs/boundary.py --workdir=runs/boundary
  python -m segjax.train --config=configs/boundary.py:aggressive \
      --config.loss.boundary_weight=3.0 --config.train.num_steps=2000

Reruns with the same `--workdir` resume from its latest checkpoint. Writes
`config.json`, `metrics.jsonl`, `tensorboard/` and `checkpoints/` there.
"""

from __future__ import annotations

import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax

from segjax import checkpoints
from segjax import cli
from segjax import config_lib
from segjax import data
from segjax import metric_writers
from segjax import trainer

# `--help` lists the shared flags as this command's own.
flags.adopt_module_key_flags(cli)


def main(argv: list[str]) -> None:
  metric_writers.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config, workdir = cli.config_and_workdir()
  cli.initialize_distributed()
  start = time.time()
  try:
    results = trainer.train_and_evaluate(config, workdir)
  except (
      config_lib.ConfigError,
      data.DataError,
      checkpoints.CheckpointError,
      metric_writers.WriteError,
      trainer.TrainingDiverged,
  ) as e:
    sys.exit(f"segjax.train: error: {e}")
  except jax.errors.JaxRuntimeError as e:
    line = trainer.out_of_memory_line(e, config)
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
  app.run(main, flags_parser=cli.parse_flags)
