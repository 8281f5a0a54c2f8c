r"""Benchmarks the hashed-word tokenizer against another checkout's.

  python tools/bench_tokenizer.py --baseline_tree=/tmp/old_segjax \
      --corpus=wiki_excerpt=runs/wiki_excerpt/train \
      --corpus=synthetic=/tmp/bench_corpus/corpus-20000/train

Both tokenizers (this tree's `segjax/data/text.py` and the baseline's, each
loaded as its own module) encode the same sentences in calls of
`shards.TOKENIZE_DOCUMENTS` documents' sentences (as building shards
tokenizes them), in turn, `--repeats` rounds; the table gives the median time of
a pass over the corpus and the ratio. The ids must be identical, or the
tool stops. Writes the `bench_tokenizer` section of BENCHMARKS.md unless
`--no-write`.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import numpy as np

import bench_report
from segjax import data
from segjax.data import shards
from segjax.data import text as text_lib


def _calls(folder: str, max_documents: int) -> tuple[int, list[list[str]]]:
  """(documents, each call's sentences): `TOKENIZE_DOCUMENTS` at a time."""
  documents = data.read_wiki727k_dir(folder).documents[:max_documents]
  size = shards.TOKENIZE_DOCUMENTS
  return len(documents), [
      [s for d in documents[i : i + size] for s in d.sentences]
      for i in range(0, len(documents), size)
  ]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--baseline_tree", type=pathlib.Path, required=True)
  parser.add_argument(
      "--corpus",
      action="append",
      required=True,
      help="NAME=FOLDER of Wiki-727K files; repeatable",
  )
  parser.add_argument("--max_documents", type=int, default=2048)
  parser.add_argument("--repeats", type=int, default=9)
  parser.add_argument("--no-write", dest="write", action="store_false")
  args = parser.parse_args()
  settings = dict(num_buckets=2**15, max_tokens=32, lowercase=True)
  tokenizers = {
      "new": text_lib.Tokenizer(**settings),
      "baseline": bench_report.load_module_copy(
          args.baseline_tree / "segjax" / "data" / "text.py", "baseline_text"
      ).Tokenizer(**settings),
  }
  commits = {
      "new": bench_report.commit(bench_report.REPO_ROOT),
      "baseline": bench_report.commit(args.baseline_tree),
  }
  rows = []
  for spec in args.corpus:
    name, folder = spec.split("=", 1)
    num_documents, calls = _calls(folder, args.max_documents)
    sentences = sum(map(len, calls))
    ids = {k: [t.encode(c) for c in calls] for k, t in tokenizers.items()}
    if not all(
        np.array_equal(a, b) for a, b in zip(ids["new"], ids["baseline"])
    ):
      raise SystemExit(f"{name}: the two tokenizers give different ids")
    times = {k: [] for k in tokenizers}
    for _ in range(args.repeats):  # In turn, so load changes hit both.
      for key, tokenizer in tokenizers.items():
        start = time.perf_counter()
        for call in calls:
          tokenizer.encode(call)
        times[key].append(time.perf_counter() - start)
    median = {k: statistics.median(v) for k, v in times.items()}
    for key in tokenizers:
      ratio = median["baseline"] / median[key]
      rows.append(
          f"| {name} | {num_documents:,} documents in {len(calls)} call"
          f"{'s' if len(calls) > 1 else ''},"
          f" {sentences:,} sentences | {key} ({commits[key]}) |"
          f" {median[key]:.3f} s | {sentences / median[key] / 1e3:.0f}K |"
          f" {ratio:.2f}x |"
      )
    print("\n".join(rows[-2:]), flush=True)
  if args.write:
    bench_report.write_section(
        "bench_tokenizer",
        bench_report.table_section(
            "Hashed-word tokenizer (tools/bench_tokenizer.py)",
            "`Tokenizer(num_buckets=2**15, max_tokens=32, lowercase=True)`"
            " of this tree and of a baseline checkout (`--baseline_tree`) on"
            " the same sentences, in the calls building shards makes; median"
            f" of {args.repeats} passes over each corpus, the two in turn."
            " Both give the same ids (checked). Ratio: the baseline's time"
            " over this row's.",
            [
                "corpus",
                "input",
                "tokenizer",
                "time per pass",
                "sentences/s",
                "speed-up",
            ],
            rows,
        ),
    )


if __name__ == "__main__":
  main()
