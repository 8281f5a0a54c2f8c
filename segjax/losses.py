"""Segmentation losses: the legacy cross-entropy and the boundary-aware cross-entropy.

Both losses are the formulas of `SPEC.md` sections 2-4, in that order: each
per-token quantity of section 2 is one function below, named after it, and
each loss adds them up as its section says. For one sequence (`m` valid
mask, `lp` float32 log-softmax, `p = exp(lp)`, `w` class weights, `eps` label
smoothing, `C` classes):

    l_t  = (1 - eps) w[y_t] (-lp_t[y_t]) + (eps / C) sum_c w_c (-lp_t[c])
    H_t  = -sum_c p_t[c] lp_t[c]
    tr_t = m_t & m_{t-1} & (y_t != y_{t-1}),  q_t = m_t & m_{t-1} & (y_t == y_{t-1})
    b_t  = m_t & OR_{s in [t - r, t + 1 + r]} tr_s

`l_t` is PyTorch's per-token `cross_entropy(weight=w, label_smoothing=eps)`.
Two classes are computed from the logit difference `d = x[1] - x[0]` (one
[..., T] plane, `p[1] = sigmoid(d)`), any other C from the [..., T, C]
log-softmax; both give the same numbers.

Every mean is over the valid tokens of the whole global batch: a loss builds
(numerator, denominator) pairs of per-token arrays, sums each over all
tokens, `psum`s the sums over `axis_name` when given, and divides once. A
batch without a valid token gives 0 and zero gradients. Derivatives are
plain autodiff, in both modes (`jax.grad`, `jax.jvp` and their compositions).
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

from segjax import config_lib

LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
Pairs = dict[str, tuple[jax.Array, jax.Array]]

_TINY = float(jnp.finfo(jnp.float32).tiny)


# ----------------------------------------------------------------------------
# Per-token quantities (SPEC section 2).
# ----------------------------------------------------------------------------


def _float_logits(logits: jax.Array, valid: jax.Array) -> jax.Array:
  """Logits in float32 (float64 is kept, for gradient checks), 0 where `m_t = 0`."""
  x = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  # Ignored positions may hold NaN or inf: select them away before any
  # arithmetic, so that neither a value nor a derivative ever reads them.
  return jnp.where(valid[..., None], x, 0.0)


def _pad_start(values: jax.Array) -> jax.Array:
  """Prepends one 0 (False) along the last axis: index t then holds t - 1's value."""
  return jnp.pad(values, [(0, 0)] * (values.ndim - 1) + [(1, 0)])


def log_probabilities(logits: jax.Array, valid: jax.Array) -> jax.Array:
  """`lp_t = log_softmax(x_t)` in float32, [..., T, C] (uniform where `m_t = 0`)."""
  # log_softmax subtracts the maximum before exp: exact for logits of any size.
  return jax.nn.log_softmax(_float_logits(logits, valid), axis=-1)


def smoothed_cross_entropy(
    log_probs: jax.Array,
    labels: jax.Array,
    *,
    label_smoothing: float,
    class_weights: jax.Array,
) -> jax.Array:
  """`l_t = (1 - eps) w[y_t] (-lp_t[y_t]) + (eps / C) sum_c w_c (-lp_t[c])`, [..., T].

  Written as `-sum_c a_t[c] lp_t[c]` with the smoothed, weighted target
  `a_t[c] = (1 - eps) w_c [c = y_t] + (eps / C) w_c`, as optax's
  `softmax_cross_entropy` on smoothed labels: a select on the class index
  instead of a gather (whose derivative would be a scatter).

  Args:
    log_probs: `lp`, [..., T, C].
    labels: `y`, [..., T], every entry a class id (mask ignored tokens apart).
    label_smoothing: `eps`.
    class_weights: `w`, [C].
  """
  num_classes = log_probs.shape[-1]
  is_target = jnp.arange(num_classes) == labels[..., None]
  targets = class_weights * (
      (1.0 - label_smoothing) * is_target + label_smoothing / num_classes
  )
  return -jnp.sum(targets * log_probs, axis=-1)


def entropy(log_probs: jax.Array) -> jax.Array:
  """`H_t = -sum_c p_t[c] lp_t[c]`, [..., T]."""
  return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


def top_probability(probs: jax.Array) -> jax.Array:
  """`max_c p_t[c]`, [..., T]."""
  return jnp.max(probs, axis=-1)


def probability_jumps(probs: jax.Array) -> jax.Array:
  """`0.5 ||p_t - p_{t-1}||^2` for t >= 1 and 0 at t = 0, [..., T]."""
  steps = probs[..., 1:, :] - probs[..., :-1, :]
  return _pad_start(0.5 * jnp.sum(jnp.square(steps), axis=-1))


class TokenTerms(NamedTuple):
  """The per-token quantities the losses sum, each [..., T] and finite.

  At ignored positions they are those of a uniform distribution: callers
  mask them (a factor 0 is safe, they are finite).
  """

  ce: jax.Array  # l_t
  entropy: jax.Array  # H_t
  top_probability: jax.Array  # max_c p_t[c]
  jumps: jax.Array  # 0.5 ||p_t - p_{t-1}||^2, 0 at t = 0


def token_terms(
    logits: jax.Array,
    labels: jax.Array,
    valid: jax.Array,
    *,
    label_smoothing: float,
    class_weights: jax.Array,
) -> TokenTerms:
  """`TokenTerms` of logits [..., T, C] from the log-softmax."""
  log_probs = log_probabilities(logits, valid)
  probs = jnp.exp(log_probs)
  return TokenTerms(
      ce=smoothed_cross_entropy(
          log_probs,
          labels,
          label_smoothing=label_smoothing,
          class_weights=class_weights,
      ),
      entropy=entropy(log_probs),
      top_probability=top_probability(probs),
      jumps=probability_jumps(probs),
  )


def binary_token_terms(
    logits: jax.Array,
    labels: jax.Array,
    valid: jax.Array,
    *,
    label_smoothing: float,
    class_weights: jax.Array,
) -> TokenTerms:
  """`TokenTerms` of logits [..., T, 2] from the logit difference `d = x[1] - x[0]`.

  With `p[1] = sigmoid(d)`, `p[0] = sigmoid(-d)` and `lp[c] = log p[c]`:

      l_t = (1 - eps) w[y_t] (-lp_t[y_t]) + (eps / 2) (w_0 (-lp_t[0]) + w_1 (-lp_t[1]))
      H_t = -(p_t[0] lp_t[0] + p_t[1] lp_t[1])
      max_c p_t[c] = sigmoid(|d_t|)
      0.5 ||p_t - p_{t-1}||^2 = (p_t[1] - p_{t-1}[1])^2
  """
  x = _float_logits(logits, valid)
  d = x[..., 1] - x[..., 0]
  # log_sigmoid(d) = -softplus(-d): neither overflows nor cancels for any d.
  log_p0, log_p1 = jax.nn.log_sigmoid(-d), jax.nn.log_sigmoid(d)
  p0, p1 = jax.nn.sigmoid(-d), jax.nn.sigmoid(d)
  w0, w1 = class_weights[0], class_weights[1]
  target = jnp.where(labels == 1, log_p1, log_p0)
  ce = -(1.0 - label_smoothing) * class_weights[labels] * target - (
      label_smoothing / 2.0
  ) * (w0 * log_p0 + w1 * log_p1)
  return TokenTerms(
      ce=ce,
      entropy=-(p0 * log_p0 + p1 * log_p1),
      top_probability=jax.nn.sigmoid(jnp.abs(d)),
      jumps=_pad_start(jnp.square(p1[..., 1:] - p1[..., :-1])),
  )


def transitions(labels: jax.Array, valid: jax.Array) -> jax.Array:
  """`tr_t = m_t & m_{t-1} & (y_t != y_{t-1})` for t >= 1, `tr_0 = False`, [..., T]."""
  both_valid = valid[..., 1:] & valid[..., :-1]
  return _pad_start(both_valid & (labels[..., 1:] != labels[..., :-1]))


def same_segment_pairs(labels: jax.Array, valid: jax.Array) -> jax.Array:
  """`q_t = m_t & m_{t-1} & (y_t == y_{t-1})` for t >= 1, `q_0 = False`, [..., T]."""
  both_valid = valid[..., 1:] & valid[..., :-1]
  return _pad_start(both_valid & (labels[..., 1:] == labels[..., :-1]))


def boundary_positions(
    labels: jax.Array, *, ignore_index: int = -100, boundary_radius: int = 0
) -> jax.Array:
  """Boundary mask `b_t = m_t & OR_{s in [t - r, t + 1 + r]} tr_s`, [..., T] bool.

  With r = 0 a position is a boundary position when the label changes
  between it and its left or its right neighbour. Out-of-range `s` count as
  False.
  """
  if boundary_radius < 0:
    raise ValueError(f"boundary_radius must be >= 0, got {boundary_radius}")
  valid = labels != ignore_index
  r, length = boundary_radius, labels.shape[-1]
  # tr_s lands at index s + r, so position t reads indices t .. t + 2r + 1.
  padded = jnp.pad(
      transitions(labels, valid), [(0, 0)] * (labels.ndim - 1) + [(r, r + 1)]
  )
  near = functools.reduce(
      jnp.logical_or, [padded[..., k : k + length] for k in range(2 * r + 2)]
  )
  return valid & near


# ----------------------------------------------------------------------------
# Batch reduction (SPEC section 2): sums of (numerator, denominator) pairs.
# ----------------------------------------------------------------------------


def _global_sums(pairs: Pairs, axis_name: str | None) -> Pairs:
  """Each array summed over all its tokens, then `psum`-ed over `axis_name`."""
  sums = jax.tree.map(jnp.sum, pairs)
  if axis_name is not None:
    sums = jax.lax.psum(sums, axis_name)
  return sums


def _ratio(pair: tuple[jax.Array, jax.Array], floor: float) -> jax.Array:
  """`numerator / max(denominator, floor)`."""
  numerator, denominator = pair
  return numerator / jnp.maximum(denominator, floor)


# ----------------------------------------------------------------------------
# The losses (SPEC sections 3 and 4).
# ----------------------------------------------------------------------------


def _check_inputs(logits, labels) -> tuple[jax.Array, jax.Array]:
  """Trace-time checks of ranks, shapes and dtypes, naming the argument."""
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  chex.assert_rank(
      logits, {2, 3}, custom_message="`logits` must be [B, T, C] or [T, C]"
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
    raise ValueError(f"`logits` needs at least 2 classes, got {logits.shape}")
  return logits, labels


class _Tokens(NamedTuple):
  """What both losses start from: masks, target weights and token terms."""

  valid: jax.Array  # m_t, bool [..., T]
  mask: jax.Array  # m_t as 0/1 in the compute dtype
  target_weight: jax.Array  # w[y_t]
  terms: TokenTerms


def _tokens(
    logits, labels, *, ignore_index, label_smoothing, class_weights
) -> _Tokens:
  """Checks the inputs and computes the token terms (by C: two or more classes)."""
  logits, labels = _check_inputs(logits, labels)
  num_classes = logits.shape[-1]
  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  weights = jnp.asarray(
      (1.0,) * num_classes if class_weights is None else class_weights, dtype
  )
  valid = labels != ignore_index
  target = jnp.where(valid, labels, 0)
  terms_fn = binary_token_terms if num_classes == 2 else token_terms
  terms = terms_fn(
      logits,
      target,
      valid,
      label_smoothing=label_smoothing,
      class_weights=weights,
  )
  return _Tokens(valid, valid.astype(dtype), weights[target], terms)


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
    (loss, aux): float32 scalar and a dict of float32 scalars `loss`, `ce`,
    `entropy`.

  Example:
    >>> loss, aux = cross_entropy_loss(logits, labels, label_smoothing=0.1)
  """
  tok = _tokens(
      logits,
      labels,
      ignore_index=ignore_index,
      label_smoothing=label_smoothing,
      class_weights=class_weights,
  )
  m = tok.mask
  sums = _global_sums(
      {
          "ce": (m * tok.terms.ce, m * tok.target_weight),
          "entropy": (m * tok.terms.entropy, m),
      },
      axis_name,
  )
  ce = _ratio(sums["ce"], _TINY)
  mean_entropy = _ratio(sums["entropy"], 1.0)
  loss = ce - entropy_lambda * mean_entropy
  return loss, {"loss": loss, "ce": ce, "entropy": mean_entropy}


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

  With `b_t` the boundary positions, `u_t = 1 + (bw - 1) b_t` and `q_t` the
  adjacent valid pairs inside a segment:

      primary:       CE_b = sum_t m_t u_t l_t / max(sum_t m_t u_t w_t, tiny)
      supplementary: CE_b = CE + (bw - 1) sum_t b_t l_t / max(sum_t b_t w_t, tiny)
      S = sum_t q_t 0.5 ||p_t - p_{t-1}||^2 / max(sum_t q_t, 1)
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

  Example:
    >>> loss, aux = boundary_aware_loss(logits, labels, boundary_weight=2.0,
    ...                                 segment_consistency_lambda=0.05)
  """
  tok = _tokens(
      logits,
      labels,
      ignore_index=ignore_index,
      label_smoothing=label_smoothing,
      class_weights=class_weights,
  )
  m, terms, w_t = tok.mask, tok.terms, tok.target_weight
  b = boundary_positions(
      labels, ignore_index=ignore_index, boundary_radius=boundary_radius
  ).astype(m.dtype)
  q = same_segment_pairs(labels, tok.valid).astype(m.dtype)
  overconfidence = jax.nn.relu(terms.top_probability - conf_threshold)
  pairs = {
      "ce": (m * terms.ce, m * w_t),
      "entropy": (m * terms.entropy, m),
      "consistency": (q * terms.jumps, q),
      "confidence_penalty": (m * overconfidence, m),
      "boundary_fraction": (b, m),
  }
  if use_boundary_as_primary:
    u = 1.0 + (boundary_weight - 1.0) * b
    pairs["boundary_ce"] = (m * u * terms.ce, m * u * w_t)
  else:
    pairs["boundary_only_ce"] = (b * terms.ce, b * w_t)
  sums = _global_sums(pairs, axis_name)
  ce = _ratio(sums["ce"], _TINY)
  if use_boundary_as_primary:
    boundary_ce = _ratio(sums["boundary_ce"], _TINY)
  else:
    boundary_ce = ce + (boundary_weight - 1.0) * _ratio(
        sums["boundary_only_ce"], _TINY
    )
  mean_entropy = _ratio(sums["entropy"], 1.0)
  consistency = _ratio(sums["consistency"], 1.0)
  confidence_penalty = _ratio(sums["confidence_penalty"], 1.0)
  loss = (
      boundary_ce
      - entropy_lambda * mean_entropy
      + segment_consistency_lambda * consistency
      + conf_penalty_lambda * confidence_penalty
  )
  aux = {
      "loss": loss,
      "ce": ce,
      "entropy": mean_entropy,
      "boundary_ce": boundary_ce,
      "consistency": consistency,
      "confidence_penalty": confidence_penalty,
      "boundary_fraction": _ratio(sums["boundary_fraction"], 1.0),
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


# The one config error type; this name stays for callers of the losses alone.
LossConfigError = config_lib.ConfigError


def _as_dict(loss_config: Any) -> dict[str, Any]:
  if hasattr(loss_config, "to_dict"):
    return loss_config.to_dict()
  return dict(loss_config)


def _require(condition: bool, key: str, value: Any, rule: str) -> None:
  config_lib.check(condition, f"loss.{key}", value, rule)


def validate_loss_config(
    loss_config: Mapping[str, Any] | Any, *, warn: bool = True
) -> dict[str, Any]:
  """Checks a `loss` config section and returns it as a plain dict.

  With `warn`, values outside `RECOMMENDED_RANGES` log a warning.

  Raises:
    LossConfigError: unknown `type`, a key the chosen loss does not take, a
      missing key, or an invalid value; the message names key and value.
  """
  cfg = _as_dict(loss_config)
  loss_type = cfg.get("type")
  config_lib.check_choice("loss.type", loss_type, sorted(LOSS_FUNCTIONS))
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
    if warn and key in cfg and not low <= cfg[key] <= high:
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
    loss_config: Mapping[str, Any] | Any,
    *,
    debug_checks: bool = False,
    warn: bool = True,
) -> LossFn:
  """Builds `fn(logits, labels, axis_name=None) -> (loss, aux)` from a config.

  Args:
    loss_config: a `loss` config section (ConfigDict or mapping) with `type`
      in {"cross_entropy", "boundary_aware"} and exactly that loss's keys.
    debug_checks: add run-time value checks (`with_value_checks`); off by
      default because they force a host sync on every call.
    warn: warn of values outside the recommended ranges.
  """
  cfg = validate_loss_config(loss_config, warn=warn)
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
