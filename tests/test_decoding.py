"""Tests for segjax.decoding: exact optimum against brute force and a reference."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax import decoding


def segment_lengths(labels):
  ends = np.flatnonzero(labels)
  return np.diff(np.concatenate([[-1], ends]))


def meets(labels, constraints):
  lengths = segment_lengths(labels)
  low, high, count = constraints
  return (
      lengths.min() >= low
      and (high is None or lengths.max() <= high)
      and (count is None or len(lengths) == count)
  )


def all_segmentations(n):
  """Every label vector of n sentences (last label 1), [2^(n-1), n]."""
  rows = list(itertools.product([0, 1], repeat=n - 1))
  return np.array([row + (1,) for row in rows], np.int32)


def brute_force(probs, constraints, threshold):
  """(best score, its labels, second best score) over feasible segmentations."""
  scored = sorted(
      (decoding.segmentation_score(probs, b, threshold=threshold), tuple(b))
      for b in all_segmentations(len(probs))
      if meets(b, constraints)
  )
  if not scored:
    return None
  second = scored[-2][0] if len(scored) > 1 else -np.inf
  return scored[-1][0], np.array(scored[-1][1]), second


def reference_decode(probs, low, high, count, threshold):
  """Segment-level DP in float64, independent of `decoding._viterbi`.

  F[c, j] = best score of the first j sentences cut into c + 1 segments
  (c = 0 only, when the count is free), over the last segment's start:
  F[c, j] = max_{j - high <= i <= j - low} F[c - 1, i] + gain of a boundary
  at j - 1 (none at the document end).
  """
  n = len(probs)
  p = np.clip(probs.astype(np.float64), decoding.EPS, 1 - decoding.EPS)
  gain = np.log(p) - np.log1p(-p) - (np.log(threshold) - np.log1p(-threshold))
  gain = np.append(gain[:-1], 0.0)
  high = high or n
  rows = count or 1
  best = np.full((rows, n + 1), -np.inf)
  back = np.zeros((rows, n + 1), np.int64)
  for j in range(low, n + 1):
    starts = np.arange(max(0, j - high), j - low + 1)
    if count:
      # Segment c + 1 follows c segments; the first one starts at 0.
      previous = np.full((rows, len(starts)), -np.inf)
      previous[1:] = best[:-1, starts]
      previous[0] = np.where(starts == 0, 0.0, -np.inf)
    else:
      previous = np.where(starts == 0, 0.0, best[0, starts])[None, :]
    choice = np.argmax(previous, axis=1)
    best[:, j] = previous[np.arange(rows), choice] + gain[j - 1]
    back[:, j] = starts[choice]
  labels, j, c = np.zeros(n, np.int32), n, rows - 1
  while j > 0:
    labels[j - 1] = 1
    j = back[c, j]
    c = c - 1 if count else c
  return labels


def random_constraints(rng, n):
  low = int(rng.integers(1, n + 2)) if rng.random() < 0.6 else None
  high = int(rng.integers(1, n + 2)) if rng.random() < 0.6 else None
  if low is not None and high is not None and low > high:
    low, high = high, low
  count = int(rng.integers(1, n + 2)) if rng.random() < 0.5 else None
  return low, high, count


@pytest.mark.parametrize("seed", range(80))
def test_matches_brute_force(seed):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(1, 11))
  # Sharp and flat probabilities alike; some exactly 0 or 1 (clipped).
  probs = rng.beta(0.5, 0.5, n).astype(np.float32)
  probs[rng.random(n) < 0.1] = rng.integers(0, 2)
  low, high, count = random_constraints(rng, n)
  threshold = float(rng.choice([0.5, 0.3, 0.7, 0.45]))
  labels = decoding.decode(
      probs,
      min_segment_sentences=low,
      max_segment_sentences=high,
      num_segments=count,
      threshold=threshold,
  )
  relaxed = decoding.relaxed_constraints(
      n,
      min_segment_sentences=low,
      max_segment_sentences=high,
      num_segments=count,
  )
  best, best_labels, second = brute_force(probs, relaxed, threshold)
  assert labels.dtype == np.int32 and labels.shape == (n,) and labels[-1] == 1
  assert meets(labels, relaxed)
  got = decoding.segmentation_score(probs, labels, threshold=threshold)
  assert got == pytest.approx(best, abs=1e-4)
  if best - second > 1e-3:
    np.testing.assert_array_equal(labels, best_labels)


@pytest.mark.parametrize("seed", range(40))
def test_relaxation_is_the_request_when_feasible_else_minimal(seed):
  rng = np.random.default_rng(1000 + seed)
  n = int(rng.integers(1, 11))
  low, high, count = random_constraints(rng, n)
  request = decoding.Constraints(low or 1, high, count)
  relaxed = decoding.relaxed_constraints(
      n,
      min_segment_sentences=low,
      max_segment_sentences=high,
      num_segments=count,
  )
  feasible = lambda c: any(meets(b, c) for b in all_segmentations(n))
  assert feasible(relaxed)
  if feasible(request):
    assert relaxed == request
    return
  got_min, got_max, got_count = relaxed
  assert got_min <= request.min_segment_sentences
  if count is None:
    # The maximum is kept; the minimum is as high as it can be.
    assert got_max == high and got_count is None
    assert not feasible((got_min + 1, got_max, None))
  else:
    assert got_count == min(count, n)
    if got_min < request.min_segment_sentences:
      assert got_max == high
      assert not feasible((got_min + 1, got_max, got_count))
    elif got_max != high:
      assert got_max > high
      assert not feasible((got_min, got_max - 1, got_count))
    else:
      assert count > n  # Only the count had to change.


@pytest.mark.parametrize("threshold", [0.5, 0.4, 0.1, 0.93])
def test_unconstrained_is_thresholding(threshold):
  rng = np.random.default_rng(7)
  probs = rng.random(300).astype(np.float32)
  # Exact ties and the float32 neighbours of the threshold.
  tie = np.float32(threshold)
  probs[:6] = [
      tie,
      np.nextafter(tie, np.float32(0)),
      np.nextafter(tie, np.float32(1)),
      0.0,
      1.0,
      threshold,
  ]
  expected = (probs > threshold).astype(np.int32)
  expected[-1] = 1
  for kwargs in ({}, {"min_segment_sentences": 1}):
    labels = decoding.decode(probs, threshold=threshold, **kwargs)
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize("unbounded", [False, True])
def test_dynamic_program_without_binding_constraints_is_thresholding(
    unbounded,
):
  # The Viterbi path itself (not the closed form `decode` takes): with a
  # maximum of n, or no maximum and a minimum of 1, every cut is allowed.
  rng = np.random.default_rng(8)
  probs = rng.random((3, 200)).astype(np.float32)
  lengths = np.array([200, 117, 1])
  labels = decoding._decode_lengths(
      jnp.asarray(probs),
      jnp.asarray(lengths, jnp.int32),
      jnp.float32(0.3),
      jnp.ones(3, jnp.int32),
      jnp.full(3, decoding._UNBOUNDED if unbounded else 200, jnp.int32),
      num_states=2 if unbounded else 200,
      unbounded=unbounded,
  )
  for b, (row, n) in enumerate(zip(np.asarray(labels), lengths)):
    expected = np.zeros(200, np.int32)
    expected[: n - 1] = probs[b, : n - 1] > 0.3
    expected[n - 1] = 1
    np.testing.assert_array_equal(row, expected)


@pytest.mark.parametrize(
    "kwargs, probs, expected",
    [
        # Shorter than the minimum: one segment.
        (dict(min_segment_sentences=5), [0.9, 0.9, 0.9], [0, 0, 1]),
        # More segments than sentences: every sentence is one.
        (dict(num_segments=5), [0.1, 0.1, 0.1], [1, 1, 1]),
        # A maximum of 1: every sentence ends a segment.
        (dict(max_segment_sentences=1), [0.0, 0.0, 0.0], [1, 1, 1]),
        # One sentence, empty document.
        (dict(min_segment_sentences=3, num_segments=2), [0.5], [1]),
        (dict(max_segment_sentences=2), [], []),
    ],
)
def test_infeasible_cases_are_relaxed(kwargs, probs, expected):
  labels = decoding.decode(np.array(probs, np.float32), **kwargs)
  np.testing.assert_array_equal(labels, expected)


def test_count_times_max_below_length_raises_the_maximum():
  probs = np.full(10, 0.01, np.float32)
  probs[[0, 1, 2]] = 0.99  # Wants short segments at the start.
  labels = decoding.decode(probs, max_segment_sentences=2, num_segments=3)
  assert decoding.relaxed_constraints(
      10, max_segment_sentences=2, num_segments=3
  ) == decoding.Constraints(1, 4, 3)
  assert len(segment_lengths(labels)) == 3
  assert segment_lengths(labels).max() <= 4


def test_min_max_without_fitting_count_lowers_the_minimum():
  # 7 sentences in segments of exactly 3 cannot be; 3 + 2 + 2 can.
  relaxed = decoding.relaxed_constraints(
      7, min_segment_sentences=3, max_segment_sentences=3
  )
  assert relaxed == decoding.Constraints(2, 3, None)
  labels = decoding.decode(
      np.full(7, 0.5, np.float32),
      min_segment_sentences=3,
      max_segment_sentences=3,
  )
  assert sorted(segment_lengths(labels)) == [2, 2, 3]


def test_thresholds_0_and_1_give_the_most_and_fewest_cuts_allowed():
  probs = np.random.default_rng(3).random(9).astype(np.float32)
  probs[[2, 5]] = [0.0, 1.0]
  # Unconstrained: a cut wherever p > 0 (XLA on CPU flushes subnormal
  # probabilities to 0); none at all.
  np.testing.assert_array_equal(
      decoding.decode(probs, threshold=0.0), [1, 1, 0, 1, 1, 1, 1, 1, 1]
  )
  np.testing.assert_array_equal(
      decoding.decode(probs, threshold=1.0), [0] * 8 + [1]
  )
  most = decoding.decode(probs, threshold=0.0, max_segment_sentences=3)
  fewest = decoding.decode(probs, threshold=1.0, max_segment_sentences=3)
  np.testing.assert_array_equal(most, np.ones(9, np.int32))
  assert segment_lengths(fewest).tolist() == [3, 3, 3]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(min_segment_sentences=4, max_segment_sentences=3),
        dict(min_segment_sentences=0),
        dict(max_segment_sentences=0),
        dict(max_segment_sentences=2.5),
        dict(min_segment_sentences=True),
        dict(num_segments=0),
        dict(num_segments=[2, 0]),
        dict(threshold=-0.1),
        dict(threshold=1.5),
        dict(threshold=float("nan")),
    ],
)
def test_contradictory_requests_raise(kwargs):
  with pytest.raises(ValueError):
    decoding.decode(np.full(5, 0.5, np.float32), **kwargs)


def test_batch_shapes_are_checked():
  probs = np.full((2, 6), 0.5, np.float32)
  with pytest.raises(ValueError, match="lengths"):
    decoding.decode_batch(probs, [6, 7])
  with pytest.raises(ValueError, match="lengths"):
    decoding.decode_batch(probs, [6])
  with pytest.raises(ValueError, match="num_segments"):
    decoding.decode_batch(probs, [6, 3], num_segments=[1, 2, 3])
  with pytest.raises(ValueError, match="probs"):
    decoding.decode_batch(probs[0], [6])


def test_batch_equals_per_document():
  rng = np.random.default_rng(3)
  lengths = np.array([37, 1, 0, 64, 20, 5])
  probs = rng.random((len(lengths), 64)).astype(np.float32)
  for row, n in zip(probs, lengths):
    row[n:] = np.nan  # Padding is never read.
  counts = [4, 1, 1, 9, 30, 2]
  for kwargs in (
      dict(),
      dict(max_segment_sentences=6, threshold=0.6),
      dict(min_segment_sentences=3),
      dict(min_segment_sentences=2, max_segment_sentences=8),
      dict(num_segments=counts, min_segment_sentences=2),
      dict(num_segments=5, max_segment_sentences=10),
  ):
    batch = np.asarray(decoding.decode_batch(probs, lengths, **kwargs))
    assert batch.shape == probs.shape and batch.dtype == np.int32
    per_doc = decoding.decode_documents(
        [row[:n] for row, n in zip(probs, lengths)], **kwargs
    )
    for b, (row, n) in enumerate(zip(batch, lengths)):
      one = dict(kwargs)
      if isinstance(one.get("num_segments"), list):
        one["num_segments"] = counts[b]
      np.testing.assert_array_equal(
          row[:n], decoding.decode(probs[b, :n], **one)
      )
      np.testing.assert_array_equal(row[:n], per_doc[b])
      assert not row[n:].any()


@pytest.mark.parametrize(
    "n, low, high, count",
    [
        (5000, 3, 40, None),
        (5000, None, 25, None),
        (5000, None, 60, 150),
        # Unbounded with a count: the reference is O(n^2 k), so shorter.
        (1000, 2, None, 40),
    ],
)
def test_long_document_matches_a_segment_level_reference(n, low, high, count):
  rng = np.random.default_rng(5)
  probs = rng.beta(0.3, 2.0, n).astype(np.float32)
  labels = decoding.decode(
      probs,
      min_segment_sentences=low,
      max_segment_sentences=high,
      num_segments=count,
      threshold=0.4,
  )
  assert meets(labels, (low or 1, high, count))
  expected = reference_decode(probs, low or 1, high, count, 0.4)
  assert decoding.segmentation_score(
      probs, labels, threshold=0.4
  ) == pytest.approx(
      decoding.segmentation_score(probs, expected, threshold=0.4), abs=1e-3
  )


def test_program_size_does_not_grow_with_document_length():
  # Scans, not Python loops over sentences: the traced program for 64 and for
  # 8192 sentences has the same equations.
  def equations(length, counted):
    batch = (jnp.zeros((2, length)), jnp.full(2, length, jnp.int32))
    bounds = (jnp.ones(2, jnp.int32), jnp.full(2, 30, jnp.int32))
    if counted:
      fn = lambda *a: decoding._viterbi_counted(
          *a, jnp.full(2, 300, jnp.int32), num_counts=320, num_levels=5
      )
    else:
      fn = lambda *a: decoding._viterbi(*a, num_states=32, unbounded=False)
    jaxpr = jax.make_jaxpr(fn)(*batch, *bounds)
    return [eqn.primitive.name for eqn in jaxpr.jaxpr.eqns]

  for counted in (False, True):
    short = equations(64, counted)
    assert "scan" in short
    assert short == equations(8192, counted)


def test_segmentation_score_formula():
  probs = np.array([0.8, 0.1, 0.6, 0.3], np.float32)
  labels = np.array([1, 0, 0, 1])
  expected = np.log(0.8) + np.log(0.9) + np.log(0.4)
  assert decoding.segmentation_score(probs, labels) == pytest.approx(expected)
  # A threshold tau costs logit(tau) per boundary.
  tau = 0.3
  assert decoding.segmentation_score(
      probs, labels, threshold=tau
  ) == pytest.approx(expected - np.log(tau / (1 - tau)))


def test_bucket():
  assert [decoding.bucket(n) for n in (0, 8, 9, 11, 15, 17, 68, 2000)] == [
      8,
      8,
      10,
      12,
      16,
      20,
      80,
      2048,
  ]
  for n in range(1, 5000, 7):
    assert n <= decoding.bucket(n, minimum=1) < 1.25 * n + 1
