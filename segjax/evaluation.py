"""Evaluation: window predictions on all devices, stitched per document, scored.

Shared by the trainer's periodic dev evaluation, `segjax.evaluate` and
`segjax.segment`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from segjax import data
from segjax import metrics
from segjax import models
from segjax import parallel as parallel_lib

MODEL_INPUTS = (
    "tokens",
    "sentence_mask",
    "embeddings",
    "encoder_ids",
    "labels",
    "example_id",
)
# What `score_documents` returns besides counts and the threshold, and the
# mean loss: the dev metrics (prefixed `val_`) a run can rank checkpoints by.
SEGMENTATION_METRICS = (
    "pk",
    "window_diff",
    "boundary_f1",
    "boundary_f1_tol1",
    "boundary_precision",
    "boundary_recall",
    "complete_segments",
    "macro_f1",
)
SCORE_METRICS = SEGMENTATION_METRICS + ("ece", "brier")
EVAL_METRICS = tuple(f"val_{k}" for k in ("loss",) + SCORE_METRICS)


def boundary_probabilities(logits: jax.Array) -> jax.Array:
  """p(label = 1), the probability that a sentence ends its segment."""
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., 1]


def make_eval_step(model, loss_fn, ignore_index: int) -> Callable:
  """Per-device `(params, batch) -> (probs [b, S], {loss, tokens})`."""

  def eval_step(params, batch):
    logits = model.apply(
        {"params": params},
        *models.batch_inputs(batch),
        train=False,
    )
    loss, _ = loss_fn(logits, batch["labels"], axis_name=parallel_lib.AXIS)
    tokens = jax.lax.psum(
        jnp.sum(batch["labels"] != ignore_index), parallel_lib.AXIS
    )
    return boundary_probabilities(logits), {"loss": loss, "tokens": tokens}

  return eval_step


def eval_batches(
    config,
    documents: Sequence[data.Document],
    tokenizer: data.Tokenizer,
    *,
    embeddings: Any = None,
    encoder_tokenizer: Any = None,
    global_batch_size: int | None = None,
) -> list[dict]:
  """This process's evaluation batches of `documents` under a run's config."""
  return data.make_eval_batches(
      documents,
      tokenizer,
      global_batch_size=global_batch_size or config.train.eval_batch_size,
      max_sentences=config.data.max_sentences,
      stride=config.data.eval_stride or None,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      ignore_index=config.loss.ignore_index,
      embeddings=embeddings,
      encoder_tokenizer=encoder_tokenizer,
  )


def evaluation_subset(corpus: data.Corpus, max_documents: int) -> data.Corpus:
  """The documents of the periodic dev evaluations (`train.eval_max_documents`).

  The `max_documents` whose names rank lowest (`data.name_rank`), in corpus
  order; all of them when 0. The choice depends on the names only, not on
  the seed, the process count or the file order.
  """
  if not max_documents or max_documents >= len(corpus):
    return corpus
  return corpus.subset(
      data.corpus.lowest_ranks(corpus.name_ranks, max_documents)
  )


def process_share(num_documents: int) -> np.ndarray:
  """The documents this process stitches and scores: `d % count == index`."""
  return np.arange(jax.process_index(), num_documents, jax.process_count())


def predict_documents(
    parallel: parallel_lib.DataParallel,
    eval_fn: Callable,
    params: Any,
    batches: Sequence[dict[str, np.ndarray]],
    doc_lengths: Sequence[int],
    *,
    indices: Sequence[int] | None = None,
):
  """Boundary probabilities of documents `indices` (default: all), mean loss.

  Every process runs the same number of batches (padding rows are masked);
  the window rows of all processes are gathered, and each process stitches
  the documents it asks for (its `process_share` to score them).

  Returns:
    (list of float32 [n_d] arrays, in the order of `indices`; the mean loss
    over the labelled tokens of all processes, the same on every process).
  """
  probs, window_doc, window_start = [], [], []
  loss_sum, token_sum = 0.0, 0
  for batch in batches:
    inputs = parallel.put_batch(
        {k: batch[k] for k in MODEL_INPUTS if k in batch}
    )
    row_probs, scalars = eval_fn(params, inputs)
    probs.append(parallel.local_rows(row_probs))
    scalars = parallel.replicated_value(scalars)
    loss_sum += float(scalars["loss"]) * int(scalars["tokens"])
    token_sum += int(scalars["tokens"])
    window_doc.append(batch["window_doc"])
    window_start.append(batch["window_start"])
  gathered = parallel_lib.allgather_rows(
      {
          "probs": np.concatenate(probs),
          "doc": np.concatenate(window_doc),
          "start": np.concatenate(window_start),
      }
  )
  doc_lengths = np.asarray(doc_lengths, np.int64).reshape(-1)
  if indices is None:
    indices = np.arange(len(doc_lengths))
  indices = np.asarray(indices, np.int64).reshape(-1)
  # Window rows renumbered by position in `indices`; -1: another's document.
  position = np.full(len(doc_lengths) + 1, -1, np.int64)
  position[indices] = np.arange(len(indices))
  doc = np.where(gathered["doc"] >= 0, gathered["doc"], len(doc_lengths))
  mine = position[doc] >= 0
  per_document = data.stitch_window_probs(
      gathered["probs"][mine],
      position[doc][mine],
      gathered["start"][mine],
      doc_lengths[indices],
  )
  return per_document, loss_sum / max(token_sum, 1)


def _count_non_finite(document_probs) -> np.ndarray:
  return np.int64(sum(not np.isfinite(p).all() for p in document_probs))


def non_finite_documents(
    document_probs: Sequence[np.ndarray], *, across_processes: bool = False
) -> int:
  """How many documents have a NaN or inf boundary probability.

  A model whose weights diverged predicts NaN everywhere; its scores would
  still look like numbers (every comparison with NaN is False: no boundary).
  With `across_processes`, each process passes its share and gets the total.
  """
  count = _count_non_finite(document_probs)
  if across_processes:
    count = merge_across_processes(count)
  return int(count)


# ----------------------------------------------------------------------------
# Exact, additive statistics of documents.
#
# Every metric is a ratio of sums over documents (`metrics`). The sums are
# kept as int64 numpy arrays, the float ones (Pk and WindowDiff fractions,
# calibration) in fixed point, so that the stats of any split of the
# documents, into chunks or process shares, add up to the very same totals:
# the metrics and the tuned threshold do not depend on the process count.
# ----------------------------------------------------------------------------

# Float sums are int64 multiples of 2**-40: exact for every per-document Pk
# and WindowDiff (a float32 >= 2**-16), ample for probabilities.
_FIXED_POINT = 2.0**40
# The metrics are computed on chunks of at most this many documents and
# padded sentence positions: bounded memory, whatever the number of documents.
CHUNK_DOCUMENTS = 1024
CHUNK_POSITIONS = 2**18


@functools.cache
def _zeros(stats_type):
  """`stats_type.zeros()`, made when first needed (not at import, before
  `jax.distributed.initialize`): its dtypes tell float sums from counts."""
  return stats_type.zeros()


class DocumentStats(NamedTuple):
  """The exact statistics of a set of documents at one decision threshold.

  int64 numpy leaves (`merge_stats` adds them): the segmentation stats with
  exact and one-sentence-tolerant boundary matching, the calibration bins,
  and the number of documents with a non-finite probability.
  """

  segmentation: metrics.SegmentationStats
  near: metrics.SegmentationStats
  calibration: metrics.CalibrationStats
  non_finite: np.ndarray


def _to_fixed(x) -> np.ndarray:
  return np.round(np.asarray(x, np.float64) * _FIXED_POINT).astype(np.int64)


def _exact_sum(per_document):
  """Sums per-document stats over their leading axis into the exact form."""

  def total(x, zero):
    x = np.asarray(x)
    if jnp.issubdtype(zero.dtype, jnp.floating):
      x = _to_fixed(x)
    return x.astype(np.int64).sum(axis=0)

  return jax.tree.map(total, per_document, _zeros(type(per_document)))


def _metric_form(stats):
  """The exact form back as the float32 / int32 stats `metrics` divides."""

  def value(x, zero):
    if jnp.issubdtype(zero.dtype, jnp.floating):
      return (np.asarray(x) / _FIXED_POINT).astype(np.float32)
    return np.asarray(x).astype(np.int32)

  return jax.tree.map(value, stats, _zeros(type(stats)))


def merge_stats(*stats):
  """Adds exact stats (of `sweep_stats`, `document_stats`) of disjoint sets."""
  return jax.tree.map(lambda *x: functools.reduce(np.add, x), *stats)


def merge_across_processes(stats):
  """The exact stats of every process's share, the same on every process."""
  return parallel_lib.sum_across_processes(stats)


def _bucket(n: int, minimum: int) -> int:
  """The power of two >= n, at least `minimum`: few shapes to compile."""
  return max(minimum, 1 << max(int(n) - 1, 0).bit_length())


def _chunks(lengths: np.ndarray, chunk_documents: int):
  """(indices, rows, T) of the metric chunks, documents grouped by length.

  Chunks are padded to `[rows, T]`, both powers of two, and hold at most
  `chunk_documents` documents and about `CHUNK_POSITIONS` positions.
  """
  order = np.argsort(lengths, kind="stable")
  first = 0
  while first < len(order):
    end = min(first + chunk_documents, len(order))
    length = _bucket(lengths[order[end - 1]], 64)
    end = min(end, first + max(CHUNK_POSITIONS // length, 1))
    length = _bucket(lengths[order[end - 1]], 64)
    yield order[first:end], _bucket(end - first, 8), length
    first = end


def _padded(arrays, rows: int, length: int, dtype) -> np.ndarray:
  out = np.zeros((rows, length), dtype)
  for row, array in zip(out, arrays):
    row[: len(array)] = array
  return out


@functools.partial(jax.jit, static_argnames=("tolerances",))
def _per_document_stats(probs, gold, mask, thresholds, tolerances):
  """Per tolerance, `SegmentationStats` leaves `[D, thresholds, ...]`.

  Stats of single documents: their float fields are each document's own Pk
  and WindowDiff, which do not depend on the chunk or its padding.
  """

  def one(p, g, m, tolerance):
    return metrics.threshold_sweep_stats(
        p[None], g[None], m[None], thresholds, tolerance=tolerance
    )

  return tuple(
      jax.vmap(functools.partial(one, tolerance=t))(probs, gold, mask)
      for t in tolerances
  )


def _check_lengths(document_probs, gold):
  if len(document_probs) != len(gold) or any(
      len(p) != len(g) for p, g in zip(document_probs, gold)
  ):
    raise ValueError(
        "document_probs and gold must hold one array per document, of the"
        " same lengths"
    )


def _segmentation_stats(
    document_probs, gold, thresholds, tolerances, chunk_documents
):
  """Per tolerance, the exact `SegmentationStats` `[thresholds, ...]`."""
  _check_lengths(document_probs, gold)
  thresholds = np.asarray(thresholds, np.float32).reshape(-1)
  zero = jax.tree.map(
      lambda z: np.zeros((len(thresholds),) + z.shape, np.int64),
      _zeros(metrics.SegmentationStats),
  )
  totals = [zero] * len(tolerances)
  lengths = np.array([len(g) for g in gold], np.int64)
  for index, rows, length in _chunks(lengths, chunk_documents):
    probs = _padded(
        [document_probs[i] for i in index], rows, length, np.float32
    )
    labels = _padded([gold[i] for i in index], rows, length, np.int32)
    doc_lengths = np.zeros(rows, np.int64)
    doc_lengths[: len(index)] = lengths[index]
    mask = np.arange(length)[None, :] < doc_lengths[:, None]
    per_document = _per_document_stats(
        probs, labels, mask, thresholds, tuple(tolerances)
    )
    totals = [
        merge_stats(total, _exact_sum(stats))
        for total, stats in zip(totals, per_document)
    ]
  return totals


def _calibration_stats(document_probs, gold, num_bins: int = 15):
  """`metrics.calibration_stats` of the documents, in the exact form.

  The same bins over the labelled positions (the first N-1 of each
  document); non-finite probabilities count as 0 (`document_stats` counts
  their documents, and `scores_from_stats` makes ECE and Brier NaN).
  """
  labelled = [max(len(g) - 1, 0) for g in gold]
  p = np.concatenate(
      [np.zeros(0, np.float32)]
      + [
          np.asarray(q, np.float32)[:n]
          for q, n in zip(document_probs, labelled)
      ]
  )
  y = np.concatenate(
      [np.zeros(0, bool)]
      + [np.asarray(g)[:n] == 1 for g, n in zip(gold, labelled)]
  )
  p = np.where(np.isfinite(p), p, np.float32(0))
  bins = np.clip(
      np.floor(p * np.float32(num_bins)).astype(np.int32), 0, num_bins - 1
  )
  prob_sum = np.zeros(num_bins, np.int64)
  np.add.at(prob_sum, bins, _to_fixed(p))
  return metrics.CalibrationStats(
      bin_count=np.bincount(bins, minlength=num_bins).astype(np.int64),
      bin_prob_sum=prob_sum,
      bin_positive=np.bincount(bins[y], minlength=num_bins).astype(np.int64),
      squared_error_sum=_to_fixed((p.astype(np.float64) - y) ** 2).sum(),
  )


def sweep_stats(
    document_probs: Sequence[np.ndarray],
    gold: Sequence[np.ndarray],
    thresholds=metrics.DEFAULT_THRESHOLDS,
    *,
    chunk_documents: int = CHUNK_DOCUMENTS,
) -> metrics.SegmentationStats:
  """Exact `SegmentationStats` `[thresholds, ...]` of every swept threshold.

  `gold`: the boundary labels of each document (`data.boundary_labels`).
  Merge the stats of several shares, then `tune_threshold`.
  """
  (stats,) = _segmentation_stats(
      document_probs, gold, thresholds, (0,), chunk_documents
  )
  return stats


def tune_threshold(
    sweep: metrics.SegmentationStats,
    metric: str = "pk",
    thresholds=metrics.DEFAULT_THRESHOLDS,
) -> float:
  """The swept threshold with the best `metric` (`metrics.select_threshold`)."""
  threshold, _ = metrics.select_threshold(
      _metric_form(sweep), metric, thresholds
  )
  return float(threshold)


def document_stats(
    document_probs: Sequence[np.ndarray],
    gold: Sequence[np.ndarray],
    threshold: float,
    *,
    chunk_documents: int = CHUNK_DOCUMENTS,
) -> DocumentStats:
  """The exact `DocumentStats` of the documents at `threshold`.

  `gold`: the boundary labels of each document (`data.boundary_labels`).
  """
  exact, near = _segmentation_stats(
      document_probs, gold, [threshold], (0, 1), chunk_documents
  )
  first = lambda stats: jax.tree.map(lambda x: x[0], stats)
  return DocumentStats(
      segmentation=first(exact),
      near=first(near),
      calibration=_calibration_stats(document_probs, gold),
      non_finite=_count_non_finite(document_probs),
  )


def scores_from_stats(stats: DocumentStats, threshold: float) -> dict:
  """Every segmentation metric (see `score_documents`) from merged stats."""
  exact = metrics.compute_metrics(_metric_form(stats.segmentation))
  near = metrics.compute_metrics(_metric_form(stats.near))
  calibration = metrics.compute_calibration(_metric_form(stats.calibration))
  scores = {
      key: exact[key]
      for key in (
          "pk",
          "window_diff",
          "boundary_f1",
          "boundary_precision",
          "boundary_recall",
          "complete_segments",
          "macro_f1",
      )
  }
  scores["boundary_f1_tol1"] = near["boundary_f1"]
  for key in ("ece", "brier"):
    scores[key] = np.nan if stats.non_finite else calibration[key]
  scores["threshold"] = round(float(threshold), 4)  # a float32 grid value
  scores["num_documents"] = exact["num_documents"]
  scores["num_skipped_pk"] = exact["num_skipped_pk"]
  return {k: np.asarray(v).item() for k, v in scores.items()}


def calibration_bins(
    document_probs: Sequence[np.ndarray],
    gold: Sequence[np.ndarray],
    *,
    across_processes: bool = False,
) -> dict[str, Any]:
  """The reliability-diagram bins of boundary probabilities, as JSON values.

  Keys are the fields of `metrics.CalibrationStats` (lists per bin, and the
  summed squared error); `metrics.CalibrationStats(**bins)` gives them back.
  With `across_processes`, each process passes its share (every process
  must call it) and gets the bins of all.
  """
  stats = _calibration_stats(document_probs, gold)
  if across_processes:
    stats = merge_across_processes(stats)
  stats = _metric_form(stats)
  return {k: np.asarray(v).tolist() for k, v in stats._asdict().items()}


def score_documents(
    document_probs: Sequence[np.ndarray],
    gold: Sequence[np.ndarray],
    *,
    threshold: float | None = None,
    threshold_metric: str = "pk",
    across_processes: bool = False,
    chunk_documents: int = CHUNK_DOCUMENTS,
) -> dict[str, float]:
  """Every segmentation metric at `threshold` (tuned here when None).

  `gold`: the boundary labels of each document (`data.boundary_labels`).
  With `across_processes`, each process passes its share of the documents
  (`process_share`; every process must call it) and every process gets the
  scores of all documents, exactly those of one process scoring them all.

  Keys: pk, window_diff, boundary_f1, boundary_f1_tol1, boundary_precision,
  boundary_recall, complete_segments, macro_f1, ece, brier, threshold,
  num_documents, num_skipped_pk.
  """
  merge = merge_across_processes if across_processes else lambda s: s
  if threshold is None:
    sweep = sweep_stats(document_probs, gold, chunk_documents=chunk_documents)
    threshold = tune_threshold(merge(sweep), threshold_metric)
  stats = document_stats(
      document_probs, gold, threshold, chunk_documents=chunk_documents
  )
  return scores_from_stats(merge(stats), threshold)
