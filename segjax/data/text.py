"""Text utilities: a dependency-free sentence splitter and the hashed tokenizer.

Both are used on the training path and at inference (`segjax.segment`), so
they live in one place and behave identically in every process.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import threading
from typing import Any, Iterable, Mapping

import numpy as np

# Words are runs of word characters; every other non-space character is a token
# of its own, so punctuation carries signal without a vocabulary.
_WORD_PATTERN = re.compile(r"\w+|[^\w\s]")

# A sentence may end at ., ! or ? (plus closing quotes/brackets) when the next
# word starts like a sentence: an upper-case letter or digit, maybe quoted.
_SENTENCE_END = re.compile(r"""[.!?]+["'”’)\]]*\s+(?=["'“‘(\[]*[A-Z0-9])""")

# Words whose trailing period is almost never a sentence end. Lower-cased,
# without the final period.
_ABBREVIATIONS = frozenset(
    {
        "al",
        "approx",
        "cf",
        "dr",
        "e.g",
        "eg",
        "fig",
        "i.e",
        "ie",
        "inc",
        "jr",
        "ltd",
        "mr",
        "mrs",
        "ms",
        "no",
        "prof",
        "sr",
        "st",
        "vs",
    }
)

# Dotted initialisms ("U.S.", "a.m.") and single initials ("J. Smith").
_INITIALISM = re.compile(r"(?:[^\W\d_]\.)*[^\W\d_]")

_BLANK_LINE = re.compile(r"\n\s*\n")


def _ends_with_abbreviation(text: str, end: int) -> bool:
  """Whether the word that ends at `text[end]` (a period) is an abbreviation."""
  start = max(text.rfind(" ", 0, end), text.rfind("(", 0, end)) + 1
  word = text[start:end].lower()
  return word in _ABBREVIATIONS or _INITIALISM.fullmatch(word) is not None


def _split_paragraph(paragraph: str) -> list[str]:
  """Sentences of one paragraph, whose lines are joined with single spaces."""
  text = " ".join(paragraph.split())
  sentences, start = [], 0
  for match in _SENTENCE_END.finditer(text):
    period = match.start()
    if text[period] == "." and _ends_with_abbreviation(text, period):
      continue
    sentences.append(text[start : match.end()].strip())
    start = match.end()
  sentences.append(text[start:].strip())
  return [s for s in sentences if s]


def split_sentences(text: str, *, one_per_line: bool = False) -> list[str]:
  """Splits raw text into sentences.

  A regular-expression splitter, good enough for prose and free of
  dependencies: it breaks after `.`, `!` or `?` when the next word starts with
  an upper-case letter or a digit, except after common abbreviations and
  initials. Blank lines always end a sentence (paragraph breaks). It builds
  the pydoc corpus; raw text to segment goes through `segjax.sentences`
  (pysbd, with character offsets), and this is its fallback
  (`segjax.segment --splitter=regex`).

  Args:
    text: the text to split.
    one_per_line: treat every non-blank line as one sentence (the layout of
      the Choi and Wiki-727K corpora) instead of running the splitter.

  Returns:
    The sentences, whitespace-normalised, without empty ones.
  """
  if one_per_line:
    lines = text.splitlines()
    return [" ".join(line.split()) for line in lines if line.strip()]
  return [
      sentence
      for paragraph in _BLANK_LINE.split(text)
      for sentence in _split_paragraph(paragraph)
  ]


def words(sentence: str, *, lowercase: bool = True) -> list[str]:
  """The word and punctuation tokens the tokenizer hashes."""
  return _WORD_PATTERN.findall(sentence.lower() if lowercase else sentence)


def _word_hash(word: str) -> int:
  """A 64-bit hash of a word, identical in every process, run and platform.

  Python's `hash()` is salted per process (PYTHONHASHSEED), so it would give
  each host a different vocabulary; BLAKE2b of the UTF-8 bytes does not.
  """
  data = word.encode("utf-8", "surrogatepass")  # Lone surrogates hash too.
  digest = hashlib.blake2b(data, digest_size=8).digest()
  return int.from_bytes(digest, "little")


class _WordHashes:
  """Fingerprint -> `_word_hash(word)`, computed on first use; cleared when full.

  An open-addressing table (linear probing, at most half full: up to 2**23
  rows of 16 bytes) that the compiled tokenizer (`kernels.token_ids`) probes
  for every token; Python runs only for words it has not seen before. Keyed
  by fingerprint (two distinct words agree with probability 2**-64 per pair,
  against the 1 / num_buckets at which any two words share an id anyway).
  """

  MAX_SIZE = 1 << 21

  def __init__(self):
    # Shared by the threads of a process (data loading, building shards):
    # one call's lookup and insertion must see the same arrays.
    self._lock = threading.Lock()
    self.clear()

  def clear(self) -> None:
    self._size = 0
    self._table = np.zeros((1 << 12, 2), np.uint64)  # `kernels._slot`'s rows.

  def _add(self, fingerprints: np.ndarray, hashes: np.ndarray) -> None:
    """Inserts words not in the table, first doubling it as needed."""
    from segjax.data import kernels  # pylint: disable=g-import-not-at-top

    capacity = len(self._table)
    if 2 * (self._size + len(fingerprints)) > capacity:
      old = self._table[(self._table != 0).any(axis=1)]
      while 2 * (self._size + len(fingerprints)) > capacity:
        capacity *= 2
      self._table = np.zeros((capacity, 2), np.uint64)
      kernels.insert(self._table, old[:, 0].copy(), old[:, 1].copy())
    kernels.insert(self._table, fingerprints, hashes)
    self._size += len(fingerprints)

  def encode(
      self,
      data: np.ndarray,
      sentences: np.ndarray,
      max_tokens: int,
      num_buckets: int,
  ) -> np.ndarray:
    """Ids of the sentences in UTF-8 `data`, int32 `[n, L]` (`kernels`).

    `sentences`: int64 `[n, 2]`, each one's first and end character.
    """
    # numba takes a while to import; only the hashed tokenizer needs it.
    from segjax.data import kernels  # pylint: disable=g-import-not-at-top

    # At every byte offset with 8 bytes left, those 8 as one number.
    chunks = np.ndarray(
        (max(len(data) - 7, 0),), np.dtype("<u8"), buffer=data, strides=(1,)
    )
    with self._lock:
      ids, missing, fingerprints = kernels.token_ids(
          data,
          chunks,
          sentences,
          max_tokens,
          _char_classes(),
          self._table,
          num_buckets,
      )
      if len(missing):
        distinct, first, inverse = np.unique(
            fingerprints, return_index=True, return_inverse=True
        )
        hashes = np.fromiter(
            (
                _word_hash(
                    data[start:end].tobytes().decode("utf-8", "surrogatepass")
                )
                for start, end in missing[first, 1:]
            ),
            np.uint64,
            len(first),
        )
        word_ids = hashes % np.uint64(num_buckets - 1) + np.uint64(1)
        ids[missing[:, 0]] = word_ids[inverse.reshape(-1)]
        if self._size + len(distinct) > self.MAX_SIZE:
          self.clear()
        self._add(distinct, hashes)
    return ids.reshape(len(sentences), max_tokens)


_WORD_HASHES = _WordHashes()


@functools.cache
def _char_classes() -> np.ndarray:
  """uint8 per code point: 0 white space (`\\s`), 1 word (`\\w`), 2 other.

  Found with `re` itself, by its runs over all code points in order; a test
  checks the table against `_WORD_PATTERN` one code point at a time.
  """
  n = 0x110000
  classes = np.full(n, 2, np.uint8)
  chunk = 1 << 16  # Small strings: one of all code points would stay cached.
  for first in range(0, n, chunk):
    text = "".join(map(chr, range(first, min(first + chunk, n))))
    for pattern, value in ((_WORD_RUN, 1), (_SPACE_RUN, 0)):
      for match in pattern.finditer(text):
        classes[first + match.start() : first + match.end()] = value
  return classes


@functools.cache
def _lowering_to_several() -> re.Pattern:
  """The characters that `str.lower` turns into several ("İ" is the one)."""
  several = [chr(c) for c in range(0x110000) if len(chr(c).lower()) > 1]
  return re.compile("|".join(map(re.escape, several)))


def _lowered_spans(text: str, spans: np.ndarray) -> np.ndarray:
  """Where the spans of `text` lie in `text.lower()`.

  Lowering maps each character on its own (a final sigma depends on its
  neighbours but stays one character), so a span moves by the characters
  gained before it.
  """
  found = list(_lowering_to_several().finditer(text))
  positions = np.array([m.start() for m in found], np.int64)
  gained = np.cumsum([len(m.group().lower()) - 1 for m in found])
  before = np.searchsorted(positions, spans, side="left")
  return spans + np.where(before > 0, gained[np.maximum(before - 1, 0)], 0)


_WORD_RUN = re.compile(r"\w+")
_SPACE_RUN = re.compile(r"\s+")

# Names the hash in saved settings, so a checkpoint refuses a tokenizer that
# would map words to different ids.
_HASH_NAME = "blake2b-64"


@dataclasses.dataclass(frozen=True)
class Tokenizer:
  """Vocabulary-free word tokenizer: each word maps to a hashed bucket id.

  Id 0 is padding; words map to ids in `[1, num_buckets)`. Sentences longer
  than `max_tokens` tokens are truncated.

  Attributes:
    num_buckets: size of the id space (the embedding table's rows).
    max_tokens: tokens kept per sentence (the `L` of `tokens [B, S, L]`).
    lowercase: lower-case text before splitting it into words.
  """

  num_buckets: int
  max_tokens: int
  lowercase: bool

  def __post_init__(self):
    if self.num_buckets < 2:
      raise ValueError(f"num_buckets must be >= 2, got {self.num_buckets}")
    if self.max_tokens < 1:
      raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

  @property
  def id_dtype(self) -> np.dtype:
    """The smallest integer type that holds every id (for cached arrays)."""
    return np.dtype(np.uint16 if self.num_buckets <= 1 << 16 else np.int32)

  def encode(self, sentences: Iterable[str]) -> np.ndarray:
    """Token ids of sentences, int32 `[num_sentences, max_tokens]`, 0-padded.

    Each distinct word is hashed once (`_word_hash`, kept in `_WordHashes`);
    the tokens are found by one compiled pass over the bytes
    (`kernels.token_ids`), so a long list of sentences costs little Python.
    """
    sentences = list(sentences)
    lengths = np.fromiter(map(len, sentences), np.int64, len(sentences))
    starts = np.cumsum(lengths + 1) - (lengths + 1)
    # The space ends each sentence's last word.
    return self._encode_spans(
        " ".join(sentences), np.stack([starts, starts + lengths], axis=1)
    )

  def encode_text(self, text: str, sentences: np.ndarray) -> np.ndarray:
    """`encode` of the sentences `text[start:end]`, without slicing them out.

    Args:
      text: the text that holds the sentences.
      sentences: int `[n, 2]`, (start, end) of each sentence in `text`, in
        order, not overlapping; white space or the text's ends border each
        one (as a stripped line, or sentences joined by spaces).

    Returns:
      int32 `[n, max_tokens]`, as `encode` of the sentences.
    """
    sentences = np.asarray(sentences, np.int64).reshape(-1, 2)
    bounds = sentences.reshape(-1)  # Each start <= its end <= next start.
    if len(bounds) and (
        bounds[0] < 0 or bounds[-1] > len(text) or np.any(np.diff(bounds) < 0)
    ):
      raise ValueError(
          f"sentences must be ordered, disjoint spans of the text's"
          f" {len(text)} characters"
      )
    return self._encode_spans(text, sentences)

  def _encode_spans(self, text: str, sentences: np.ndarray) -> np.ndarray:
    """`encode_text` of spans known to be in order and inside the text."""
    if self.lowercase:
      lowered = text.lower()
      if len(lowered) != len(text):
        sentences = _lowered_spans(text, sentences)
      text = lowered
    data = np.frombuffer(text.encode("utf-8", "surrogatepass"), np.uint8)
    return _WORD_HASHES.encode(
        data, sentences, self.max_tokens, self.num_buckets
    )

  def to_dict(self) -> dict[str, Any]:
    """JSON-serialisable settings, for checkpoint metadata."""
    return {"hash": _HASH_NAME, **dataclasses.asdict(self)}

  @classmethod
  def from_dict(cls, settings: Mapping[str, Any]) -> Tokenizer:
    """The tokenizer saved by `to_dict`."""
    settings = dict(settings)
    hash_name = settings.pop("hash", _HASH_NAME)
    if hash_name != _HASH_NAME:
      raise ValueError(
          f"tokenizer was saved with hash {hash_name!r}; this version of segjax"
          f" computes {_HASH_NAME!r} and would assign different ids"
      )
    return cls(**settings)


@dataclasses.dataclass(frozen=True)
class WordpieceTokenizer:
  """A pretrained encoder's tokenizer behind the `Tokenizer` interface.

  `encode` gives the encoder's input ids, [CLS] ... [SEP] truncated at its
  `max_seq_length` and 0-padded to it (0 is BERT's [PAD], so the attention
  mask is `ids != 0`). Used when the encoder is fine-tuned and so runs
  inside the model.
  """

  encoder: Any

  @property
  def max_tokens(self) -> int:
    return self.encoder.max_seq_length

  @property
  def id_dtype(self) -> np.dtype:
    vocab = self.encoder.module.config.vocab_size
    return np.dtype(np.uint16 if vocab <= 1 << 16 else np.int32)

  def encode(self, sentences: Iterable[str]) -> np.ndarray:
    ids, _ = self.encoder.tokenize(list(sentences), length=self.max_tokens)
    return ids

  def encode_text(self, text: str, sentences: np.ndarray) -> np.ndarray:
    """`encode` of the sentences `text[start:end]` (`Tokenizer.encode_text`)."""
    spans = np.asarray(sentences, np.int64).reshape(-1, 2).tolist()
    return self.encode([text[start:end] for start, end in spans])
