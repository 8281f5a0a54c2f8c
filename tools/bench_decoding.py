"""Benchmark: constrained boundary decoding against the forward pass it decodes.

For three workloads (the pydoc test split, 200 documents of 15 to 68
sentences; one and sixteen 2,000-sentence documents made of pydoc
sentences) it times

- the model forward pass that gives the boundary probabilities: the
  hashed-word model (`configs/boundary.py:hashed`, random weights), jitted, over the
  workload's evaluation windows, device time only (no tokenizing or
  stitching);
- `segjax.decoding.decode_batch` under several constraints (host arrays in,
  device labels out, blocked: what an evaluation pays per split), on random
  probabilities (the dynamic program's cost does not depend on the values).

Goal (issue 14): decoding costs at most 10% of the forward pass.

    python tools/bench_decoding.py             # Rewrites its section.
    python tools/bench_decoding.py --no-write  # Print only.
"""

import argparse
import itertools

import bench_report  # tools/ is on sys.path when run as a script.
import jax
import numpy as np

from segjax import config_lib
from segjax import data
from segjax import decoding
from segjax import evaluation
from segjax import models

GOAL = 0.10
CONFIG = "configs/boundary.py:hashed"
LONG_DOCUMENT = 2000
CONSTRAINTS = {
    "pydoc": {
        "none (threshold 0.4)": {},
        "max 20": dict(max_segment_sentences=20),
        "min 3, max 20": dict(
            min_segment_sentences=3, max_segment_sentences=20
        ),
        "min 3 (no max)": dict(min_segment_sentences=3),
        "gold count per document": "gold",
        "gold count, max 30": "gold+max",
    },
    "long": {
        "none (threshold 0.4)": {},
        "max 50": dict(max_segment_sentences=50),
        "min 5, max 100": dict(
            min_segment_sentences=5, max_segment_sentences=100
        ),
        "min 5 (no max)": dict(min_segment_sentences=5),
        "40 segments, max 100": dict(
            num_segments=40, max_segment_sentences=100
        ),
    },
}


def workloads():
  """(name, constraint set, documents) of each workload."""
  test = data.pydoc_documents("test", None)
  sentences = itertools.cycle(s for doc in test for s in doc.sentences)
  long_documents = [
      data.Document.from_sentences(
          list(itertools.islice(sentences, LONG_DOCUMENT))
      )
      for _ in range(16)
  ]
  return [
      (f"pydoc test, {len(test)} docs", "pydoc", test),
      (f"1 x {LONG_DOCUMENT:,} sentences", "long", long_documents[:1]),
      (f"16 x {LONG_DOCUMENT:,} sentences", "long", long_documents),
  ]


def forward_pass(config):
  """A function timing the model over a document list's evaluation windows."""
  model = models.model_from_config(config)
  tokenizer = data.Tokenizer(**config.tokenizer)
  params = models.init_params(
      model,
      jax.random.key(0),
      batch_size=1,
      max_sentences=config.data.max_sentences,
      max_tokens=config.tokenizer.max_tokens,
  )

  @jax.jit
  def probabilities(tokens, sentence_mask):
    logits = model.apply({"params": params}, tokens, sentence_mask, train=False)
    return evaluation.boundary_probabilities(logits)

  def seconds(documents, repeats):
    batches = [
        (jax.device_put(b["tokens"]), jax.device_put(b["sentence_mask"]))
        for b in evaluation.eval_batches(config, documents, tokenizer)
    ]
    run = lambda: jax.block_until_ready([probabilities(*b) for b in batches])
    return bench_report.median_seconds(run, repeats=repeats), len(batches)

  return seconds


def constraint_kwargs(spec, documents):
  gold = np.array([len(doc.segments) for doc in documents])
  if spec == "gold":
    return dict(num_segments=gold)
  if spec == "gold+max":
    return dict(num_segments=gold, max_segment_sentences=30)
  return spec


def random_probs(lengths, seed=0):
  """Padded [B, T] probabilities: mostly low, a boundary every ~10."""
  rng = np.random.default_rng(seed)
  probs = rng.beta(0.3, 2.0, (len(lengths), max(lengths))).astype(np.float32)
  return probs, np.asarray(lengths)


def decode_seconds(probs, lengths, kwargs, repeats):
  call = lambda: jax.block_until_ready(
      decoding.decode_batch(probs, lengths, threshold=0.4, **kwargs)
  )
  return bench_report.median_seconds(call, repeats=repeats)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--forward_repeats", type=int, default=5)
  parser.add_argument("--no-write", action="store_true")
  args = parser.parse_args()

  config = config_lib.load_config(str(bench_report.REPO_ROOT / CONFIG))
  forward = forward_pass(config)
  lines, worst = [], 0.0
  for name, constraint_set, documents in workloads():
    forward_s, num_batches = forward(documents, args.forward_repeats)
    lines.append(
        f"| {name} | forward pass ({num_batches} batches of "
        f"{config.train.eval_batch_size} windows) | {forward_s * 1e3:.1f} ms "
        "| 100% |"
    )
    probs, lengths = random_probs([doc.num_sentences for doc in documents])
    for label, spec in CONSTRAINTS[constraint_set].items():
      kwargs = constraint_kwargs(spec, documents)
      seconds = decode_seconds(probs, lengths, kwargs, args.repeats)
      worst = max(worst, seconds / forward_s)
      lines.append(
          f"| {name} | decode, {label} | {seconds * 1e3:.2f} ms "
          f"| {seconds / forward_s:.1%} |"
      )
  table = bench_report.table_section(
      "Decoding: constrained boundary decoding (`tools/bench_decoding.py`)",
      f"Forward pass: the `{CONFIG}` model with random weights over each "
      "workload's evaluation windows, jitted, device time only. Decode: "
      "`decoding.decode_batch` on random probabilities, threshold 0.4, host "
      "arrays in and device labels out, blocked; without constraints it is "
      "thresholding, with any the exact dynamic program. Medians of "
      f"{args.forward_repeats} and {args.repeats} calls after warm-up. Goal: "
      f"decoding at most {GOAL:.0%} of the forward pass (worst here: "
      f"{worst:.1%}).",
      ["workload", "step", "median", "of forward pass"],
      lines,
  )
  print(table)
  if not args.no_write:
    bench_report.write_section("decoding", table)


if __name__ == "__main__":
  main()
