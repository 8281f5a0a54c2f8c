"""`Segmenter`: a trained run as a Python API for segmenting text.

  from segjax import Segmenter

  segmenter = Segmenter.from_workdir("runs/boundary")       # loads once
  segments = segmenter.segment(text, max_segment_sentences=12)
  for segments in segmenter.segment_many(texts, batch_size=32):
    ...

Text is split into units (sentences through pysbd, or paragraphs, or lines:
`segjax.sentences`), the model gives every unit the probability that a
segment ends there, and `segjax.decoding` chooses the boundaries: at the
run's dev-tuned threshold, or the most probable segmentation under length
constraints (`min_segment_sentences`, `max_segment_sentences`,
`num_segments`). The CLIs `segjax.segment` and `segjax.evaluate` are thin
layers over this module.
"""

from __future__ import annotations

import dataclasses
import itertools
import pathlib
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from segjax import data
from segjax import decoding
from segjax import inference
from segjax import sentences as sentences_lib

UNITS = ("sentence", "paragraph", "line")


@dataclasses.dataclass(frozen=True)
class Segmentation:
  """One document's units, boundary probabilities and chosen segments.

  Attributes:
    units: the sentences (or paragraphs, lines) that were grouped.
    probabilities: float32 `[n]` p(segment ends after unit i).
    boundaries: int32 `[n]` 1 where a chosen segment ends (the last is 1).
    offsets: `(start, end)` character offsets of each unit in the original
      text, or None when the input was already split into units.
    constraints: what the document was decoded under: the request, relaxed
      where the document cannot meet it (`decoding.relaxed_constraints`).
  """

  units: list[str]
  probabilities: np.ndarray
  boundaries: np.ndarray
  offsets: list[tuple[int, int]] | None = None
  constraints: decoding.Constraints = decoding.Constraints()

  @property
  def spans(self) -> list[tuple[int, int]]:
    """`[start, end)` unit indices of each segment."""
    ends = np.flatnonzero(self.boundaries) + 1
    starts = np.concatenate([[0], ends[:-1]])
    return [(int(s), int(e)) for s, e in zip(starts, ends)]

  @property
  def segments(self) -> list[list[str]]:
    """Each segment as the list of its units."""
    return [self.units[s:e] for s, e in self.spans]

  @property
  def character_spans(self) -> list[tuple[int, int]] | None:
    """`(start, end)` character offsets of each segment in the original."""
    if self.offsets is None:
      return None
    return [(self.offsets[s][0], self.offsets[e - 1][1]) for s, e in self.spans]


def split_units(
    text: str, unit: str = "sentence", language: str = "en"
) -> list[sentences_lib.Span]:
  """The units of raw text, with their offsets (see `segjax.sentences`)."""
  if unit not in UNITS:
    raise ValueError(f"unit {unit!r} is not one of {', '.join(UNITS)}")
  return sentences_lib.split(text, unit=unit, language=language)


class Segmenter:
  """Segments text with a trained run's model, threshold and encoders."""

  def __init__(self, trained: inference.TrainedModel):
    self.trained = trained

  @classmethod
  def from_workdir(
      cls, path: str | pathlib.Path, checkpoint: str = "best"
  ) -> Segmenter:
    """Restores a run's checkpoint ("best", "latest" or a step) once."""
    return cls(inference.restore_trained_model(path, checkpoint))

  @property
  def threshold(self) -> float:
    """The decision threshold tuned on the run's dev set."""
    return self.trained.threshold

  def boundary_probabilities(
      self, documents: Sequence[Sequence[str]]
  ) -> list[np.ndarray]:
    """p(segment ends after unit i) for each document's units, float32."""
    documents = [list(units) for units in documents]
    probs = [np.zeros(0, np.float32) for _ in documents]
    present = [i for i, units in enumerate(documents) if units]
    if present:
      predicted, _ = self.trained.predict(
          [data.Document.from_sentences(documents[i]) for i in present]
      )
      for i, p in zip(present, predicted):
        probs[i] = np.asarray(p, np.float32)
    return probs

  def segmentations(
      self,
      items: Iterable[str | Sequence[str]],
      *,
      batch_size: int = 32,
      unit: str = "sentence",
      min_segment_sentences: int | None = None,
      max_segment_sentences: int | None = None,
      num_segments: int | None = None,
      threshold: float | None = None,
  ) -> Iterator[Segmentation]:
    """A `Segmentation` per item, in order, `batch_size` documents at a time.

    An item is raw text (split into `unit`s) or a sequence of units. Items
    are read lazily, so an endless iterable streams. `threshold` (default:
    the run's) is in [0, 1]; see `segjax.decoding` for the constraints.
    """
    constraints = dict(
        min_segment_sentences=min_segment_sentences,
        max_segment_sentences=max_segment_sentences,
        num_segments=num_segments,
    )
    threshold = self.threshold if threshold is None else threshold
    decoding.check_constraints(**constraints, threshold=threshold)
    items = iter(items)
    first = 0
    while chunk := list(itertools.islice(items, batch_size)):
      units, offsets = [], []
      for number, item in enumerate(chunk, start=first):
        if isinstance(item, str):
          data.check_text([item], f"document {number}")
          spans = split_units(item, unit)
          units.append([span.text for span in spans])
          offsets.append([(span.start, span.end) for span in spans])
        else:
          units.append(list(item))
          data.check_text(units[-1], f"document {number}")
          offsets.append(None)
      first += len(chunk)
      probs = self.boundary_probabilities(units)
      labels = decoding.decode_documents(
          probs, **constraints, threshold=threshold
      )
      for u, p, b, o in zip(units, probs, labels, offsets):
        yield Segmentation(
            u,
            p,
            np.asarray(b, np.int32),
            o,
            decoding.relaxed_constraints(len(u), **constraints),
        )

  def segment_many(
      self, items: Iterable[str | Sequence[str]], **options
  ) -> Iterator[list[list[str]]]:
    """The segments of each item (see `segmentations` for the options)."""
    for segmentation in self.segmentations(items, **options):
      yield segmentation.segments

  def segment(self, text: str, **options) -> list[list[str]]:
    """The segments of raw text, each a list of its sentences."""
    return next(self.segment_many([text], **options))

  def segment_sentences(
      self, sentences: Sequence[str], **options
  ) -> list[list[str]]:
    """The segments of an already split document."""
    return next(self.segment_many([list(sentences)], **options))
