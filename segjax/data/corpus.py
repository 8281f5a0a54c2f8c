"""Corpora behind one interface: documents in memory, or shards on disk.

The input pipeline reads a corpus window by window. It needs the sentences
per document (`lengths`, which list the windows), and for each batch the
token ids, gold labels and, with a pretrained encoder, the sentences of runs
of consecutive sentences (`gather`). Two corpora provide that:

- `InMemoryCorpus` wraps `Document`s: the embedded pydoc corpus, small
  corpora, inference. Each distinct sentence is tokenized when first
  gathered, then kept.
- `ShardedCorpus` reads the records that `segjax.data.shards` wrote (one per
  document, in `segjax.data.records` files). A process holds a few numbers
  per document in memory and reads the records of its own rows only, so its
  memory does not grow with the corpus.

Both give identical batches for the same documents and tokenizer.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterator, NamedTuple, Protocol, Sequence

import msgpack
import numpy as np

from segjax.data.documents import Document


class Gathered(NamedTuple):
  """Sentence rows of a corpus, concatenated run after run.

  Attributes:
    tokens: `[R, L]` token ids.
    gold: `[R]` int32 boundary labels (1 = last sentence of its segment; the
      last sentence of a document is 1).
    is_last: `[R]` bool, the last sentence of its document.
    sentences: the `R` sentences, when asked for.
  """

  tokens: np.ndarray
  gold: np.ndarray
  is_last: np.ndarray
  sentences: list[str] | None


class Corpus(Protocol):
  """What the input pipeline and the evaluation read of a split."""

  lengths: np.ndarray  # int32 [D]: sentences per document
  name_ranks: np.ndarray  # uint64 [D]: `name_rank` of each document's name

  def __len__(self) -> int:
    ...

  def gather(
      self,
      docs: np.ndarray,
      starts: np.ndarray,
      lengths: np.ndarray,
      with_sentences: bool = False,
  ) -> Gathered:
    ...

  def subset(self, indices: Sequence[int]) -> Corpus:
    ...

  def gold_labels(self) -> list[np.ndarray]:
    ...

  def sentences(self) -> Iterator[str]:
    ...


def name_rank(name: str) -> int:
  """A stable pseudo-random sort key of a document name (64-bit BLAKE2b).

  Held-out dev documents and the periodic evaluation subset are the lowest
  ranks: a choice that depends on the names only, not on the seed, the file
  order, the process count or where the data are stored.
  """
  digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
  return int.from_bytes(digest, "big")


def lowest_ranks(name_ranks: np.ndarray, count: int) -> np.ndarray:
  """Sorted indices of the `count` documents of lowest rank (ties: first)."""
  order = np.argsort(np.asarray(name_ranks, np.uint64), kind="stable")
  return np.sort(order[:count])


def run_rows(first: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """int64 `concat(arange(f, f + n) for f, n in zip(first, lengths))`."""
  first = np.asarray(first, np.int64)
  lengths = np.asarray(lengths, np.int64)
  run_start = np.cumsum(lengths) - lengths
  return np.repeat(first - run_start, lengths) + np.arange(lengths.sum())


def boundary_labels(document: Document) -> np.ndarray:
  """Gold labels of a document, int32 `[n]`: 1 at every segment's last sentence.

  The document's last sentence is 1 too (it ends a segment); this is the gold
  array for the metrics, which ignore that position anyway.
  """
  labels = np.zeros(document.num_sentences, np.int32)
  ends = np.cumsum([len(s) for s in document.segments], dtype=np.int64) - 1
  labels[ends] = 1
  return labels


class LazyTokens:
  """Token ids per distinct sentence, computed when first needed, then kept.

  The array is `np.zeros`, which pages in lazily, so sentences never
  gathered (other processes' rows) cost no memory. `tokenizer` has
  `max_tokens`, `id_dtype` and `encode(sentences) -> [n, max_tokens]`.
  """

  def __init__(self, tokenizer, num_sentences: int):
    self._tokenizer = tokenizer
    self._ids = np.zeros(
        (num_sentences, tokenizer.max_tokens), tokenizer.id_dtype
    )
    self._done = np.zeros(num_sentences, bool)

  def get(self, ids: np.ndarray, sentences: Sequence[str]) -> np.ndarray:
    missing = np.unique(ids[~self._done[ids]])
    if missing.size:
      encoded = self._tokenizer.encode([sentences[i] for i in missing])
      self._ids[missing] = encoded
      self._done[missing] = True
    return self._ids[ids]


class InMemoryCorpus:
  """`Document`s as a `Corpus`; sentences are tokenized when first gathered.

  Sentence rows of all documents are numbered back to back; distinct
  sentences are tokenized once (corpora built from a sentence pool, like the
  pydoc one, repeat sentences many times).
  """

  def __init__(self, documents: Sequence[Document], tokenizer):
    self.documents = list(documents)
    self.tokenizer = tokenizer
    self.lengths = np.array(
        [doc.num_sentences for doc in self.documents], np.int32
    ).reshape(-1)
    self._offsets = np.cumsum(self.lengths, dtype=np.int64) - self.lengths
    id_of_sentence = {}
    self._sentence_ids = np.fromiter(
        (
            id_of_sentence.setdefault(sentence, len(id_of_sentence))
            for doc in self.documents
            for sentence in doc.sentences
        ),
        np.int64,
        int(self.lengths.sum()),
    )
    self._sentences = tuple(id_of_sentence)
    gold = [boundary_labels(doc) for doc in self.documents]
    self._gold = np.concatenate(gold) if gold else np.zeros(0, np.int32)
    self._tokens = LazyTokens(tokenizer, len(self._sentences))

  @property
  def name_ranks(self) -> np.ndarray:
    return np.array(
        [name_rank(doc.name) for doc in self.documents], np.uint64
    ).reshape(-1)

  def __len__(self) -> int:
    return len(self.documents)

  def gather(self, docs, starts, lengths, with_sentences=False) -> Gathered:
    docs = np.asarray(docs, np.int64)
    rows = run_rows(self._offsets[docs] + starts, lengths)
    ids = self._sentence_ids[rows]
    ends = np.repeat(self._offsets[docs] + self.lengths[docs], lengths)
    return Gathered(
        tokens=self._tokens.get(ids, self._sentences),
        gold=self._gold[rows],
        is_last=rows == ends - 1,
        sentences=(
            [self._sentences[i] for i in ids] if with_sentences else None
        ),
    )

  def subset(self, indices) -> InMemoryCorpus:
    return InMemoryCorpus([self.documents[i] for i in indices], self.tokenizer)

  def gold_labels(self) -> list[np.ndarray]:
    return np.split(self._gold, self._offsets[1:]) if len(self) else []

  def sentences(self) -> Iterator[str]:
    for doc in self.documents:
      yield from doc.sentences


# -- Records: one document each -------------------------------------------------


def encode_record(tokens: np.ndarray, gold: np.ndarray, sentences) -> bytes:
  """One document's record: token ids `[n, L]`, gold labels `[n]`, text."""
  return msgpack.packb(
      {
          "tokens": np.ascontiguousarray(tokens).tobytes(),
          "dtype": np.dtype(tokens.dtype).str,
          "gold": np.asarray(gold, np.uint8).tobytes(),
          "sentences": list(sentences),
      },
      use_bin_type=True,
  )


def decode_record(record: bytes, max_tokens: int):
  """(tokens `[n, L]`, gold int32 `[n]`, sentences) of `encode_record`."""
  fields = msgpack.unpackb(record, raw=False)
  tokens = np.frombuffer(fields["tokens"], np.dtype(fields["dtype"]))
  gold = np.frombuffer(fields["gold"], np.uint8).astype(np.int32)
  return tokens.reshape(len(gold), max_tokens), gold, fields["sentences"]


class FlatGold:
  """Gold labels of all documents of a split, back to back, read on demand.

  `parts` are flat uint8 arrays (memory-mapped `.npy` files), one per shard
  part, in document order; no document spans two parts.
  """

  def __init__(self, parts: Sequence[np.ndarray]):
    self.parts = list(parts)
    sizes = [len(p) for p in self.parts]
    self._starts = np.cumsum(sizes, dtype=np.int64) - sizes

  def labels(self, offset: int, length: int) -> np.ndarray:
    part = int(np.searchsorted(self._starts, offset, side="right")) - 1
    first = offset - self._starts[part]
    return np.asarray(self.parts[part][first : first + length], np.int32)


class ShardedCorpus:
  """Documents stored as records of shards (`segjax.data.shards`).

  Attributes:
    source: a random-access source of the records (`__getitems__`), e.g.
      `records.RecordFiles` over the split's shard files.
    records: int64 `[D]` record of each document of this corpus.
    lengths: int32 `[D]` sentences per document.
    name_ranks: uint64 `[D]` `name_rank` of each document's name.
    max_tokens: L, token ids per sentence in the records.
    gold: the gold labels of every record (`FlatGold`).
    gold_offsets: int64 `[D]` first position of each document in `gold`.
  """

  def __init__(
      self,
      source,
      records,
      lengths,
      name_ranks,
      max_tokens: int,
      gold: FlatGold,
      gold_offsets=None,
  ):
    self.source = source
    self.records = np.asarray(records, np.int64)
    self.lengths = np.asarray(lengths, np.int32)
    self.name_ranks = np.asarray(name_ranks, np.uint64)
    self.max_tokens = max_tokens
    self.gold = gold
    if gold_offsets is None:
      gold_offsets = np.cumsum(self.lengths, dtype=np.int64) - self.lengths
    self.gold_offsets = np.asarray(gold_offsets, np.int64)

  def __len__(self) -> int:
    return len(self.records)

  def _read(self, docs: np.ndarray) -> list:
    """Decoded records of documents `docs` (each read once)."""
    if not len(docs):  # A batch share of padding rows only.
      return []
    unique, inverse = np.unique(docs, return_inverse=True)
    raw = self.source.__getitems__(self.records[unique].tolist())
    decoded = [decode_record(r, self.max_tokens) for r in raw]
    return [decoded[i] for i in inverse.reshape(-1)]

  def gather(self, docs, starts, lengths, with_sentences=False) -> Gathered:
    docs = np.asarray(docs, np.int64)
    tokens, gold, is_last, sentences = [], [], [], []
    for (doc_tokens, doc_gold, doc_sentences), doc, start, length in zip(
        self._read(docs), docs, starts, lengths
    ):
      run = slice(int(start), int(start) + int(length))
      tokens.append(doc_tokens[run])
      gold.append(doc_gold[run])
      is_last.append(np.arange(run.start, run.stop) == self.lengths[doc] - 1)
      if with_sentences:
        sentences.extend(doc_sentences[run])
    if not tokens:
      return Gathered(
          np.zeros((0, self.max_tokens), np.int32),
          np.zeros(0, np.int32),
          np.zeros(0, bool),
          [] if with_sentences else None,
      )
    return Gathered(
        np.concatenate(tokens),
        np.concatenate(gold),
        np.concatenate(is_last),
        sentences if with_sentences else None,
    )

  def subset(self, indices) -> ShardedCorpus:
    indices = np.asarray(indices, np.int64)
    return ShardedCorpus(
        self.source,
        self.records[indices],
        self.lengths[indices],
        self.name_ranks[indices],
        self.max_tokens,
        self.gold,
        self.gold_offsets[indices],
    )

  def gold_labels(self) -> list[np.ndarray]:
    return [
        self.gold.labels(offset, length)
        for offset, length in zip(self.gold_offsets, self.lengths)
    ]

  def sentences(self) -> Iterator[str]:
    """Every sentence, document by document (reads all records)."""
    for first in range(0, len(self), 512):
      chunk = np.arange(first, min(first + 512, len(self)))
      for _, _, sentences in self._read(chunk):
        yield from sentences


def as_corpus(documents: Any, tokenizer) -> Corpus:
  """`documents` if it is a corpus already, else an `InMemoryCorpus`."""
  if hasattr(documents, "gather"):
    return documents
  return InMemoryCorpus(documents, tokenizer)
