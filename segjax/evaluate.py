r"""Scores a trained model on a split with its dev-tuned decision threshold.

  python -m segjax.evaluate --workdir=runs/boundary [--split=test] \
      [--format=table|json] [--checkpoint=best|latest|STEP] \
      [--baseline=none|no_boundaries|evenly_spaced|texttiling] \
      [--data_source=choi|wiki727k|jsonl|pydoc --data_path=DIR] \
      [--threshold=P] [--min_segment_sentences=N] [--max_segment_sentences=N]

Restores the checkpoint (best by the run's `train.best_metric` by default),
rebuilds the data of the run's config and prints every metric. JSON output is
one object with keys pk, window_diff, boundary_f1, complete_segments,
macro_f1, ece, threshold (and a few more).

`--data_source` / `--data_path` score the model on another dataset (at the
run's dev-tuned threshold, or `--threshold`): the cross-domain protocol.
`--min/max_segment_sentences` decode the most probable segmentation under
those lengths (`segjax.decoding`) before scoring, to measure their effect.

`--baseline` scores a baseline (`segjax.baselines`) instead of the model, on
the same split of the run's data: evenly spaced at the mean train segment
length, TextTiling with (w, k) tuned on dev. It needs only the run's
config.json; ECE is NaN (null in JSON), as a baseline has no probabilities.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

from absl import app
from absl import flags
import ml_collections
import numpy as np

from segjax import baselines
from segjax import checkpoints
from segjax import config_lib
from segjax import data
from segjax import decoding
from segjax import encoders
from segjax import evaluation
from segjax import inference
from segjax import metric_writers

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir.")
_SPLIT = flags.DEFINE_enum(
    "split",
    "test",
    ["train", "dev", "test"],
    "Split of the run's dataset to score.",
)
_FORMAT = flags.DEFINE_enum(
    "format", "table", ["table", "json"], "Output format."
)
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", "best", "best, latest, or a step number."
)
_BASELINE = flags.DEFINE_enum(
    "baseline",
    "none",
    ["none", *baselines.NAMES],
    "Score this baseline instead of the model (--checkpoint does not apply).",
)


_DATA_SOURCE = flags.DEFINE_enum(
    "data_source",
    None,
    list(data.SOURCES),
    "Score another dataset (default: the run's own), e.g. a model trained on"
    " Wiki-727K on Choi's: the cross-domain protocol.",
)
_DATA_PATH = flags.DEFINE_string(
    "data_path", None, "Folder of that dataset (train/ dev/ test/)."
)
_THRESHOLD = flags.DEFINE_float(
    "threshold", None, "Decision threshold; default: the run's dev-tuned one."
)
_MIN_SEGMENT = flags.DEFINE_integer(
    "min_segment_sentences",
    None,
    "Decode with at least this many sentences"
    " per segment (`segjax.decoding`).",
)
_MAX_SEGMENT = flags.DEFINE_integer(
    "max_segment_sentences",
    None,
    "Decode with at most this many sentences" " per segment.",
)


def evaluation_data(config: ml_collections.ConfigDict) -> dict[str, list]:
  """The splits to score: the run's data, or the dataset the flags name."""
  data_config = ml_collections.ConfigDict(config.data.to_dict())
  if _DATA_SOURCE.value is not None:
    data_config.source = _DATA_SOURCE.value
    data_config.path = _DATA_PATH.value or ""
  elif _DATA_PATH.value is not None:
    data_config.path = _DATA_PATH.value
  return data.load_splits(data_config)


def model_scores(trained, documents) -> dict[str, Any]:
  """The model's scores at the threshold, decoded under the constraints."""
  probs, loss = trained.predict(documents)
  threshold = (
      trained.threshold if _THRESHOLD.value is None else _THRESHOLD.value
  )
  gold = [data.boundary_labels(d) for d in documents]
  scores = evaluation.score_documents(probs, gold, threshold=threshold)
  if _MIN_SEGMENT.value is not None or _MAX_SEGMENT.value is not None:
    labels = decoding.decode_documents(
        probs,
        min_segment_sentences=_MIN_SEGMENT.value,
        max_segment_sentences=_MAX_SEGMENT.value,
        threshold=threshold,
    )
    decoded = evaluation.score_documents(
        [np.asarray(l, np.float32) for l in labels], gold, threshold=0.5
    )
    # The decoded boundaries' segmentation metrics; calibration stays that
    # of the probabilities.
    scores |= {k: decoded[k] for k in evaluation.SEGMENTATION_METRICS}
  return {"step": trained.step, "loss": loss, **scores}


def format_table(scores: dict[str, Any]) -> str:
  width = max(len(k) for k in scores)
  return "\n".join(
      f"{k.ljust(width)}  {v:.4f}"
      if isinstance(v, float)
      else f"{k.ljust(width)}  {v}"
      for k, v in scores.items()
  )


def run_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
  """The config a run was trained with, from its config.json.

  Raises:
    FileNotFoundError: the workdir holds no config.json.
  """
  saved = config_lib.saved_run_config(workdir)
  if saved is None:
    raise FileNotFoundError(
        f"{pathlib.Path(workdir) / config_lib.RUN_CONFIG_FILE}: no such file"
        " (not a training run?)"
    )
  return ml_collections.ConfigDict(saved)


def baseline_scores(
    fitted: baselines.FittedBaseline, documents
) -> dict[str, Any]:
  """A fitted baseline's parameters and scores on `documents`."""
  predictions, too_short = fitted.predict(documents)
  return {
      "baseline": fitted.name,
      **fitted.params,
      "num_too_short": too_short,
      **baselines.score_predictions(predictions, documents),
  }


def main(argv):
  metric_writers.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  trained = fitted = None
  try:
    if _BASELINE.value == "none":
      trained = inference.restore_trained_model(
          _WORKDIR.value, _CHECKPOINT.value
      )
      config = trained.config
    else:
      config = run_config(_WORKDIR.value)
    splits = evaluation_data(config)
    documents = splits[_SPLIT.value]
    if not documents:
      sys.exit(f"segjax.evaluate: error: split {_SPLIT.value!r} is empty")
    if trained is None:  # Fitted on train and dev, which may be empty.
      fitted = baselines.fit(_BASELINE.value, splits)
  except (
      FileNotFoundError,
      config_lib.ConfigError,
      data.DataError,
      encoders.LoadError,
      checkpoints.CheckpointError,
  ) as e:
    sys.exit(f"segjax.evaluate: error: {e}")
  if fitted is not None:
    scores = baseline_scores(fitted, documents)
  else:
    try:
      scores = model_scores(trained, documents)
    except (inference.NonFiniteOutput, ValueError) as e:
      sys.exit(f"segjax.evaluate: error: {e}")
  scores = {"split": _SPLIT.value, **scores}
  if _FORMAT.value == "json":
    print(json.dumps(metric_writers.json_safe(scores)))
  else:
    print(format_table(scores))


if __name__ == "__main__":
  app.run(main)
