"""Benchmarks the train step and the input pipeline of the default config.

  python tools/bench_train.py [--steps 30] [--no-write] \
      [--cache_corpora=pydoc,wiki727k:runs/wiki_excerpt]

Measures, on the default model and global batch: the jitted data-parallel
train step with the boundary-aware and the legacy loss (goal: within 5% of
each other), sentences per second, and the input pipeline's own batches per
second (goal: at least 3x what the train step consumes). With the
pretrained encoder (`configs/boundary.py:minilm`, frozen): the time to
build the embedding cache of each of `--cache_corpora` from empty, and the
train step on cached vectors, interleaved with the hashed encoder's. Writes
the `bench_train` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time

import jax
import numpy as np

import bench_report
from segjax import config_lib
from segjax import data
from segjax import embedding_cache
from segjax import losses
from segjax import models
from segjax import parallel as parallel_lib
from segjax import trainer

CONFIGS = {
    "boundary_aware": "configs/boundary.py:hashed",
    "cross_entropy": "configs/cross_entropy.py:hashed",
    "boundary_aware:minilm": "configs/boundary.py:minilm",
}


def train_iterator(config, corpus, tokenizer, embeddings=None):
  return data.make_train_iterator(
      corpus,
      tokenizer,
      global_batch_size=config.train.batch_size,
      max_sentences=config.data.max_sentences,
      seed=config.seed,
      ignore_index=config.loss.ignore_index,
      embeddings=embeddings,
  )


def pipeline_batches_per_second(
    config, documents, tokenizer, num_batches: int
) -> float:
  iterator = train_iterator(config, documents, tokenizer)
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
  embeddings = batches[0].get("embeddings")
  embedding_dim = 0 if embeddings is None else embeddings.shape[-1]
  state = parallel.put_state(
      trainer.create_train_state(config, model, tx, embedding_dim)
  )
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

  `batches`: {config name: its batches}. Alternating step by step (rather
  than timing one config after the other) keeps load changes on a shared
  machine from favouring either.
  """
  runs = {
      name: list(compiled_step(config, batches[name]))
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


def train_batches(config, corpus, tokenizer, embeddings=None, n: int = 8):
  iterator = train_iterator(config, corpus, tokenizer, embeddings)
  return [next(iterator) for _ in range(n)]


def cache_build(config, source: str, cache_dir: str, encoder):
  """(the filled cache, seconds) from an empty embedding cache.

  `source` is "pydoc" or "<data.source>:<data.path>". Reading the corpus
  and encoding its distinct sentences are counted; loading the encoder not.
  """
  config = config.copy_and_resolve_references()
  name, _, path = source.partition(":")
  config.data.source, config.data.path = name, path
  config.encoder.cache_dir = cache_dir
  start = time.perf_counter()
  splits = trainer.open_corpora(
      config, data.Tokenizer(**config.tokenizer), cache_dir
  )
  sentences = (s for corpus in splits.values() for s in corpus.sentences())
  cache, _ = embedding_cache.build(
      config.encoder, cache_dir, sentences, encoder=encoder
  )
  return cache, splits, time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--no-write", action="store_true")
  parser.add_argument(
      "--cache_corpora",
      default="",
      help="comma-separated corpora <data.source>:<data.path> whose"
      " embedding cache build is timed besides pydoc's",
  )
  args = parser.parse_args()

  configs = {
      name: config_lib.load_config(str(bench_report.REPO_ROOT / path))
      for name, path in CONFIGS.items()
  }
  base = configs["boundary_aware"]
  splits = data.load_splits(base.data)
  tokenizer = data.Tokenizer(**base.tokenizer)
  batches = dict.fromkeys(
      ["boundary_aware", "cross_entropy"],
      train_batches(base, splits["train"], tokenizer),
  )
  sentences_per_batch = float(
      np.mean([b["sentence_mask"].sum() for b in batches["boundary_aware"]])
  )
  minilm = configs["boundary_aware:minilm"]
  encoder = embedding_cache.load_encoder(minilm.encoder)
  sources = ["pydoc"] + [c for c in args.cache_corpora.split(",") if c]
  builds = {}
  with tempfile.TemporaryDirectory() as cache_dir:
    for i, source in enumerate(sources):
      builds[source] = cache_build(minilm, source, f"{cache_dir}/{i}", encoder)
    cache, corpora, _ = builds["pydoc"]
    batches["boundary_aware:minilm"] = train_batches(
        minilm, corpora["train"], data.Tokenizer(**minilm.tokenizer), cache
    )
  steps = interleaved_step_seconds(configs, batches, args.steps)
  median = {name: statistics.median(t) for name, t in steps.items()}
  pipeline = pipeline_batches_per_second(base, splits["train"], tokenizer, 300)
  consumed = 1.0 / median["boundary_aware"]

  rows = (
      [
          f"| train step, {name} | {median[name] * 1e3:.1f} ms "
          f"| {sentences_per_batch / median[name]:,.0f} sentences/s |"
          for name in configs
      ]
      + [
          f"| boundary_aware / cross_entropy step time | "
          f"{median['boundary_aware'] / median['cross_entropy']:.3f}x | goal <= 1.05x |",
          f"| minilm (cached vectors) / hashed step time | "
          f"{median['boundary_aware:minilm'] / median['boundary_aware']:.3f}x | |",
          f"| input pipeline | {pipeline:,.0f} batches/s | "
          f"{pipeline / consumed:.1f}x what the step consumes (goal >= 3x) |",
      ]
      + [
          f"| embedding cache build, {source} | {seconds:.1f} s "
          f"| {len(cache):,} sentences, {len(cache) / seconds:,.0f} sentences/s |"
          for source, (cache, _, seconds) in builds.items()
      ]
  )
  print("\n".join(rows))
  body = bench_report.table_section(
      "Training: step and input pipeline (`tools/bench_train.py`)",
      f"Hashed-word encoder (`configs/boundary.py:hashed` / "
      "`configs/cross_entropy.py:hashed`): "
      f"global batch {base.train.batch_size} windows x "
      f"{base.data.max_sentences} sentences x {base.tokenizer.max_tokens} tokens "
      f"({sentences_per_batch:.0f} real sentences per batch on average), "
      f"{jax.device_count()} device(s), parallel mode {base.parallel.mode}; "
      f"median of {args.steps} blocked steps per config after warm-up, the "
      "configs' steps alternating. `boundary_aware:minilm` is "
      "`configs/boundary.py:minilm`: frozen all-MiniLM-L6-v2 vectors read "
      "from the embedding cache (same batch shape). Cache build: from an "
      f"empty cache, encoder batch {minilm.encoder.batch_size}, reading the "
      "corpus included, loading the encoder not"
      + (
          f" (`--cache_corpora={args.cache_corpora}`)."
          if args.cache_corpora
          else "."
      ),
      ["measurement", "value", ""],
      rows,
  )
  if not args.no_write:
    bench_report.write_section("bench_train", body)


if __name__ == "__main__":
  main()
