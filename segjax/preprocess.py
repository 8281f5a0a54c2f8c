r"""Reads a corpus once into shards of records, ahead of training.

  python -m segjax.preprocess --config=configs/boundary.py \
      --config.data.source=wiki727k --config.data.path=data/wiki_727K \
      --config.data.cache_dir=data/shards

Takes the flags of `segjax.train` (same config, overrides and workdir; the
shards go where that training run looks for them: `data.cache_dir`, else
`<workdir>/data`) and builds what its first start would build. Several
processes share the work, each writing its block of the input files:
`tools/launch_local.py --module=segjax.preprocess --num_processes=4 -- ...`
on one machine, the same command on every host of a pod. A corpus whose
shards are current is not read again.
"""

from __future__ import annotations

import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from segjax import config_lib
from segjax import data
from segjax import metric_writers
from segjax.data import shards
from segjax import train  # The flags of segjax.train, parsed the same way.
from segjax import trainer


def main(argv: list[str]) -> None:
  metric_writers.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = flags.FLAGS.config
  if config is None:
    raise app.UsageError(
        "--config is required, e.g. --config=configs/boundary.py"
    )
  workdir = flags.FLAGS.workdir or train.default_workdir(
      config_flags.get_config_filename(flags.FLAGS["config"])
  )
  train.initialize_distributed()
  start = time.time()
  try:
    config_lib.validate_config(config)
    if config.data.source == "pydoc":
      raise config_lib.ConfigError(
          "data.source='pydoc' is embedded and needs no preprocessing; set "
          "data.source and data.path to a corpus folder"
      )
    tokenizer = data.Tokenizer(**config.tokenizer)
    splits = trainer.open_corpora(config, tokenizer, workdir)
  except (config_lib.ConfigError, data.DataError) as e:
    sys.exit(f"segjax.preprocess: error: {e}")
  if jax.process_index() == 0:
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
  app.run(main, flags_parser=train.parse_flags)
