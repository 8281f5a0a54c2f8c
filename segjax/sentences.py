"""Splitting raw text into units with character offsets: sentences, paragraphs, lines.

Each unit is a `Span`: its whitespace-normalised text, the model's input, and
`start`, `end` such that `original[start:end]` is the unit as written
(without surrounding whitespace), so that results can be shown in, or
written back into, the original text.

- paragraphs: runs of non-blank lines, separated by blank (whitespace-only)
  lines;
- lines: the non-blank lines (`str.splitlines` line breaks, CRLF included);
- sentences: pysbd (rule-based, many languages) run on each paragraph, so a
  blank line always ends a sentence; single line breaks inside a paragraph
  count as spaces (hard-wrapped prose), as in `segjax.data.split_sentences`,
  the dependency-free regular-expression splitter, except before a line
  that starts with a bullet ("- ", "* ", "• "): each list item is a sentence.

pysbd's own `char_span` offsets are not used: pysbd 0.3.4 finds each sentence
again by a regular-expression search of the whole text, which drops a
sentence whose text it has changed (it may drop whitespace around repeated
periods) and costs time quadratic in the text. Instead each sentence is
matched on its non-whitespace characters, in order, from where the previous
one ended (`_sentence_ranges`): the spans of a paragraph cover every
non-whitespace character of it exactly once, whatever pysbd returns.

  from segjax import sentences
  for span in sentences.split(text):
    print(span.start, span.end, span.text)
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence

import pysbd

UNITS = ("sentence", "paragraph", "line")
# A "sentence" longer than this is more likely a list, a table or verse
# without sentence punctuation than prose: see `long_sentence_warning`.
LONG_SENTENCE_WORDS = 100
# pysbd's abbreviation pass re-scans the whole input once per abbreviation,
# quadratic in paragraph length (2,000 sentences: ~40 s). Long paragraphs go
# to it in pieces of about this many characters, cut only after a line that
# ends like a sentence (`_SURE_END`).
_CHUNK_CHARS = 2000
# Terminal punctuation, maybe closed by quotes or brackets, ending a line.
_SURE_END = re.compile(r"""[.!?。！？…]["'”’)\]]*$""")
# A list item's marker at the start of a line: a bullet or dash and a space.
_BULLET = re.compile(r"[-*•‣◦–—]\s")


@dataclasses.dataclass(frozen=True)
class Span:
  """One unit of a text.

  Attributes:
    text: the unit with every run of whitespace replaced by one space.
    start, end: character offsets into the original text; `text` equals
      `" ".join(original[start:end].split())`, and `original[start:end]`
      neither starts nor ends with whitespace.
  """

  text: str
  start: int
  end: int


def _span(text: str, start: int, end: int) -> Span:
  return Span(" ".join(text[start:end].split()), start, end)


def _stripped(text: str, start: int, end: int) -> tuple[int, int] | None:
  """[start, end) without leading and trailing whitespace; None if blank."""
  piece = text[start:end]
  body = piece.strip()
  if not body:
    return None
  head = len(piece) - len(piece.lstrip())
  return start + head, start + head + len(body)


def _stripped_lines(text: str) -> Iterator[tuple[int, int] | None]:
  """Each line's stripped (start, end), line break excluded; None if blank."""
  offset = 0
  for line in text.splitlines(keepends=True):
    body = line.splitlines()[0]  # The line without its break.
    yield _stripped(text, offset, offset + len(body))
    offset += len(line)


def _paragraph_line_ranges(text: str) -> Iterator[list[tuple[int, int]]]:
  """The stripped non-blank lines of each paragraph."""
  paragraph = []
  for line in _stripped_lines(text):
    if line:
      paragraph.append(line)
    elif paragraph:
      yield paragraph
      paragraph = []
  if paragraph:
    yield paragraph


def lines(text: str) -> list[Span]:
  """The non-blank lines of `text`."""
  return [_span(text, *line) for line in _stripped_lines(text) if line]


def paragraphs(text: str) -> list[Span]:
  """The paragraphs of `text`: non-blank lines up to a blank line."""
  return [_span(text, p[0][0], p[-1][1]) for p in _paragraph_line_ranges(text)]


def _chunks(text: str, line_ranges) -> Iterator[tuple[int, int]]:
  """A paragraph's lines grouped into pieces of about `_CHUNK_CHARS`.

  A piece ends only after a line that ends in sentence punctuation, so that
  pysbd sees whole sentences (only in long paragraphs can this differ from
  running pysbd on the whole paragraph).
  """
  start = line_ranges[0][0]
  for (line_start, line_end), (next_start, _) in zip(
      line_ranges, line_ranges[1:]
  ):
    if line_end - start >= _CHUNK_CHARS and _SURE_END.search(
        text, line_start, line_end
    ):
      yield start, line_end
      start = next_start
  yield start, line_ranges[-1][1]


def _pysbd_input(text: str, start: int, end: int, line_ranges) -> str:
  """text[start:end] as pysbd should see it, of the same length.

  Whitespace becomes plain spaces (so offsets carry over): pysbd would
  otherwise end a sentence at every line break, breaking hard-wrapped prose.
  Only a line that starts a list item keeps a line break before it, so
  that the item starts a sentence.
  """
  chars = [" " if ch.isspace() else ch for ch in text[start:end]]
  for line_start, line_end in line_ranges:
    if start < line_start < end and _BULLET.match(text, line_start, line_end):
      chars[line_start - start - 1] = "\n"
  return "".join(chars)


def _sentence_ranges(text: str, pieces: Sequence[str]) -> list[tuple[int, int]]:
  """Where the sentences `pieces` of `text` lie in it, as (start, end).

  Matching is on non-whitespace characters only: sentence i starts where its
  characters continue the text after sentence i-1 (or, if pysbd changed
  something before, at their next occurrence). A piece that cannot be found
  stays part of the sentence before it; text that no piece covers, too. The
  ranges thus partition the non-whitespace characters of `text`.
  """
  positions = [i for i, ch in enumerate(text) if not ch.isspace()]
  if not positions:
    return []
  visible = "".join(text[i] for i in positions)
  starts, cursor = [0], 0
  for piece in pieces:
    needle = "".join(piece.split())
    if not needle:
      continue
    found = visible.find(needle, cursor)  # Normally right at the cursor.
    if found < 0:
      continue
    if found > starts[-1]:
      starts.append(found)
    cursor = found + len(needle)
  ends = starts[1:] + [len(visible)]
  return [(positions[s], positions[e - 1] + 1) for s, e in zip(starts, ends)]


def _has_word(text: str) -> bool:
  return any(ch.isalnum() for ch in text)


def _merge_wordless(
    text: str, ranges: list[tuple[int, int]]
) -> list[tuple[int, int]]:
  """Joins each range without a letter or digit to its neighbour.

  pysbd cuts repeated periods apart ("left.. She" gives "left.", "."); a
  sentence of punctuation alone carries nothing for the model. It joins the
  previous sentence, or the next when it is the first.
  """
  merged = []
  for start, end in ranges:
    if merged and not (
        _has_word(text[start:end]) and _has_word(text[slice(*merged[-1])])
    ):
      merged[-1] = (merged[-1][0], end)
    else:
      merged.append((start, end))
  return merged


def _segmenter(language: str) -> pysbd.Segmenter:
  """A pysbd segmenter (one per call: `segment` keeps state on the object)."""
  return pysbd.Segmenter(language=language, clean=False)


def sentences(text: str, *, language: str = "en") -> list[Span]:
  """The sentences of `text` by pysbd, paragraph by paragraph.

  Args:
    text: raw text.
    language: an ISO 639-1 code pysbd knows (en, de, fr, es, it, ru, zh,
      ja, ...).

  Raises:
    ValueError: pysbd does not know `language`.
  """
  segmenter = _segmenter(language)
  spans = []
  for line_ranges in _paragraph_line_ranges(text):
    ranges = []
    for start, end in _chunks(text, line_ranges):
      chunk = _pysbd_input(text, start, end, line_ranges)
      ranges += [
          (start + s, start + e)
          for s, e in _sentence_ranges(chunk, segmenter.segment(chunk))
      ]
    spans += [_span(text, *r) for r in _merge_wordless(text, ranges)]
  return spans


def split(
    text: str, *, unit: str = "sentence", language: str = "en"
) -> list[Span]:
  """`text` as a list of units: "sentence", "paragraph" or "line".

  `language` matters for sentences only (see `sentences`).

  Raises:
    ValueError: an unknown unit or language.
  """
  if unit == "sentence":
    return sentences(text, language=language)
  if unit == "paragraph":
    return paragraphs(text)
  if unit == "line":
    return lines(text)
  raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")


def long_spans(
    spans: Sequence[Span], *, max_words: int = LONG_SENTENCE_WORDS
) -> list[int]:
  """Indices of the spans with more than `max_words` words."""
  return [i for i, s in enumerate(spans) if len(s.text.split()) > max_words]


def long_sentence_warning(
    spans: Sequence[Span],
    *,
    max_words: int = LONG_SENTENCE_WORDS,
    advice: str = "split it by lines (unit='line')",
) -> str | None:
  """A hint to split by lines when some sentence is implausibly long.

  Text without sentence punctuation (lists, tables, transcripts, one item
  per line) comes out of a sentence splitter as a few enormous "sentences".
  Returns a one-line message naming how many and where the longest starts,
  ending in `advice` (how the caller splits by lines), or None when every
  span has at most `max_words` words.
  """
  long = long_spans(spans, max_words=max_words)
  if not long:
    return None
  longest = max(long, key=lambda i: len(spans[i].text.split()))
  return (
      f"{len(long)} of {len(spans)} sentences have more than {max_words} "
      f"words (the longest, {len(spans[longest].text.split())} words, starts "
      f"at character {spans[longest].start}); if the text has one unit per "
      f"line, {advice}"
  )
