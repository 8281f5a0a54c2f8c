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
import pathlib
import sys

from absl import app
from absl import flags
import numpy as np

from segjax import checkpoints
from segjax import data
from segjax import encoders
from segjax import inference
from segjax import metric_writers
from segjax.sentences import LONG_SENTENCE_WORDS

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
  """The UTF-8 text of `path` or, for "-", standard input.

  Raises:
    OSError: `path` cannot be read.
    data.DataError: not UTF-8 (names the input and the line).
  """
  if path == "-":
    return data.decode_text(sys.stdin.buffer.read(), "<stdin>")
  return data.decode_text(pathlib.Path(path).read_bytes(), path)


def long_sentence_hint(sentences: list[str], source: str) -> str | None:
  """A hint at --one_per_line when some "sentence" is implausibly long.

  Text without sentence punctuation (lists, tables, one item per line)
  comes out of the sentence splitter as a few enormous "sentences".
  """
  words = [len(s.split()) for s in sentences]
  long = sum(n > LONG_SENTENCE_WORDS for n in words)
  if not long:
    return None
  return (
      f"{long} of {len(sentences)} sentences of {source} have more than "
      f"{LONG_SENTENCE_WORDS} words (the longest {max(words)}); if it has one "
      "sentence or item per line, pass --one_per_line"
  )


def main(argv):
  metric_writers.quiet_library_logs()
  if len(argv) != 2:
    raise app.UsageError("give one input FILE, or - for standard input")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  try:
    text = read_input(argv[1])
    trained = inference.restore_trained_model(_WORKDIR.value, _CHECKPOINT.value)
  except (
      OSError,
      data.DataError,
      encoders.LoadError,
      checkpoints.CheckpointError,
  ) as e:
    sys.exit(f"segjax.segment: error: {e}")
  sentences = data.split_sentences(text, one_per_line=_ONE_PER_LINE.value)
  if not sentences:
    sys.exit(f"segjax.segment: error: no sentence in {argv[1]}")
  if not _ONE_PER_LINE.value and (
      hint := long_sentence_hint(
          sentences, "standard input" if argv[1] == "-" else argv[1]
      )
  ):
    print(f"segjax.segment: warning: {hint}", file=sys.stderr)
  threshold = (
      _THRESHOLD.value if _THRESHOLD.value is not None else trained.threshold
  )
  try:
    (probs,), _ = trained.predict([data.Document.from_sentences(sentences)])
  except inference.NonFiniteOutput as e:
    sys.exit(f"segjax.segment: error: {e}")
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
