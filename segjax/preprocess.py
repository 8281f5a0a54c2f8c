r"""Reads a corpus once into shards of records, ahead of training.

  python -m segjax.preprocess --config=configs/boundary.py \
      --config.data.source=wiki727k --config.data.path=data/wiki_727K \
      --config.data.cache_dir=data/shards

Takes the flags of `segjax.train` (same config, overrides and workdir; the
shards go where that training run looks for them: `data.cache_dir`, else
`<workdir>/data`) and builds what its first start would build. Several
processes share the work, each writing its block of the input files:
`tools/launch_local.py --module=segjax.preprocess --num_processes=4 -- ...`
on one machine, the same command on every host of a pod. They meet through
the shard folder only, so preprocessing needs neither JAX nor a device and
does not import them (except on a Cloud TPU pod without the job flags, where
JAX says which host is which). It checks the config sections it reads (data
and tokenizer; training checks the rest). A corpus whose shards are current
is not read again.
"""

from __future__ import annotations

import sys
import time

from absl import app
from absl import flags
from absl import logging

from segjax import cli
from segjax import config_lib
from segjax import data
from segjax import metric_writers
from segjax.data import shards

# `--help` lists the shared flags as this command's own.
flags.adopt_module_key_flags(cli)

_PROGRAM = "segjax.preprocess"


def main(argv: list[str]) -> None:
  metric_writers.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config, workdir = cli.config_and_workdir()
  process_index, process_count = cli.job_share()
  start = time.time()
  try:
    config_lib.validate_data_config(config)
    if config.data.source == "pydoc":
      raise config_lib.ConfigError(
          "data.source='pydoc' is embedded and needs no preprocessing; set "
          "data.source and data.path to a corpus folder"
      )
    tokenizer = data.Tokenizer(**config.tokenizer)
    splits = data.open_splits(
        config.data,
        tokenizer,
        workdir,
        process_index=process_index,
        process_count=process_count,
    )
  except (config_lib.ConfigError, data.DataError) as e:
    sys.exit(f"{_PROGRAM}: error: {e}")
  if process_index == 0:
    print(
        ", ".join(
            f"{split} {len(corpus)} documents"
            for split, corpus in splits.items()
        )
        + f" in {shards.shard_folder(config.data, tokenizer, workdir)}"
        f" ({time.time() - start:.0f} s)"
    )
  logging.info("Preprocessed in %.0f s", time.time() - start)


if __name__ == "__main__":
  app.run(main, flags_parser=lambda argv: cli.parse_flags(argv, _PROGRAM))
