"""Wiki-727K files read many at a time, as spans of one text.

What building shards reads: the same documents as the file reader
(`documents.FILE_READERS["wiki727k"]`, which `wiki727k_segments` parses a
line at a time), found by one compiled pass over the files' joined text
(`kernels.wiki727k_lines`) and array operations, with Python only per file
and per section header. The sentences stay spans of the text, which the
tokenizer reads in place (`Tokenizer.encode_text`).
"""

from __future__ import annotations

import os
import pathlib
from typing import NamedTuple, Sequence

import numpy as np

from segjax.data import documents as documents_lib
from segjax.data import text as text_lib


class Batch(NamedTuple):
  """Documents of several files: their sentences are spans of `text`.

  Attributes:
    text: the files' texts, joined by newlines.
    sentences: int64 `[n, 2]`, (start, end) in `text` of every sentence, in
      document order.
    gold: uint8 `[n]`, 1 at each segment's last sentence.
    names: the documents' names (file paths relative to the root); files
      without a sentence are skipped.
    lengths: int64 `[len(names)]`, sentences per document.
    num_skipped: files skipped for having no sentence.
  """

  text: str
  sentences: np.ndarray
  gold: np.ndarray
  names: list[str]
  lengths: np.ndarray
  num_skipped: int


def _read_bytes(path: str) -> bytes:
  """A file's bytes, read without a file object (which costs more than
  reading a small file)."""
  fd = os.open(path, os.O_RDONLY)
  try:
    size = os.fstat(fd).st_size
    data = os.read(fd, size + 1)  # One byte more: the end of file is seen.
    if len(data) > size:  # The file grew since: read on to its end.
      data += b"".join(iter(lambda: os.read(fd, 1 << 16), b""))
    return data
  finally:
    os.close(fd)


def read_batch(root: pathlib.Path, names: Sequence[str]) -> Batch:
  """The documents of Wiki-727K files `root / name`, as `Batch`.

  Raises:
    DataError: a file that is not UTF-8 or has a malformed section header,
      naming the file and line (the file reader's message).
  """
  from segjax.data import kernels  # pylint: disable=g-import-not-at-top

  texts = []
  for name in names:
    path = os.path.join(root, name)
    texts.append(documents_lib.decode_text(_read_bytes(path), path))
  text = "\n".join(texts)
  sizes = np.fromiter(map(len, texts), np.int64, len(texts))
  file_starts = np.cumsum(sizes + 1) - (sizes + 1)
  # Decoded text holds no lone surrogate, so it encodes strictly.
  data = np.frombuffer(text.encode("utf-8"), np.uint8)
  lines = kernels.wiki727k_lines(data, text_lib._char_classes())  # pylint: disable=protected-access
  kind = lines[:, 4]
  file_of = np.searchsorted(file_starts, lines[:, 0], side="right") - 1
  to_check = np.flatnonzero(kind == kernels.HEADER_TO_CHECK)
  for (start, end), file in zip(lines[to_check, :2], file_of[to_check]):
    if not documents_lib.is_wiki727k_header(text[start:end]):
      # The file reader names the line; it raises on this file.
      path = pathlib.Path(root) / names[file]
      documents_lib.FILE_READERS["wiki727k"](path, pathlib.Path(root))
      raise AssertionError(f"{path}: header {text[start:end]!r} passed")
  is_header = (kind == kernels.HEADER) | (kind == kernels.HEADER_TO_CHECK)
  # A segment starts at each header and at each file's start.
  new_segment = is_header.copy()
  new_segment[1:] |= file_of[1:] != file_of[:-1]
  segment = np.cumsum(new_segment)
  is_sentence = kind == kernels.SENTENCE
  segment, file_of = segment[is_sentence], file_of[is_sentence]
  gold = np.ones(len(segment), np.uint8)
  gold[:-1] = segment[1:] != segment[:-1]
  counts = np.bincount(file_of, minlength=len(names))
  return Batch(
      text=text,
      sentences=lines[is_sentence, :2],
      gold=gold,
      names=[name for name, count in zip(names, counts) if count],
      lengths=counts[counts > 0],
      num_skipped=int(np.sum(counts == 0)),
  )
