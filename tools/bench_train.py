"""Benchmarks the train step and the input pipeline of the default config.

  python tools/bench_train.py [--steps 30] [--no-write]

Measures, on the default model and global batch: the jitted data-parallel
train step with the boundary-aware and the legacy loss (goal: within 5% of
each other), sentences per second, and the input pipeline's own batches per
second (goal: at least 3x what the train step consumes). Writes the
`bench_train` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import numpy as np

import bench_report
from segjax import config_lib
from segjax import data
from segjax import losses
from segjax import models
from segjax import parallel as parallel_lib
from segjax import trainer

CONFIGS = {
    "boundary_aware": "configs/boundary.py",
    "cross_entropy": "configs/cross_entropy.py",
}


def pipeline_batches_per_second(
    config, documents, tokenizer, num_batches: int
) -> float:
  iterator = data.make_train_iterator(
      documents,
      tokenizer,
      global_batch_size=config.train.batch_size,
      max_sentences=config.data.max_sentences,
      seed=config.seed,
      ignore_index=config.loss.ignore_index,
  )
  next(iterator)  # thread start-up
  start = time.perf_counter()
  for _ in range(num_batches):
    next(iterator)
  return num_batches / (time.perf_counter() - start)


def compiled_step(config, batches):
  """(step function, initial state, device batches) of one config."""
  parallel = parallel_lib.DataParallel(config.parallel.mode)
  model = models.model_from_config(config)
  tx, schedule = trainer.make_optimizer(config.optim, config.train.num_steps)
  state = parallel.put_state(trainer.create_train_state(config, model, tx))
  step = parallel.map_step(
      functools.partial(
          trainer.train_step,
          model=model,
          loss_fn=losses.create_loss(config.loss),
          schedule=schedule,
      )
  )
  return step, state, [parallel.put_batch(b) for b in batches]


def interleaved_step_seconds(configs, batches, num_steps: int):
  """Blocked step times per config, the configs' steps alternating.

  Alternating step by step (rather than timing one config after the other)
  keeps load changes on a shared machine from favouring either.
  """
  runs = {
      name: list(compiled_step(config, batches))
      for name, config in configs.items()
  }
  times = {name: [] for name in runs}
  for i in range(num_steps + 3):
    for name, run in runs.items():
      step, state, device_batches = run
      start = time.perf_counter()
      state, metrics = step(state, device_batches[i % len(device_batches)])
      jax.block_until_ready(metrics)
      run[1] = state
      if i >= 3:  # the first calls compile and warm up
        times[name].append(time.perf_counter() - start)
  return times


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--no-write", action="store_true")
  args = parser.parse_args()

  base = config_lib.load_config(
      str(bench_report.REPO_ROOT / CONFIGS["boundary_aware"])
  )
  splits = data.load_splits(base.data)
  tokenizer = data.Tokenizer(**base.tokenizer)
  iterator = data.make_train_iterator(
      splits["train"],
      tokenizer,
      global_batch_size=base.train.batch_size,
      max_sentences=base.data.max_sentences,
      seed=base.seed,
      ignore_index=base.loss.ignore_index,
  )
  batches = [next(iterator) for _ in range(8)]
  sentences_per_batch = float(
      np.mean([b["sentence_mask"].sum() for b in batches])
  )

  configs = {
      name: config_lib.load_config(str(bench_report.REPO_ROOT / path))
      for name, path in CONFIGS.items()
  }
  steps = interleaved_step_seconds(configs, batches, args.steps)
  median = {name: statistics.median(t) for name, t in steps.items()}
  pipeline = pipeline_batches_per_second(base, splits["train"], tokenizer, 300)
  consumed = 1.0 / median["boundary_aware"]

  rows = [
      f"| train step, boundary_aware | {median['boundary_aware'] * 1e3:.1f} ms "
      f"| {sentences_per_batch / median['boundary_aware']:,.0f} sentences/s |",
      f"| train step, cross_entropy | {median['cross_entropy'] * 1e3:.1f} ms "
      f"| {sentences_per_batch / median['cross_entropy']:,.0f} sentences/s |",
      f"| boundary_aware / cross_entropy step time | "
      f"{median['boundary_aware'] / median['cross_entropy']:.3f}x | goal <= 1.05x |",
      f"| input pipeline | {pipeline:,.0f} batches/s | "
      f"{pipeline / consumed:.1f}x what the step consumes (goal >= 3x) |",
  ]
  print("\n".join(rows))
  body = bench_report.table_section(
      "Training: step and input pipeline (`tools/bench_train.py`)",
      f"Default config (`configs/boundary.py` / `configs/cross_entropy.py`): "
      f"global batch {base.train.batch_size} windows x "
      f"{base.data.max_sentences} sentences x {base.tokenizer.max_tokens} tokens "
      f"({sentences_per_batch:.0f} real sentences per batch on average), "
      f"{jax.device_count()} device(s), parallel mode {base.parallel.mode}; "
      f"median of {args.steps} blocked steps per loss after warm-up, the two "
      "losses' steps alternating.",
      ["measurement", "value", ""],
      rows,
  )
  if not args.no_write:
    bench_report.write_section("bench_train", body)


if __name__ == "__main__":
  main()
