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

  Sorted arrays, so a call looks up all its distinct words at once and runs
  Python only for words it has not seen before. Keyed by fingerprint (two
  distinct words agree with probability 2**-64 per pair, against the
  1 / num_buckets at which any two words share an id anyway).
  """

  MAX_SIZE = 1 << 21

  def __init__(self):
    # Shared by the threads of a process (data loading, building shards):
    # one call's lookup and insertion must see the same arrays.
    self._lock = threading.Lock()
    self.clear()

  def clear(self) -> None:
    self._fingerprints = np.zeros(0, np.uint64)
    self._hashes = np.zeros(0, np.uint64)

  def get(self, fingerprints: np.ndarray, words) -> np.ndarray:
    """Hashes of sorted distinct `fingerprints`; `words(i)` is the i-th word."""
    with self._lock:
      return self._get(fingerprints, words)

  def _get(self, fingerprints: np.ndarray, words) -> np.ndarray:
    position = np.searchsorted(self._fingerprints, fingerprints)
    known = position < len(self._fingerprints)
    known[known] = self._fingerprints[position[known]] == fingerprints[known]
    hashes = np.zeros(len(fingerprints), np.uint64)
    hashes[known] = self._hashes[position[known]]
    new = np.flatnonzero(~known)
    hashes[new] = np.fromiter(
        (_word_hash(words(i)) for i in new), np.uint64, len(new)
    )
    if len(self._fingerprints) + len(new) > self.MAX_SIZE:
      self.clear()
      position = np.zeros(len(fingerprints), np.int64)
      new = np.arange(len(fingerprints))
    self._fingerprints = np.insert(
        self._fingerprints, position[new], fingerprints[new]
    )
    self._hashes = np.insert(self._hashes, position[new], hashes[new])
    return hashes


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


_WORD_RUN = re.compile(r"\w+")
_SPACE_RUN = re.compile(r"\s+")

# Bytes of a UTF-8 character by the high nibble of its first byte (0x8-0xB
# are continuation bytes, which start no character).
_UTF8_LENGTH = np.array([1] * 12 + [2, 2, 3, 4], np.int64)
# The class of a continuation byte of an "other" character: the character is
# one token, which starts at its first byte only.
_OTHER_CONTINUATION = 3


def _byte_classes(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Each byte's `_char_classes` class, from the character it belongs to.

  Returns (classes, positions of the continuation bytes). Only the bytes of
  non-ASCII characters need decoding, and they are few in most text.
  """
  char_classes = _char_classes()
  classes = char_classes[data]  # Right for ASCII; the rest is set below.
  high = np.flatnonzero(data >= 0x80)
  if not len(high):
    return classes, high
  is_lead = data[high] >= 0xC0
  lead, continuation = high[is_lead], high[~is_lead]
  length = _UTF8_LENGTH[data[lead] >> 4]
  padded = np.concatenate([data, np.zeros(3, np.uint8)])
  point = padded[lead].astype(np.int64) & (0x7F >> length)
  for k in range(1, 4):
    more = (padded[lead + k].astype(np.int64) & 0x3F) | (point << 6)
    point = np.where(length > k, more, point)
  classes[lead] = char_classes[point]
  classes[continuation] = np.repeat(
      np.where(classes[lead] == 2, _OTHER_CONTINUATION, classes[lead]),
      length - 1,
  )
  return classes, continuation


def token_spans(
    sentences: list[str], max_tokens: int
) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """The first `max_tokens` tokens of each sentence, as byte spans of one text.

  Returns (raw, its bytes as uint8, sentence of each token, start, end): raw
  is the sentences joined by spaces in UTF-8, and per token (in order) its
  sentence and its bytes `raw[start:end]`. The tokens are those of `words`
  (`_WORD_PATTERN`), found with array operations over the bytes instead of
  a regex call per sentence.
  """
  text = " ".join(sentences)  # The space ends each sentence's last token.
  raw = text.encode("utf-8", "surrogatepass")
  data = np.frombuffer(raw, np.uint8)
  classes, continuation = _byte_classes(data)
  # +1 where a word starts, -1 just after one ends.
  word = np.zeros(len(data) + 1, np.int8)
  word[1:] = classes == 1
  edges = np.diff(word, append=np.int8(0))
  starts = np.flatnonzero((edges[:-1] == 1) | (classes == 2))
  ends = np.empty_like(starts)
  is_word = classes[starts] == 1
  ends[is_word] = np.flatnonzero(edges == -1)
  others = starts[~is_word]
  ends[~is_word] = others + _UTF8_LENGTH[data[others] >> 4]
  lengths = np.fromiter(map(len, sentences), np.int64, len(sentences))
  first_char = np.cumsum(lengths + 1) - (lengths + 1)
  # Bytes before a character: its index plus the continuation bytes of the
  # characters before it, those with at most that many characters before.
  chars_before = continuation - np.arange(len(continuation))
  first_byte = first_char + np.searchsorted(chars_before, first_char, "right")
  sentence = np.searchsorted(first_byte, starts, side="right") - 1
  first_token = np.searchsorted(starts, first_byte)
  kept = np.arange(len(starts)) - first_token[sentence] < max_tokens
  return raw, data, sentence[kept], starts[kept], ends[kept]


# splitmix64's constants: a length seed, the fold multiplier, the finaliser's.
_SEED = np.uint64(0x94D049BB133111EB)
_FOLD = np.uint64(0x9E3779B97F4A7C15)
_MIX = np.uint64(0xBF58476D1CE4E5B9)
# The low k bytes of a little-endian 64-bit word, k = 0..8.
_LOW_BYTES = np.array([(1 << 8 * k) - 1 for k in range(9)], np.uint64)


def _span_fingerprints(data: np.ndarray, starts, ends) -> np.ndarray:
  """A 64-bit fingerprint of each byte span `data[start:end]`.

  The span's 8-byte chunks, read from one unaligned view of the bytes, are
  folded as h = (h ^ chunk) * FOLD from h = length * SEED, then mixed;
  words of up to 8 bytes and equal length never collide. It names a word
  for `_WordHashes`, which computes the real hash.
  """
  padded = np.zeros(len(data) + 8, np.uint8)
  padded[: len(data)] = data
  # At every byte offset, the 8 bytes from there as one number.
  chunks = np.ndarray(
      (len(data) + 1,), np.dtype("<u8"), buffer=padded, strides=(1,)
  )
  length = ends - starts
  fingerprints = length.astype(np.uint64) * _SEED
  spans = np.arange(len(starts))
  offset = 0
  while len(spans):  # Spans longer than `offset` bytes: most end in one round.
    left = length[spans] - offset
    chunk = chunks[starts[spans] + offset] & _LOW_BYTES[np.minimum(left, 8)]
    fingerprints[spans] = (fingerprints[spans] ^ chunk) * _FOLD
    spans = spans[left > 8]
    offset += 8
  fingerprints ^= fingerprints >> np.uint64(31)
  fingerprints *= _MIX
  fingerprints ^= fingerprints >> np.uint64(29)
  return fingerprints


def _distinct(values: np.ndarray):
  """(sorted distinct values, an index of each, inverse): `np.unique`'s three.

  The index is of any occurrence, not the first, so the sort need not be
  stable (`np.unique(return_index=True)` sorts stably, several times slower).
  """
  order = np.argsort(values)
  ordered = values[order]
  is_new = np.empty(len(values), bool)
  is_new[:1] = True
  np.not_equal(ordered[1:], ordered[:-1], out=is_new[1:])
  inverse = np.empty(len(values), np.intp)
  inverse[order] = np.cumsum(is_new) - 1
  return ordered[is_new], order[is_new], inverse


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
    the rest is array operations, so a long list of sentences costs little
    Python.
    """
    sentences = list(sentences)
    if self.lowercase:
      sentences = [s.lower() for s in sentences]
    out = np.zeros((len(sentences), self.max_tokens), np.int32)
    if not sentences:
      return out
    raw, data, sentence, starts, ends = token_spans(sentences, self.max_tokens)
    if not len(starts):
      return out
    distinct, some, inverse = _distinct(_span_fingerprints(data, starts, ends))
    hashes = _WORD_HASHES.get(
        distinct,
        lambda i: raw[starts[some[i]] : ends[some[i]]].decode(
            "utf-8", "surrogatepass"
        ),
    )
    ids = hashes % np.uint64(self.num_buckets - 1) + np.uint64(1)
    position = np.arange(len(starts)) - np.searchsorted(sentence, sentence)
    out[sentence, position] = ids[inverse]
    return out

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
