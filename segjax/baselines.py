"""Baselines that predict hard boundaries, scored like a model.

Three baselines give a trained model's numbers their scale:

- `no_boundaries`: every document is one segment;
- `evenly_spaced`: a boundary every round(mean train segment length)
  sentences;
- `texttiling`: nltk's TextTiling (Hearst 1997) with its pseudo-sentence
  size w and block size k tuned on dev by Pk.

`fit(name, splits)` chooses a baseline's parameters on train / dev;
`score_predictions` scores hard labels with `evaluation.score_documents`, so
baselines and models share every metric convention. Used by
`segjax.evaluate --baseline` and `tools/compare_losses.py`.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from absl import logging
import numpy as np

from segjax import data
from segjax import evaluation

NAMES = ("no_boundaries", "evenly_spaced", "texttiling")
# The (w, k) grids TextTiling is tuned over unless told otherwise.
TEXTTILING_W = (10, 20, 30)
TEXTTILING_K = (3, 5, 10)

# A literal English stopword list for TextTiling: nltk's default needs its
# stopwords corpus, a download that segjax must not depend on.
STOPWORDS = frozenset("""
a about above after again against all am an and any are aren't as at be
because been before being below between both but by can can't cannot could
couldn't did didn't do does doesn't doing don't down during each few for
from further had hadn't has hasn't have haven't having he he'd he'll he's
her here here's hers herself him himself his how how's i i'd i'll i'm i've
if in into is isn't it it's its itself let's me more most mustn't my myself
no nor not of off on once only or other ought our ours ourselves out over
own same shan't she she'd she'll she's should shouldn't so some such than
that that's the their theirs them themselves then there there's these they
they'd they'll they're they've this those through to too under until up
very was wasn't we we'd we'll we're we've were weren't what what's when
when's where where's which while who who's whom why why's will with won't
would wouldn't you you'd you'll you're you've your yours yourself yourselves
also may must might shall however thus e g i e etc
""".split())

# Labels for one document, or None when it is too short for the baseline.
Labeller = Callable[[data.Document], np.ndarray | None]


# ----------------------------------------------------------------------------
# Scoring hard labels.
# ----------------------------------------------------------------------------


def score_predictions(
    predictions: Sequence[np.ndarray], documents: Sequence[data.Document]
) -> dict[str, float]:
  """The metrics of `evaluation.score_documents` for hard 0/1 labels.

  The labels are scored as probabilities 0 and 1 at threshold 0.5, which
  keeps exactly the predicted boundaries. ECE needs real probabilities: it
  is NaN (and Brier and the threshold are left out). Adds the numbers of
  predicted and gold boundaries.
  """
  probs = [np.asarray(p, np.float32) for p in predictions]
  scores = evaluation.score_documents(
      probs, [data.boundary_labels(d) for d in documents], threshold=0.5
  )
  del scores["brier"], scores["threshold"]
  scores["ece"] = math.nan
  # The last sentence is the implicit document end, never a boundary label.
  scores["num_predicted"] = sum(
      int(np.sum(p[: d.num_sentences - 1])) for p, d in zip(probs, documents)
  )
  scores["num_gold"] = sum(len(d.segments) - 1 for d in documents)
  return scores


def label_documents(
    labeller: Labeller, documents: Iterable[data.Document]
) -> tuple[list[np.ndarray], int]:
  """(labels per document, how many fell back to no boundaries)."""
  predictions, fallbacks = [], 0
  for document in documents:
    labels = labeller(document)
    if labels is None:
      labels, fallbacks = no_boundaries(document), fallbacks + 1
    predictions.append(labels)
  return predictions, fallbacks


# ----------------------------------------------------------------------------
# The baselines.
# ----------------------------------------------------------------------------


def no_boundaries(document: data.Document) -> np.ndarray:
  """All zeros: the document is one segment."""
  return np.zeros(document.num_sentences, np.int32)


def evenly_spaced(document: data.Document, length: int) -> np.ndarray:
  """A boundary after every `length` sentences: (N - 1) // length of them."""
  labels = np.zeros(document.num_sentences, np.int32)
  labels[length - 1 : document.num_sentences - 1 : length] = 1
  return labels


def mean_segment_length(documents: Iterable[data.Document]) -> float:
  """Sentences per segment over all `documents`."""
  documents = list(documents)
  return sum(d.num_sentences for d in documents) / sum(
      len(d.segments) for d in documents
  )


def make_texttiler(w: int, k: int):
  """nltk's TextTilingTokenizer with the built-in stopword list."""
  # Imported here: only this baseline needs nltk.
  from nltk.tokenize import texttiling  # pylint: disable=g-import-not-at-top

  return texttiling.TextTilingTokenizer(w=w, k=k, stopwords=STOPWORDS)


def texttiling_boundaries(document: data.Document, tiler) -> np.ndarray | None:
  """TextTiling's boundaries as sentence labels; None if the text is too short.

  Each sentence is one paragraph (TextTiling only cuts at blank lines), so
  every cut it returns sits at a sentence end: the returned segments
  partition the text, and a segment's end offset is the end of the sentence
  before it.
  """
  sentences = [" ".join(s.split()) for s in document.sentences]
  text = "\n\n".join(sentences)
  ends = np.cumsum([len(s) + 2 for s in sentences]) - 2  # After each sentence.
  try:
    segments = tiler.tokenize(text)
  except (ValueError, ZeroDivisionError):
    # nltk raises ValueError on texts with too few paragraphs or
    # pseudo-sentences for its windows.
    return None
  labels = np.zeros(len(sentences), np.int32)
  offset = 0
  for segment in segments[:-1]:
    offset += len(segment)
    ended = bisect.bisect_right(ends.tolist(), offset)  # Sentences before it.
    if 1 <= ended < len(sentences):
      labels[ended - 1] = 1
  return labels


def texttiling_predictions(
    documents: Sequence[data.Document], w: int, k: int
) -> tuple[list[np.ndarray], int]:
  """(labels per document, how many were too short and got no boundaries)."""
  tiler = make_texttiler(w, k)
  return label_documents(
      functools.partial(texttiling_boundaries, tiler=tiler), documents
  )


def tune_texttiling(
    dev: Sequence[data.Document], ws: Sequence[int], ks: Sequence[int]
) -> tuple[dict, list[dict]]:
  """Grid search of (w, k) by dev Pk.

  Returns:
    (best row, all rows); a row holds w, k, the dev scores, the number of
    dev documents that fell back to no boundaries and the seconds it took.
  """
  rows = []
  for w in ws:
    for k in ks:
      start = time.perf_counter()
      predictions, fallbacks = texttiling_predictions(dev, w, k)
      scores = score_predictions(predictions, dev)
      rows.append(
          {
              "w": w,
              "k": k,
              "dev": scores,
              "fallbacks": fallbacks,
              "seconds": time.perf_counter() - start,
          }
      )
      logging.info(
          "TextTiling w=%d k=%d: dev Pk %.4f WindowDiff %.4f "
          "(%d short documents)",
          w,
          k,
          scores["pk"],
          scores["window_diff"],
          fallbacks,
      )
  best = min(rows, key=lambda r: np.nan_to_num(r["dev"]["pk"], nan=2.0))
  return best, rows


# ----------------------------------------------------------------------------
# Fitting a baseline by name.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FittedBaseline:
  """A baseline with its parameters chosen on train / dev.

  Attributes:
    name: one of `NAMES`.
    title: a table label naming the parameters, e.g. "evenly spaced (every 7)".
    params: the chosen parameters (`segment_length`, or `w` and `k`).
    labeller: the labels of one document, None when it is too short.
    tuning: a tuned baseline's dev grid (`tune_texttiling` rows, in grid
      order); empty otherwise.
    tuned: the row of `tuning` that was chosen (its dev scores), or None.
  """

  name: str
  title: str
  params: dict[str, Any]
  labeller: Labeller
  tuning: tuple[dict, ...] = ()
  tuned: dict | None = None

  def predict(
      self, documents: Sequence[data.Document]
  ) -> tuple[list[np.ndarray], int]:
    """(labels per document, how many fell back to no boundaries)."""
    return label_documents(self.labeller, documents)


def fit(
    name: str,
    splits: Mapping[str, Sequence[data.Document]],
    *,
    texttiling_w: Sequence[int] = TEXTTILING_W,
    texttiling_k: Sequence[int] = TEXTTILING_K,
) -> FittedBaseline:
  """Baseline `name` with its parameters chosen on `splits`.

  The evenly spaced length comes from the "train" split, TextTiling's
  (w, k) from "dev" (by Pk over `texttiling_w` x `texttiling_k`).

  Raises:
    data.DataError: the split it is fitted on is empty.
    ValueError: an unknown name.
  """
  if name == "no_boundaries":
    return FittedBaseline(name, "no boundaries", {}, no_boundaries)
  if name == "evenly_spaced":
    if not splits["train"]:
      raise data.DataError("evenly_spaced needs training documents")
    length = max(1, round(mean_segment_length(splits["train"])))
    return FittedBaseline(
        name,
        f"evenly spaced (every {length})",
        {"segment_length": length},
        functools.partial(evenly_spaced, length=length),
    )
  if name == "texttiling":
    if not splits["dev"]:
      raise data.DataError("texttiling needs dev documents to tune on")
    best, grid = tune_texttiling(splits["dev"], texttiling_w, texttiling_k)
    w, k = best["w"], best["k"]
    return FittedBaseline(
        name,
        f"TextTiling (w={w}, k={k})",
        {"w": w, "k": k},
        functools.partial(texttiling_boundaries, tiler=make_texttiler(w, k)),
        tuning=tuple(grid),
        tuned=best,
    )
  raise ValueError(f"unknown baseline {name!r}; expected one of {NAMES}")
