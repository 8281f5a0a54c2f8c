"""Tests for segjax.metrics: parity with nltk and segeval, hand-computed cases,
edge cases, jit, streaming and psum."""

import functools

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
from nltk.metrics import segmentation as nltk_seg
import numpy as np
import pytest
import segeval

from segjax import metrics

IGNORE = -100


# ---------------------------------------------------------------------------
# Helpers: random padded batches and per-document reference implementations.
# ---------------------------------------------------------------------------


def random_batch(rng, batch, length, min_len=0):
  """Random documents, left-aligned, with garbage where labels are ignored.

  Gold boundary rates vary per document (none, sparse, dense, all); pred is a
  noisy copy of gold or independent noise. Position N-1 and padding hold
  ignore_index or 1s in gold and random bits in pred, which must not matter.
  """
  n = rng.integers(min_len, length + 1, batch)
  rate = rng.choice([0.0, 0.05, 0.15, 0.4, 1.0], batch)[:, None]
  gold = (rng.random((batch, length)) < rate).astype(np.int32)
  flip_rate = rng.choice([0.0, 0.1, 0.3], batch)[:, None]
  flip = rng.random((batch, length)) < flip_rate
  noise = (rng.random((batch, length)) < 0.2).astype(np.int32)
  pred = np.where(rng.random((batch, 1)) < 0.8, gold ^ flip, noise)
  position = np.arange(length)[None, :]
  ignored = position >= (n - 1)[:, None]
  gold = np.where(ignored, rng.choice([IGNORE, 1], (batch, length)), gold)
  mask = position < n[:, None]
  return pred.astype(np.int32), gold.astype(np.int32), mask


def doc(x, mask, b):
  """Labels of document b at its labelled positions (the first N-1)."""
  return [int(v == 1) for v in x[b, : max(int(mask[b].sum()) - 1, 0)]]


def as_string(labels):
  return "".join(str(v) for v in labels)


def as_masses(labels):
  """Segment masses of a document of len(labels) + 1 sentences."""
  ends = [i for i, v in enumerate(labels) if v] + [len(labels)]
  return tuple(np.diff([-1] + ends).tolist())


def greedy_matches(gold_pos, pred_pos, tolerance):
  """Reference: pairs by (distance, left end), taken when both ends are free."""
  pairs = sorted(
      (abs(g - p), min(g, p), g, p)
      for g in gold_pos
      for p in pred_pos
      if abs(g - p) <= tolerance
  )
  used_g, used_p = set(), set()
  for _, _, g, p in pairs:
    if g not in used_g and p not in used_p:
      used_g.add(g)
      used_p.add(p)
  return len(used_g)


def segments(labels):
  """Set of (start, end) segments of a document of len(labels) + 1 sentences."""
  ends = [i for i, v in enumerate(labels) if v] + [len(labels)]
  return set(zip([0] + [e + 1 for e in ends[:-1]], ends))


def f32(x):
  return np.float32(float(x))


# The public functions are jitted; tests reuse a few shapes so that each
# compiles only a few times.
per_document = metrics.window_metrics_per_document
stats_fn = metrics.segmentation_stats


@functools.partial(jax.jit, static_argnames=("tolerance", "k"))
def all_metrics(pred, gold, mask, tolerance=0, k=None):
  stats = metrics.segmentation_stats(pred, gold, mask, k=k, tolerance=tolerance)
  return metrics.compute_metrics(stats)


@jax.jit
def batch_stats(pred, gold, mask, probs):
  """(SegmentationStats, CalibrationStats), tolerance 1, one program."""
  return (
      metrics.segmentation_stats(pred, gold, mask, tolerance=1),
      metrics.calibration_stats(probs, gold, mask),
  )


@jax.jit
def both_stats(pred, gold, mask, probs):
  """(metrics, calibration) dicts, tolerance 1, in one compiled program."""
  return (
      metrics.compute_metrics(
          metrics.segmentation_stats(pred, gold, mask, tolerance=1)
      ),
      metrics.compute_calibration(metrics.calibration_stats(probs, gold, mask)),
  )


def one(pred, gold, mask=None):
  """A [1, T] batch from label lists (mask all True if not given)."""
  pred, gold = np.array([pred]), np.array([gold])
  mask = np.ones_like(gold, bool) if mask is None else np.array([mask])
  return pred, gold, mask


# ---------------------------------------------------------------------------
# Pk and WindowDiff parity.
# ---------------------------------------------------------------------------


def test_nltk_issue_3102_example():
  ref, hyp = "000001001000", "000100010000"
  pred, gold, mask = one(
      [int(c) for c in hyp] + [1], [int(c) for c in ref] + [IGNORE]
  )
  assert nltk_seg.pk(ref, hyp, 2) == pytest.approx(6 / 11)
  assert float(metrics.pk(pred, gold, mask, k=2)) == f32(6 / 11)
  assert float(metrics.window_diff(pred, gold, mask, k=2)) == f32(
      nltk_seg.windowdiff(ref, hyp, 2)
  )


@pytest.mark.parametrize(
    "hyp,k,expected", [("000100000010", 3, 0.0), ("000010000100", 3, 0.3)]
)
def test_nltk_windowdiff_docstring(hyp, k, expected):
  ref = "000100000010"
  pred, gold, mask = one(
      [int(c) for c in hyp] + [0], [int(c) for c in ref] + [0]
  )
  assert float(metrics.window_diff(pred, gold, mask, k=k)) == pytest.approx(
      expected
  )


@pytest.mark.parametrize("k", [None, 1, 3, 7])
def test_parity_with_nltk_on_random_documents(k):
  rng = np.random.default_rng(0 if k is None else k)
  for _ in range(2):
    pred, gold, mask = random_batch(rng, 1000, 64)
    out = jax.device_get(per_document(pred, gold, mask, k=k))
    for b in range(len(pred)):
      ref, hyp = as_string(doc(gold, mask, b)), as_string(doc(pred, mask, b))
      n, doc_k = int(mask[b].sum()), int(out["k"][b])
      if k is not None:
        assert doc_k == k
      if n <= doc_k:
        assert np.isnan(out["pk"][b]) and np.isnan(out["window_diff"][b])
        continue
      assert out["pk"][b] == f32(nltk_seg.pk(ref, hyp, doc_k)), (ref, hyp)
      assert out["window_diff"][b] == f32(nltk_seg.windowdiff(ref, hyp, doc_k))


def test_parity_with_segeval_default_window():
  rng = np.random.default_rng(1)
  for length in (48, 200):
    pred, gold, mask = random_batch(rng, 1000 if length == 48 else 200, length)
    out = jax.device_get(per_document(pred, gold, mask))
    for b in range(len(pred)):
      if not mask[b].any():
        continue
      ref, hyp = as_masses(doc(gold, mask, b)), as_masses(doc(pred, mask, b))
      k = segeval.compute_window_size(ref)
      assert out["k"][b] == k, ref
      if sum(ref) <= k:
        assert np.isnan(out["pk"][b])
        continue
      assert out["pk"][b] == f32(segeval.pk(hyp, ref)), (ref, hyp)
      assert out["window_diff"][b] == f32(segeval.window_diff(hyp, ref))


@pytest.mark.parametrize(
    "n,num_segments,k",
    [
        (10, 2, 2),
        (14, 2, 4),
        (6, 1, 3),
        (2, 1, 2),
        (30, 3, 5),
        (50, 2, 12),
        (18, 4, 2),
    ],
)
def test_default_window_rounds_half_to_even(n, num_segments, k):
  labels = [0] * (n - 1)
  for i in range(num_segments - 1):
    labels[i] = 1
  pad = 64 - n  # One shape for all cases: one compilation.
  _, gold, mask = one(
      [0] * 64, labels + [IGNORE] * (pad + 1), [True] * n + [False] * pad
  )
  assert int(per_document(gold, gold, mask)["k"][0]) == k
  assert segeval.compute_window_size(as_masses(labels)) == k


def test_batch_pk_is_mean_over_scored_documents():
  rng = np.random.default_rng(2)
  pred, gold, mask = random_batch(rng, 64, 24)
  out = per_document(pred, gold, mask)
  values = all_metrics(pred, gold, mask)
  scored = ~np.isnan(out["pk"])
  assert int(values["num_skipped_pk"]) == int(mask.any(1).sum() - scored.sum())
  np.testing.assert_allclose(
      values["pk"], np.mean(out["pk"][scored]), rtol=1e-6
  )
  np.testing.assert_allclose(
      values["window_diff"], np.mean(out["window_diff"][scored]), rtol=1e-6
  )
  assert float(metrics.pk(pred, gold, mask)) == float(values["pk"])


def test_explicit_k_must_be_positive_int():
  pred, gold, mask = one([0, 0, 0], [0, 1, 0])
  for bad in (0, -1, 2.0):
    with pytest.raises(ValueError, match="k must be"):
      metrics.pk(pred, gold, mask, k=bad)


# ---------------------------------------------------------------------------
# Edge cases.
# ---------------------------------------------------------------------------


def test_single_sentence_documents():
  values = all_metrics(*one([1], [IGNORE]))
  assert np.isnan(values["pk"]) and np.isnan(values["window_diff"])
  assert int(values["num_skipped_pk"]) == 1
  assert float(values["complete_segments"]) == 1.0  # [0, 0] is found.
  assert float(values["boundary_f1"]) == 1.0  # Nothing to find, none found.
  assert np.isnan(values["macro_f1"])  # No labelled position.


def test_document_without_gold_boundary():
  values = all_metrics(*one([0] * 10, [0] * 10))
  assert float(values["pk"]) == 0.0 and float(values["window_diff"]) == 0.0
  assert float(values["boundary_f1"]) == 1.0
  assert float(values["boundary_precision"]) == 1.0
  assert float(values["boundary_recall"]) == 1.0
  assert float(values["complete_segments"]) == 1.0
  assert float(values["macro_f1"]) == 1.0  # Class 1 absent: left out.
  values = all_metrics(*one([0, 1] + [0] * 8, [0] * 10))
  assert float(values["boundary_precision"]) == 0.0
  assert float(values["boundary_recall"]) == 0.0
  assert float(values["boundary_f1"]) == 0.0
  assert float(values["complete_segments"]) == 0.0


def test_all_boundary_document():
  pred, gold, mask = one([1] * 9 + [IGNORE], [1] * 9 + [IGNORE])
  values = all_metrics(pred, gold, mask)
  assert int(per_document(pred, gold, mask)["k"][0]) == 2  # round(10/20) -> 2
  assert float(values["pk"]) == 0.0
  assert float(values["complete_segments"]) == 1.0
  values = all_metrics(np.zeros_like(pred), gold, mask)
  assert float(values["pk"]) == 1.0 and float(values["window_diff"]) == 1.0
  assert float(values["boundary_recall"]) == 0.0
  assert float(values["complete_segments"]) == 0.0
  assert float(values["boundary_precision"]) == 0.0


def test_prediction_on_last_sentence_and_padding_is_ignored():
  rng = np.random.default_rng(3)
  pred, gold, mask = random_batch(rng, 32, 20)
  ignored = np.arange(20)[None, :] >= (mask.sum(1) - 1)[:, None]
  noisy = stats_fn(np.where(ignored, 1, pred), gold, mask, tolerance=2)
  clean = stats_fn(
      np.where(ignored, 0, pred), np.where(ignored, 0, gold), mask, tolerance=2
  )
  jax.tree.map(np.testing.assert_array_equal, noisy, clean)


def test_empty_batch_and_padding_documents():
  for shape in ((0, 8), (3, 8), (2, 0)):
    z = np.zeros(shape, np.int32)
    values = all_metrics(z, z, np.zeros(shape, bool))
    assert int(values["num_documents"]) == 0
    for key in (
        "pk",
        "window_diff",
        "boundary_f1",
        "boundary_precision",
        "boundary_recall",
        "complete_segments",
        "macro_f1",
    ):
      assert np.isnan(values[key]), key
  # Padding rows next to real documents change nothing.
  pred, gold, mask = random_batch(np.random.default_rng(4), 4, 8, min_len=1)
  padded = [np.concatenate([x, np.zeros_like(x)]) for x in (pred, gold, mask)]
  jax.tree.map(
      np.testing.assert_array_equal,
      stats_fn(pred, gold, mask),
      stats_fn(*padded),
  )


def test_every_document_skipped_gives_nan_not_zero():
  pred, gold, mask = one([0, 0, 0, 0], [0, 0, 0, IGNORE])
  assert np.isnan(metrics.pk(pred, gold, mask, k=4))
  assert float(metrics.pk(pred, gold, mask)) == 0.0  # Default k = 2 < N.


# ---------------------------------------------------------------------------
# Boundary F1, complete segments, macro F1: hand-computed and references.
# ---------------------------------------------------------------------------


def labels_at(positions, n):
  return [int(i in positions) for i in range(n - 1)] + [IGNORE]


@pytest.mark.parametrize(
    "gold_pos,pred_pos,tolerance,matched",
    [
        ({3, 7}, {3, 8}, 0, 1),
        ({3, 7}, {3, 8}, 1, 2),
        ({3}, {2, 4}, 1, 1),  # One-to-one: a gold boundary matches once.
        ({2, 6}, {4}, 2, 1),  # Tie at distance 2: the left gold is taken.
        ({2, 5}, {4}, 2, 1),  # Nearest first: 5 (distance 1), not 2.
        ({1, 4}, {3, 5}, 2, 1),  # Greedy, not maximum: (3,4) first blocks both.
        ({1, 5}, {3, 6}, 2, 2),
        ({0, 2, 4}, {1, 3, 5}, 1, 3),  # Chain G P G P G P pairs left to right.
        ({1, 3}, {0, 2, 4}, 1, 2),  # Chain P G P G P: last P unmatched.
    ],
)
def test_boundary_f1_hand_computed(gold_pos, pred_pos, tolerance, matched):
  n = 10
  pred, gold, mask = one(labels_at(pred_pos, n), labels_at(gold_pos, n))
  values = all_metrics(pred, gold, mask, tolerance=tolerance)
  assert greedy_matches(gold_pos, pred_pos, tolerance) == matched
  assert float(values["boundary_precision"]) == f32(matched / len(pred_pos))
  assert float(values["boundary_recall"]) == f32(matched / len(gold_pos))
  assert float(values["boundary_f1"]) == f32(
      2 * matched / (len(pred_pos) + len(gold_pos))
  )
  assert float(metrics.boundary_f1(pred, gold, mask, tolerance)) == float(
      values["boundary_f1"]
  )


@pytest.mark.parametrize(
    "gold_pos,pred_pos,expected",
    [
        ({2, 5}, {2, 5}, 3 / 3),
        ({2, 5}, {2}, 1 / 3),  # [0,2] found; [3,5] and [6,9] merged.
        ({2, 5}, {2, 5, 7}, 2 / 3),  # [6,9] split.
        (
            {2, 5},
            {1, 5},
            1 / 3,
        ),  # Only [6,9]: both ends predicted, none inside.
        (set(), set(), 1.0),
        (set(), {4}, 0.0),
    ],
)
def test_complete_segments_hand_computed(gold_pos, pred_pos, expected):
  pred, gold, mask = one(labels_at(pred_pos, 10), labels_at(gold_pos, 10))
  assert float(metrics.complete_segments(pred, gold, mask)) == f32(expected)


def test_macro_f1_hand_computed():
  # gold 0 0 1 1 0 | pred 0 1 1 0 0: class 0 TP 2 FP 1 FN 1 -> 4/6;
  # class 1 TP 1 FP 1 FN 1 -> 2/4; mean 7/12.
  pred, gold, mask = one([0, 1, 1, 0, 0, 1], [0, 0, 1, 1, 0, IGNORE])
  close = functools.partial(pytest.approx, rel=1e-6)
  assert float(metrics.macro_f1(pred, gold, mask)) == close(7 / 12)
  # Three classes, class 2 never occurs: mean over classes 0 and 1 only.
  assert float(metrics.macro_f1(pred, gold, mask, num_classes=3)) == close(
      7 / 12
  )
  # Class 2 only predicted: present with F1 0.
  pred3 = np.array([[0, 2, 1, 0, 0, 1]])
  # class 0: TP 2 FP 1 FN 1 -> 4/6; class 1: TP 1 FP 0 FN 1 -> 2/3; class 2: 0.
  assert float(metrics.macro_f1(pred3, gold, mask, num_classes=3)) == close(
      (4 / 6 + 2 / 3 + 0) / 3
  )


B_PROP, T_PROP = 4, 16


@st.composite
def small_batches(draw):
  n = draw(st.lists(st.integers(0, T_PROP), min_size=B_PROP, max_size=B_PROP))
  bits = st.lists(st.integers(0, 1), min_size=T_PROP, max_size=T_PROP)
  gold = np.array(draw(st.lists(bits, min_size=B_PROP, max_size=B_PROP)))
  pred = np.array(draw(st.lists(bits, min_size=B_PROP, max_size=B_PROP)))
  mask = np.arange(T_PROP)[None, :] < np.array(n)[:, None]
  return pred.astype(np.int32), gold.astype(np.int32), mask


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(small_batches(), st.integers(0, 3))
def test_boundary_and_segment_stats_match_references(batch, tolerance):
  pred, gold, mask = batch
  stats = stats_fn(pred, gold, mask, tolerance=tolerance)
  matched = complete = num_segments = 0
  for b in range(B_PROP):
    if not mask[b].any():
      continue
    g, p = doc(gold, mask, b), doc(pred, mask, b)
    matched += greedy_matches(
        {i for i, v in enumerate(g) if v},
        {i for i, v in enumerate(p) if v},
        tolerance,
    )
    complete += len(segments(g) & segments(p))
    num_segments += len(segments(g))
  assert int(stats.boundary_matched) == matched
  assert int(stats.segments_complete) == complete
  assert int(stats.segments_gold) == num_segments
  assert int(stats.num_documents) == int(mask.any(1).sum())


# ---------------------------------------------------------------------------
# Calibration.
# ---------------------------------------------------------------------------


def test_ece_and_brier_hand_computed():
  probs = np.array([[0.1, 0.2, 0.7, 0.9, 0.6, np.nan]])
  gold = np.array([[0, 1, 1, 1, 0, IGNORE]])
  mask = np.ones_like(gold, bool)
  # 2 bins: [0, .5) holds 0.1, 0.2 (1 positive): |0.3 - 1| = 0.7;
  # [.5, 1] holds 0.7, 0.9, 0.6 (2 positives): |2.2 - 2| = 0.2. ECE = 0.9 / 5.
  ece = metrics.expected_calibration_error(probs, gold, mask, num_bins=2)
  np.testing.assert_allclose(ece, 0.9 / 5, rtol=1e-6)
  brier = (0.01 + 0.64 + 0.09 + 0.01 + 0.36) / 5
  np.testing.assert_allclose(
      metrics.brier_score(probs, gold, mask), brier, rtol=1e-6
  )
  # p = 1 lands in the last bin; 15 bins by default.
  stats = metrics.calibration_stats(
      np.array([[1.0, 0.0]]), np.array([[1, IGNORE]]), np.array([[True, True]])
  )
  assert stats.bin_count.tolist() == [0] * 14 + [1]
  assert float(metrics.compute_calibration(stats)["ece"]) == 0.0


def test_calibration_of_empty_batch_is_nan():
  z = np.zeros((2, 4))
  values = metrics.compute_calibration(
      metrics.calibration_stats(z, z.astype(int), z.astype(bool))
  )
  assert np.isnan(values["ece"]) and np.isnan(values["brier"])


# ---------------------------------------------------------------------------
# Jit, streaming, psum.
# ---------------------------------------------------------------------------


def test_host_call_and_jitted_eval_step_give_identical_numbers():
  pred, gold, mask = random_batch(np.random.default_rng(5), 8, 24)
  probs = np.random.default_rng(6).random(pred.shape).astype(np.float32)

  @jax.jit
  def eval_step(p, g, m, q):  # The same functions inside a user's jit.
    return both_stats(p * 1, g, m, q)

  jax.tree.map(
      np.testing.assert_array_equal,
      both_stats(pred, gold, mask, probs),
      eval_step(pred, gold, mask, probs),
  )


@pytest.mark.slow  # ~10 s: op by op, every primitive compiles on its own.
def test_jit_and_no_jit_give_identical_numbers():
  pred, gold, mask = random_batch(np.random.default_rng(5), 8, 24)
  jitted = metrics.segmentation_stats(pred, gold, mask, tolerance=1)
  with jax.disable_jit():
    eager = metrics.segmentation_stats(pred, gold, mask, tolerance=1)
  jax.tree.map(np.testing.assert_array_equal, jitted, eager)


def assert_stats_equal(a, b):
  for name, x, y in zip(type(a)._fields, a, b):
    if jnp.issubdtype(x.dtype, jnp.integer):
      np.testing.assert_array_equal(x, y, err_msg=name)
    else:
      np.testing.assert_allclose(x, y, rtol=1e-6, err_msg=name)


def test_streaming_over_uneven_batches_equals_one_batch():
  rng = np.random.default_rng(7)
  batch = random_batch(rng, 60, 32)
  probs = rng.random(batch[0].shape).astype(np.float32)
  # 7 uneven batches (one empty) over 4 shapes, to bound compile time.
  cuts = np.cumsum([0, 1, 13, 7, 13, 0, 13, 13])
  total = (metrics.SegmentationStats.zeros(), metrics.CalibrationStats.zeros())
  for lo, hi in zip(cuts[:-1], cuts[1:]):
    part = batch_stats(*(x[lo:hi] for x in batch), probs[lo:hi])
    total = metrics.merge(total, part)
  one_batch = batch_stats(*batch, probs)
  for streamed, whole in zip(total, one_batch):
    assert_stats_equal(streamed, whole)
  jax.tree.map(
      functools.partial(np.testing.assert_allclose, rtol=1e-6),
      metrics.compute_metrics(total[0]),
      metrics.compute_metrics(one_batch[0]),
  )
  jax.tree.map(
      functools.partial(np.testing.assert_allclose, rtol=1e-6),
      metrics.compute_calibration(total[1]),
      metrics.compute_calibration(one_batch[1]),
  )


def test_psum_over_devices_equals_one_batch():
  num_devices = jax.local_device_count()
  assert num_devices == 4, "tests/conftest.py forces 4 CPU devices"
  pred, gold, mask = random_batch(np.random.default_rng(8), 4 * 6, 20)
  shard = lambda x: x.reshape(num_devices, -1, *x.shape[1:])

  @functools.partial(jax.pmap, axis_name="data")
  def device_stats(p, g, m):
    return jax.lax.psum(
        metrics.segmentation_stats(p, g, m, tolerance=1), "data"
    )

  summed = jax.tree.map(
      lambda x: x[0], device_stats(shard(pred), shard(gold), shard(mask))
  )
  assert_stats_equal(summed, stats_fn(pred, gold, mask, tolerance=1))


# ---------------------------------------------------------------------------
# Thresholds.
# ---------------------------------------------------------------------------


def test_best_threshold_and_streamed_sweep():
  rng = np.random.default_rng(9)
  _, gold, mask = random_batch(rng, 16, 24, min_len=2)
  # Boundaries get 0.6, others 0.3: any threshold in [0.3, 0.6) is perfect;
  # ties go to the lowest one.
  probs = np.where(gold == 1, 0.6, 0.3).astype(np.float32)
  for metric, perfect in (
      ("pk", 0.0),
      ("window_diff", 0.0),
      ("boundary_f1", 1.0),
      ("complete_segments", 1.0),
      ("macro_f1", 1.0),
  ):
    threshold, score = metrics.best_threshold(probs, gold, mask, metric)
    assert float(threshold) == pytest.approx(0.3) and float(score) == perfect
  sweep = metrics.merge(
      metrics.threshold_sweep_stats(probs[:8], gold[:8], mask[:8]),
      metrics.threshold_sweep_stats(probs[8:], gold[8:], mask[8:]),
  )
  assert sweep.num_documents.shape == (len(metrics.DEFAULT_THRESHOLDS),)
  threshold, score = metrics.select_threshold(sweep, "boundary_f1")
  assert float(threshold) == pytest.approx(0.3) and float(score) == 1.0
  with pytest.raises(ValueError, match="boundary_f1, complete_segments"):
    metrics.best_threshold(probs, gold, mask, "accuracy")
