"""Evaluation: window predictions on all devices, stitched per document, scored.

Shared by the trainer's periodic dev evaluation, `segjax.evaluate` and
`segjax.segment`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

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


def predict_documents(
    parallel: parallel_lib.DataParallel,
    eval_fn: Callable,
    params: Any,
    batches: Sequence[dict[str, np.ndarray]],
    documents: Sequence[data.Document],
):
  """Boundary probabilities per document and the token-weighted mean loss.

  Every process runs the same number of batches (padding rows are masked);
  the rows of all processes are gathered before stitching, so every process
  returns the same result.

  Returns:
    (list of float32 [n_d] arrays, mean loss over labelled tokens).
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
  per_document = data.stitch_window_probs(
      gathered["probs"],
      gathered["doc"],
      gathered["start"],
      data.document_lengths(documents),
  )
  return per_document, loss_sum / max(token_sum, 1)


def non_finite_documents(document_probs: Sequence[np.ndarray]) -> int:
  """How many documents have a NaN or inf boundary probability.

  A model whose weights diverged predicts NaN everywhere; its scores would
  still look like numbers (every comparison with NaN is False: no boundary).
  """
  return sum(not np.isfinite(probs).all() for probs in document_probs)


def _pad_to_bucket(x: np.ndarray, multiple: int = 64) -> np.ndarray:
  """Zero-pads both axes of a [D, T] array up to multiples of `multiple`."""
  pad = [(0, -n % multiple) for n in x.shape]
  return np.pad(x, pad)


def _metric_inputs(document_probs, documents):
  """Padded probs float32, gold int32 and mask bool `[D, T]` for the metrics."""
  probs = data.pad_documents(document_probs, 0.0).astype(np.float32)
  gold, mask = data.padded_gold_and_mask(documents)
  # Empty padding documents count nowhere; rounding the shapes up lets dev
  # and test (and every eval) reuse one compiled metric computation.
  return tuple(_pad_to_bucket(x) for x in (probs, gold, mask))


def calibration_bins(
    document_probs: Sequence[np.ndarray], documents: Sequence[data.Document]
) -> dict[str, Any]:
  """The reliability-diagram bins of boundary probabilities, as JSON values.

  Keys are the fields of `metrics.CalibrationStats` (lists per bin, and the
  summed squared error); `metrics.CalibrationStats(**bins)` gives them back.
  """
  stats = metrics.calibration_stats(*_metric_inputs(document_probs, documents))
  return {k: np.asarray(v).tolist() for k, v in stats._asdict().items()}


def score_documents(
    document_probs: Sequence[np.ndarray],
    documents: Sequence[data.Document],
    *,
    threshold: float | None = None,
    threshold_metric: str = "pk",
) -> dict[str, float]:
  """Every segmentation metric at `threshold` (tuned here when None).

  Keys: pk, window_diff, boundary_f1, boundary_f1_tol1, boundary_precision,
  boundary_recall, complete_segments, macro_f1, ece, brier, threshold,
  num_documents, num_skipped_pk.
  """
  probs, gold, mask = _metric_inputs(document_probs, documents)
  if threshold is None:
    threshold, _ = metrics.best_threshold(
        probs, gold, mask, metric=threshold_metric
    )
  pred = metrics.boundaries_at_threshold(probs, threshold)
  exact = metrics.compute_metrics(metrics.segmentation_stats(pred, gold, mask))
  near = metrics.compute_metrics(
      metrics.segmentation_stats(pred, gold, mask, tolerance=1)
  )
  calibration = metrics.compute_calibration(
      metrics.calibration_stats(probs, gold, mask)
  )
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
  scores["ece"] = calibration["ece"]
  scores["brier"] = calibration["brier"]
  scores["threshold"] = round(float(threshold), 4)  # a float32 grid value
  scores["num_documents"] = exact["num_documents"]
  scores["num_skipped_pk"] = exact["num_skipped_pk"]
  return {k: np.asarray(v).item() for k, v in scores.items()}
