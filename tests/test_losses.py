"""Tests of segjax.losses against SPEC sections 2-6."""

import logging

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify
from jax.test_util import check_grads

import loss_reference
from segjax import losses

AUX_KEYS_CE = {"loss", "ce", "entropy"}
AUX_KEYS_BOUNDARY = AUX_KEYS_CE | {
    "boundary_ce",
    "consistency",
    "confidence_penalty",
    "boundary_fraction",
}
ALL_TERMS = dict(
    label_smoothing=0.2,
    class_weights=(1.0, 2.5),
    entropy_lambda=0.3,
    boundary_weight=2.5,
    segment_consistency_lambda=0.4,
    conf_penalty_lambda=0.5,
    conf_threshold=0.7,
)


def random_case(
    seed, batch, length, num_classes, *, scale=3.0, pad_fraction=0.3
):
  """Random logits and labels with random padding and one trailing pad run."""
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(batch, length, num_classes)) * scale
  # Runs of equal labels (a new run starts with probability 0.3), so that
  # segments and transitions both occur.
  run_ids = np.cumsum(rng.random((batch, length)) < 0.3, axis=1)
  run_labels = rng.integers(0, num_classes, size=(batch, length + 1))
  labels = np.take_along_axis(run_labels, run_ids, axis=1)
  labels[rng.random((batch, length)) < pad_fraction] = -100
  if length > 2:
    labels[0, -2:] = -100
  return logits.astype(np.float32), labels.astype(np.int32)


def jax_boundary(logits, labels, **kw):
  return losses.boundary_aware_loss(
      jnp.asarray(logits), jnp.asarray(labels), **kw
  )


def jax_ce(logits, labels, **kw):
  return losses.cross_entropy_loss(
      jnp.asarray(logits), jnp.asarray(labels), **kw
  )


def assert_aux_close(aux, ref_aux, rtol=2e-5, atol=2e-5):
  for key, value in ref_aux.items():
    np.testing.assert_allclose(
        float(aux[key]), value, rtol=rtol, atol=atol, err_msg=key
    )


# ----------------------------------------------------------------------------
# Agreement with the float64 NumPy reference.
# ----------------------------------------------------------------------------

hyperparameters = st.fixed_dictionaries(
    {
        "label_smoothing": st.sampled_from([0.0, 0.1, 0.3, 0.6]),
        "entropy_lambda": st.sampled_from([0.0, 0.01, 0.5]),
        "boundary_weight": st.sampled_from([1.0, 1.5, 3.0, 5.0]),
        "boundary_radius": st.sampled_from([0, 1, 2]),
        "segment_consistency_lambda": st.sampled_from([0.0, 0.05, 1.0]),
        "conf_penalty_lambda": st.sampled_from([0.0, 0.02, 1.0]),
        "conf_fraction": st.sampled_from([0.1, 0.5, 0.9]),
        "use_boundary_as_primary": st.booleans(),
        "weighted": st.booleans(),
    }
)


def _boundary_kwargs(params, num_classes, rng):
  params = dict(params)
  low = 1.0 / num_classes
  params["conf_threshold"] = low + params.pop("conf_fraction") * (1.0 - low)
  if params.pop("weighted"):
    params["class_weights"] = tuple(rng.uniform(0.2, 3.0, num_classes))
  return params


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(
    seed=st.integers(0, 2**16),
    shape=st.sampled_from([(1, 1), (1, 7), (3, 16), (2, 33)]),
    num_classes=st.sampled_from([2, 3, 5]),
    pad_fraction=st.sampled_from([0.0, 0.3, 0.9]),
    params=hyperparameters,
)
def test_boundary_aware_matches_reference(
    seed, shape, num_classes, pad_fraction, params
):
  logits, labels = random_case(
      seed, *shape, num_classes, pad_fraction=pad_fraction
  )
  kw = _boundary_kwargs(params, num_classes, np.random.default_rng(seed))
  ref_loss, ref_aux = loss_reference.boundary_aware(logits, labels, **kw)
  loss, aux = jax.jit(lambda a, b: jax_boundary(a, b, **kw))(logits, labels)
  assert loss.dtype == jnp.float32 and loss.shape == ()
  np.testing.assert_allclose(float(loss), ref_loss, rtol=2e-5, atol=2e-5)
  assert_aux_close(aux, ref_aux)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(
    seed=st.integers(0, 2**16),
    shape=st.sampled_from([(1, 1), (3, 16), (2, 33)]),
    num_classes=st.sampled_from([2, 3, 5]),
    pad_fraction=st.sampled_from([0.0, 0.3, 0.9]),
    label_smoothing=st.sampled_from([0.0, 0.1, 0.3]),
    entropy_lambda=st.sampled_from([0.0, 0.01, 0.5]),
    weighted=st.booleans(),
)
def test_cross_entropy_matches_reference(
    seed,
    shape,
    num_classes,
    pad_fraction,
    label_smoothing,
    entropy_lambda,
    weighted,
):
  logits, labels = random_case(
      seed, *shape, num_classes, pad_fraction=pad_fraction
  )
  weights = (
      tuple(np.random.default_rng(seed).uniform(0.2, 3.0, num_classes))
      if weighted
      else None
  )
  kw = dict(
      label_smoothing=label_smoothing,
      entropy_lambda=entropy_lambda,
      class_weights=weights,
  )
  ref_loss, ref_aux = loss_reference.cross_entropy(logits, labels, **kw)
  loss, aux = jax.jit(lambda a, b: jax_ce(a, b, **kw))(logits, labels)
  np.testing.assert_allclose(float(loss), ref_loss, rtol=2e-5, atol=2e-5)
  assert_aux_close(aux, ref_aux)


def test_boundary_positions_by_hand():
  labels = jnp.array([0, 0, 1, 1, 1, 0, -100, 0, 0])
  # Transitions at t=2 (0->1) and t=5 (1->0); t=7 follows padding: none.
  np.testing.assert_array_equal(
      losses.boundary_positions(labels), [0, 1, 1, 0, 1, 1, 0, 0, 0]
  )
  np.testing.assert_array_equal(
      losses.boundary_positions(labels, boundary_radius=1),
      [1, 1, 1, 1, 1, 1, 0, 0, 0],
  )
  for radius in range(4):
    np.testing.assert_array_equal(
        losses.boundary_positions(labels, boundary_radius=radius),
        loss_reference.boundary_mask(np.asarray(labels), radius=radius),
    )


# ----------------------------------------------------------------------------
# PyTorch parity of the legacy CE term (golden values made by
# tools/make_torch_golden.py in a separate environment with torch).
# ----------------------------------------------------------------------------


def _torch_cases():
  import pathlib  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(__file__).parent / "data" / "torch_ce_golden.npz"
  golden = np.load(path)
  for i in range(int(golden["num_cases"])):
    yield {
        k[len(f"case{i}_") :]: golden[k]
        for k in golden.files
        if k.startswith(f"case{i}_")
    }


@pytest.mark.parametrize(
    "case", list(_torch_cases()), ids=lambda c: f"C{c['logits'].shape[-1]}"
)
def test_cross_entropy_matches_torch(case):
  weights = tuple(case["weights"]) if bool(case["has_weights"]) else None
  kw = dict(
      ignore_index=int(case["ignore_index"]),
      label_smoothing=float(case["eps"]),
      class_weights=weights,
  )
  f = lambda x: jax_ce(x, case["labels"], **kw)[0]
  loss, grad = jax.value_and_grad(f)(jnp.asarray(case["logits"]))
  if not np.isfinite(case["loss64"]):
    # torch's mean over zero tokens is NaN; SPEC section 2 asks for 0.
    assert float(loss) == 0.0 and not np.any(grad)
    return
  np.testing.assert_allclose(float(loss), case["loss64"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grad, case["grad64"], rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------
# Identities of SPEC section 4.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("primary", [True, False])
@pytest.mark.parametrize("num_classes", [2, 5])
def test_boundary_aware_reduces_to_cross_entropy(primary, num_classes):
  logits, labels = random_case(3, 4, 40, num_classes)
  common = dict(
      label_smoothing=0.15,
      entropy_lambda=0.2,
      class_weights=tuple(np.linspace(0.5, 2.0, num_classes)),
  )
  ce_loss, ce_aux = jax_ce(logits, labels, **common)
  loss, aux = jax_boundary(
      logits,
      labels,
      boundary_weight=1.0,
      use_boundary_as_primary=primary,
      **common,
  )
  np.testing.assert_allclose(loss, ce_loss, rtol=1e-6)
  np.testing.assert_allclose(aux["boundary_ce"], ce_aux["ce"], rtol=1e-6)


def test_supplementary_term_is_zero_without_boundaries():
  logits, _ = random_case(0, 2, 10, 2)
  labels = np.zeros((2, 10), np.int32)
  loss, aux = jax_boundary(
      logits, labels, boundary_weight=4.0, use_boundary_as_primary=False
  )
  np.testing.assert_allclose(aux["boundary_ce"], aux["ce"], rtol=1e-7)
  assert float(aux["boundary_fraction"]) == 0.0
  np.testing.assert_allclose(loss, aux["ce"], rtol=1e-7)


# ----------------------------------------------------------------------------
# Derivatives: autodiff of the stable forms, in both modes, against finite
# differences and against autodiff of a plain transcription.
# ----------------------------------------------------------------------------


def autodiff_boundary_loss(
    logits,
    labels,
    *,
    ignore_index=-100,
    label_smoothing,
    class_weights,
    entropy_lambda,
    boundary_weight,
    segment_consistency_lambda,
    conf_penalty_lambda,
    conf_threshold,
):
  """A plain jnp transcription (primary strategy, r = 0), differentiated by JAX."""
  num_classes = logits.shape[-1]
  valid = labels != ignore_index
  m = valid.astype(jnp.float32)
  lp = jax.nn.log_softmax(jnp.where(valid[..., None], logits, 0.0))
  p = jnp.exp(lp)
  y = jnp.where(valid, labels, 0)
  w = jnp.asarray(class_weights)
  onehot = jax.nn.one_hot(y, num_classes)
  w_t = w[y] * m
  l = (
      (1 - label_smoothing) * w[y] * -jnp.sum(onehot * lp, -1)
      + label_smoothing / num_classes * jnp.sum(w * -lp, -1)
  ) * m
  b = losses.boundary_positions(labels, ignore_index=ignore_index)
  u = 1 + (boundary_weight - 1) * b
  ce_b = jnp.sum(u * l) / jnp.sum(u * w_t)
  h = -jnp.sum(p * lp, -1)
  entropy = jnp.sum(h * m) / jnp.sum(m)
  q = valid[:, 1:] & valid[:, :-1] & (labels[:, 1:] == labels[:, :-1])
  jumps = 0.5 * jnp.sum(jnp.square(p[:, 1:] - p[:, :-1]), -1)
  consistency = jnp.sum(q * jumps) / jnp.maximum(jnp.sum(q), 1)
  penalty = jnp.sum(jax.nn.relu(jnp.max(p, -1) - conf_threshold) * m) / jnp.sum(
      m
  )
  return (
      ce_b
      - entropy_lambda * entropy
      + segment_consistency_lambda * consistency
      + conf_penalty_lambda * penalty
  )


@pytest.mark.parametrize("num_classes", [2, 5])
def test_consistency_stays_accurate_when_neighbours_agree(num_classes):
  # Inside a segment the probabilities of neighbours nearly agree: a jump
  # taken as |p_t|^2 + |p_{t-1}|^2 - 2 <p_t, p_{t-1}> would lose most of its
  # digits to cancellation (relative error 5e-3 here, commit 4d3208b).
  rng = np.random.default_rng(0)
  length, run = 256, 32
  labels = np.repeat(np.arange(length // run) % num_classes, run)[None]
  labels = np.repeat(labels, 4, axis=0).astype(np.int32)
  segments = rng.normal(size=(4, length // run, num_classes)) * 2.0
  logits = (
      np.repeat(segments, run, axis=1)
      + 1e-3 * rng.normal(size=(4, length, num_classes))
  ).astype(np.float32)
  kw = dict(label_smoothing=0.1, segment_consistency_lambda=1.0)
  _, aux = jax_boundary(logits, labels, **kw)
  _, ref_aux = loss_reference.boundary_aware(
      logits.astype(np.float64), labels, **kw
  )
  assert ref_aux["consistency"] < 1e-6  # the regime this test is about
  np.testing.assert_allclose(
      float(aux["consistency"]), ref_aux["consistency"], rtol=1e-4
  )


@pytest.mark.parametrize("num_classes", [2, 3, 5])
def test_gradient_matches_autodiff_of_plain_transcription(num_classes):
  logits, labels = random_case(7, 3, 24, num_classes)
  kw = dict(
      ALL_TERMS,
      class_weights=tuple(np.linspace(1, 2, num_classes)),
      conf_threshold=0.6,
  )
  ours = jax.grad(lambda x: jax_boundary(x, labels, **kw)[0])(logits)
  plain = jax.grad(
      lambda x: autodiff_boundary_loss(x, jnp.asarray(labels), **kw)
  )(jnp.asarray(logits))
  np.testing.assert_allclose(ours, plain, rtol=1e-4, atol=1e-7)


FLOAT64_LOSSES = ["ce", "boundary_primary", "boundary_supplementary"]


def float64_case(num_classes, loss_name, seed=11):
  """Small logits and one loss of them (every term on) for float64 checks."""
  logits, labels = random_case(seed, 2, 9, num_classes, scale=2.0)
  kw = dict(
      ALL_TERMS,
      class_weights=tuple(np.linspace(1, 2, num_classes)),
      conf_threshold=0.6,
      boundary_radius=1,
      use_boundary_as_primary=loss_name == "boundary_primary",
  )
  if loss_name == "ce":
    ce_kw = {
        k: kw[k] for k in ("label_smoothing", "class_weights", "entropy_lambda")
    }
    return logits, lambda v: jax_ce(v, labels, **ce_kw)[0]
  return logits, lambda v: jax_boundary(v, labels, **kw)[0]


@pytest.mark.parametrize("loss_name", FLOAT64_LOSSES)
@pytest.mark.parametrize("num_classes", [2, 5])
def test_derivatives_match_finite_differences_float64(loss_name, num_classes):
  logits, fn = float64_case(num_classes, loss_name)
  with jax.enable_x64(True):
    check_grads(
        jax.jit(fn),
        (jnp.asarray(logits, jnp.float64),),
        order=2,
        modes=["fwd", "rev"],
        eps=1e-6,
        atol=1e-6,
        rtol=1e-6,
    )


@pytest.mark.parametrize("loss_name", FLOAT64_LOSSES)
@pytest.mark.parametrize("num_classes", [2, 3, 5])
def test_jvp_and_hessian_vector_product_match_finite_differences(
    loss_name, num_classes
):
  logits, fn = float64_case(num_classes, loss_name, seed=13)
  h = 1e-5
  with jax.enable_x64(True):
    x = jnp.asarray(logits, jnp.float64)
    v = jnp.asarray(np.random.default_rng(1).normal(size=x.shape))
    fn, grad = jax.jit(fn), jax.jit(jax.grad(fn))
    _, tangent = jax.jit(lambda a, b: jax.jvp(fn, (a,), (b,)))(x, v)
    central = (fn(x + h * v) - fn(x - h * v)) / (2 * h)
    np.testing.assert_allclose(tangent, central, rtol=1e-8, atol=1e-10)
    # Hessian-vector product: forward mode over reverse mode.
    _, hvp = jax.jit(lambda a, b: jax.jvp(grad, (a,), (b,)))(x, v)
    central = (grad(x + h * v) - grad(x - h * v)) / (2 * h)
    np.testing.assert_allclose(hvp, central, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("magnitude", [1.0, 1e4, 1e30])
def test_two_classes_through_the_logit_difference_equal_the_log_softmax(
    magnitude,
):
  logits, labels = random_case(6, 3, 20, 2)
  logits = jnp.asarray(logits * np.float32(magnitude))
  valid = labels != -100
  target = jnp.where(valid, labels, 0)
  kw = dict(label_smoothing=0.2, class_weights=jnp.array([1.0, 2.5]))

  def terms(fn, x):
    return fn(x, target, valid, **kw)

  binary = terms(losses.binary_token_terms, logits)
  general = terms(losses.token_terms, logits)
  for name, b, g in zip(binary._fields, binary, general):
    np.testing.assert_allclose(b, g, rtol=1e-5, atol=1e-6, err_msg=name)
  for index in range(len(binary)):
    # Every term's gradient, through sigmoid versus through log_softmax.
    b, g = (
        jax.grad(lambda x, fn=fn: jnp.sum(terms(fn, x)[index] * valid))(logits)
        for fn in (losses.binary_token_terms, losses.token_terms)
    )
    np.testing.assert_allclose(
        b, g, rtol=1e-4, atol=1e-6, err_msg=binary._fields[index]
    )


# ----------------------------------------------------------------------------
# Numerical contract of SPEC section 5.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("garbage", [np.nan, np.inf, -np.inf, 1e30])
@pytest.mark.parametrize("loss_name", ["ce", "boundary"])
def test_ignored_positions_never_matter(garbage, loss_name):
  logits, labels = random_case(5, 3, 20, 3)
  ignored = labels == -100
  dirty = np.where(ignored[..., None], np.float32(garbage), logits)
  fn = (
      (lambda x: jax_ce(x, labels, label_smoothing=0.1, entropy_lambda=0.2)[0])
      if loss_name == "ce"
      else (
          lambda x: jax_boundary(
              x, labels, **dict(ALL_TERMS, class_weights=None)
          )[0]
      )
  )
  clean_loss, clean_grad = jax.value_and_grad(fn)(jnp.asarray(logits))
  dirty_loss, dirty_grad = jax.value_and_grad(fn)(jnp.asarray(dirty))
  assert float(dirty_loss) == float(clean_loss)
  np.testing.assert_array_equal(dirty_grad, clean_grad)
  assert not np.any(np.asarray(dirty_grad)[ignored])


@pytest.mark.parametrize("magnitude", [1e4, 1e30])
def test_extreme_finite_logits_give_finite_loss_and_gradient(magnitude):
  logits, labels = random_case(2, 2, 16, 2, pad_fraction=0.0)
  logits = np.sign(logits) * np.float32(magnitude)
  for fn in (
      lambda x: jax_ce(x, labels, label_smoothing=0.1, entropy_lambda=0.1)[0],
      lambda x: jax_boundary(
          x, labels, **dict(ALL_TERMS, class_weights=(1.0, 2.0))
      )[0],
  ):
    loss, grad = jax.value_and_grad(fn)(jnp.asarray(logits))
    assert np.isfinite(loss) and np.all(np.isfinite(grad))


@pytest.mark.parametrize("num_classes", [2, 3, 5])
@pytest.mark.parametrize("magnitude", [1e4, 1e30])
def test_extreme_logits_give_exact_loss_and_gradient(num_classes, magnitude):
  # Finite is not enough: a log-softmax formed as x - logsumexp(x) cancels at
  # these magnitudes and still returns finite (wrong) numbers.
  logits, labels = random_case(4, 3, 24, num_classes)
  logits = jnp.asarray(logits * np.float32(magnitude))
  kw = dict(
      ALL_TERMS,
      class_weights=tuple(np.linspace(1, 2, num_classes)),
      conf_threshold=0.6,
  )
  ours_loss, ours = jax.value_and_grad(
      lambda x: jax_boundary(x, labels, **kw)[0]
  )(logits)
  plain_loss, plain = jax.value_and_grad(
      lambda x: autodiff_boundary_loss(x, jnp.asarray(labels), **kw)
  )(logits)
  np.testing.assert_allclose(ours_loss, plain_loss, rtol=1e-6)
  np.testing.assert_allclose(
      ours, plain, rtol=1e-4, atol=1e-6 * float(jnp.max(jnp.abs(plain)))
  )


@pytest.mark.parametrize("loss_name", ["ce", "boundary"])
def test_all_padding_gives_zero_and_zero_gradient(loss_name):
  logits = jnp.ones((2, 5, 2))
  labels = jnp.full((2, 5), -100)
  fn = (
      (lambda x: jax_ce(x, labels, entropy_lambda=0.5)[0])
      if loss_name == "ce"
      else (
          lambda x: jax_boundary(
              x, labels, **dict(ALL_TERMS, class_weights=None)
          )[0]
      )
  )
  loss, grad = jax.value_and_grad(fn)(logits)
  assert float(loss) == 0.0 and not np.any(grad)


def test_bfloat16_logits_are_upcast():
  logits, labels = random_case(4, 2, 30, 2)
  low = jnp.asarray(logits, jnp.bfloat16)
  kw = dict(ALL_TERMS, class_weights=None)
  loss, aux = jax_boundary(low, labels, **kw)
  assert loss.dtype == jnp.float32
  assert all(v.dtype == jnp.float32 for v in aux.values())
  ref, _ = jax_boundary(low.astype(jnp.float32), labels, **kw)
  np.testing.assert_allclose(loss, ref, rtol=1e-6)
  grad = jax.grad(lambda x: jax_boundary(x, labels, **kw)[0])(low)
  assert grad.dtype == jnp.bfloat16 and np.all(np.isfinite(grad))


# ----------------------------------------------------------------------------
# Purity and batching.
# ----------------------------------------------------------------------------


def test_unbatched_sequence_equals_batch_of_one():
  logits, labels = random_case(9, 1, 25, 3)
  kw = dict(ALL_TERMS, class_weights=None)
  single, _ = jax_boundary(logits[0], labels[0], **kw)
  batched, _ = jax_boundary(logits, labels, **kw)
  np.testing.assert_allclose(single, batched, rtol=1e-6)


def test_vmap_over_independent_batches():
  logits, labels = random_case(10, 6, 12, 2)
  kw = dict(ALL_TERMS, class_weights=None)
  stacked = jax.vmap(lambda a, b: jax_boundary(a, b, **kw)[0])(
      logits.reshape(3, 2, 12, 2), labels.reshape(3, 2, 12)
  )
  for i in range(3):
    expected, _ = jax_boundary(
        logits[2 * i : 2 * i + 2], labels[2 * i : 2 * i + 2], **kw
    )
    np.testing.assert_allclose(stacked[i], expected, rtol=1e-6)


@pytest.mark.parametrize("num_classes", [2, 5])
@pytest.mark.parametrize("primary", [True, False])
def test_batch_is_one_pool_of_tokens(num_classes, primary):
  # Every mean is over the tokens of the whole batch: two rows give the loss
  # of one row holding both, apart by enough ignored tokens that no
  # transition, pair or boundary window reaches across.
  logits, labels = random_case(12, 2, 18, num_classes)
  kw = dict(
      ALL_TERMS,
      class_weights=tuple(1.0 + c for c in range(num_classes)),
      conf_threshold=0.6,
      boundary_radius=1,
      use_boundary_as_primary=primary,
  )
  gap = 4
  joined_logits = np.concatenate(
      [logits[0], np.full((gap, num_classes), np.nan, np.float32), logits[1]]
  )
  joined_labels = np.concatenate(
      [labels[0], np.full(gap, -100, np.int32), labels[1]]
  )
  loss, aux = jax_boundary(logits, labels, **kw)
  joined_loss, joined_aux = jax_boundary(joined_logits, joined_labels, **kw)
  np.testing.assert_allclose(joined_loss, loss, rtol=1e-6)
  for key in aux:
    np.testing.assert_allclose(
        joined_aux[key], aux[key], rtol=1e-6, err_msg=key
    )


@pytest.mark.parametrize("num_classes", [2, 5])
def test_pmap_with_uneven_padding_equals_single_device(num_classes):
  devices = jax.local_devices()
  assert len(devices) >= 4, "tests/conftest.py forces 4 CPU devices"
  num_devices, per_device, length, features = 4, 2, 15, 6
  rng = np.random.default_rng(0)
  inputs = rng.normal(size=(num_devices * per_device, length, features))
  labels = rng.integers(0, num_classes, size=(num_devices * per_device, length))
  labels[0, 3:] = -100  # device 0: mostly padding
  labels[2:4] = -100  # device 1: nothing but padding
  labels[7, 10:] = -100
  weights = jnp.asarray(rng.normal(size=(features, num_classes)), jnp.float32)
  kw = dict(ALL_TERMS, class_weights=None)

  def loss_of(w, x, y, axis_name=None):
    return jax_boundary(x @ w, y, axis_name=axis_name, **kw)

  (loss, aux), grad = jax.value_and_grad(loss_of, has_aux=True)(
      weights, jnp.asarray(inputs, jnp.float32), labels
  )

  def device_step(w, x, y):
    (l, a), g = jax.value_and_grad(loss_of, has_aux=True)(w, x, y, "batch")
    # The train step's idiom: the loss psums its sums, gradients are pmeaned.
    return l, a, jax.lax.pmean(g, "batch")

  shard = lambda a: a.reshape(num_devices, per_device, *a.shape[1:])
  p_loss, p_aux, p_grad = jax.pmap(
      device_step, axis_name="batch", in_axes=(None, 0, 0)
  )(weights, shard(jnp.asarray(inputs, jnp.float32)), shard(labels))
  np.testing.assert_allclose(p_loss, np.full(num_devices, loss), rtol=1e-5)
  for key in aux:
    np.testing.assert_allclose(p_aux[key][0], aux[key], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(p_grad[0], grad, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(p_grad[3], grad, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------
# Input checks and configuration.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "logits_shape, labels_shape, dtype, label_dtype, match",
    [
        ((2, 3), (2, 3), jnp.float32, jnp.int32, "labels"),
        ((2, 3, 2), (2, 4), jnp.float32, jnp.int32, "labels.*shape"),
        ((5,), (5,), jnp.float32, jnp.int32, "logits"),
        ((2, 3, 2), (2, 3), jnp.float32, jnp.float32, "labels.*integer"),
        ((2, 3, 2), (2, 3), jnp.int32, jnp.int32, "logits.*floating"),
    ],
)
def test_bad_inputs_name_the_argument(
    logits_shape, labels_shape, dtype, label_dtype, match
):
  with pytest.raises((AssertionError, TypeError, ValueError), match=match):
    losses.boundary_aware_loss(
        jnp.zeros(logits_shape, dtype), jnp.zeros(labels_shape, label_dtype)
    )


def boundary_config(**overrides):
  cfg = {
      "type": "boundary_aware",
      "num_classes": 2,
      "ignore_index": -100,
      "label_smoothing": 0.2,
      "class_weights": None,
      "entropy_lambda": 0.01,
      "boundary_weight": 2.0,
      "boundary_radius": 0,
      "segment_consistency_lambda": 0.05,
      "conf_penalty_lambda": 0.01,
      "conf_threshold": 0.95,
      "use_boundary_as_primary": True,
  }
  cfg.update(overrides)
  return cfg


def test_create_loss_builds_the_configured_function():
  logits, labels = random_case(1, 2, 12, 2)
  fn = jax.jit(losses.create_loss(boundary_config()))
  loss, aux = fn(logits, labels)
  expected, _ = jax_boundary(
      logits,
      labels,
      **{
          k: v
          for k, v in boundary_config().items()
          if k not in ("type", "num_classes")
      },
  )
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  assert set(aux) == AUX_KEYS_BOUNDARY


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"type": "focal"}, "loss.type='focal'.*boundary_aware, cross_entropy"),
        ({"label_smoothing": 1.0}, "loss.label_smoothing=1.0"),
        ({"label_smoothing": -0.1}, "loss.label_smoothing=-0.1"),
        ({"entropy_lambda": -1.0}, "loss.entropy_lambda=-1.0"),
        (
            {"segment_consistency_lambda": -0.5},
            "loss.segment_consistency_lambda",
        ),
        ({"conf_penalty_lambda": -0.5}, "loss.conf_penalty_lambda=-0.5"),
        ({"boundary_weight": 0.5}, "loss.boundary_weight=0.5"),
        ({"boundary_radius": -1}, "loss.boundary_radius=-1"),
        ({"conf_threshold": 0.5}, "loss.conf_threshold=0.5"),
        ({"conf_threshold": 1.0}, "loss.conf_threshold=1.0"),
        ({"class_weights": (1.0, -2.0)}, "loss.class_weights"),
        (
            {"class_weights": (1.0, 2.0, 3.0)},
            "loss.class_weights.*num_classes=2",
        ),
        ({"ignore_index": 1}, "loss.ignore_index=1"),
        ({"num_classes": 1}, "loss.num_classes=1"),
        ({"focal_gamma": 2.0}, "loss.focal_gamma"),
    ],
)
def test_invalid_config_values_name_key_and_value(overrides, match):
  with pytest.raises(losses.LossConfigError, match=match):
    losses.create_loss(boundary_config(**overrides))


def test_boundary_key_given_to_legacy_loss_is_an_error():
  cfg = {
      "type": "cross_entropy",
      "num_classes": 2,
      "ignore_index": -100,
      "label_smoothing": 0.1,
      "class_weights": None,
      "entropy_lambda": 0.0,
      "boundary_weight": 2.0,
  }
  with pytest.raises(losses.LossConfigError, match="loss.boundary_weight"):
    losses.create_loss(cfg)


def test_missing_key_is_an_error():
  cfg = boundary_config()
  del cfg["conf_threshold"]
  with pytest.raises(losses.LossConfigError, match="loss.conf_threshold"):
    losses.create_loss(cfg)


def test_values_outside_recommended_ranges_warn_and_proceed(caplog):
  with caplog.at_level(logging.WARNING):
    fn = losses.create_loss(
        boundary_config(boundary_weight=8.0, label_smoothing=0.5)
    )
  assert "loss.boundary_weight=8.0 is outside" in caplog.text
  assert "loss.label_smoothing=0.5 is outside" in caplog.text
  logits, labels = random_case(0, 1, 5, 2)
  assert np.isfinite(fn(logits, labels)[0])


def test_debug_checks_catch_bad_labels_and_non_finite_loss():
  fn = losses.create_loss(boundary_config(), debug_checks=True)
  logits, labels = random_case(0, 2, 6, 2, pad_fraction=0.0)
  loss, _ = fn(logits, labels)
  assert np.isfinite(loss)
  with pytest.raises(checkify.JaxRuntimeError, match="outside"):
    fn(logits, np.where(labels == 0, 7, labels))
  with pytest.raises(checkify.JaxRuntimeError, match="not finite"):
    fn(np.full_like(logits, np.nan), labels)
