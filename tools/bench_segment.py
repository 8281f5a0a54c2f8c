"""Benchmark: `Segmenter.segment_many` end to end, throughput and peak memory.

Workloads: the pydoc test split (200 documents of 15 to 68 sentences) and
four documents of 2,000+ sentences (pydoc test segments, one paragraph
each, one after another), each given as sentences and as raw text (one
paragraph per segment, so pysbd's splitting is part of the cost). Each
workload runs in a subprocess of its own, so that its peak RSS
(`resource.getrusage` ru_maxrss) is its own, and reports

- the first pass of `segmentations` (compiling, and with a pretrained
  encoder, encoding sentences the run's embedding cache lacks);
- a warm pass: sentences per second, under min 3 / max 20 sentences a
  segment;
- the warm pass phase by phase, as `Segmenter.segmentations` does them:
  splitting, the forward pass (`boundary_probabilities`: tokenizing,
  embedding, the model, stitching windows) and `decoding.decode_documents`
  without and with the constraints. Goal (issue 14): constrained decoding
  at most 10% of the forward pass.

The hashed-word encoder is `configs/boundary.py:hashed`'s model trained for two
steps here (or the run `--workdir` names); the pretrained encoder is
measured when `--pretrained_workdir` names a run of the `:minilm` variant,
such as

    python -m segjax.train --config=configs/boundary.py:minilm \
        --config.train.num_steps=2 --config.train.eval_every=2 \
        --config.train.checkpoint_every=2 --config.data.max_documents=64 \
        --workdir=runs/minilm-bench

(its embedding cache then holds 64 documents of each split; the workloads'
other sentences are encoded in their first pass and cached in the run).

    python tools/bench_segment.py                # Rewrites its section.
    python tools/bench_segment.py --no-write     # Print only.
    python tools/bench_segment.py --pretrained_workdir=runs/minilm-bench
"""

import argparse
import itertools
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import bench_report  # tools/ is on sys.path when run as a script.

GOAL = 0.10
CONFIG = "configs/boundary.py:hashed"
LONG_DOCUMENT = 2000
NUM_LONG = 4
CONSTRAINTS = dict(min_segment_sentences=3, max_segment_sentences=20)
WORKLOADS = {
    "pydoc-sentences": "pydoc test, 200 docs, sentences",
    "pydoc-text": "pydoc test, 200 docs, raw text",
    "long-sentences": f"{NUM_LONG} x {LONG_DOCUMENT:,}+ sentences, sentences",
    "long-text": f"{NUM_LONG} x {LONG_DOCUMENT:,}+ sentences, raw text",
}
TRAIN_FLAGS = (
    "--config.train.num_steps=2",
    "--config.train.eval_every=2",
    "--config.train.checkpoint_every=2",
    "--config.data.max_documents=64",
)


# ----------------------------------------------------------------------------
# One workload, in its own process.
# ----------------------------------------------------------------------------


def _long_documents(test):
  """Test documents' segments end to end, NUM_LONG of >= LONG_DOCUMENT."""
  segments = itertools.cycle(s for doc in test for s in doc.segments)
  documents = []
  for _ in range(NUM_LONG):
    document = []
    while sum(map(len, document)) < LONG_DOCUMENT:
      document.append(next(segments))
    documents.append(document)
  return documents


def workload_items(name: str) -> list:
  """The items `segment_many` gets: sentence lists or raw texts."""
  from segjax import data  # pylint: disable=g-import-not-at-top

  test = data.pydoc_documents("test", None)
  documents = (
      [doc.segments for doc in test]
      if name.startswith("pydoc")
      else _long_documents(test)
  )
  if name.endswith("sentences"):
    return [[s for segment in doc for s in segment] for doc in documents]
  return ["\n\n".join(" ".join(s) for s in doc) for doc in documents]


def _rss_mib() -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  return float("nan")


def _seconds(fn):
  start = time.perf_counter()
  result = fn()
  return time.perf_counter() - start, result


def phase_seconds(segmenter, items, batch_size: int) -> dict:
  """Seconds of each step of `Segmenter.segmentations` over `items`."""
  from segjax import decoding  # pylint: disable=g-import-not-at-top
  from segjax import segmenter as segmenter_lib  # pylint: disable=g-import-not-at-top

  split = lambda x: (
      [s.text for s in segmenter_lib.split_units(x)]
      if isinstance(x, str)
      else x
  )
  phases = dict(split=0.0, forward=0.0, decode=0.0, decode_constrained=0.0)
  for start in range(0, len(items), batch_size):
    chunk = items[start : start + batch_size]
    seconds, units = _seconds(lambda: [split(x) for x in chunk])
    phases["split"] += seconds
    seconds, probs = _seconds(lambda: segmenter.boundary_probabilities(units))
    phases["forward"] += seconds
    for key, constraints in (
        ("decode", {}),
        ("decode_constrained", CONSTRAINTS),
    ):
      seconds, _ = _seconds(
          lambda: decoding.decode_documents(
              probs, threshold=segmenter.threshold, **constraints
          )
      )
      phases[key] += seconds
  return phases


def measure(workdir: str, name: str, batch_size: int, repeats: int) -> dict:
  """The numbers of one workload (see the module docstring).

  Warm times are the fastest of `repeats` passes: on a shared machine the
  least disturbed one.
  """
  from segjax import segmenter as segmenter_lib  # pylint: disable=g-import-not-at-top

  load_s, segmenter = _seconds(
      lambda: segmenter_lib.Segmenter.from_workdir(workdir)
  )
  items = workload_items(name)
  loaded_mib = _rss_mib()
  run = lambda: list(
      segmenter.segmentations(items, batch_size=batch_size, **CONSTRAINTS)
  )
  first_s, results = _seconds(run)
  warm_s = min(_seconds(run)[0] for _ in range(repeats))
  phase_seconds(
      segmenter, items, batch_size
  )  # Compiles the unconstrained decoding.
  passes = [phase_seconds(segmenter, items, batch_size) for _ in range(repeats)]
  return dict(
      workload=name,
      documents=len(items),
      sentences=sum(len(r.units) for r in results),
      load_s=load_s,
      first_s=first_s,
      warm_s=warm_s,
      **{k: min(p[k] for p in passes) for k in passes[0]},
      loaded_mib=loaded_mib,
      peak_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
  )


# ----------------------------------------------------------------------------
# The driver: a run to measure, one subprocess per workload, the table.
# ----------------------------------------------------------------------------


def train_hashed_run(workdir: pathlib.Path) -> None:
  """`configs/boundary.py:hashed`'s model, two steps (the speed is the model's)."""
  subprocess.run(
      [
          sys.executable,
          "-m",
          "segjax.train",
          f"--config={bench_report.REPO_ROOT / CONFIG}",
          *TRAIN_FLAGS,
          f"--workdir={workdir}",
      ],
      cwd=bench_report.REPO_ROOT,
      check=True,
      capture_output=True,
  )


def run_workload(workdir, name, batch_size, repeats) -> dict:
  result = subprocess.run(
      [
          sys.executable,
          __file__,
          f"--measure={name}",
          f"--workdir={workdir}",
          f"--batch_size={batch_size}",
          f"--repeats={repeats}",
      ],
      cwd=bench_report.REPO_ROOT,
      capture_output=True,
      text=True,
      check=False,
  )
  if result.returncode:
    sys.exit(f"bench_segment: {name} failed:\n{result.stderr[-3000:]}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def table_row(encoder: str, m: dict) -> str:
  rate = lambda seconds: f"{m['sentences'] / seconds:,.0f}"
  return (
      f"| {encoder} | {WORKLOADS[m['workload']]} | {m['sentences']:,} "
      f"| {m['first_s']:.1f} s | {rate(m['warm_s'])} "
      f"| {m['split']:.2f} s | {m['forward']:.2f} s | {m['decode']:.3f} s "
      f"| {m['decode_constrained']:.3f} s "
      f"| {m['decode_constrained'] / m['forward']:.1%} "
      f"| {m['loaded_mib']:,.0f} / {m['peak_mib']:,.0f} MiB |"
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
      "--workdir", help="A hashed-encoder run (default: train one)."
  )
  parser.add_argument(
      "--pretrained_workdir", help="A :minilm run to measure too."
  )
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--workloads", default=",".join(WORKLOADS))
  parser.add_argument("--no-write", action="store_true")
  parser.add_argument("--measure", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.measure:
    print(
        json.dumps(
            measure(args.workdir, args.measure, args.batch_size, args.repeats)
        )
    )
    return

  with tempfile.TemporaryDirectory() as tmp:
    hashed = args.workdir
    if hashed is None:
      hashed = pathlib.Path(tmp) / "hashed"
      train_hashed_run(hashed)
    runs = {"hashed words": hashed}
    if args.pretrained_workdir:
      runs["pretrained (MiniLM, frozen)"] = args.pretrained_workdir
    rows, worst = [], 0.0
    for encoder, workdir in runs.items():
      for name in args.workloads.split(","):
        m = run_workload(workdir, name, args.batch_size, args.repeats)
        worst = max(worst, m["decode_constrained"] / m["forward"])
        rows.append(table_row(encoder, m))
        print(rows[-1], flush=True)
  table = bench_report.table_section(
      "Segmenting: `Segmenter.segment_many` end to end "
      "(`tools/bench_segment.py`)",
      "Each workload in its own process. First pass: the first"
      " `segmentations` over it (compiles; a pretrained encoder also encodes"
      " sentences its cache lacks). Warm: a second pass, sentences per"
      " second, decoded under min 3 / max 20 sentences a segment, batch size"
      f" {args.batch_size}, the fastest of {args.repeats} passes. Then the warm pass phase by phase: splitting"
      " (pysbd; none for given sentences), forward (`boundary_probabilities`:"
      " tokenizing, the model, stitching), decoding without and with the"
      " constraints. RSS: after loading the run and the workload / peak"
      " (ru_maxrss). Hashed words: the `configs/boundary.py:hashed` model"
      f" ({', '.join(TRAIN_FLAGS)}); pretrained: a `:minilm` run trained"
      " alike (the tool's docstring). Goal: constrained decoding at most"
      f" {GOAL:.0%} of the forward pass (worst here: {worst:.1%}). Load"
      f" average at the end: {os.getloadavg()[0]:.1f}.",
      [
          "encoder",
          "workload",
          "sentences",
          "first pass",
          "warm sentences/s",
          "split",
          "forward",
          "decode",
          "decode min 3, max 20",
          "of forward",
          "RSS loaded / peak",
      ],
      rows,
  )
  print(table)
  if not args.no_write:
    bench_report.write_section("segment", table)


if __name__ == "__main__":
  main()
