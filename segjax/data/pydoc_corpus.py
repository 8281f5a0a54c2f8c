"""The embedded default dataset: Choi-style documents from CPython's docs.

Every CPython ships the text of its language reference topics in
`pydoc_data.topics` (79 topics, about 465k characters). We keep the prose
sentences of each topic, split the topics between train/dev/test so that no
topic is shared, and build Choi-style documents deterministically: each
document is 4-10 segments from distinct topics, each segment 3-11 consecutive
sentences of one topic. Nothing is downloaded or copied into the repository;
the text (and so the dataset) differs slightly between Python versions but is
fixed for a given one.
"""

from __future__ import annotations

import functools
import hashlib
import re

import numpy as np
from pydoc_data import topics as pydoc_topics

from segjax.data import documents as documents_lib
from segjax.data import text

SPLITS = ("train", "dev", "test")
# Documents per split: enough training text for a small model to learn topic
# shifts in a few CPU minutes, and dev/test sets that evaluate in seconds.
DEFAULT_NUM_DOCUMENTS = {"train": 4000, "dev": 200, "test": 200}
TOPIC_FRACTIONS = {"train": 0.7, "dev": 0.15, "test": 0.15}
MIN_SEGMENTS, MAX_SEGMENTS = 4, 10
MIN_SEGMENT_SENTENCES, MAX_SEGMENT_SENTENCES = 3, 11
MIN_SENTENCE_WORDS = 4
_TOPIC_GROUP_SIZE = 20
# Fixed, so the dataset never depends on the training seed.
_SEED = 20_181_112

# reST leftovers that are not prose: section underlines, table rules and rows,
# interactive sessions and grammar productions.
_UNDERLINE = re.compile(r"([*=\-~^#])\1{2,}")
_NON_PROSE_LINE = re.compile(r"(\+[-=+]|\||>>>|\.\.\.( |$))")
_BULLET = re.compile(r"^(\*|-|\d+\.|\(\d+\)|\[\d+\])\s+")
_EMPHASIS = re.compile(r"\*{1,2}([^*\s](?:[^*]*[^*\s])?)\*{1,2}")
_FOOTNOTE_REFERENCE = re.compile(r"\s*\[\d+\]")
# Inline code is quoted ("x.__lt__(y)") in pydoc text; within prose it reads
# as one word.
_QUOTED = re.compile(r'"[^"\s][^"]*"')
_PLAIN_WORD = re.compile(
    r"""["“‘'(]*[^\W\d_][\w'’-]*["”’')]*[.,;:!?]*["”’')]*"""
)
_SENTENCE_START = re.compile(r"""["“‘'(]*[A-Z0-9]""")
_SENTENCE_FINISH = re.compile(r"""[.!?]["”’')\]]*""")


def _is_prose_block(lines: list[str]) -> bool:
  """Whether a blank-line separated block is running text (not code/tables)."""
  stripped = [line.strip() for line in lines]
  return not any(
      _UNDERLINE.fullmatch(line) or _NON_PROSE_LINE.match(line) or "::=" in line
      for line in stripped
  )


def _joined_block(lines: list[str]) -> str:
  """A block's lines as one line, re-joining words hyphenated at line ends."""
  parts = [line.strip() for line in lines]
  parts[0] = _BULLET.sub("", parts[0], count=1)
  joined = ""
  for part in parts:
    if joined.endswith("-") and joined[-2:-1].isalpha():
      joined += part
    else:
      joined = f"{joined} {part}" if joined else part
  joined = _EMPHASIS.sub(r"\1", joined)
  return _FOOTNOTE_REFERENCE.sub("", joined)


def _is_prose_sentence(sentence: str) -> bool:
  """Whether a sentence reads as prose: long enough, mostly plain words."""
  tokens = _QUOTED.sub("code", sentence).split()
  plain = sum(_PLAIN_WORD.fullmatch(token) is not None for token in tokens)
  return (
      len(tokens) >= MIN_SENTENCE_WORDS
      and plain >= 0.75 * len(tokens)
      and _SENTENCE_START.match(sentence) is not None
      and _SENTENCE_FINISH.search(sentence[-3:]) is not None
  )


def topic_sentences(topic_text: str) -> list[str]:
  """The prose sentences of one pydoc topic, in reading order."""
  sentences = []
  for block in re.split(r"\n\s*\n", topic_text):
    lines = [line for line in block.splitlines() if line.strip()]
    if lines and _is_prose_block(lines):
      sentences.extend(
          s
          for s in text.split_sentences(_joined_block(lines))
          if _is_prose_sentence(s)
      )
  return sentences


@functools.cache
def all_topic_sentences() -> dict[str, tuple[str, ...]]:
  """Prose sentences per pydoc topic, for topics long enough for a segment."""
  topics = {
      name: tuple(topic_sentences(body))
      for name, body in sorted(pydoc_topics.topics.items())
  }
  return {
      name: sentences
      for name, sentences in topics.items()
      if len(sentences) >= MIN_SEGMENT_SENTENCES
  }


def _stable_hash(name: str) -> int:
  """A process-independent integer hash of a name (never Python's `hash`)."""
  return int.from_bytes(hashlib.blake2b(name.encode()).digest()[:8], "little")


@functools.cache
def split_topics() -> dict[str, tuple[str, ...]]:
  """Topic names per split: disjoint, ~70/15/15 of the topics.

  Topics are ranked by size and cut into groups of 20; within a group a stable
  hash of the name picks 3 dev and 3 test topics. Every split thus gets small
  and large topics (its share of sentences is close to its share of topics)
  and enough topics for documents of MAX_SEGMENTS distinct topics, and the
  assignment never depends on dict order or the process.
  """
  topics = all_topic_sentences()
  by_size = sorted(topics, key=lambda name: (-len(topics[name]), name))
  splits = {split: [] for split in SPLITS}
  for group_start in range(0, len(by_size), _TOPIC_GROUP_SIZE):
    group = sorted(
        by_size[group_start : group_start + _TOPIC_GROUP_SIZE],
        key=lambda name: (_stable_hash(name), name),
    )
    num_dev = round(TOPIC_FRACTIONS["dev"] * len(group))
    num_test = round(TOPIC_FRACTIONS["test"] * len(group))
    splits["dev"] += group[:num_dev]
    splits["test"] += group[num_dev : num_dev + num_test]
    splits["train"] += group[num_dev + num_test :]
  return {split: tuple(sorted(names)) for split, names in splits.items()}


@functools.cache
def _pydoc_documents(
    split: str, num_documents: int
) -> tuple[documents_lib.Document, ...]:
  """Cached body of `pydoc_documents` (documents are immutable)."""
  names = split_topics()[split]
  topics = [all_topic_sentences()[name] for name in names]
  sizes = np.array([len(sentences) for sentences in topics], np.float64)
  # sqrt weighting: large topics contribute more segments, without drowning
  # the small ones.
  weights = np.sqrt(sizes) / np.sqrt(sizes).sum()
  rng = np.random.default_rng([_SEED, SPLITS.index(split)])
  documents = []
  for index in range(num_documents):
    num_segments = int(rng.integers(MIN_SEGMENTS, MAX_SEGMENTS + 1))
    # Distinct topics per document, so adjacent segments always differ.
    chosen = rng.choice(
        len(topics),
        size=min(num_segments, len(topics)),
        replace=False,
        p=weights,
    )
    segments = []
    for topic in chosen:
      sentences = topics[topic]
      length = min(
          int(rng.integers(MIN_SEGMENT_SENTENCES, MAX_SEGMENT_SENTENCES + 1)),
          len(sentences),
      )
      start = int(rng.integers(0, len(sentences) - length + 1))
      segments.append(sentences[start : start + length])
    documents.append(
        documents_lib.Document(segments, name=f"pydoc/{split}/{index:05d}")
    )
  return tuple(documents)


def pydoc_documents(
    split: str, num_documents: int | None = None
) -> list[documents_lib.Document]:
  """Deterministic Choi-style documents from the pydoc topics of one split.

  Args:
    split: "train", "dev" or "test"; the splits share no topic.
    num_documents: how many documents to build (default
      DEFAULT_NUM_DOCUMENTS[split]). The first n documents do not depend on
      n, so a smaller request is a prefix of a larger one.

  Returns:
    The documents, named `pydoc/<split>/<index>`.
  """
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
  if num_documents is None:
    num_documents = DEFAULT_NUM_DOCUMENTS[split]
  return list(_pydoc_documents(split, num_documents))
