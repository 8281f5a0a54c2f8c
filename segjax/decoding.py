r"""Boundary decoding under segment-length and segment-count constraints.

The model gives, for each sentence t of a document of n sentences, the
probability p_t that t ends a segment (label 1, SPEC section 1); sentence
n - 1 always ends one. A segmentation is a label vector b in {0, 1}^n with
b_{n-1} = 1, scored by

    score(b) = sum_{t < n-1} [ b_t log p_t + (1 - b_t) log(1 - p_t) ]
               - logit(tau) * sum_{t < n-1} b_t

(the log-probability of the decisions; a threshold tau != 0.5 adds a cost
logit(tau) per boundary, so that unconstrained the optimum is `p_t > tau`,
the rule of `segjax.segment.segments_from_probabilities`). Up to the
constant sum_t log(1 - p_t), score(b) = sum_t b_t g_t with the gain

    g_t = logit(p_t) - logit(tau).

`decode` and `decode_batch` return the b of highest score among those whose
segments all have between `min_segment_sentences` and
`max_segment_sentences` sentences and, if asked, exactly `num_segments`
segments, computed exactly by dynamic programming, jitted: a Viterbi scan
over sentences with one state per open-segment length (`_viterbi`), or with
a count, a scan over segments vectorised over sentences (`_viterbi_counted`).

Constraints that a document cannot meet are relaxed for that document, as
little as needed (`relaxed_constraints`); a request that no document can
meet (min > max, a bound below 1, a threshold outside [0, 1]) raises
ValueError (`check_constraints`). The thresholds 0 and 1 are exact without
constraints (a cut wherever p_t > 0; none); under constraints tau is clipped
to [EPS, 1 - EPS] like p_t (as many cuts as the constraints allow; as few).

  from segjax import decoding
  labels = decoding.decode(probs, max_segment_sentences=20, threshold=0.4)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from segjax import data

# Probabilities are clipped to [EPS, 1 - EPS] before the logarithm: a model
# that says exactly 0 or 1 must not make a constrained choice impossible.
EPS = 1e-6
# Stands for "no maximum" in the per-document int32 bound arrays.
_UNBOUNDED = np.iinfo(np.int32).max


class Constraints(NamedTuple):
  """The constraints one document is decoded under (None: no constraint)."""

  min_segment_sentences: int = 1
  max_segment_sentences: int | None = None
  num_segments: int | None = None


def _is_positive_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(
      value, (bool, np.bool_)
  )


def check_constraints(
    *,
    min_segment_sentences: int | None = None,
    max_segment_sentences: int | None = None,
    num_segments: int | Sequence[int] | None = None,
    threshold: float = 0.5,
) -> None:
  """Raises ValueError for a request that no document could satisfy.

  Bounds and counts must be integers >= 1 (or None), min <= max, and the
  threshold in [0, 1] (clipped before its logit is taken). What only
  some documents cannot meet (a text shorter than the minimum, more segments
  than sentences) is not an error: see `relaxed_constraints`.
  """
  for name, value in (
      ("min_segment_sentences", min_segment_sentences),
      ("max_segment_sentences", max_segment_sentences),
  ):
    if value is not None and not (_is_positive_int(value) and value >= 1):
      raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
  if num_segments is not None:
    counts = np.asarray(num_segments)
    if counts.dtype.kind not in "iu" or np.any(counts < 1):
      raise ValueError(
          f"num_segments must be integers >= 1, got {num_segments!r}"
      )
  if (
      min_segment_sentences is not None
      and max_segment_sentences is not None
      and min_segment_sentences > max_segment_sentences
  ):
    raise ValueError(
        f"min_segment_sentences={min_segment_sentences} is larger than "
        f"max_segment_sentences={max_segment_sentences}: no segment can have "
        "both"
    )
  if not 0.0 <= float(threshold) <= 1.0:
    raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")


def _relaxed_arrays(lengths, min_len, max_len, num_segments):
  """`relaxed_constraints` for int arrays [B] (max _UNBOUNDED, count 0: none).

  Returns (min [B], max [B], count [B]) int64. A document of 0 sentences
  (a padding row) is relaxed as one of 1 sentence.
  """
  n = np.maximum(np.asarray(lengths, np.int64), 1)
  min_len = np.asarray(min_len, np.int64)
  max_len = np.asarray(max_len, np.int64)
  counted = np.asarray(num_segments, np.int64) > 0
  # There cannot be more segments than sentences.
  count = np.where(counted, np.clip(num_segments, 1, n), 0)
  per_segment = np.maximum(count, 1)
  # With a count: k segments of [min, max] sentences cover n iff
  # k * min <= n <= k * max; lower min to n // k or raise max to ceil(n / k).
  # Only one of the two can fail, since min <= max.
  # Without a count: max is kept, the fewest segments it allows is
  # ceil(n / max), and min must come down to n // ceil(n / max) at most.
  fewest = np.where(max_len < _UNBOUNDED, -(-n // max_len), 1)
  min_len = np.where(
      counted,
      np.minimum(min_len, n // per_segment),
      np.minimum(min_len, n // fewest),
  )
  max_len = np.where(
      counted & (max_len < _UNBOUNDED),
      np.maximum(max_len, -(-n // per_segment)),
      max_len,
  )
  return min_len, max_len, count


def relaxed_constraints(
    num_sentences: int,
    *,
    min_segment_sentences: int | None = None,
    max_segment_sentences: int | None = None,
    num_segments: int | None = None,
) -> Constraints:
  """The constraints a document of `num_sentences` is actually decoded under.

  Equal to the request when some segmentation of the document meets it;
  otherwise relaxed as little as needed, in this order of precedence:

  - `num_segments` is clipped to [1, n] and then kept exactly;
  - with a count k: if k * min > n, min becomes n // k; if k * max < n,
    max becomes ceil(n / k);
  - without a count, `max_segment_sentences` is kept and min is lowered to
    the largest feasible value, n // ceil(n / max) (so a text shorter than
    min is one segment).

  Callers compare the result with the request to tell the user.
  """
  check_constraints(
      min_segment_sentences=min_segment_sentences,
      max_segment_sentences=max_segment_sentences,
      num_segments=num_segments,
  )
  if num_sentences < 1:
    return Constraints(
        min_segment_sentences or 1, max_segment_sentences, num_segments
    )
  min_len, max_len, count = _relaxed_arrays(
      [num_sentences],
      [min_segment_sentences or 1],
      [max_segment_sentences or _UNBOUNDED],
      [num_segments or 0],
  )
  return Constraints(
      int(min_len[0]),
      None if max_segment_sentences is None else int(max_len[0]),
      None if num_segments is None else int(count[0]),
  )


def boundary_gains(probs: jax.Array, threshold) -> jax.Array:
  """g_t = logit(p_t) - logit(tau), both clipped to [EPS, 1 - EPS]."""
  p = jnp.clip(jnp.asarray(probs, jnp.float32), EPS, 1 - EPS)
  tau = jnp.clip(jnp.asarray(threshold, jnp.float32), EPS, 1 - EPS)
  # log(p) - log1p(-p) keeps the precision that log(p / (1 - p)) loses near 1.
  logit = lambda x: jnp.log(x) - jnp.log1p(-x)
  return logit(p) - logit(tau)


def segmentation_score(probs, labels, *, threshold: float = 0.5) -> float:
  """score(b) of the module docstring for one document, in float64.

  `labels[-1]` (the document end) is not scored. Probabilities are clipped
  as in decoding.
  """
  p = np.clip(np.asarray(probs, np.float64), EPS, 1 - EPS)[:-1]
  b = np.asarray(labels)[:-1].astype(bool)
  tau = min(max(threshold, EPS), 1 - EPS)
  log_odds_tau = math.log(tau) - math.log1p(-tau)
  return float(np.sum(np.where(b, np.log(p) - log_odds_tau, np.log1p(-p))))


def _viterbi(gains, lengths, min_len, max_len, *, num_states: int, unbounded):
  """Best labels [B, T] under per-document length bounds, any segment count.

  A scan over sentences. State j after sentence t: the open segment holds
  j+1 sentences (j = K-1 means "K or more" when `unbounded`, the only way
  longer segments arise). D_t(j) is the best sum of gains g_0..g_{t-1} that
  reaches it; D_0(0) = 0. Deciding b_t:

    D_{t+1}(j)   = D_t(j-1)                         b_t = 0, j+1 <= max
    D_{t+1}(K-1) = max(D_t(K-2), D_t(K-1))          b_t = 0, unbounded
    D_{t+1}(0)   = max_{j+1 >= min} D_t(j) + g_t    b_t = 1

  The answer ends in the best state j with j+1 >= min; backpointers (which
  j each segment ended in, whether the open-ended state came from itself)
  are replayed by a reverse scan. O(T K) per document. Each step subtracts
  the best state's value, which changes no decision but keeps the compared
  numbers near 0, where float32 resolves gains finely. Steps at t >= n-1
  leave everything as it is, so padding (even NaN) has no influence.

  Args:
    gains: float32 [B, T], `boundary_gains`.
    lengths: int32 [B], sentences per document (0 for padding rows).
    min_len, max_len: int32 [B], relaxed (`_relaxed_arrays`); max
      `_UNBOUNDED` when not bounded.
    num_states: K, at least every finite max, or every min and 2 when
      `unbounded`.
    unbounded: no document has a maximum length.

  Returns:
    int32 [B, T]: 1 where a segment ends (t = n-1 included), 0 elsewhere and
    on padding.
  """
  batch, length = gains.shape
  segment_length = jnp.arange(1, num_states + 1)
  can_end = segment_length >= min_len[:, None]  # [B, K]
  can_reach = segment_length <= max_len[:, None]
  active = jnp.arange(length - 1)[:, None] < lengths[None, :] - 1  # [T-1, B]

  def forward(scores, step):
    gain, is_active = step
    ending = jnp.where(can_end, scores, -jnp.inf)
    ended_state = jnp.argmax(ending, axis=-1)
    fresh = jnp.max(ending, axis=-1) + gain
    grown = scores[:, :-1]
    from_open_end = None
    if unbounded:
      from_open_end = scores[:, -1] >= scores[:, -2]
      grown = grown.at[:, -1].max(scores[:, -1])
    new = jnp.where(
        can_reach, jnp.concatenate([fresh[:, None], grown], -1), -jnp.inf
    )
    best = jnp.max(new, axis=-1, keepdims=True)
    new = new - jnp.where(jnp.isfinite(best), best, 0.0)
    new = jnp.where(is_active[:, None], new, scores)
    return new, (ended_state, from_open_end)

  init = jnp.full((batch, num_states), -jnp.inf).at[:, 0].set(0.0)
  final, (ended_state, from_open_end) = jax.lax.scan(
      forward, init, (gains[:, :-1].T, active)
  )

  def backward(j, step):
    ended, open_end, is_active = step
    boundary = is_active & (j == 0)
    grown_from = j - 1
    if unbounded:
      grown_from = jnp.where(open_end & (j == num_states - 1), j, grown_from)
    previous = jnp.where(boundary, ended, grown_from)
    return jnp.where(is_active, previous, j), boundary

  last = jnp.argmax(jnp.where(can_end, final, -jnp.inf), axis=-1)
  _, boundaries = jax.lax.scan(
      backward,
      last.astype(jnp.int32),
      (ended_state, from_open_end, active),
      reverse=True,
  )
  return _with_document_end(jnp.pad(boundaries.T, ((0, 0), (0, 1))), lengths)


def _with_document_end(boundaries, lengths):
  """int32 labels: the boundaries, plus 1 at each document's last sentence."""
  document_end = jnp.arange(boundaries.shape[1]) == lengths[:, None] - 1
  return (boundaries | document_end).astype(jnp.int32)


def _window_max(values, lo, hi, *, num_levels: int):
  """(max, argmax) of values[b, lo:hi+1] for every (b, j); -inf when empty.

  A sparse table: level L holds the (max, argmax) of every run of 2^L
  values, built from level L-1 by one shifted comparison; a window of w
  values is the union of two runs of 2^floor(log2 w), overlapping. O(log w)
  vector operations instead of O(w).

  Args:
    values: float [B, N].
    lo, hi: int32 [B, N], window bounds in [0, N); empty where hi < lo.
    num_levels: levels to build, `bit_length` of the widest window.
  """
  size = values.shape[1]
  index = jnp.broadcast_to(jnp.arange(size), values.shape)
  tables_v, tables_i = [values], [index]
  for level in range(1, num_levels):
    shift = 1 << (level - 1)
    v, i = tables_v[-1], tables_i[-1]
    other_v = jnp.pad(
        v[:, shift:], ((0, 0), (0, shift)), constant_values=-jnp.inf
    )
    other_i = jnp.pad(i[:, shift:], ((0, 0), (0, shift)))
    later = other_v > v
    tables_v.append(jnp.where(later, other_v, v))
    tables_i.append(jnp.where(later, other_i, i))
  tables_v, tables_i = jnp.stack(tables_v), jnp.stack(tables_i)
  width = jnp.maximum(hi - lo + 1, 1)
  level = 31 - jax.lax.clz(width.astype(jnp.int32))  # floor(log2(width))
  right = jnp.clip(hi - (1 << level) + 1, 0, size - 1)
  left = jnp.clip(lo, 0, size - 1)
  rows = jnp.arange(values.shape[0])[:, None]
  left_v, left_i = tables_v[level, rows, left], tables_i[level, rows, left]
  right_v, right_i = tables_v[level, rows, right], tables_i[level, rows, right]
  later = right_v > left_v
  best = jnp.where(later, right_v, left_v)
  return (
      jnp.where(hi >= lo, best, -jnp.inf),
      jnp.where(later, right_i, left_i),
  )


def _viterbi_counted(
    gains, lengths, min_len, max_len, count, *, num_counts: int, num_levels
):
  """Best labels [B, T] with exactly `count` segments, under length bounds.

  A scan over segments, each step vectorised over sentences. F_c(j) is the
  best sum of gains over the boundaries of the first j sentences cut into c
  segments; F_0(0) = 0, F_0(j > 0) = -inf, and

    F_c(j) = max_{j - max <= i <= j - min} F_{c-1}(i) + G(j),

  G(j) = g_{j-1} for j < n (the c-th segment ends with a boundary after
  sentence j-1) and G(n) = 0 (the document end is no decision). The answer
  is F_k(n); the maximising i of each step, stored, gives the cuts, read
  back by a reverse scan over segments. The window maxima take O(log(max -
  min)) vector operations (`_window_max`), so a step costs O(T log K) and
  the whole O(k T log K): far less than tracking (count, length) states
  sentence by sentence. Documents with fewer segments stop updating after
  their k-th step. Sums of at most k gains stay small, so no renormalising.

  Args:
    gains: float32 [B, T], `boundary_gains`.
    lengths: int32 [B], sentences per document (0 for padding rows).
    min_len, max_len, count: int32 [B], relaxed (`_relaxed_arrays`).
    num_counts: C, steps to run: at least every count.
    num_levels: window-max levels, `bit_length` of the widest window
      (max - min + 1, or T + 1 without a maximum).

  Returns:
    int32 [B, T] labels as `_viterbi`'s.
  """
  batch, length = gains.shape
  rows = jnp.arange(batch)
  prefix = jnp.arange(length + 1)  # j: sentences before the cut
  # G(j) for j = 0..T; 0 from the document end on (padding: even NaN).
  cut_gain = jnp.pad(
      jnp.where(prefix[1:] < lengths[:, None], gains, 0.0), ((0, 0), (1, 0))
  )
  lo = jnp.maximum(prefix - max_len[:, None], 0)
  hi = prefix - min_len[:, None]

  def forward(scores, c):
    best, start = _window_max(scores, lo, hi, num_levels=num_levels)
    new = best + cut_gain
    return jnp.where((c < count)[:, None], new, scores), start

  init = jnp.full((batch, length + 1), -jnp.inf).at[:, 0].set(0.0)
  _, starts = jax.lax.scan(forward, init, jnp.arange(num_counts))

  def backward(end, step):
    c, start = step
    is_active = (c < count) & (end > 0)
    previous = start[rows, end]
    # The segment (previous, end] ends at sentence end - 1.
    boundary = jnp.where(is_active, end - 1, -1)
    return jnp.where(is_active, previous, end), boundary

  _, ends = jax.lax.scan(
      backward,
      lengths.astype(jnp.int32),
      (jnp.arange(num_counts), starts),
      reverse=True,
  )
  boundaries = jnp.any(ends.T[:, :, None] == jnp.arange(length), axis=1)
  return _with_document_end(boundaries, lengths)


def _thresholded(probs, lengths, threshold):
  """The unconstrained optimum: b_t = [p_t > tau], b_{n-1} = 1, 0 on padding.

  Exactly the rule of `segments_from_probabilities` (ties p = tau: no cut),
  with no rounding of logits to blur it.
  """
  position = jnp.arange(probs.shape[1])
  inside = position < lengths[:, None] - 1
  document_end = position == lengths[:, None] - 1
  return ((inside & (probs > threshold)) | document_end).astype(jnp.int32)


_decode_thresholded = jax.jit(_thresholded)


def _float32_at_most(threshold: float) -> np.float32:
  """The largest float32 <= threshold.

  For a float32 p, `p > threshold` (compared in float64, as numpy does with
  a Python float) is then exactly `p > _float32_at_most(threshold)` in
  float32; rounding 0.4 to the nearest float32 (0.40000001) would instead
  keep a p of float32(0.4) from cutting.
  """
  below = np.float32(threshold)
  if below > threshold:
    below = np.nextafter(below, np.float32(-np.inf))
  return below


@functools.partial(jax.jit, static_argnames=("num_states", "unbounded"))
def _decode_lengths(probs, lengths, threshold, min_len, max_len, **static):
  gains = boundary_gains(probs, threshold)
  return _viterbi(gains, lengths, min_len, max_len, **static)


@functools.partial(jax.jit, static_argnames=("num_counts", "num_levels"))
def _decode_counted(
    probs, lengths, threshold, min_len, max_len, count, **static
):
  gains = boundary_gains(probs, threshold)
  return _viterbi_counted(gains, lengths, min_len, max_len, count, **static)


def bucket(size: int, *, minimum: int = 8) -> int:
  """`size` rounded up to m * 2^e with m in {4, 5, 6, 7} (< 25% padding).

  Sizes below 8 (when `minimum` allows them) are kept as they are.

  Array shapes go through this, so that documents of similar sizes share one
  compiled program.
  """
  size = max(int(size), minimum)
  step = 1 << max(size.bit_length() - 3, 0)
  return -(-size // step) * step


def decode_batch(
    probs,
    lengths,
    *,
    min_segment_sentences: int | None = None,
    max_segment_sentences: int | None = None,
    num_segments: int | Sequence[int] | None = None,
    threshold: float = 0.5,
) -> jax.Array:
  """Best boundary labels for a padded batch of documents, on device.

  Args:
    probs: float [B, T] boundary probabilities; values past each document's
      length are ignored (any value, NaN included).
    lengths: int [B] sentences per document, 0 <= n_b <= T (0: an empty row,
      all labels 0).
    min_segment_sentences, max_segment_sentences: bounds on every segment's
      number of sentences, None for none.
    num_segments: exact number of segments, one int for all documents or
      [B] ints; None: any number.
    threshold: tau of the module docstring.

  Returns:
    int32 [B, T]: 1 where a segment ends (always at n_b - 1), 0 elsewhere and
    on padding. Each document is decoded under its `relaxed_constraints`.

  Raises:
    ValueError: a request no document can meet (`check_constraints`), or
      shapes that do not fit.
  """
  check_constraints(
      min_segment_sentences=min_segment_sentences,
      max_segment_sentences=max_segment_sentences,
      num_segments=num_segments,
      threshold=threshold,
  )
  probs = jnp.asarray(probs, jnp.float32)
  if probs.ndim != 2:
    raise ValueError(f"probs must be [B, T], got shape {probs.shape}")
  lengths = np.asarray(lengths, np.int64).reshape(-1)
  batch, length = probs.shape
  if lengths.shape != (batch,) or np.any((lengths < 0) | (lengths > length)):
    raise ValueError(
        f"lengths must be [{batch}] values in [0, {length}], got {lengths}"
    )
  # Padding rows and columns to bucketed sizes: a handful of compiled shapes.
  padded_batch, padded_length = bucket(batch, minimum=1), bucket(length)
  probs = jnp.pad(
      probs, ((0, padded_batch - batch), (0, padded_length - length))
  )
  lengths = np.pad(lengths, (0, padded_batch - batch))
  unconstrained = (
      (min_segment_sentences or 1) == 1
      and max_segment_sentences is None
      and num_segments is None
  )
  if unconstrained:
    labels = _decode_thresholded(
        probs, jnp.asarray(lengths, jnp.int32), _float32_at_most(threshold)
    )
    return labels[:batch, :length]
  counts = np.zeros(padded_batch, np.int64)
  if num_segments is not None:
    if np.shape(num_segments) not in ((), (batch,)):
      raise ValueError(
          f"num_segments must be one int or [{batch}] ints, got "
          f"{num_segments!r}"
      )
    counts[:batch] = num_segments
    counts[batch:] = 1
  min_len, max_len, counts = _relaxed_arrays(
      lengths,
      np.full(padded_batch, min_segment_sentences or 1),
      np.full(padded_batch, max_segment_sentences or _UNBOUNDED),
      counts,
  )
  args = (
      probs,
      jnp.asarray(lengths, jnp.int32),
      jnp.float32(threshold),
      jnp.asarray(min_len, jnp.int32),
      jnp.asarray(max_len, jnp.int32),
  )
  unbounded = max_segment_sentences is None
  if num_segments is None:
    # Lengths up to the largest that must be told apart from longer ones.
    longest = max(2, int(min_len.max())) if unbounded else int(max_len.max())
    labels = _decode_lengths(
        *args, num_states=bucket(longest, minimum=2), unbounded=unbounded
    )
  else:
    widest = (
        padded_length + 1 if unbounded else int((max_len - min_len).max()) + 1
    )
    labels = _decode_counted(
        *args,
        jnp.asarray(counts, jnp.int32),
        num_counts=bucket(counts.max(), minimum=1),
        num_levels=widest.bit_length(),
    )
  return labels[:batch, :length]


def decode(
    probs,
    *,
    min_segment_sentences: int | None = None,
    max_segment_sentences: int | None = None,
    num_segments: int | None = None,
    threshold: float = 0.5,
) -> np.ndarray:
  """Best boundary labels int32 [n] for one document (see `decode_batch`).

  Without constraints this is `probs > threshold` with the last label 1.
  """
  probs = np.asarray(probs, np.float32).reshape(-1)
  labels = decode_batch(
      probs[None, :],
      [len(probs)],
      min_segment_sentences=min_segment_sentences,
      max_segment_sentences=max_segment_sentences,
      num_segments=num_segments,
      threshold=threshold,
  )
  return np.asarray(labels[0])


def decode_documents(
    document_probs: Sequence[np.ndarray],
    *,
    min_segment_sentences: int | None = None,
    max_segment_sentences: int | None = None,
    num_segments: int | Sequence[int] | None = None,
    threshold: float = 0.5,
) -> list[np.ndarray]:
  """`decode_batch` for per-document arrays (as `TrainedModel.predict` gives).

  Returns one int32 [n_d] label array per document.
  """
  lengths = [len(p) for p in document_probs]
  if not lengths:
    return []
  labels = np.asarray(
      decode_batch(
          data.pad_documents(
              [np.asarray(p, np.float32) for p in document_probs], 0.0
          ),
          lengths,
          min_segment_sentences=min_segment_sentences,
          max_segment_sentences=max_segment_sentences,
          num_segments=num_segments,
          threshold=threshold,
      )
  )
  return [row[:n] for row, n in zip(labels, lengths)]
