r"""Segments raw text with a trained model.

  python -m segjax.segment --workdir=runs/boundary article.txt
  cat article.txt | python -m segjax.segment --workdir=runs/boundary -
  python -m segjax.segment --workdir=runs/boundary --format=json article.txt

Input: free text (split into sentences; blank lines end paragraphs) or, with
`--one_per_line`, one sentence or paragraph per line. Output: the sentences
with a separator line between predicted segments, or with `--format=json` an
object with `sentences`, `boundary_probabilities`, `threshold` and `segments`.
"""

from __future__ import annotations

import json
import sys

from absl import app
from absl import flags
import numpy as np

from segjax import data
from segjax import encoders
from segjax import inference

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir.")
_FORMAT = flags.DEFINE_enum(
    "format", "text", ["text", "json"], "Output format."
)
_ONE_PER_LINE = flags.DEFINE_bool(
    "one_per_line", False, "Each non-blank input line is one sentence."
)
_THRESHOLD = flags.DEFINE_float(
    "threshold", None, "Decision threshold; default: the run's dev-tuned one."
)
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", "best", "best, latest, or a step number."
)
SEPARATOR = "=========="


def segments_from_probabilities(
    sentences: list[str], probs: np.ndarray, threshold: float
) -> list[list[str]]:
  """Cuts after every sentence whose boundary probability exceeds threshold."""
  segments, current = [], []
  for sentence, prob in zip(sentences, probs):
    current.append(sentence)
    if prob > threshold:
      segments.append(current)
      current = []
  if current:
    segments.append(current)
  return segments


def read_input(path: str) -> str:
  if path == "-":
    return sys.stdin.read()
  with open(path, encoding="utf-8") as f:
    return f.read()


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("give one input FILE, or - for standard input")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  try:
    text = read_input(argv[1])
    trained = inference.restore_trained_model(_WORKDIR.value, _CHECKPOINT.value)
  except (OSError, UnicodeDecodeError, encoders.LoadError) as e:
    sys.exit(f"segjax.segment: error: {e}")
  sentences = data.split_sentences(text, one_per_line=_ONE_PER_LINE.value)
  if not sentences:
    sys.exit(f"segjax.segment: error: no sentence in {argv[1]}")
  threshold = (
      _THRESHOLD.value if _THRESHOLD.value is not None else trained.threshold
  )
  (probs,), _ = trained.predict([data.Document.from_sentences(sentences)])
  segments = segments_from_probabilities(sentences, probs, threshold)
  if _FORMAT.value == "json":
    print(
        json.dumps(
            {
                "sentences": sentences,
                "boundary_probabilities": [round(float(p), 6) for p in probs],
                "threshold": threshold,
                "segments": segments,
            },
            indent=1,
        )
    )
  else:
    print(f"\n{SEPARATOR}\n".join("\n".join(s) for s in segments))


if __name__ == "__main__":
  app.run(main)
