"""Segmentation metrics in pure JAX: Pk, WindowDiff, boundary F1, complete
segments, macro F1, calibration (ECE, Brier) and decision-threshold tuning.

Conventions (SPEC section 7). `pred`, `gold`: int `[B, T]`, label 1 = "this
sentence is the last sentence of its segment"; `mask`: bool `[B, T]`, True
where a sentence exists, a prefix of each row (only its row count N is used).
Only the first N-1 positions carry a label: values at positions >= N-1 are
ignored (gold may hold `ignore_index` or anything there). For the boundary
metrics a label other than 1 counts as 0; macro F1 leaves out positions whose
gold is not a class id. The document end N-1 is an implicit final boundary.
Rows with N = 0 are padding documents and count nowhere.

Every metric is a ratio of sums over the batch, so metrics are computed in two
steps: `segmentation_stats` reduces a batch to a `SegmentationStats` pytree of
sums and counts, and `compute_metrics` divides once. Stats of several batches,
devices or hosts add up (`merge`, `jax.lax.psum`) to the stats of one big
batch. Integer counts are int32 and exact; the Pk and WindowDiff sums of
per-document fractions are float32, so a merged value can differ from the
one-batch value in the last float32 bit. The per-metric functions (`pk`,
`window_diff`, ...) are jitted thin wrappers over the same code: under jit only
the requested metric is computed.

Empty batches (no document) and batches where every document is skipped give
NaN, never a silent 0 or 1.
"""

import functools
from typing import NamedTuple, Optional

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

# Thresholds that `best_threshold` sweeps: 0.05, 0.10, ..., 0.95.
DEFAULT_THRESHOLDS = np.round(np.arange(1, 20) * 0.05, 2).astype(np.float32)

# Metric name -> True when higher is better (used to pick a threshold).
THRESHOLD_METRICS = {
    "pk": False,
    "window_diff": False,
    "boundary_f1": True,
    "complete_segments": True,
    "macro_f1": True,
}


class SegmentationStats(NamedTuple):
  """Additive sufficient statistics of the segmentation metrics.

  A plain pytree of arrays: add two with `merge`, or `jax.lax.psum` it over a
  device axis. Leading axes (e.g. a threshold axis) are allowed.
  """

  num_documents: jax.Array  # int32: documents with N >= 1.
  num_window_documents: jax.Array  # int32: documents with N > k (Pk scored).
  pk_sum: jax.Array  # float32: sum of per-document Pk over scored documents.
  window_diff_sum: jax.Array  # float32: same for WindowDiff.
  boundary_matched: jax.Array  # int32: matched (predicted, gold) pairs.
  boundary_predicted: jax.Array  # int32: predicted boundaries (first N-1).
  boundary_gold: jax.Array  # int32: gold boundaries (first N-1).
  segments_complete: jax.Array  # int32: gold segments found exactly.
  segments_gold: jax.Array  # int32: gold segments (document end included).
  class_tp: jax.Array  # int32 [C]: per-class true positives.
  class_fp: jax.Array  # int32 [C]
  class_fn: jax.Array  # int32 [C]

  @classmethod
  def zeros(cls, num_classes: int = 2) -> "SegmentationStats":
    """The neutral element of `merge`, to start an accumulation."""
    i, f = jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32)
    c = jnp.zeros((num_classes,), jnp.int32)
    return cls(i, i, f, f, i, i, i, i, i, c, c, c)


class CalibrationStats(NamedTuple):
  """Additive statistics of ECE and Brier score over equal-width bins."""

  bin_count: jax.Array  # int32 [num_bins]: labelled positions per bin.
  bin_prob_sum: jax.Array  # float32 [num_bins]: sum of p(boundary) per bin.
  bin_positive: jax.Array  # int32 [num_bins]: gold boundaries per bin.
  squared_error_sum: jax.Array  # float32: sum of (p - y)^2.

  @classmethod
  def zeros(cls, num_bins: int = 15) -> "CalibrationStats":
    """The neutral element of `merge`, to start an accumulation."""
    i = jnp.zeros((num_bins,), jnp.int32)
    f = jnp.zeros((num_bins,), jnp.float32)
    return cls(i, f, i, jnp.zeros((), jnp.float32))


def merge(a, b):
  """Adds two `SegmentationStats` (or two `CalibrationStats`)."""
  return jax.tree.map(jnp.add, a, b)


# ---------------------------------------------------------------------------
# Shared helpers.
# ---------------------------------------------------------------------------


def _ratio(num, den, empty=jnp.nan):
  """num / den in float32, `empty` where den == 0 (no division by zero)."""
  den_f = jnp.asarray(den, jnp.float32)
  safe = jnp.where(den_f > 0, den_f, 1.0)
  return jnp.where(den_f > 0, jnp.asarray(num, jnp.float32) / safe, empty)


def _check_shapes(pred, gold, mask):
  if not pred.shape == gold.shape == mask.shape or pred.ndim != 2:
    raise ValueError(
        "pred, gold and mask must all be [B, T]; got "
        f"{pred.shape}, {gold.shape}, {mask.shape}."
    )


def _check_k(k):
  if k is not None and (not isinstance(k, (int, np.integer)) or k < 1):
    raise ValueError(f"k must be None or a Python int >= 1, got {k!r}.")


def _labelled(mask):
  """(labelled, n): bool [B, T] True on the first N-1 positions; N int32 [B]."""
  n = jnp.sum(mask, axis=-1, dtype=jnp.int32)
  return jnp.arange(mask.shape[-1])[None, :] < (n - 1)[:, None], n


def _boundaries(pred, gold, mask):
  """Sanitised boundary indicators on labelled positions.

  Returns (pred_b, gold_b, labelled, n): bool [B, T] arrays that are True only
  on the first N-1 positions of each document, and the lengths N int32 [B].
  """
  labelled, n = _labelled(mask)
  return (pred == 1) & labelled, (gold == 1) & labelled, labelled, n


# XLA:CPU lowers lax.cumsum / lax.cummax to a quadratic reduce-window; the
# log-depth associative scan was measured 1.5-3x faster there.
def _running_sum(x, axis):
  return lax.associative_scan(jnp.add, x, axis=axis)


def _running_max(x, axis):
  return lax.associative_scan(jnp.maximum, x, axis=axis)


def _default_window_size(n, num_gold_segments):
  """max(2, round_half_even(N / (2 S))) in exact integer arithmetic.

  Same value as segeval's `compute_window_size` (half the mean gold segment
  mass, Python `round`, at least 2) without float rounding at the .5 ties.
  """
  q, r = jnp.divmod(n, 2 * num_gold_segments)
  round_up = (r > num_gold_segments) | ((r == num_gold_segments) & (q % 2 == 1))
  return jnp.maximum(q + round_up.astype(jnp.int32), 2)


# ---------------------------------------------------------------------------
# Pk and WindowDiff on bit-packed boundaries.
#
# Window i (0 <= i < N-k) covers the k gaps i..i+k-1, i.e. labels i..i+k-1;
# Pk counts windows where exactly one of ref/hyp has a boundary, WindowDiff
# windows where their boundary counts differ; both divide by N-k windows
# (nltk's len(ref)-k+1 with len(ref) = N-1). The counts are prefix-count
# differences C(i+k) - C(i). A prefix sum or a per-row gather over [B, T] is
# slow on XLA:CPU, so labels are packed 8 to a byte lane of a uint32 word
# (gold in bits 0-7, mask in 8-15, pred in 16-23): prefix counts come from
# popcounts, and the per-document shift by k is a gather over [B, T/8] words.
# ---------------------------------------------------------------------------

_LANES = 8
_FIELD = 0xFF  # One lane field.
_GOLD_AND_PRED = 0x00FF00FF  # The gold and pred fields of a word.


def _low_bits(count):
  """uint32 with the `count` lowest bits set (count in [0, 31])."""
  return (jnp.uint32(1) << count.astype(jnp.uint32)) - jnp.uint32(1)


def _popcount(x):
  return lax.population_count(x).astype(jnp.int32)


def _pack_words(pred, gold, mask):
  """Packs gold/mask/pred of 8 consecutive sentences into one uint32 word."""
  batch, length = pred.shape
  num_words = -(-length // _LANES)
  bits = (
      (gold == 1).astype(jnp.uint32)
      | (mask.astype(jnp.uint32) << 8)
      | ((pred == 1).astype(jnp.uint32) << 16)
  )
  bits = jnp.pad(bits, ((0, 0), (0, num_words * _LANES - length)))
  bits = bits.reshape(batch, num_words, _LANES)
  lane = jnp.arange(_LANES, dtype=jnp.uint32)
  # The bits are disjoint, so their sum is their bitwise or.
  return jnp.sum(bits << lane, axis=-1, dtype=jnp.uint32)


def _shift_words(words, shift):
  """Per-row bit shift: bit j of the result is bit j + shift[b] of `words`."""
  num_words = words.shape[1]
  word_shift = jnp.minimum(shift // _LANES, num_words)[:, None]
  bit_shift = (shift % _LANES).astype(jnp.uint32)[:, None]
  padded = jnp.pad(words, ((0, 0), (0, num_words + 1)))
  # One gather of (word, next word) pairs instead of two gathers.
  pairs = jnp.stack([padded[:, :-1], padded[:, 1:]], axis=-1)
  index = jnp.arange(num_words)[None, :] + word_shift
  lo_hi = jnp.take_along_axis(pairs, index[:, :, None], axis=1)
  lo, hi = lo_hi[..., 0], lo_hi[..., 1]
  # Fields are 8 bits wide with 8 spare bits above each, so bits shifted out
  # of one field never land inside another.
  return (
      (lo >> bit_shift) | (hi << (jnp.uint32(_LANES) - bit_shift))
  ) & jnp.uint32(_GOLD_AND_PRED)


def _window_errors(pred, gold, mask, k):
  """Per-document Pk and WindowDiff error counts.

  Returns (pk_errors, wd_errors, num_windows, k, n), int32 [B] each, with
  num_windows = N - k (not clipped; <= 0 means the document is skipped).
  """
  batch, length = pred.shape
  words = _pack_words(pred, gold, mask)
  num_words = words.shape[1]
  n = jnp.sum(_popcount(words & jnp.uint32(_FIELD << 8)), axis=-1)
  word_start = jnp.arange(num_words, dtype=jnp.int32)[None, :] * _LANES
  labelled = _low_bits(jnp.clip((n - 1)[:, None] - word_start, 0, _LANES))
  ref_hyp = words & (labelled | (labelled << 16))
  if k is None:
    num_segments = jnp.sum(_popcount(ref_hyp & jnp.uint32(_FIELD)), -1) + 1
    k = _default_window_size(n, num_segments)
  else:
    k = jnp.full((batch,), k, jnp.int32)
  shifted = _shift_words(ref_hyp, k)  # Bit i is the label at i + k.

  fields = (ref_hyp & _FIELD, ref_hyp >> 16, shifted & _FIELD, shifted >> 16)
  counts = jnp.stack([_popcount(f) for f in fields], axis=1)  # [B, 4, W]
  inclusive = _running_sum(counts, axis=2)
  before_word = inclusive - counts
  total = inclusive[..., -1]
  # C(i + k) = C(k) + C'(i) where C' counts the shifted bits, and C(k) is
  # the total minus the bits at positions >= k (exactly the shifted ones).
  ref_at_k = total[:, 0] - total[:, 2]
  hyp_at_k = total[:, 1] - total[:, 3]

  lane_low = _low_bits(jnp.arange(_LANES))  # Bits below each lane.

  def prefix(j, x, field_shift):
    """C(i) of field j at every position i = 8 w + lane, [B, W, 8]."""
    return before_word[:, j, :, None] + _popcount(
        x[:, :, None] & (lane_low << field_shift)
    )

  # Boundaries in window [i, i + k) = C(i + k) - C(i).
  ref_count = (
      ref_at_k[:, None, None] + prefix(2, shifted, 0) - prefix(0, ref_hyp, 0)
  )
  hyp_count = (
      hyp_at_k[:, None, None] + prefix(3, shifted, 16) - prefix(1, ref_hyp, 16)
  )
  position = word_start[:, :, None] + jnp.arange(_LANES)[None, None, :]
  num_windows = n - k
  window = position < num_windows[:, None, None]
  pk_errors = jnp.sum(
      window & ((ref_count > 0) != (hyp_count > 0)),
      axis=(1, 2),
      dtype=jnp.int32,
  )
  wd_errors = jnp.sum(
      window & (ref_count != hyp_count), axis=(1, 2), dtype=jnp.int32
  )
  return pk_errors, wd_errors, num_windows, k, n


def _as_batch(pred, gold, mask):
  """Arrays, with T padded to >= 1 so that empty shapes need no special case."""
  pred, gold, mask = jnp.asarray(pred), jnp.asarray(gold), jnp.asarray(mask)
  _check_shapes(pred, gold, mask)
  if pred.shape[1] == 0:
    pad = ((0, 0), (0, 1))
    pred, gold, mask = (jnp.pad(x, pad) for x in (pred, gold, mask))
  return pred, gold, mask.astype(bool)


def _per_document_windows(pred, gold, mask, k):
  """Per-document Pk, WindowDiff (NaN where N <= k), window k and length N."""
  pk_errors, wd_errors, num_windows, k, n = _window_errors(pred, gold, mask, k)
  num_windows = jnp.maximum(num_windows, 0)
  return dict(
      pk=_ratio(pk_errors, num_windows),
      window_diff=_ratio(wd_errors, num_windows),
      k=k,
      n=n,
  )


@functools.partial(jax.jit, static_argnames=("k",))
def window_metrics_per_document(pred, gold, mask, k: Optional[int] = None):
  """Per-document Pk, WindowDiff and window size.

  Returns a dict of [B] arrays: `pk` and `window_diff` (float32, NaN where the
  document is skipped because N <= k, padding rows included) and `k` (int32,
  the window used: `k` if given, else max(2, round_half_even(N / (2 S))) with
  S the number of gold segments).
  """
  _check_k(k)
  docs = _per_document_windows(*_as_batch(pred, gold, mask), k)
  return {name: docs[name] for name in ("pk", "window_diff", "k")}


def _window_stats(pred, gold, mask, k):
  docs = _per_document_windows(pred, gold, mask, k)
  scored = ~jnp.isnan(docs["pk"])
  return dict(
      num_documents=jnp.sum(docs["n"] > 0, dtype=jnp.int32),
      num_window_documents=jnp.sum(scored, dtype=jnp.int32),
      pk_sum=jnp.sum(jnp.where(scored, docs["pk"], 0.0)),
      window_diff_sum=jnp.sum(jnp.where(scored, docs["window_diff"], 0.0)),
  )


# ---------------------------------------------------------------------------
# Boundary F1 with tolerance: greedy one-to-one matching, nearest first.
# ---------------------------------------------------------------------------


def _select_chain_pairs(unmatched_gold, unmatched_pred, delta):
  """Edges x <-> x + delta chosen by the greedy rule at distance delta.

  After the passes for smaller distances, gold-pred pairs at distance delta
  form chains x, x + delta, x + 2 delta, ... (alternating gold and pred).
  Taking pairs leftmost first pairs a chain's 1st and 2nd node, 3rd and 4th,
  and so on: an edge is chosen when its offset in its run of consecutive
  edges along the progression is even. Returns bool [B, T - delta], True at x
  when x and x + delta are matched.
  """
  batch, length = unmatched_gold.shape
  edge = (unmatched_gold[:, :-delta] & unmatched_pred[:, delta:]) | (
      unmatched_pred[:, :-delta] & unmatched_gold[:, delta:]
  )
  steps = -(-(length - delta) // delta)
  # Row-major [steps, delta]: column c holds the progression c, c + delta, ...
  grid = jnp.pad(edge, ((0, 0), (0, steps * delta - (length - delta))))
  grid = grid.reshape(batch, steps, delta)
  step = jnp.arange(steps, dtype=jnp.int32)[None, :, None]
  last_gap = _running_max(jnp.where(grid, -1, step), axis=1)
  chosen = grid & ((step - last_gap - 1) % 2 == 0)
  return chosen.reshape(batch, steps * delta)[:, : length - delta]


def _matched_boundaries(pred_b, gold_b, tolerance):
  """Greedy one-to-one matches within `tolerance` sentences.

  Pairs are taken in order of increasing distance |gold - pred|; among pairs
  at the same distance the one whose left end is leftmost goes first; a pair
  is taken when both ends are still unmatched. One vectorised pass per
  distance 0..tolerance. Returns bool [B, T], True at the left end of each
  matched pair (left ends are distinct, so its sum counts the matches).
  """
  matched = pred_b & gold_b
  unmatched_gold, unmatched_pred = gold_b & ~matched, pred_b & ~matched
  for delta in range(1, min(tolerance, pred_b.shape[1] - 1) + 1):
    chosen = _select_chain_pairs(unmatched_gold, unmatched_pred, delta)
    left = jnp.pad(chosen, ((0, 0), (0, delta)))
    used = left | jnp.pad(chosen, ((0, 0), (delta, 0)))
    matched |= left
    unmatched_gold &= ~used
    unmatched_pred &= ~used
  return matched


# ---------------------------------------------------------------------------
# Complete segments and macro F1.
# ---------------------------------------------------------------------------


def _complete_segments(pred_b, gold_b, n):
  """(complete, gold_end): bool [B, T] at the end e of each gold segment.

  [s, e] is complete iff pred and gold agree on every position s-1..e (the
  document end and the virtual boundary at -1 always agree): s-1 and e are
  predicted boundaries and s..e-1 are not.
  """
  position = jnp.arange(pred_b.shape[1], dtype=jnp.int32)[None, :]
  gold_end = gold_b | (position == (n - 1)[:, None])
  last_gold = jnp.where(gold_b, position, -1)
  last_disagree = jnp.where(pred_b != gold_b, position, -2)
  last = _running_max(jnp.stack([last_gold, last_disagree]), axis=2)
  # Start-1 of the segment ending at e: the last gold boundary before e.
  before_start = jnp.pad(last[0][:, :-1], ((0, 0), (1, 0)), constant_values=-1)
  return gold_end & (last[1] < before_start), gold_end


def _class_outcomes(pred, gold, labelled, num_classes):
  """(tp, fp, fn): bool [C, B, T] over labelled positions with a class gold."""
  valid = labelled & (gold >= 0) & (gold < num_classes)
  classes = jnp.arange(num_classes)[:, None, None]
  is_gold = valid & (gold == classes)
  is_pred = valid & (pred == classes)
  return is_gold & is_pred, is_pred & ~is_gold, is_gold & ~is_pred


# ---------------------------------------------------------------------------
# Public API.
# ---------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("k", "tolerance", "num_classes"))
def segmentation_stats(
    pred,
    gold,
    mask,
    *,
    k: Optional[int] = None,
    tolerance: int = 0,
    num_classes: int = 2,
) -> SegmentationStats:
  """Reduces one batch to the additive statistics of every metric.

  Args:
    pred: int [B, T] predicted labels (1 = last sentence of a segment).
    gold: int [B, T] gold labels; positions >= N-1 are ignored.
    mask: bool [B, T], True where a sentence exists (a prefix of each row).
    k: Pk / WindowDiff window; None = per-document segeval default.
    tolerance: boundary F1 tolerance in sentences (static int >= 0).
    num_classes: classes of the macro F1 (labels 0..num_classes-1).

  Returns:
    A `SegmentationStats`; `compute_metrics` turns it into numbers.
  """
  _check_k(k)
  if tolerance < 0:
    raise ValueError(f"tolerance must be >= 0, got {tolerance}.")
  pred, gold, mask = _as_batch(pred, gold, mask)
  pred_b, gold_b, labelled, n = _boundaries(pred, gold, mask)
  complete, gold_end = _complete_segments(pred_b, gold_b, n)
  tp, fp, fn = _class_outcomes(pred, gold, labelled, num_classes)
  count = functools.partial(jnp.sum, axis=(-2, -1), dtype=jnp.int32)
  return SegmentationStats(
      **_window_stats(pred, gold, mask, k),
      boundary_matched=count(_matched_boundaries(pred_b, gold_b, tolerance)),
      boundary_predicted=count(pred_b),
      boundary_gold=count(gold_b),
      segments_complete=count(complete),
      segments_gold=count(gold_end),
      class_tp=count(tp),
      class_fp=count(fp),
      class_fn=count(fn),
  )


def _boundary_scores(stats):
  """Precision, recall, F1 of boundaries, conventions for empty sets.

  precision = matched / predicted, recall = matched / gold,
  F1 = 2 matched / (predicted + gold). With nothing predicted precision is
  1 if there is no gold boundary else 0; with no gold boundary recall is 1 if
  nothing is predicted else 0; F1 is 1 when both sets are empty.
  """
  m, p = stats.boundary_matched, stats.boundary_predicted
  g = stats.boundary_gold
  precision = _ratio(m, p, empty=jnp.where(g == 0, 1.0, 0.0))
  recall = _ratio(m, g, empty=jnp.where(p == 0, 1.0, 0.0))
  f1 = _ratio(2 * m, p + g, empty=1.0)
  return precision, recall, f1


def _macro_f1(stats):
  """Mean over classes present in gold or pred of 2TP / (2TP + FP + FN).

  A class with no gold and no predicted instance is left out of the mean, as
  sklearn's `f1_score(average="macro")` does with `labels=None`; NaN when no
  position carries a label.
  """
  support = 2 * stats.class_tp + stats.class_fp + stats.class_fn
  f1 = _ratio(2 * stats.class_tp, support, empty=0.0)
  present = support > 0
  return _ratio(
      jnp.sum(jnp.where(present, f1, 0.0), axis=-1), jnp.sum(present, axis=-1)
  )


@jax.jit
def compute_metrics(stats: SegmentationStats) -> dict:
  """Metric values from accumulated statistics.

  Keys: `pk`, `window_diff` (mean over documents with N > k, NaN if none),
  `boundary_f1`, `boundary_precision`, `boundary_recall` (micro over the
  batch), `complete_segments` (micro over gold segments), `macro_f1`, and the
  counts `num_documents`, `num_skipped_pk` (documents with N <= k). Every
  metric is NaN when there is no document.
  """
  precision, recall, f1 = _boundary_scores(stats)
  no_docs = stats.num_documents == 0
  if_docs = lambda x: jnp.where(no_docs, jnp.nan, x)
  return {
      "pk": _ratio(stats.pk_sum, stats.num_window_documents),
      "window_diff": _ratio(stats.window_diff_sum, stats.num_window_documents),
      "boundary_f1": if_docs(f1),
      "boundary_precision": if_docs(precision),
      "boundary_recall": if_docs(recall),
      "complete_segments": _ratio(stats.segments_complete, stats.segments_gold),
      "macro_f1": _macro_f1(stats),
      "num_documents": stats.num_documents,
      "num_skipped_pk": stats.num_documents - stats.num_window_documents,
  }


@functools.partial(jax.jit, static_argnames=("k",))
def pk(pred, gold, mask, k: Optional[int] = None):
  """Pk (Beeferman et al. 1999), mean over documents with N > k.

  Per document, identical to `nltk.metrics.segmentation.pk(ref, hyp, k)` on
  the label strings of the first N-1 sentences and to `segeval.pk` on segment
  masses. NaN when no document has N > k.
  """
  return compute_metrics(segmentation_stats(pred, gold, mask, k=k))["pk"]


@functools.partial(jax.jit, static_argnames=("k",))
def window_diff(pred, gold, mask, k: Optional[int] = None):
  """WindowDiff (Pevzner & Hearst 2002), mean over documents with N > k.

  Per document, identical to `nltk.metrics.segmentation.windowdiff(ref, hyp,
  k)` and `segeval.window_diff`. NaN when no document has N > k.
  """
  return compute_metrics(segmentation_stats(pred, gold, mask, k=k))[
      "window_diff"
  ]


@functools.partial(jax.jit, static_argnames=("tolerance",))
def boundary_f1(pred, gold, mask, tolerance: int = 0):
  """Micro boundary F1 over the first N-1 sentences, greedy matching within
  `tolerance` (see `_matched_boundaries` and `_boundary_scores`)."""
  stats = segmentation_stats(pred, gold, mask, tolerance=tolerance)
  return compute_metrics(stats)["boundary_f1"]


@jax.jit
def complete_segments(pred, gold, mask):
  """Fraction of gold segments whose two ends and no interior are predicted."""
  return compute_metrics(segmentation_stats(pred, gold, mask))[
      "complete_segments"
  ]


@functools.partial(jax.jit, static_argnames=("num_classes",))
def macro_f1(pred, gold, mask, num_classes: int = 2):
  """Mean token-level F1 over classes, on positions that carry a label."""
  stats = segmentation_stats(pred, gold, mask, num_classes=num_classes)
  return compute_metrics(stats)["macro_f1"]


# ---------------------------------------------------------------------------
# Calibration of the boundary probability.
# ---------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("num_bins",))
def calibration_stats(
    probs, gold, mask, *, num_bins: int = 15
) -> CalibrationStats:
  """Bins p(label = 1), float [B, T], over labelled positions (first N-1).

  Bins are equal-width on [0, 1]: p falls in bin min(floor(p * num_bins),
  num_bins - 1). The outcome y is gold == 1.
  """
  probs, gold, mask = jnp.asarray(probs), jnp.asarray(gold), jnp.asarray(mask)
  _check_shapes(probs, gold, mask)
  labelled, _ = _labelled(mask.astype(bool))
  gold_b = (gold == 1) & labelled
  p = jnp.where(labelled, probs, 0.0).astype(jnp.float32)  # Drops padding NaNs.
  bins = jnp.clip(jnp.floor(p * num_bins).astype(jnp.int32), 0, num_bins - 1)
  in_bin = jax.nn.one_hot(bins, num_bins, dtype=bool) & labelled[..., None]
  count = functools.partial(jnp.sum, axis=(0, 1))
  return CalibrationStats(
      bin_count=count(in_bin, dtype=jnp.int32),
      bin_prob_sum=count(jnp.where(in_bin, p[..., None], 0.0)),
      bin_positive=count(in_bin & gold_b[..., None], dtype=jnp.int32),
      squared_error_sum=jnp.sum(jnp.where(labelled, (p - gold_b) ** 2, 0.0)),
  )


@jax.jit
def compute_calibration(stats: CalibrationStats) -> dict:
  """`ece`, `brier` and `num_positions` from accumulated statistics.

  ECE = sum_b (n_b / n) |mean_prob_b - frac_positive_b|
      = sum_b |prob_sum_b - positive_b| / n  (binary reliability form on the
  boundary probability); Brier = sum (p - y)^2 / n. NaN when n = 0.
  """
  n = jnp.sum(stats.bin_count, axis=-1)
  gap = jnp.abs(stats.bin_prob_sum - stats.bin_positive.astype(jnp.float32))
  return {
      "ece": _ratio(jnp.sum(gap, axis=-1), n),
      "brier": _ratio(stats.squared_error_sum, n),
      "num_positions": n,
  }


@functools.partial(jax.jit, static_argnames=("num_bins",))
def expected_calibration_error(probs, gold, mask, num_bins: int = 15):
  """ECE of the boundary probability; see `compute_calibration`."""
  stats = calibration_stats(probs, gold, mask, num_bins=num_bins)
  return compute_calibration(stats)["ece"]


@jax.jit
def brier_score(probs, gold, mask):
  """Mean (p - y)^2 of the boundary probability over labelled positions."""
  return compute_calibration(calibration_stats(probs, gold, mask))["brier"]


# ---------------------------------------------------------------------------
# Decision thresholds.
# ---------------------------------------------------------------------------


def boundaries_at_threshold(probs, threshold=0.5):
  """int32 predictions: 1 where p(boundary) > threshold (argmax at 0.5)."""
  return (jnp.asarray(probs) > threshold).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("k", "tolerance"))
def threshold_sweep_stats(
    probs,
    gold,
    mask,
    thresholds=DEFAULT_THRESHOLDS,
    *,
    k: Optional[int] = None,
    tolerance: int = 0,
) -> SegmentationStats:
  """`segmentation_stats` of `boundaries_at_threshold(probs, t)` for every t.

  The result has a leading [num_thresholds] axis; sum it over batches with
  `merge` (or psum it) and pick with `select_threshold`.
  """
  thresholds = jnp.asarray(thresholds, jnp.float32)
  stats_at = lambda t: segmentation_stats(
      boundaries_at_threshold(probs, t), gold, mask, k=k, tolerance=tolerance
  )
  return jax.vmap(stats_at)(thresholds)


def _check_metric(metric):
  if metric not in THRESHOLD_METRICS:
    raise ValueError(
        f"Unknown metric {metric!r}; valid: "
        f"{', '.join(sorted(THRESHOLD_METRICS))}."
    )


def select_threshold(
    sweep_stats: SegmentationStats,
    metric: str = "pk",
    thresholds=DEFAULT_THRESHOLDS,
):
  """(threshold, score) with the best `metric` among swept thresholds.

  Lower is better for pk and window_diff, higher for the others. NaN scores
  never win; ties go to the lowest threshold.
  """
  _check_metric(metric)
  return _select_threshold(
      sweep_stats, jnp.asarray(thresholds, jnp.float32), metric
  )


@functools.partial(jax.jit, static_argnames=("metric",))
def _select_threshold(sweep_stats, thresholds, metric):
  scores = jax.vmap(compute_metrics)(sweep_stats)[metric]
  sign = -1.0 if THRESHOLD_METRICS[metric] else 1.0
  best = jnp.argmin(jnp.where(jnp.isnan(scores), jnp.inf, sign * scores))
  return thresholds[best], scores[best]


def best_threshold(
    probs,
    gold,
    mask,
    metric: str = "pk",
    *,
    thresholds=DEFAULT_THRESHOLDS,
    k: Optional[int] = None,
    tolerance: int = 0,
):
  """Sweeps decision thresholds (0.05..0.95 by 0.05) on one batch.

  Returns (threshold, score) of the best `metric`; see `select_threshold`.
  """
  _check_metric(metric)
  stats = threshold_sweep_stats(
      probs, gold, mask, thresholds, k=k, tolerance=tolerance
  )
  return select_threshold(stats, metric, thresholds)
