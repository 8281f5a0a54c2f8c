"""Tests of segjax.embedding_cache: keyed by text and encoder, shards, shares."""

import numpy as np
import pytest

from segjax import embedding_cache

IDENTITY = {"name": "toy", "weights_sha256": "ab" * 32, "max_seq_length": 8}
DIM = 4


def toy_encode(sentences):
  """A deterministic stand-in encoder: vectors from the text's digest."""
  digests = embedding_cache.sentence_digests(sentences)
  return np.stack(
      [np.random.default_rng(int(d)).normal(size=DIM) for d in digests]
  ).astype(np.float32)


class CountingEncoder:

  def __init__(self):
    self.seen = []

  def __call__(self, sentences):
    self.seen += list(sentences)
    return toy_encode(sentences)


def vectors_of(cache, sentences):
  rows = cache.rows(embedding_cache.sentence_digests(sentences))
  assert (rows >= 0).all()
  return cache.vectors(rows)


def test_each_sentence_is_encoded_once_and_read_back(tmp_path):
  cache = embedding_cache.EmbeddingCache(tmp_path, IDENTITY, DIM)
  encoder = CountingEncoder()
  sentences = ["a b.", "c d.", "a b.", "é ü ß."]
  assert cache.add_missing(sentences, encoder, progress=False) == 3
  assert sorted(encoder.seen) == sorted({"a b.", "c d.", "é ü ß."})
  np.testing.assert_array_equal(
      vectors_of(cache, sentences), toy_encode(sentences).astype(np.float16)
  )
  # A new cache object on the same folder (a rerun) encodes nothing.
  again = embedding_cache.EmbeddingCache(tmp_path, IDENTITY, DIM)
  rerun = CountingEncoder()
  assert again.add_missing(sentences + ["new."], rerun, progress=False) == 1
  assert rerun.seen == ["new."]
  assert len(again) == 4
  np.testing.assert_array_equal(
      vectors_of(again, ["new.", "c d."]),
      toy_encode(["new.", "c d."]).astype(np.float16),
  )


def test_a_changed_encoder_never_reads_stale_vectors(tmp_path):
  cache = embedding_cache.EmbeddingCache(tmp_path, IDENTITY, DIM)
  cache.add_missing(["x."], toy_encode, progress=False)
  other = embedding_cache.EmbeddingCache(
      tmp_path, {**IDENTITY, "max_seq_length": 16}, DIM
  )
  assert other.folder != cache.folder
  assert other.rows(embedding_cache.sentence_digests(["x."])).tolist() == [-1]


def test_processes_encode_disjoint_shares_that_cover_everything(tmp_path):
  sentences = [f"sentence {i}." for i in range(50)]
  encoders = [CountingEncoder(), CountingEncoder()]
  caches = [
      embedding_cache.EmbeddingCache(tmp_path, IDENTITY, DIM) for _ in range(2)
  ]
  for index, (cache, encoder) in enumerate(zip(caches, encoders)):
    cache.add_missing(
        sentences,
        encoder,
        process_index=index,
        process_count=2,
        progress=False,
    )
  assert not set(encoders[0].seen) & set(encoders[1].seen)
  assert sorted(encoders[0].seen + encoders[1].seen) == sorted(sentences)
  for cache in caches:
    cache.reload()
    np.testing.assert_array_equal(
        vectors_of(cache, sentences), toy_encode(sentences).astype(np.float16)
    )


def test_an_unfinished_shard_is_ignored(tmp_path):
  cache = embedding_cache.EmbeddingCache(tmp_path, IDENTITY, DIM)

  def dies(sentences):
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    cache.add_missing(["x.", "y."], dies, progress=False)
  cache.reload()
  assert len(cache) == 0
  assert cache.add_missing(["x.", "y."], toy_encode, progress=False) == 2


def test_a_shard_of_the_wrong_size_is_refused(tmp_path):
  cache = embedding_cache.EmbeddingCache(tmp_path, IDENTITY, DIM)
  cache.add_missing(["x."], toy_encode, progress=False)
  with pytest.raises(ValueError, match="delete the shard"):
    embedding_cache.EmbeddingCache(tmp_path, IDENTITY, DIM + 1)
