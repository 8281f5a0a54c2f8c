"""Segmentation losses: the legacy cross-entropy and the boundary-aware cross-entropy.

Both losses follow `SPEC.md` sections 2-5 exactly. Notation for one sequence
(`m` valid mask, `lp` float32 log-softmax, `w` class weights, `eps` label
smoothing, `C` classes):

    l_t = (1 - eps) * w[y_t] * (-lp_t[y_t]) + (eps / C) * sum_c w_c * (-lp_t[c])

which is PyTorch's per-token `cross_entropy(weight=w, label_smoothing=eps)`.

Every mean is over the valid tokens of the whole (global) batch: each loss
computes per-token terms, then a per-sequence function turns a sequence's
terms into (numerator, denominator) pairs, vmapped over the batch; the pairs
are summed, `psum`-ed over `axis_name` when
given, and divided once. A batch without a valid token gives 0 and zero
gradients.

Layout: the class axis is minor and tiny (C = 2 for boundaries), and XLA:CPU
vectorises reductions over it poorly, so no op reduces over it: per-token
quantities are sums over the C class planes `x[:, c]` written out with a
Python loop over the static C. Two classes go through the logit difference
(one plane, sigmoid), per sequence. For C > 2 the tokens of all sequences are
flattened to [N, C] and `exp(x - max)` is evaluated once per (token, class);
every per-token quantity is read from it, and the analytic backward pass
folds everything that does not depend on the class into per-token
coefficients and writes the [N, C] gradient in one elementwise pass whose
neighbour reads are gathers (neighbours never cross a sequence: the
coefficients that reach across are zero). Differences are taken on shifted
logits `x - max`, so that logits of any magnitude (1e30 included) give exact
losses and gradients.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
from absl import logging
from jax.experimental import checkify

LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
Pairs = dict[str, tuple[jax.Array, jax.Array]]

_TINY = float(jnp.finfo(jnp.float32).tiny)


# ----------------------------------------------------------------------------
# Per-token quantities.
# ----------------------------------------------------------------------------


class _Smoothing(NamedTuple):
  """Static hyperparameters of the per-token terms (hashable, for custom_vjp)."""

  label_smoothing: float
  class_weights: tuple[float, ...]
  conf_threshold: float
  # The legacy loss needs neither over-confidence nor jumps: skip their work.
  with_boundary_terms: bool
  # For C > 2 the tokens arrive flattened over the batch; no jump crosses
  # this length.
  sequence_length: int


class _TokenTerms(NamedTuple):
  """Per-token float32 terms, finite everywhere.

  `ce`, `entropy` and `overconfidence` are 0 at ignored positions; `jump` is
  meaningful only where t - 1 and t are both valid (t >= 1), and callers
  mask it.
  """

  ce: jax.Array  # l_t, [T]
  entropy: jax.Array  # H_t, [T]
  overconfidence: jax.Array  # relu(max_c p_t[c] - conf_threshold), [T]
  jump: jax.Array  # 0.5 ||p_t - p_{t-1}||^2 for t >= 1, [T]


def _broadcast_tokens(values: jax.Array, shape) -> jax.Array:
  """[T] -> [T, C] as one broadcast (a reshape first would split XLA's CSE)."""
  return jax.lax.broadcast_in_dim(values, shape, (0,))


def _previous(values: jax.Array) -> jax.Array:
  """values[t - 1] at t along the leading axis, 0 at t = 0."""
  return jnp.pad(values[:-1], [(1, 0)] + [(0, 0)] * (values.ndim - 1))


def _following(values: jax.Array) -> jax.Array:
  """values[t + 1] at t along the leading axis, 0 at the last position."""
  return jnp.pad(values[1:], [(0, 1)] + [(0, 0)] * (values.ndim - 1))


def _target_weight(target: jax.Array, weights: Sequence[float]) -> jax.Array:
  """w[y_t] as a select chain (a gather over a size-C axis is slow on CPU)."""
  return sum(jnp.where(target == c, w, 0.0) for c, w in enumerate(weights))


def _class_mask(valid: jax.Array, shape) -> jax.Array:
  """[N] validity as the [N, C] predicate `class < (C if valid else 0)`.

  A select on the class index keeps the kernel vectorised on XLA:CPU; a
  select on a broadcast per-token predicate does not
  (`tools/bench_xla_patterns.py`).
  """
  limit = jnp.where(valid, shape[-1], 0)
  classes = jax.lax.broadcasted_iota(jnp.int32, shape, 1)
  return classes < _broadcast_tokens(limit, shape)


def _neighbour(values: jax.Array, offset: int, *, wrap: bool = False):
  """values[n + offset] along the leading axis, for offset -1 or 1.

  A gather with constant indices instead of a pad: XLA:CPU fuses it as a
  plain load, where a pad puts a branch in the inner loop and the kernel
  stops vectorising. The one out-of-range row is clipped, or wrapped around
  (callers multiply it by 0). The two kernels that read the previous
  token's exps differ in `wrap`: their index constants then differ and each
  fuses its own gather, where a shared gather would be stored as one more
  [N, C] buffer. `tools/bench_xla_patterns.py` measures both choices.
  """
  length = values.shape[0]
  index = jnp.arange(length) + offset
  if wrap:
    index = jax.lax.rem(index + length, length)
  else:
    index = jnp.clip(index, 0, length - 1)
  return jnp.take(values, index, axis=0, mode="clip")


def _after_sequence_start(length: int, sequence_length: int, dtype):
  """1.0 where token n has a predecessor in its sequence, else 0.0, [N]."""
  return (jax.lax.rem(jnp.arange(length), sequence_length) != 0).astype(dtype)


def _softmax_parts(logits: jax.Array, valid: jax.Array):
  """float32 logits, their class planes, the max, exp(x - max), log sum exp.

  `exp(x - max)` is the only transcendental evaluated per (token, class):
  it is materialised once, 0 at ignored tokens (which may hold NaN), and
  every later quantity reads it. Its sum is >= 1 at valid tokens (the top
  class contributes exp(0)) and is taken as 1 at ignored ones.
  """
  # bf16/fp16 are upcast to float32; float64 (gradient checks) is kept.
  x = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  planes = [x[:, c] for c in range(x.shape[-1])]
  top = functools.reduce(jnp.maximum, planes)
  exps = jnp.where(
      _class_mask(valid, x.shape),
      jnp.exp(x - _broadcast_tokens(top, x.shape)),
      0.0,
  )
  log_sum = jnp.log(_class_sum(exps))
  return x, planes, top, exps, log_sum


def _class_sum(exps: jax.Array) -> jax.Array:
  """sum_c exps[:, c], at least 1."""
  total = functools.reduce(jnp.add, [exps[:, c] for c in range(exps.shape[-1])])
  return jnp.maximum(total, 1.0)


def _jumps(exps: jax.Array) -> jax.Array:
  """0.5 |p_n - p_{n-1}|^2 per token, [N] (0 at n = 0).

  From differences of probabilities, so that it stays accurate when
  neighbours agree. The neighbours are slices (no branch, no gather); the
  result is one quotient by the sums: XLA never duplicates a divide into
  its consumers, so it is computed once and stored as [N] instead of being
  recomputed from the [N, C] exps by every consumer.
  """
  later, earlier = exps[1:], exps[:-1]
  total, total_before = _class_sum(later), _class_sum(earlier)
  steps = [
      later[:, c] * total_before - earlier[:, c] * total
      for c in range(exps.shape[-1])
  ]
  jumps = (
      0.5
      * sum(jnp.square(step) for step in steps)
      / jnp.square(total * total_before)
  )
  return jnp.pad(jumps, (1, 0))


def _prob_products(exps: jax.Array):
  """|p_n|^2 and <p_n, p_{n-1}> per token, [N] each (the latter any at n = 0).

  Quotients by the sums, like `_jumps`. The backward pass takes <g, p> from
  these; their cancellation when neighbours agree costs a few float32 ulps
  of 1, far below the CE part of the same gradient.
  """
  num_classes = exps.shape[-1]
  before = _neighbour(exps, -1)
  total = _class_sum(exps)
  square = sum(jnp.square(exps[:, c]) for c in range(num_classes)) / jnp.square(
      total
  )
  cross = sum(exps[:, c] * before[:, c] for c in range(num_classes)) / (
      total * _class_sum(before)
  )
  return square, cross


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _token_terms(
    logits: jax.Array, labels: jax.Array, ignore_index: int, hp: _Smoothing
) -> _TokenTerms:
  """Per-token CE, entropy, over-confidence and jumps of [N, C] tokens."""
  terms, _ = _token_terms_fwd(logits, labels, ignore_index, hp)
  return terms


def _token_terms_fwd(logits, labels, ignore_index, hp):
  num_classes = logits.shape[-1]
  eps, weights = hp.label_smoothing, hp.class_weights
  valid = labels != ignore_index
  target = jnp.where(valid, labels, 0)
  x, planes, top, exps, log_sum = _softmax_parts(logits, valid)
  inv_sum = jnp.exp(-log_sum)  # also the top probability
  # Log-softmax is (x - max) - log_sum: built from shifted logits it stays
  # exact for logits of any magnitude (x - log_sum_exp would cancel).
  shifted = [xc - top for xc in planes]
  target_shifted = sum(
      jnp.where(target == c, sc, 0.0) for c, sc in enumerate(shifted)
  )
  ce = (1.0 - eps) * _target_weight(target, weights) * (
      log_sum - target_shifted
  ) + (eps / num_classes) * (
      sum(weights) * log_sum - sum(w * sc for w, sc in zip(weights, shifted))
  )
  entropy = log_sum - inv_sum * sum(
      exps[:, c] * sc for c, sc in enumerate(shifted)
  )
  if hp.with_boundary_terms:
    overconfidence = jax.nn.relu(inv_sum - hp.conf_threshold)
    # 0 at sequence starts: no jump crosses sequences of the flattened batch
    # (this select also keeps the jump kernel vectorised on XLA:CPU).
    jump = _after_sequence_start(
        x.shape[0], hp.sequence_length, x.dtype
    ) * _jumps(exps)
  else:
    overconfidence = jnp.zeros_like(ce)
    jump = jnp.zeros_like(ce)
  # Ignored positions may hold garbage: select, never multiply, them away.
  terms = _TokenTerms(
      jnp.where(valid, ce, 0.0),
      jnp.where(valid, entropy, 0.0),
      jnp.where(valid, overconfidence, 0.0),
      jump,
  )
  return terms, (logits, labels, terms.entropy)


def _token_terms_bwd(ignore_index, hp, residuals, cotangents):
  """Analytic VJP in the [N, C] layout, from per-token coefficients.

  With softmax p, log-softmax lp, entropy H, top probability top and
  e = exp(x - max), p = e / sum e, for logit j:
    dl/dx_j   = (1 - eps) w_y (p_j - [j = y]) + (eps / C) (sum_c w_c p_j - w_j)
    dH/dx_j   = -p_j (lp_j + H)
    dtop/dx_j = top ([j = argmax] - p_j)
  and a cotangent g on the probabilities pulls back to p_j (g_j - <g, p>),
  where the jumps give g_n = G_n (p_n - p_{n-1}) - G_{n+1} (p_{n+1} - p_n)
  (G is 0 where a jump would cross a sequence start). So the gradient is
    e_j (a_n - b_n x_j + s_n e_j + u_n e_{n-1,j} + v_n e_{n+1,j}) + rest_nj
  with per-token a, b, s, u, v, and rest the one-hot and class-weight terms.
  """
  logits, labels, entropy = residuals
  g_ce, g_entropy, g_over, g_jump = cotangents
  shape = logits.shape
  length, num_classes = shape
  eps, weights = hp.label_smoothing, hp.class_weights
  valid = labels != ignore_index
  target = jnp.where(valid, labels, 0)
  # Recomputed rather than saved: under one jit XLA shares them with the
  # forward pass, and extra residuals would keep more buffers alive at the
  # gradient pass (the 32 MiB scratch limit in BENCHMARKS.md).
  x, planes, top, exps, log_sum = _softmax_parts(logits, valid)
  inv_sum = jnp.exp(-log_sum)
  tokens = functools.partial(_broadcast_tokens, shape=shape)
  g_ce_target = g_ce * (1.0 - eps) * _target_weight(target, weights)
  g_ce_smooth = g_ce * (eps / num_classes)
  # -g_H p_j (lp_j + H) = -g_H p_j (x_j - max) + g_H p_j (log sum_exp - H)
  coefficient = (
      g_ce_target + g_ce_smooth * sum(weights) + g_entropy * (log_sum - entropy)
  )
  classes = jax.lax.broadcasted_iota(jnp.int32, shape, 1)
  rest = -tokens(g_ce_target) * (classes == tokens(target)) - tokens(
      g_ce_smooth
  ) * jnp.asarray(weights, x.dtype)
  per_exp = -tokens(g_entropy * inv_sum) * (x - tokens(top))
  if hp.with_boundary_terms:
    g_top = jnp.where(inv_sum > hp.conf_threshold, g_over * inv_sum, 0.0)
    # First maximal class, matching jnp.argmax on ties.
    argmax = jnp.full(top.shape, num_classes - 1, jnp.int32)
    for c in reversed(range(num_classes - 1)):
      argmax = jnp.where(planes[c] == top, c, argmax)
    g_pair = g_jump * _after_sequence_start(length, hp.sequence_length, x.dtype)
    g_next = _following(g_pair)
    square, cross = _prob_products(exps)
    # <g, p>_n = G_n (|p_n|^2 - <p_n, p_{n-1}>) - G_{n+1} (<p_{n+1}, p_n> - |p_n|^2)
    g_dot_p = g_pair * (square - cross) - g_next * (_following(cross) - square)
    coefficient = coefficient - g_top - g_dot_p
    rest = rest + tokens(g_top) * (classes == tokens(argmax))
    # p_j g_j = e_j (s e_j + u e_{n-1,j} + v e_{n+1,j})
    per_exp = (
        per_exp
        + tokens((g_pair + g_next) * inv_sum * inv_sum) * exps
        - tokens(g_pair * inv_sum * _previous(inv_sum))
        * _neighbour(exps, -1, wrap=True)
        - tokens(g_next * inv_sum * _following(inv_sum))
        * _neighbour(exps, 1, wrap=True)
    )
  grad = exps * (tokens(coefficient * inv_sum) + per_exp) + rest
  grad = jnp.where(_class_mask(valid, shape), grad, 0.0)
  return grad.astype(logits.dtype), None


_token_terms.defvjp(_token_terms_fwd, _token_terms_bwd)


# Two classes (the boundary case) depend on the logit difference d = x1 - x0
# only: one plane instead of two, sigmoid instead of softmax, and a backward
# pass that is a single elementwise expression in d.


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _binary_token_terms(
    logits: jax.Array, labels: jax.Array, ignore_index: int, hp: _Smoothing
) -> _TokenTerms:
  """`_token_terms` for C = 2, through the logit difference."""
  terms, _ = _binary_token_terms_fwd(logits, labels, ignore_index, hp)
  return terms


def _binary_parts(difference):
  """Log-probabilities, probabilities and top probability of sigmoid(d)."""
  magnitude = jnp.abs(difference)
  small = jnp.exp(-magnitude)  # in (0, 1]: no overflow for any d
  log1p_small = jnp.log1p(small)
  top = 1.0 / (1.0 + small)  # sigmoid(|d|), the larger probability
  low = small * top  # the smaller probability
  positive = difference > 0
  log_p1 = -(jnp.maximum(-difference, 0.0) + log1p_small)
  log_p0 = -(jnp.maximum(difference, 0.0) + log1p_small)
  p1 = jnp.where(positive, top, low)
  p0 = jnp.where(positive, low, top)
  return log_p0, log_p1, p0, p1, top, positive


def _binary_token_terms_fwd(logits, labels, ignore_index, hp):
  valid = labels != ignore_index
  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  difference = jnp.where(
      valid, logits[:, 1].astype(dtype) - logits[:, 0].astype(dtype), 0.0
  )
  is_one = valid & (labels == 1)
  log_p0, log_p1, p0, p1, top, _ = _binary_parts(difference)
  eps, (w0, w1) = hp.label_smoothing, hp.class_weights
  ce = (1.0 - eps) * jnp.where(is_one, -w1 * log_p1, -w0 * log_p0) - (
      eps / 2.0
  ) * (w0 * log_p0 + w1 * log_p1)
  entropy = -(p0 * log_p0 + p1 * log_p1)
  if hp.with_boundary_terms:
    overconfidence = jax.nn.relu(top - hp.conf_threshold)
    # 0.5 ||p_t - p_{t-1}||^2 with p0 = 1 - p1.
    jump = jnp.square(p1 - _previous(p1))
  else:
    overconfidence, jump = jnp.zeros_like(ce), jnp.zeros_like(ce)
  residuals = (difference, valid, is_one, jnp.zeros((0,), logits.dtype))
  terms = _TokenTerms(
      jnp.where(valid, ce, 0.0),
      jnp.where(valid, entropy, 0.0),
      jnp.where(valid, overconfidence, 0.0),
      jump,
  )
  return terms, residuals


def _binary_token_terms_bwd(ignore_index, hp, residuals, cotangents):
  """Closed-form d/dd of each term (then dx1 = g, dx0 = -g).

    d(-log p_y)/dd = p1 - [y = 1]        dH/dd = -p0 p1 d
    dtop/dd = sign(d) p0 p1              dp1/dd = p0 p1
  (at d = 0 the top class is class 0, as jnp.argmax breaks ties).
  """
  del ignore_index
  difference, valid, is_one, dtype_of = residuals
  g_ce, g_entropy, g_over, g_jump = cotangents
  _, _, p0, p1, top, positive = _binary_parts(difference)
  eps, (w0, w1) = hp.label_smoothing, hp.class_weights
  slope = p0 * p1
  grad = g_ce * (
      (1.0 - eps) * jnp.where(is_one, w1, w0) * (p1 - is_one)
      + (eps / 2.0) * (w0 * p1 - w1 * p0)
  )
  grad = grad - g_entropy * slope * difference
  if hp.with_boundary_terms:
    g_top = jnp.where(top > hp.conf_threshold, g_over, 0.0)
    pull = 2.0 * g_jump * (p1 - _previous(p1))
    g_p1 = pull - _following(pull)
    grad = grad + slope * (jnp.where(positive, g_top, -g_top) + g_p1)
  grad = jnp.where(valid, grad, 0.0).astype(dtype_of.dtype)
  return jnp.stack([-grad, grad], axis=-1), None


_binary_token_terms.defvjp(_binary_token_terms_fwd, _binary_token_terms_bwd)


def _same_label_pairs(labels: jax.Array, valid: jax.Array):
  """(transition, same) masks over t >= 1 for adjacent valid pairs, shape [T-1]."""
  both_valid = valid[..., 1:] & valid[..., :-1]
  changed = labels[..., 1:] != labels[..., :-1]
  return both_valid & changed, both_valid & ~changed


def boundary_positions(
    labels: jax.Array, *, ignore_index: int = -100, boundary_radius: int = 0
) -> jax.Array:
  """Boundary mask `b_t` of SPEC section 2 for labels [..., T] (bool).

  `b_t = m_t & OR_{s in [t - r, t + 1 + r]} tr_s`, where `tr_s` marks a label
  change between valid neighbours s-1 and s. The radius is static and small,
  so the window is 2r + 2 shifted slices (elementwise, fused by XLA).
  """
  if boundary_radius < 0:
    raise ValueError(f"boundary_radius must be >= 0, got {boundary_radius}")
  valid = labels != ignore_index
  transition, _ = _same_label_pairs(labels, valid)
  # Pad so that position t sees tr_{t-r} .. tr_{t+1+r} (tr_0 = False, and
  # out-of-range positions are False): tr_s sits at index s + r of `padded`.
  pad = [(0, 0)] * (labels.ndim - 1)
  padded = jnp.pad(
      transition, pad + [(boundary_radius + 1, boundary_radius + 1)]
  )
  length = labels.shape[-1]
  near = functools.reduce(
      jnp.logical_or,
      [
          padded[..., offset : offset + length]
          for offset in range(2 * boundary_radius + 2)
      ],
  )
  return valid & near


# ----------------------------------------------------------------------------
# Per-sequence (numerator, denominator) pairs.
# ----------------------------------------------------------------------------


def _class_weights(class_weights, num_classes: int) -> tuple[float, ...]:
  if class_weights is None:
    return (1.0,) * num_classes
  return tuple(float(w) for w in class_weights)


def _batch_token_terms(
    logits,
    labels,
    *,
    ignore_index,
    label_smoothing,
    class_weights,
    conf_threshold=0.5,
    with_boundary_terms=False,
) -> _TokenTerms:
  """Token terms of [..., T, C] logits, each shaped like `labels`."""
  num_classes = logits.shape[-1]
  hp = _Smoothing(
      float(label_smoothing),
      _class_weights(class_weights, num_classes),
      float(conf_threshold),
      with_boundary_terms,
      labels.shape[-1],
  )
  if num_classes == 2:
    terms_fn = functools.partial(
        _binary_token_terms, ignore_index=ignore_index, hp=hp
    )
    for _ in range(labels.ndim - 1):
      terms_fn = jax.vmap(terms_fn)
    return terms_fn(logits, labels)
  terms = _token_terms(
      logits.reshape(-1, num_classes), labels.reshape(-1), ignore_index, hp
  )
  return _TokenTerms(*(term.reshape(labels.shape) for term in terms))


def _weighted_ce_pairs(terms: _TokenTerms, labels, *, ignore_index, weights):
  """CE and entropy pairs, the valid mask m_t and the target weight m_t w[y_t]."""
  valid = labels != ignore_index
  target_weight = jnp.where(valid, _target_weight(labels, weights), 0.0)
  count = jnp.sum(valid, dtype=jnp.float32)
  pairs = {
      "ce": (jnp.sum(terms.ce), jnp.sum(target_weight)),
      "entropy": (jnp.sum(terms.entropy), count),
  }
  return pairs, valid, target_weight


def _cross_entropy_pairs(
    terms: _TokenTerms, labels, *, ignore_index, weights
) -> Pairs:
  """Pairs of the legacy loss for one sequence's token terms."""
  pairs, *_ = _weighted_ce_pairs(
      terms, labels, ignore_index=ignore_index, weights=weights
  )
  return pairs


def _boundary_pairs(
    terms: _TokenTerms,
    labels,
    *,
    ignore_index,
    weights,
    boundary_weight,
    boundary_radius,
    use_boundary_as_primary,
) -> Pairs:
  """Pairs of the boundary-aware loss for one sequence's token terms."""
  pairs, valid, target_weight = _weighted_ce_pairs(
      terms, labels, ignore_index=ignore_index, weights=weights
  )
  boundary = boundary_positions(
      labels, ignore_index=ignore_index, boundary_radius=boundary_radius
  )
  if use_boundary_as_primary:
    # u_t = 1 + (bw - 1) b_t reweights every valid token (b_t implies m_t).
    factor = jnp.where(boundary, boundary_weight, 1.0)
    pairs["boundary_ce"] = (
        jnp.sum(factor * terms.ce),
        jnp.sum(factor * target_weight),
    )
  else:
    pairs["boundary_only_ce"] = (
        jnp.sum(jnp.where(boundary, terms.ce, 0.0)),
        jnp.sum(jnp.where(boundary, target_weight, 0.0)),
    )
  _, same = _same_label_pairs(labels, valid)
  # Jumps are indexed by their right position. They are finite everywhere,
  # so a 0/1 factor masks them (a select here stops XLA:CPU vectorising the
  # jump kernel it fuses into).
  same = jnp.pad(same, (1, 0)).astype(jnp.float32)
  pairs["consistency"] = (jnp.sum(same * terms.jump), jnp.sum(same))
  count = pairs["entropy"][1]
  pairs["confidence_penalty"] = (jnp.sum(terms.overconfidence), count)
  pairs["boundary_fraction"] = (jnp.sum(boundary, dtype=jnp.float32), count)
  return pairs


# ----------------------------------------------------------------------------
# Batch reduction.
# ----------------------------------------------------------------------------


def _check_inputs(logits, labels) -> tuple[jax.Array, jax.Array]:
  """Trace-time checks of ranks, shapes and dtypes, naming the argument."""
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  chex.assert_rank(
      logits, {2, 3}, custom_message=("`logits` must be [B, T, C] or [T, C]")
  )
  chex.assert_rank(
      labels,
      logits.ndim - 1,
      custom_message=(
          f"`labels` must have rank {logits.ndim - 1} to match `logits` "
          f"{logits.shape}"
      ),
  )
  chex.assert_equal_shape_prefix(
      (logits, labels),
      labels.ndim,
      custom_message=(
          f"`labels` shape {labels.shape} must equal `logits` shape without its "
          f"class axis, {logits.shape[:-1]}"
      ),
  )
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(f"`labels` must have an integer dtype, got {labels.dtype}")
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise TypeError(f"`logits` must have a floating dtype, got {logits.dtype}")
  if logits.shape[-1] < 2:
    raise ValueError(
        f"`logits` needs at least 2 classes, got shape " f"{logits.shape}"
    )
  return logits, labels


def _reduce_pairs(
    sequence_fn: Callable[..., Pairs],
    terms: _TokenTerms,
    labels: jax.Array,
    axis_name: str | None,
) -> Pairs:
  """Sums per-sequence pairs of the token terms over the batch (and devices)."""
  if labels.ndim == 1:
    pairs = sequence_fn(terms, labels)
  else:
    pairs = jax.tree.map(jnp.sum, jax.vmap(sequence_fn)(terms, labels))
  if axis_name is not None:
    pairs = jax.lax.psum(pairs, axis_name)
  return pairs


def _ratio(pair: tuple[jax.Array, jax.Array], floor: float) -> jax.Array:
  numerator, denominator = pair
  return numerator / jnp.maximum(denominator, floor)


def cross_entropy_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    class_weights: Sequence[float] | None = None,
    entropy_lambda: float = 0.0,
    axis_name: str | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Legacy segmentation loss: smoothed, class-weighted CE minus an entropy bonus.

      CE   = sum_t m_t l_t / max(sum_t m_t w[y_t], tiny)
      loss = CE - entropy_lambda * mean_m(H_t)

  `CE` equals `torch.nn.functional.cross_entropy(logits, labels, weight=w,
  ignore_index=ignore_index, label_smoothing=eps, reduction="mean")`; the
  entropy bonus (`entropy_lambda > 0`) keeps predictions from collapsing onto
  the majority class.

  Args:
    logits: float [B, T, C] or [T, C] (bf16 is upcast; arithmetic is float32).
    labels: int [B, T] or [T]; `ignore_index` marks padding and the document's
      last sentence.
    ignore_index: label value excluded from every term.
    label_smoothing: eps in [0, 1).
    class_weights: C positive floats, or None for all ones.
    entropy_lambda: weight of the mean-entropy bonus.
    axis_name: mapped device axis over which the sums are `psum`-ed.

  Returns:
    (loss, aux): float32 scalar and a dict of float32 scalars `ce`, `entropy`.

  Example:
    >>> loss, aux = cross_entropy_loss(logits, labels, label_smoothing=0.1)
  """
  logits, labels = _check_inputs(logits, labels)
  terms = _batch_token_terms(
      logits,
      labels,
      ignore_index=ignore_index,
      label_smoothing=label_smoothing,
      class_weights=class_weights,
  )
  sequence_fn = functools.partial(
      _cross_entropy_pairs,
      ignore_index=ignore_index,
      weights=_class_weights(class_weights, logits.shape[-1]),
  )
  pairs = _reduce_pairs(sequence_fn, terms, labels, axis_name)
  ce = _ratio(pairs["ce"], _TINY)
  entropy = _ratio(pairs["entropy"], 1.0)
  loss = ce - entropy_lambda * entropy
  return loss, {"loss": loss, "ce": ce, "entropy": entropy}


def boundary_aware_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    class_weights: Sequence[float] | None = None,
    entropy_lambda: float = 0.0,
    boundary_weight: float = 2.0,
    boundary_radius: int = 0,
    segment_consistency_lambda: float = 0.0,
    conf_penalty_lambda: float = 0.0,
    conf_threshold: float = 0.95,
    use_boundary_as_primary: bool = True,
    axis_name: str | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Boundary-aware segmentation loss (SPEC section 4).

  With `b_t` the boundary positions (a label change to the left or right,
  dilated by `boundary_radius`) and `u_t = 1 + (bw - 1) b_t`:

      primary:       CE_b = sum_t m_t u_t l_t / max(sum_t m_t u_t w_t, tiny)
      supplementary: CE_b = CE + (bw - 1) sum_t b_t l_t / max(sum_t b_t w_t, tiny)
      S = sum_t q_t 0.5 ||p_t - p_{t-1}||^2 / max(sum_t q_t, 1)
          (q_t: valid neighbours with the same label, i.e. inside a segment)
      P = mean_m(relu(max_c p_t[c] - conf_threshold))
      loss = CE_b - entropy_lambda mean_m(H_t)
                  + segment_consistency_lambda S + conf_penalty_lambda P

  With `boundary_weight = 1` and the lambdas at 0 both strategies equal
  `cross_entropy_loss`.

  Args:
    logits: float [B, T, C] or [T, C].
    labels: int [B, T] or [T].
    ignore_index: label value excluded from every term.
    label_smoothing: eps in [0, 1).
    class_weights: C positive floats, or None.
    entropy_lambda: weight of the mean-entropy bonus.
    boundary_weight: bw >= 1, extra weight of boundary positions.
    boundary_radius: r >= 0 (static), dilation of the boundary positions.
    segment_consistency_lambda: weight of the within-segment smoothness term.
    conf_penalty_lambda: weight of the over-confidence hinge.
    conf_threshold: top probability above which the hinge is active.
    use_boundary_as_primary: static strategy switch (see above).
    axis_name: mapped device axis over which the sums are `psum`-ed.

  Returns:
    (loss, aux): float32 scalar; aux holds `loss`, `ce`, `entropy`,
    `boundary_ce`, `consistency`, `confidence_penalty`, `boundary_fraction`.
  """
  logits, labels = _check_inputs(logits, labels)
  terms = _batch_token_terms(
      logits,
      labels,
      ignore_index=ignore_index,
      label_smoothing=label_smoothing,
      class_weights=class_weights,
      conf_threshold=conf_threshold,
      with_boundary_terms=True,
  )
  sequence_fn = functools.partial(
      _boundary_pairs,
      ignore_index=ignore_index,
      weights=_class_weights(class_weights, logits.shape[-1]),
      boundary_weight=boundary_weight,
      boundary_radius=boundary_radius,
      use_boundary_as_primary=use_boundary_as_primary,
  )
  pairs = _reduce_pairs(sequence_fn, terms, labels, axis_name)
  ce = _ratio(pairs["ce"], _TINY)
  if use_boundary_as_primary:
    boundary_ce = _ratio(pairs["boundary_ce"], _TINY)
  else:
    boundary_ce = ce + (boundary_weight - 1.0) * _ratio(
        pairs["boundary_only_ce"], _TINY
    )
  entropy = _ratio(pairs["entropy"], 1.0)
  consistency = _ratio(pairs["consistency"], 1.0)
  confidence_penalty = _ratio(pairs["confidence_penalty"], 1.0)
  loss = (
      boundary_ce
      - entropy_lambda * entropy
      + segment_consistency_lambda * consistency
      + conf_penalty_lambda * confidence_penalty
  )
  aux = {
      "loss": loss,
      "ce": ce,
      "entropy": entropy,
      "boundary_ce": boundary_ce,
      "consistency": consistency,
      "confidence_penalty": confidence_penalty,
      "boundary_fraction": _ratio(pairs["boundary_fraction"], 1.0),
  }
  return loss, aux


# ----------------------------------------------------------------------------
# Construction from a config, with validation.
# ----------------------------------------------------------------------------

LOSS_FUNCTIONS: dict[str, LossFn] = {
    "cross_entropy": cross_entropy_loss,
    "boundary_aware": boundary_aware_loss,
}
COMMON_KEYS = (
    "num_classes",
    "ignore_index",
    "label_smoothing",
    "class_weights",
    "entropy_lambda",
)
BOUNDARY_KEYS = (
    "boundary_weight",
    "boundary_radius",
    "segment_consistency_lambda",
    "conf_penalty_lambda",
    "conf_threshold",
    "use_boundary_as_primary",
)
# Values outside these ranges are legal but unusual: warn and proceed.
RECOMMENDED_RANGES = {
    "label_smoothing": (0.0, 0.3),
    "boundary_weight": (1.0, 5.0),
    "segment_consistency_lambda": (0.0, 0.2),
    "conf_penalty_lambda": (0.0, 0.05),
}


class LossConfigError(ValueError):
  """A loss configuration that cannot be built; the message names the key."""


def _as_dict(loss_config: Any) -> dict[str, Any]:
  if hasattr(loss_config, "to_dict"):
    return loss_config.to_dict()
  return dict(loss_config)


def _require(condition: bool, key: str, value: Any, rule: str) -> None:
  if not condition:
    raise LossConfigError(f"loss.{key}={value!r} is invalid: {rule}")


def validate_loss_config(
    loss_config: Mapping[str, Any] | Any,
) -> dict[str, Any]:
  """Checks a `loss` config section and returns it as a plain dict.

  Raises:
    LossConfigError: unknown `type`, a key the chosen loss does not take, a
      missing key, or an invalid value; the message names key and value.
  """
  cfg = _as_dict(loss_config)
  loss_type = cfg.get("type")
  if loss_type not in LOSS_FUNCTIONS:
    raise LossConfigError(
        f"loss.type={loss_type!r} is unknown; valid types: "
        f"{', '.join(sorted(LOSS_FUNCTIONS))}"
    )
  allowed = (
      ("type",)
      + COMMON_KEYS
      + (BOUNDARY_KEYS if loss_type == "boundary_aware" else ())
  )
  unknown = sorted(set(cfg) - set(allowed))
  if unknown:
    boundary_only = [k for k in unknown if k in BOUNDARY_KEYS]
    if boundary_only:
      raise LossConfigError(
          f"loss.{boundary_only[0]} is a boundary_aware key but "
          f"loss.type={loss_type!r}; remove it or use type 'boundary_aware'"
      )
    raise LossConfigError(
        f"loss.{unknown[0]} is not a key of loss type {loss_type!r}; valid "
        f"keys: {', '.join(allowed)}"
    )
  missing = [k for k in allowed if k not in cfg]
  if missing:
    raise LossConfigError(f"loss.{missing[0]} is missing (type {loss_type!r})")

  num_classes = cfg["num_classes"]
  _require(
      isinstance(num_classes, int) and num_classes >= 2,
      "num_classes",
      num_classes,
      "must be an integer >= 2",
  )
  ignore_index = cfg["ignore_index"]
  _require(
      isinstance(ignore_index, int) and not 0 <= ignore_index < num_classes,
      "ignore_index",
      ignore_index,
      f"must be an integer outside [0, {num_classes}) (a class id cannot "
      "be ignored)",
  )
  _require(
      0.0 <= cfg["label_smoothing"] < 1.0,
      "label_smoothing",
      cfg["label_smoothing"],
      "must be in [0, 1)",
  )
  weights = cfg["class_weights"]
  if weights is not None:
    weights = list(weights)
    _require(
        len(weights) == num_classes,
        "class_weights",
        weights,
        f"must have num_classes={num_classes} entries",
    )
    _require(
        all(w > 0 for w in weights),
        "class_weights",
        weights,
        "every weight must be positive",
    )
    cfg["class_weights"] = tuple(float(w) for w in weights)
  lambdas = ["entropy_lambda"]
  if loss_type == "boundary_aware":
    lambdas += ["segment_consistency_lambda", "conf_penalty_lambda"]
    _require(
        cfg["boundary_weight"] >= 1.0,
        "boundary_weight",
        cfg["boundary_weight"],
        "must be >= 1",
    )
    _require(
        isinstance(cfg["boundary_radius"], int) and cfg["boundary_radius"] >= 0,
        "boundary_radius",
        cfg["boundary_radius"],
        "must be an integer >= 0",
    )
    _require(
        1.0 / num_classes < cfg["conf_threshold"] < 1.0,
        "conf_threshold",
        cfg["conf_threshold"],
        f"must be in (1/num_classes, 1) = ({1.0 / num_classes:g}, 1)",
    )
    _require(
        isinstance(cfg["use_boundary_as_primary"], bool),
        "use_boundary_as_primary",
        cfg["use_boundary_as_primary"],
        "must be True or False",
    )
  for key in lambdas:
    _require(cfg[key] >= 0.0, key, cfg[key], "must be >= 0")

  for key, (low, high) in RECOMMENDED_RANGES.items():
    if key in cfg and not low <= cfg[key] <= high:
      logging.warning(
          "loss.%s=%s is outside the recommended range [%s, %s]",
          key,
          cfg[key],
          low,
          high,
      )
  return cfg


def loss_hyperparameters(validated: Mapping[str, Any]) -> dict[str, Any]:
  """The keyword arguments of the loss function named by a validated config."""
  return {
      k: v for k, v in validated.items() if k not in ("type", "num_classes")
  }


def with_value_checks(
    loss_fn: LossFn, *, num_classes: int, ignore_index: int = -100
) -> LossFn:
  """Wraps a loss with run-time value checks (debug only: it costs a sync).

  Raises `checkify.JaxRuntimeError` when a label is neither a class id nor
  `ignore_index`, or when the loss or an aux value is not finite.
  """

  def checked(logits, labels, axis_name=None):
    in_range = (labels == ignore_index) | (
        (labels >= 0) & (labels < num_classes)
    )
    checkify.check(
        jnp.all(in_range),
        f"labels hold a value outside [0, {num_classes}) that is "
        f"not ignore_index={ignore_index}",
    )
    loss, aux = loss_fn(logits, labels, axis_name=axis_name)
    for name, value in aux.items():
      checkify.check(jnp.isfinite(value), f"loss term {name!r} is not finite")
    return loss, aux

  def run(logits, labels, axis_name=None):
    error, out = checkify.checkify(checked)(logits, labels, axis_name)
    error.throw()
    return out

  return run


def create_loss(
    loss_config: Mapping[str, Any] | Any, *, debug_checks: bool = False
) -> LossFn:
  """Builds `fn(logits, labels, axis_name=None) -> (loss, aux)` from a config.

  Args:
    loss_config: a `loss` config section (ConfigDict or mapping) with `type`
      in {"cross_entropy", "boundary_aware"} and exactly that loss's keys.
    debug_checks: add run-time value checks (`with_value_checks`); off by
      default because they force a host sync on every call.
  """
  cfg = validate_loss_config(loss_config)
  loss_fn = functools.partial(
      LOSS_FUNCTIONS[cfg["type"]], **loss_hyperparameters(cfg)
  )

  def configured(logits, labels, axis_name=None):
    return loss_fn(logits, labels, axis_name=axis_name)

  if debug_checks:
    return with_value_checks(
        configured,
        num_classes=cfg["num_classes"],
        ignore_index=cfg["ignore_index"],
    )
  return configured
