"""Text utilities: a dependency-free sentence splitter and the hashed tokenizer.

Both are used on the training path and at inference (`segjax.segment`), so
they live in one place and behave identically in every process.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import re
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


@functools.lru_cache(maxsize=1 << 20)
def _word_hash(word: str) -> int:
  """A 64-bit hash of a word, identical in every process, run and platform.

  Python's `hash()` is salted per process (PYTHONHASHSEED), so it would give
  each host a different vocabulary; BLAKE2b of the UTF-8 bytes does not.
  """
  digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
  return int.from_bytes(digest, "little")


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
    """Token ids of sentences, int32 `[num_sentences, max_tokens]`, 0-padded."""
    token_lists = [
        words(s, lowercase=self.lowercase)[: self.max_tokens] for s in sentences
    ]
    lengths = np.fromiter(map(len, token_lists), np.int64, len(token_lists))
    hashes = np.fromiter(
        map(_word_hash, itertools.chain.from_iterable(token_lists)),
        np.uint64,
        int(lengths.sum()),
    )
    ids = hashes % np.uint64(self.num_buckets - 1) + np.uint64(1)
    out = np.zeros((len(token_lists), self.max_tokens), np.int32)
    # Boolean-mask assignment fills row-major, i.e. sentence by sentence.
    out[np.arange(self.max_tokens) < lengths[:, None]] = ids
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
