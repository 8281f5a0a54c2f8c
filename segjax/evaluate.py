r"""Scores a trained model on a split with its dev-tuned decision threshold.

  python -m segjax.evaluate --workdir=runs/boundary [--split=test] \
      [--format=table|json] [--checkpoint=best|latest|STEP]

Restores the checkpoint (best by the run's `train.best_metric` by default),
rebuilds the data of the run's config and prints every metric. JSON output is
one object with keys pk, window_diff, boundary_f1, complete_segments,
macro_f1, ece, threshold (and a few more).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from absl import app
from absl import flags

from segjax import data
from segjax import evaluation
from segjax import inference

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


def format_table(scores: dict[str, Any]) -> str:
  width = max(len(k) for k in scores)
  return "\n".join(
      f"{k.ljust(width)}  {v:.4f}"
      if isinstance(v, float)
      else f"{k.ljust(width)}  {v}"
      for k, v in scores.items()
  )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  try:
    trained = inference.restore_trained_model(_WORKDIR.value, _CHECKPOINT.value)
    documents = data.load_splits(trained.config.data)[_SPLIT.value]
  except (FileNotFoundError, data.DataError) as e:
    sys.exit(f"segjax.evaluate: error: {e}")
  if not documents:
    sys.exit(f"segjax.evaluate: error: split {_SPLIT.value!r} is empty")
  probs, loss = trained.predict(documents)
  scores = evaluation.score_documents(
      probs, documents, threshold=trained.threshold
  )
  scores = {"split": _SPLIT.value, "step": trained.step, "loss": loss, **scores}
  if _FORMAT.value == "json":
    print(json.dumps(scores))
  else:
    print(format_table(scores))


if __name__ == "__main__":
  app.run(main)
