"""Loops over the bytes of text, compiled with numba: lines and tokens.

Splitting text into lines and words is a loop over characters. In numpy it
took a dozen whole-array passes and sorts; compiled it is one pass, whose
inner loops are tight scans that run until something rare happens (a line
break, the end of a word). Kernels are
pure functions of the arrays they are given, compiled on first use and
cached on disk by numba; helpers are inlined, since a call that passes
arrays costs reference counting per token.

Text is UTF-8. A token is a word (a run of characters of class 1) or a
single character of class 2; class 0 is white space (`text._char_classes`:
the classes of `\\w` and `\\s`, and `\\s` is `str.isspace`).
"""

from __future__ import annotations

import numba
import numpy as np

from segjax.data import documents

# splitmix64's constants: a length seed, the fold multiplier, the finaliser's.
SEED = np.uint64(0x94D049BB133111EB)
FOLD = np.uint64(0x9E3779B97F4A7C15)
MIX = np.uint64(0xBF58476D1CE4E5B9)

# Kinds of lines of a Wiki-727K file (`wiki727k_lines`).
SENTENCE, HEADER, HEADER_TO_CHECK, LIST_MARKER = 0, 1, 2, 3
_PREFIX = np.frombuffer(documents.WIKI_HEADER_PREFIX.encode(), np.uint8)
_LIST = np.frombuffer(documents.WIKI_LIST_MARKER.encode(), np.uint8)
# The bytes a line break can start with: ASCII breaks, and the lead bytes of
# NEL (C2 85), LS and PS (E2 80 A8/A9).
_MAY_BREAK = np.zeros(256, np.bool_)
_MAY_BREAK[[*range(0x0A, 0x0E), *range(0x1C, 0x1F), 0xC2, 0xE2]] = True

_kernel = numba.njit(cache=True, nogil=True)
_inlined = numba.njit(cache=True, nogil=True, inline="always")


@_inlined
def _character(data, i):
  """(code point, byte length) of the UTF-8 character starting at `data[i]`."""
  lead = np.int64(data[i])
  if lead < 0x80:
    return lead, 1
  length = 2 if lead < 0xE0 else (3 if lead < 0xF0 else 4)
  point = lead & (0x7F >> length)
  for k in range(1, length):
    point = (point << 6) | (np.int64(data[i + k]) & 0x3F)
  return point, length


@_inlined
def _is_line_break(point):
  """Whether `str.splitlines` breaks at code point `point`."""
  if point < 0x80:
    return (0x0A <= point <= 0x0D) or (0x1C <= point <= 0x1E)
  return point == 0x85 or point == 0x2028 or point == 0x2029


@_inlined
def _starts_with(data, start, end, prefix):
  if end - start < len(prefix):
    return False
  for k in range(len(prefix)):
    if data[start + k] != prefix[k]:
      return False
  return True


@_inlined
def _header_kind(data, start, end):
  """HEADER for `========,<level>,<title>` with an ASCII level >= 1 (padded
  by spaces or tabs at most), HEADER_TO_CHECK for anything else after the
  prefix, which `documents.check_wiki727k_header` decides."""
  i = start + len(_PREFIX)
  if i >= end or data[i] != 44:  # ","
    return HEADER_TO_CHECK
  i += 1
  digits, nonzero, padding_after = 0, False, False
  while i < end and data[i] != 44:
    b = data[i]
    if b == 32 or b == 9:
      padding_after = digits > 0
    elif 48 <= b <= 57 and not padding_after:
      digits += 1
      nonzero |= b != 48
    else:
      return HEADER_TO_CHECK
    i += 1
  if i >= end or not nonzero:  # No second comma, or level 0 or empty.
    return HEADER_TO_CHECK
  return HEADER


@_inlined
def _class_at(data, i, char_classes):
  """(class, byte length) of the character starting at byte i."""
  lead = data[i]
  if lead < 0x80:
    return char_classes[lead], 1
  point, length = _character(data, i)
  return char_classes[point], length


@_kernel
def wiki727k_lines(data, char_classes):
  """The non-blank lines of UTF-8 text, as `str.splitlines` and `str.strip`,
  and what each is in a Wiki-727K file.

  Lines end at every line break `splitlines` knows (`\\r\\n` is one); a line
  is stripped of white space at both ends.

  Returns:
    int64 `[m, 5]`: per non-blank line in order, the start and end of its
    stripped text in characters (code points), then in bytes, then its
    kind: SENTENCE, HEADER (a valid section header), HEADER_TO_CHECK (starts
    with the header prefix; Python decides) or LIST_MARKER.
  """
  lines = np.empty((len(data) // 2 + 1, 5), np.int64)
  count = 0
  i, char = 0, 0  # A byte and the index of the character starting there.
  while i < len(data):
    # The line runs to the next line break: bytes that may start one are
    # rare, so most of the line is a tight scan that only counts characters.
    start, start_char = i, char
    while i < len(data):
      lead = data[i]
      if _MAY_BREAK[lead] and _is_line_break(_character(data, i)[0]):
        break
      char += (lead & 0xC0) != 0x80
      i += 1
    end, end_char = i, char
    if i < len(data):  # Step over the break ("\\r\\n" is one).
      point, length = _character(data, i)
      i += length
      char += 1
      if point == 0x0D and i < len(data) and data[i] == 0x0A:
        i += 1
        char += 1
    # Strip: white space is rare at the ends, so these loops are short.
    while start < end:
      kind, length = _class_at(data, start, char_classes)
      if kind != 0:
        break
      start += length
      start_char += 1
    while end > start:
      last = end - 1
      while data[last] & 0xC0 == 0x80:
        last -= 1
      if _class_at(data, last, char_classes)[0] != 0:
        break
      end = last
      end_char -= 1
    if start == end:
      continue
    lines[count, 0] = start_char
    lines[count, 1] = end_char
    lines[count, 2] = start
    lines[count, 3] = end
    if _starts_with(data, start, end, _PREFIX):
      lines[count, 4] = _header_kind(data, start, end)
    elif end - start == len(_LIST) and _starts_with(data, start, end, _LIST):
      lines[count, 4] = LIST_MARKER
    else:
      lines[count, 4] = SENTENCE
    count += 1
  return lines[:count]


@_inlined
def _fingerprint(data, chunks, start, end):
  """64-bit fingerprint of bytes `start:end` of `data`.

  The span's little-endian 8-byte chunks (the last one zero-padded) folded
  as h = (h ^ chunk) * FOLD from h = length * SEED, then mixed: words of up
  to 8 bytes and equal length never collide. `chunks[i]`: the 8 bytes of
  `data` from byte i, for every i with 8 bytes left; nearer the end, the
  chunk is put together byte by byte.
  """
  h = np.uint64(end - start) * SEED
  for chunk_start in range(start, end, 8):
    left = min(8, end - chunk_start)
    if chunk_start < len(chunks):
      chunk = chunks[chunk_start]
      if left < 8:
        chunk &= (np.uint64(1) << np.uint64(8 * left)) - np.uint64(1)
    else:
      chunk = np.uint64(0)
      for k in range(left):
        chunk |= np.uint64(data[chunk_start + k]) << np.uint64(8 * k)
    h = (h ^ chunk) * FOLD
  h ^= h >> np.uint64(31)
  h *= MIX
  h ^= h >> np.uint64(29)
  return h


@_inlined
def _slot(table, h):
  """Where fingerprint `h` is in the table, or the empty slot probing met.

  `table`: uint64 `[2**k, 2]` rows (fingerprint, word hash); (0, 0) is an
  empty row. (A word whose fingerprint and hash are both 0, if one exists,
  is never found, and only gets hashed again.)
  """
  mask = len(table) - 1
  slot = np.int64(h & np.uint64(mask))  # The finaliser mixed the low bits.
  while table[slot, 0] != h and (table[slot, 0] | table[slot, 1]) != 0:
    slot = (slot + 1) & mask
  return slot


@_kernel
def token_ids(
    data, chunks, sentences, max_tokens, char_classes, table, num_buckets
):
  """The ids of the first `max_tokens` tokens of each sentence in `data`.

  A sentence at a time, in two steps: find and fingerprint its tokens, then
  look them all up. The lookups do not wait for one another nor for the
  scan's hard-to-predict branches, so their cache misses overlap.

  Args:
    data: uint8, UTF-8 text.
    chunks: uint64, the 8 bytes of `data` from each byte (`_fingerprint`).
    sentences: int64 `[n, 2]`, the first and end character (code point) of
      each sentence, in order, not overlapping; white space or the text's
      ends border each one, so no word runs across its ends.
    max_tokens: tokens kept per sentence (`L`).
    char_classes: uint8 per code point (0 space, 1 word, 2 other).
    table: the word-hash table (`_slot`).
    num_buckets: ids are `hash % (num_buckets - 1) + 1`.

  Returns:
    (ids, missing, fingerprints): int32 `[n * L]` ids, 0 for padding and for
    the tokens the table lacks; int64 `[m, 3]` rows of those tokens (index
    into ids, start and end byte), and their fingerprints, uint64 `[m]`.
  """
  n = len(sentences)
  ids = np.zeros(n * max_tokens, np.int32)
  missing = np.empty((min(n * max_tokens, len(data)), 3), np.int64)
  fingerprints = np.empty(len(missing), np.uint64)
  count = 0
  found = np.empty((max_tokens, 2), np.int64)  # One sentence's tokens.
  found_fingerprints = np.empty(max_tokens, np.uint64)
  i, char = 0, 0  # A byte and the index of the character starting there.
  for sentence in range(n):
    end_char = sentences[sentence, 1]
    while char < sentences[sentence, 0]:  # On to the sentence's start.
      i += 1
      while i < len(data) and data[i] & 0xC0 == 0x80:
        i += 1
      char += 1
    num_found = 0
    while char < end_char and num_found < max_tokens:
      kind, length = _class_at(data, i, char_classes)
      start = i
      i += length
      char += 1
      if kind == 0:
        continue
      if kind == 1:  # A word runs on to the next non-word character.
        while char < end_char:
          kind, length = _class_at(data, i, char_classes)
          if kind != 1:
            break
          i += length
          char += 1
      found[num_found, 0] = start
      found[num_found, 1] = i
      found_fingerprints[num_found] = _fingerprint(data, chunks, start, i)
      num_found += 1
    for position in range(num_found):
      h = found_fingerprints[position]
      slot = _slot(table, h)
      index = sentence * max_tokens + position
      if table[slot, 0] == h and (table[slot, 0] | table[slot, 1]) != 0:
        word_id = table[slot, 1] % np.uint64(num_buckets - 1) + np.uint64(1)
        ids[index] = np.int32(word_id)
      else:
        missing[count, 0] = index
        missing[count, 1:] = found[position]
        fingerprints[count] = h
        count += 1
  return ids, missing[:count], fingerprints[:count]


@_kernel
def insert(table, fingerprints, hashes):
  """Adds fingerprints that are not in the table (it has room for them)."""
  for k in range(len(fingerprints)):
    slot = _slot(table, fingerprints[k])
    table[slot, 0] = fingerprints[k]
    table[slot, 1] = hashes[k]
