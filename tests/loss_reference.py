"""An independent float64 NumPy transcription of SPEC sections 2-4.

Deliberately naive (loops over tokens, one-hot arrays, no shared code with
segjax.losses) so that it checks the formulas rather than the implementation.
"""

import numpy as np


def log_softmax(x):
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _flatten(logits, labels):
  logits = np.asarray(logits, np.float64)
  labels = np.asarray(labels)
  if labels.ndim == 1:
    logits, labels = logits[None], labels[None]
  return logits, labels


def _common(logits, labels, ignore_index, label_smoothing, class_weights):
  num_classes = logits.shape[-1]
  w = (
      np.ones(num_classes)
      if class_weights is None
      else np.asarray(class_weights, np.float64)
  )
  valid = labels != ignore_index
  safe_logits = np.where(valid[..., None], logits, 0.0)
  lp = log_softmax(safe_logits)
  p = np.exp(lp)
  y = np.where(valid, labels, 0)
  per_token = np.zeros(labels.shape)
  weight = np.zeros(labels.shape)
  for b in range(labels.shape[0]):
    for t in range(labels.shape[1]):
      if not valid[b, t]:
        continue
      yt = y[b, t]
      per_token[b, t] = (1 - label_smoothing) * w[yt] * -lp[
          b, t, yt
      ] + label_smoothing / num_classes * np.sum(w * -lp[b, t])
      weight[b, t] = w[yt]
  entropy = -(p * lp).sum(-1) * valid
  return valid, lp, p, per_token, weight, entropy


def _mean_valid(x, valid):
  return (x * valid).sum() / max(valid.sum(), 1)


def cross_entropy(
    logits,
    labels,
    *,
    ignore_index=-100,
    label_smoothing=0.0,
    class_weights=None,
    entropy_lambda=0.0,
):
  logits, labels = _flatten(logits, labels)
  valid, _, _, l, w_t, h = _common(
      logits, labels, ignore_index, label_smoothing, class_weights
  )
  denominator = w_t.sum()
  ce = l.sum() / denominator if denominator > 0 else 0.0
  entropy = _mean_valid(h, valid)
  return ce - entropy_lambda * entropy, {"ce": ce, "entropy": entropy}


def boundary_mask(labels, ignore_index=-100, radius=0):
  labels = np.asarray(labels)
  single = labels.ndim == 1
  labels = labels[None] if single else labels
  valid = labels != ignore_index
  batch, length = labels.shape
  transition = np.zeros((batch, length), bool)
  for b in range(batch):
    for t in range(1, length):
      transition[b, t] = (
          valid[b, t] and valid[b, t - 1] and labels[b, t] != labels[b, t - 1]
      )
  out = np.zeros((batch, length), bool)
  for b in range(batch):
    for t in range(length):
      window = [s for s in range(t - radius, t + 2 + radius) if 0 <= s < length]
      out[b, t] = valid[b, t] and any(transition[b, s] for s in window)
  return out[0] if single else out


def boundary_aware(
    logits,
    labels,
    *,
    ignore_index=-100,
    label_smoothing=0.0,
    class_weights=None,
    entropy_lambda=0.0,
    boundary_weight=2.0,
    boundary_radius=0,
    segment_consistency_lambda=0.0,
    conf_penalty_lambda=0.0,
    conf_threshold=0.95,
    use_boundary_as_primary=True,
):
  logits, labels = _flatten(logits, labels)
  valid, _, p, l, w_t, h = _common(
      logits, labels, ignore_index, label_smoothing, class_weights
  )
  b = boundary_mask(labels, ignore_index, boundary_radius).astype(np.float64)
  denominator = w_t.sum()
  ce = l.sum() / denominator if denominator > 0 else 0.0
  if use_boundary_as_primary:
    u = 1.0 + (boundary_weight - 1.0) * b
    denominator = (u * w_t).sum()
    boundary_ce = (u * l).sum() / denominator if denominator > 0 else 0.0
  else:
    denominator = (b * w_t).sum()
    extra = (b * l).sum() / denominator if denominator > 0 else 0.0
    boundary_ce = ce + (boundary_weight - 1.0) * extra
  jumps, pairs = 0.0, 0
  for bi in range(labels.shape[0]):
    for t in range(1, labels.shape[1]):
      if (
          valid[bi, t]
          and valid[bi, t - 1]
          and labels[bi, t] == labels[bi, t - 1]
      ):
        jumps += 0.5 * np.sum((p[bi, t] - p[bi, t - 1]) ** 2)
        pairs += 1
  consistency = jumps / max(pairs, 1)
  penalty = _mean_valid(np.maximum(p.max(-1) - conf_threshold, 0.0), valid)
  entropy = _mean_valid(h, valid)
  loss = (
      boundary_ce
      - entropy_lambda * entropy
      + segment_consistency_lambda * consistency
      + conf_penalty_lambda * penalty
  )
  aux = {
      "ce": ce,
      "entropy": entropy,
      "boundary_ce": boundary_ce,
      "consistency": consistency,
      "confidence_penalty": penalty,
      "boundary_fraction": b.sum() / max(valid.sum(), 1),
  }
  return loss, aux
