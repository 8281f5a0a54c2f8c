"""The Python API: `segjax.Segmenter` on a tiny trained run."""

import itertools

import numpy as np
import pytest

import segjax
from segjax import data
from segjax import decoding

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def segmenter(trained_run):
  return segjax.Segmenter.from_workdir(trained_run)


def _documents(n=5):
  return data.pydoc_documents("test", n)


def test_segment_sentences_thresholds_the_model_probabilities(segmenter):
  document = _documents(1)[0]
  (probs,) = segmenter.boundary_probabilities([document.sentences])
  segments = segmenter.segment_sentences(document.sentences)
  assert [s for segment in segments for s in segment] == document.sentences
  cuts = np.cumsum([len(s) for s in segments])[:-1] - 1
  np.testing.assert_array_equal(
      cuts, np.flatnonzero(probs[:-1] > segmenter.threshold)
  )


def test_constraints_are_met_and_decoded_exactly(segmenter):
  document = _documents(1)[0]
  n = document.num_sentences
  segments = segmenter.segment_sentences(
      document.sentences, min_segment_sentences=3, max_segment_sentences=6
  )
  lengths = [len(s) for s in segments]
  assert sum(lengths) == n and min(lengths) >= 3 and max(lengths) <= 6
  (probs,) = segmenter.boundary_probabilities([document.sentences])
  (expected,) = decoding.decode_documents(
      [probs],
      min_segment_sentences=3,
      max_segment_sentences=6,
      threshold=segmenter.threshold,
  )
  np.testing.assert_array_equal(
      np.cumsum(lengths) - 1, np.flatnonzero(expected)
  )


def test_segment_many_streams_and_matches_one_at_a_time(segmenter):
  documents = _documents(5)
  texts = [" ".join(d.sentences) for d in documents]

  # An endless iterable: only what is asked for is read and segmented.
  stream = segmenter.segment_many(itertools.cycle(texts), batch_size=2)
  first_three = [next(stream) for _ in range(3)]
  assert first_three == [segmenter.segment(t) for t in texts[:3]]
  assert segmenter.segment("") == []


def test_raw_text_keeps_character_offsets(segmenter):
  text = "First topic here. It goes on.\n\nAnother topic starts. It ends."
  (result,) = segmenter.segmentations([text], max_segment_sentences=2)
  joined = [" ".join(segment) for segment in result.segments]
  assert [
      " ".join(text[s:e].split()) for s, e in result.character_spans
  ] == joined
  with pytest.raises(ValueError, match="min"):
    next(
        segmenter.segment_many(
            [text], min_segment_sentences=4, max_segment_sentences=2
        )
    )


def test_text_that_is_not_unicode_names_the_document(segmenter):
  good = _documents(1)[0].sentences
  with pytest.raises(data.DataError, match=r"document 0: not valid text"):
    segmenter.segment("Caf\ud800 is no character.")
  with pytest.raises(data.DataError, match=r"document 2: not valid text"):
    list(segmenter.segment_many([good, good, good + ["\udc80"]], batch_size=2))
