"""The hashed tokenizer's loop over bytes, compiled with numba.

Finding tokens is a loop over characters; in numpy it took a dozen
whole-array passes and sorts, compiled it is one pass that also looks every
token up in the word-hash table (`text._WordHashes`). Kernels are pure
functions of the arrays they are given, compiled on first use and cached on
disk by numba. Helpers are inlined: a call that passes arrays costs
reference counting per token.

Text is UTF-8. A token is a word (a run of characters of class 1) or a
single character of class 2; class 0 is white space (`text._char_classes`,
the classes of `\\w` and `\\s`).
"""

from __future__ import annotations

import numba
import numpy as np

# splitmix64's constants: a length seed, the fold multiplier, the finaliser's.
SEED = np.uint64(0x94D049BB133111EB)
FOLD = np.uint64(0x9E3779B97F4A7C15)
MIX = np.uint64(0xBF58476D1CE4E5B9)

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
def _fingerprint(chunks, start, end):
  """64-bit fingerprint of bytes `start:end`; `chunks[i]`: the 8 bytes from i.

  The span's little-endian 8-byte chunks folded as h = (h ^ chunk) * FOLD
  from h = length * SEED, then mixed: words of up to 8 bytes and equal
  length never collide.
  """
  h = np.uint64(end - start) * SEED
  for chunk_start in range(start, end, 8):
    left = min(8, end - chunk_start)
    chunk = chunks[chunk_start]
    if left < 8:
      chunk &= (np.uint64(1) << np.uint64(8 * left)) - np.uint64(1)
    h = (h ^ chunk) * FOLD
  h ^= h >> np.uint64(31)
  h *= MIX
  h ^= h >> np.uint64(29)
  return h


@_kernel
def tokens(data, chunks, sentences, max_tokens, char_classes):
  """The first `max_tokens` tokens of each sentence in `data`.

  Args:
    data: uint8, UTF-8 text.
    chunks: uint64, `chunks[i]` the 8 bytes of `data` from byte i
      (zero-padded), for reading a word 8 bytes at a time.
    sentences: int64 `[n, 2]`, the first and end character (code point) of
      each sentence, in order, not overlapping; white space or the text's
      ends border each one, so no word runs across its ends.
    max_tokens: tokens kept per sentence (`L`).
    char_classes: uint8 per code point (0 space, 1 word, 2 other).

  Returns:
    int64 `[m, 3]`, per token in order: its index in the `[n * L]` ids
    (sentence * L + position), its start and end byte.
  """
  n = len(sentences)
  found = np.empty((min(n * max_tokens, len(data)), 3), np.int64)
  count = 0
  sentence, position, char, i, word_start = -1, 0, 0, 0, -1
  while i <= len(data):
    if i < len(data):
      point, length = _character(data, i)
      kind = char_classes[point]
    else:
      length, kind = 1, 0  # Past the end: ends the last word.
    if word_start >= 0 and kind != 1:  # A word ended; it started in `sentence`.
      if position < max_tokens:
        found[count, 0] = sentence * max_tokens + position
        found[count, 1] = word_start
        found[count, 2] = i
        count += 1
      position += 1
      word_start = -1
    while sentence + 1 < n and sentences[sentence + 1, 0] <= char:
      sentence += 1
      position = 0
    inside = sentence >= 0 and char < sentences[sentence, 1]
    if kind == 1 and word_start < 0 and inside:
      word_start = i
    elif kind == 2 and inside:
      if position < max_tokens:
        found[count, 0] = sentence * max_tokens + position
        found[count, 1] = i
        found[count, 2] = i + length
        count += 1
      position += 1
    i += length
    char += 1
  return found[:count]


@_kernel
def fingerprints(chunks, spans):
  """The fingerprint of each token (`tokens`' start and end columns)."""
  out = np.empty(len(spans), np.uint64)
  for k in range(len(spans)):
    out[k] = _fingerprint(chunks, spans[k, 1], spans[k, 2])
  return out


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
def lookup(table, fingerprints, num_buckets, ids, indices):
  """Writes `ids[indices[k]]` for the fingerprints found in the table.

  Returns the positions k of those it lacks. Ids are
  `hash % (num_buckets - 1) + 1`.
  """
  missing = np.empty(len(fingerprints), np.int64)
  count = 0
  for k in range(len(fingerprints)):
    slot = _slot(table, fingerprints[k])
    if (
        table[slot, 0] == fingerprints[k]
        and (table[slot, 0] | table[slot, 1]) != 0
    ):
      word_hash = table[slot, 1]
      ids[indices[k]] = np.int32(
          word_hash % np.uint64(num_buckets - 1) + np.uint64(1)
      )
    else:
      missing[count] = k
      count += 1
  return missing[:count]


@_kernel
def insert(table, fingerprints, hashes):
  """Adds fingerprints that are not in the table (it has room for them)."""
  for k in range(len(fingerprints)):
    slot = _slot(table, fingerprints[k])
    table[slot, 0] = fingerprints[k]
    table[slot, 1] = hashes[k]


@_inlined
def _is_line_break(point):
  """Whether `str.splitlines` breaks at code point `point`."""
  return (
      (0x0A <= point <= 0x0D)
      or (0x1C <= point <= 0x1E)
      or point == 0x85
      or point == 0x2028
      or point == 0x2029
  )


@_kernel
def stripped_lines(data, char_classes):
  """The non-blank lines of UTF-8 text, as `str.splitlines` and `str.strip`.

  Lines end at every line break `splitlines` knows (`\\r\\n` is one); a line
  is stripped of white space (class 0, which is `str.isspace`) at both ends.

  Returns:
    int64 `[m, 4]`: per non-blank line in order, the start and end of its
    stripped text in characters (code points) and in bytes.
  """
  lines = np.empty((len(data) // 2 + 1, 4), np.int64)
  count = 0
  char, i = 0, 0
  first = -1  # Char and byte of the line's first non-space character.
  first_byte = 0
  last, last_byte = 0, 0  # Just after its last non-space character.
  while i <= len(data):
    if i < len(data):
      point, length = _character(data, i)
    else:
      point, length = 0x0A, 1  # Past the end: ends the last line.
    if _is_line_break(point):
      if first >= 0:
        lines[count, 0] = first
        lines[count, 1] = last
        lines[count, 2] = first_byte
        lines[count, 3] = last_byte
        count += 1
      first = -1
      if point == 0x0D and i + 1 < len(data) and data[i + 1] == 0x0A:
        length, char = 2, char + 1  # "\r\n" breaks once.
    elif char_classes[point] != 0:
      if first < 0:
        first, first_byte = char, i
      last, last_byte = char + 1, i + length
    i += length
    char += 1
  return lines[:count]
