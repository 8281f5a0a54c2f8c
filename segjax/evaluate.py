r"""Scores a trained model on a split with its dev-tuned decision threshold.

  python -m segjax.evaluate --workdir=runs/boundary [--split=test] \
      [--format=table|json] [--checkpoint=best|latest|STEP] \
      [--baseline=none|no_boundaries|evenly_spaced|texttiling]

Restores the checkpoint (best by the run's `train.best_metric` by default),
rebuilds the data of the run's config and prints every metric. JSON output is
one object with keys pk, window_diff, boundary_f1, complete_segments,
macro_f1, ece, threshold (and a few more).

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

from segjax import baselines
from segjax import config_lib
from segjax import data
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
    splits = data.load_splits(config.data)
    documents = splits[_SPLIT.value]
    if not documents:
      sys.exit(f"segjax.evaluate: error: split {_SPLIT.value!r} is empty")
    if trained is None:  # Fitted on train and dev, which may be empty.
      fitted = baselines.fit(_BASELINE.value, splits)
  except (FileNotFoundError, data.DataError, encoders.LoadError) as e:
    sys.exit(f"segjax.evaluate: error: {e}")
  if fitted is not None:
    scores = baseline_scores(fitted, documents)
  else:
    probs, loss = trained.predict(documents)
    scores = evaluation.score_documents(
        probs, documents, threshold=trained.threshold
    )
    scores = {"step": trained.step, "loss": loss, **scores}
  scores = {"split": _SPLIT.value, **scores}
  if _FORMAT.value == "json":
    print(json.dumps(metric_writers.json_safe(scores)))
  else:
    print(format_table(scores))


if __name__ == "__main__":
  app.run(main)
