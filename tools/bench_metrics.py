"""Benchmark: jitted Pk + WindowDiff against the nltk (and segeval) loops.

1024 documents x 200 sentences, per-document default window k (segeval's
rule, given explicitly to nltk so that all three compute the same numbers).
nltk and segeval get their inputs prepared outside the timed region.

    python tools/bench_metrics.py  # Rewrites its section of BENCHMARKS.md.
"""

import bench_report  # tools/ is on sys.path when run as a script.
import jax
import numpy as np

from segjax import metrics

BATCH, LENGTH = 1024, 200
GOLD_RATE, FLIP_RATE = 0.1, 0.1  # Mean segment ~10 sentences, noisy pred.


def make_batch(seed=0):
  """Full-length documents; pred is gold with a fraction of labels flipped."""
  rng = np.random.default_rng(seed)
  gold = (rng.random((BATCH, LENGTH)) < GOLD_RATE).astype(np.int32)
  pred = gold ^ (rng.random((BATCH, LENGTH)) < FLIP_RATE).astype(np.int32)
  gold[:, -1] = -100  # The last sentence carries no label.
  return pred, gold, np.ones((BATCH, LENGTH), bool)


def python_inputs(pred, gold):
  """Per document: (ref string, hyp string, ref masses, hyp masses, k)."""
  docs = []
  for p, g in zip(pred[:, :-1], gold[:, :-1]):
    ref, hyp = "".join(map(str, g)), "".join(map(str, p))
    masses = [
        np.diff([-1] + list(np.flatnonzero(x)) + [LENGTH - 1]).tolist()
        for x in (g, p)
    ]
    k = max(2, round(LENGTH / (2 * (ref.count("1") + 1))))
    docs.append((ref, hyp, tuple(masses[0]), tuple(masses[1]), k))
  return docs


def nltk_loop(docs):
  from nltk.metrics import segmentation  # pylint: disable=g-import-not-at-top

  return [
      (segmentation.pk(ref, hyp, k), segmentation.windowdiff(ref, hyp, k))
      for ref, hyp, _, _, k in docs
  ]


def segeval_loop(docs):
  import segeval  # pylint: disable=g-import-not-at-top

  return [
      (segeval.pk(hyp_m, ref_m), segeval.window_diff(hyp_m, ref_m))
      for _, _, ref_m, hyp_m, _ in docs
  ]


@jax.jit
def pk_and_window_diff(pred, gold, mask):
  return metrics.pk(pred, gold, mask), metrics.window_diff(pred, gold, mask)


@jax.jit
def all_metrics(pred, gold, mask):
  stats = metrics.segmentation_stats(pred, gold, mask, tolerance=2)
  return metrics.compute_metrics(stats)


def main():
  pred, gold, mask = make_batch()
  docs = python_inputs(pred, gold)
  device_args = [jax.device_put(x) for x in (pred, gold, mask)]

  expected = np.mean(nltk_loop(docs), axis=0)
  got = np.array(pk_and_window_diff(*device_args))
  np.testing.assert_allclose(got, expected, rtol=1e-6)

  block = lambda f: (lambda: jax.block_until_ready(f(*device_args)))
  rows = [
      (
          "nltk `pk` + `windowdiff`, Python loop",
          bench_report.median_seconds(lambda: nltk_loop(docs), repeats=5),
      ),
      (
          "segeval `pk` + `window_diff`, Python loop",
          bench_report.median_seconds(
              lambda: segeval_loop(docs), repeats=1, warmup=0
          ),
      ),
      (
          "segjax `pk` + `window_diff`, jit",
          bench_report.median_seconds(block(pk_and_window_diff), repeats=300),
      ),
      (
          "segjax `segmentation_stats` + `compute_metrics`, all metrics, "
          "tolerance 2, jit",
          bench_report.median_seconds(block(all_metrics), repeats=100),
      ),
  ]
  nltk_seconds = rows[0][1]
  lines = [
      f"| {name} | {seconds * 1e3:.2f} ms | {BATCH / seconds:,.0f} "
      f"| {nltk_seconds / seconds:.1f}x |"
      for name, seconds in rows
  ]
  table = bench_report.table_section(
      "Metrics: Pk + WindowDiff (`tools/bench_metrics.py`)",
      f"{BATCH} documents x {LENGTH} sentences, per-document default k "
      f"(mean {np.mean([d[-1] for d in docs]):.1f}), same numbers from all "
      "implementations. Median wall time per full pass over the batch.",
      ["implementation", "median time", "documents/s", "vs nltk"],
      lines,
  )
  print(table)
  bench_report.write_section("bench_metrics", table)


if __name__ == "__main__":
  main()
