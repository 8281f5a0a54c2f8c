"""Documents and the readers/writers of the supported on-disk formats.

Every reader returns the documents it found and how many empty documents it
skipped, and raises `DataError` naming the file and line of malformed input.
Document names are paths relative to the folder read (plus `:line` for
JSONL), so they do not depend on where a dataset is stored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import re
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

from absl import logging

CHOI_SEPARATOR = "=========="
# Wiki-727K: a segment starts with `========,<level>,<title>.`; titles may hold
# commas, so the level is what follows the first comma.
WIKI_HEADER_PREFIX = "========"
WIKI_LIST_MARKER = "***LIST***"

_WIKI_HEADER = re.compile(
    re.escape(WIKI_HEADER_PREFIX) + r",(?P<level>[^,]*),(?P<title>.*)"
)

PathLike = str | os.PathLike


class DataError(ValueError):
  """Malformed or missing input data; the message names file and line."""


@dataclasses.dataclass(frozen=True)
class Document:
  """A document: segments of sentences, and a name for messages.

  Attributes:
    segments: the segments in order, each a non-empty tuple of sentences.
    name: where the document came from (relative file path, `file:line`, or
      a generated id).
  """

  segments: tuple[tuple[str, ...], ...]
  name: str = ""

  def __post_init__(self):
    # Accept lists for convenience but store tuples, so documents are
    # immutable and safe to share between splits and caches.
    object.__setattr__(
        self, "segments", tuple(tuple(segment) for segment in self.segments)
    )

  @classmethod
  def from_sentences(cls, sentences: Sequence[str], name: str = "") -> Document:
    """An unsegmented document (one segment), e.g. raw text at inference."""
    return cls(segments=(tuple(sentences),) if sentences else (), name=name)

  @property
  def sentences(self) -> list[str]:
    """All sentences in order."""
    return [sentence for segment in self.segments for sentence in segment]

  @property
  def num_sentences(self) -> int:
    return sum(len(segment) for segment in self.segments)


class ReadResult(NamedTuple):
  """What a reader found: the documents and the number of empty ones skipped."""

  documents: list[Document]
  num_skipped: int


def decode_text(data: bytes, path: PathLike) -> str:
  """UTF-8 text of a file's bytes, or a DataError naming the bad line."""
  try:
    return data.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    line = data[: e.start].count(b"\n") + 1
    raise DataError(f"{path}:{line}: not valid UTF-8 ({e.reason})") from None


def check_text(strings: Iterable[str], where: str) -> None:
  """A DataError naming `where` if a string holds a lone surrogate.

  JSON can spell one (`"\\ud800"`), and Python strings can hold one, but it
  is not a character: UTF-8 cannot encode it, so no tokenizer reads it.
  """
  for string in strings:
    try:
      string.encode("utf-8")
    except UnicodeEncodeError as e:
      raise DataError(
          f"{where}: not valid text: a lone surrogate"
          f" {string[e.start]!r} at character {e.start} of {string[:40]!r}"
      ) from None


def _read_lines(path: pathlib.Path) -> list[str]:
  """The lines of a UTF-8 text file, without line endings."""
  return decode_text(path.read_bytes(), path).splitlines()


def _walk(
    root: str, parts: tuple[str, ...], suffix: str
) -> Iterator[tuple[tuple[str, ...], int]]:
  """(path parts, size) of the regular, non-hidden files under root."""
  with os.scandir(root) as entries:
    for entry in entries:
      if entry.name.startswith("."):
        continue
      if entry.is_dir():
        yield from _walk(entry.path, parts + (entry.name,), suffix)
      elif entry.is_file() and entry.name.endswith(suffix):
        yield parts + (entry.name,), entry.stat().st_size


def data_files_and_sizes(
    root: PathLike, suffix: str = ""
) -> list[tuple[str, int]]:
  """(path relative to `root`, size in bytes) of its data files, sorted.

  Regular files under `root` (recursively), hidden ones skipped. Sorting (by
  path components) makes the document order, and everything derived from
  it, the same on every machine. `os.scandir` rather than `Path.rglob`: a
  corpus of Wiki-727K's size is listed in seconds, not minutes.
  """
  root = pathlib.Path(root)
  if not root.is_dir():
    raise DataError(f"{root}: not a directory")
  found = list(_walk(str(root), (), suffix))
  if not found:
    raise DataError(f"{root}: no data files found")
  return [("/".join(parts), size) for parts, size in sorted(found)]


def _data_files(root: pathlib.Path, suffix: str = "") -> list[pathlib.Path]:
  """The data files under `root` in document order (`data_files_and_sizes`)."""
  return [root / name for name, _ in data_files_and_sizes(root, suffix)]


def _closed(segments: list[tuple[str, ...]], current: list[str]) -> None:
  """Appends the current segment (if it has sentences) and empties it."""
  if current:
    segments.append(tuple(current))
    current.clear()


def choi_segments(
    lines: Iterable[str], path: PathLike
) -> list[tuple[str, ...]]:
  """Segments of one Choi-format file: sentences between `==========` lines.

  Every line of a decodable Choi file is valid, but a file without any
  separator line is read as one segment, with a warning: it is more likely
  not Choi data (or a corpus with the separators stripped).
  """
  segments, current, separators = [], [], 0
  for line in lines:
    text = line.strip()
    if text.startswith(CHOI_SEPARATOR):
      separators += 1
      _closed(segments, current)
    elif text:
      current.append(text)
  _closed(segments, current)
  if segments and not separators:
    logging.warning(
        "%s: no '%s' separator line; read as one segment", path, CHOI_SEPARATOR
    )
  return segments


def wiki727k_header(level: int, title: str) -> str:
  """The Wiki-727K header line that starts a segment: `========,2,Title.`.

  Raises:
    ValueError: a level below 1, or a title that is not one non-empty line
      (`wiki727k_segments` could not read it back).
  """
  if level < 1:
    raise ValueError(f"section level {level} is not a positive integer")
  if title.splitlines() != [title]:  # The readers split lines likewise.
    raise ValueError(f"section title {title!r} is not one non-empty line")
  return f"{WIKI_HEADER_PREFIX},{level},{title}."


def check_wiki727k_header(text: str, where: str) -> None:
  """A DataError naming `where` unless `text` is `========,<level>,<title>.`."""
  match = _WIKI_HEADER.fullmatch(text)
  if match is None:
    raise DataError(
        f"{where}: malformed section header {text!r}; "
        "expected '========,<level>,<title>.'"
    )
  level = match["level"].strip()
  if not level.isdecimal() or int(level) < 1:
    raise DataError(
        f"{where}: section level {level!r} is not a positive integer"
    )


def is_wiki727k_header(text: str) -> bool:
  """Whether `check_wiki727k_header` accepts the stripped line `text`."""
  try:
    check_wiki727k_header(text, "")
  except DataError:
    return False
  return True


def wiki727k_segments(
    lines: Iterable[str], path: PathLike
) -> list[tuple[str, ...]]:
  """Segments of one Wiki-727K file; `========,<level>,<title>.` starts one.

  `***LIST***` placeholder lines are dropped, and so are sections without a
  sentence of their own (a header directly followed by a sub-header).
  """
  segments, current = [], []
  for line_number, line in enumerate(lines, start=1):
    text = line.strip()
    if text.startswith(WIKI_HEADER_PREFIX):
      check_wiki727k_header(text, f"{path}:{line_number}")
      _closed(segments, current)
    elif text and text != WIKI_LIST_MARKER:
      current.append(text)
  _closed(segments, current)
  return segments


def _one_document_file(
    parse: Callable[[list[str], pathlib.Path], list[tuple[str, ...]]],
) -> Callable[[pathlib.Path, pathlib.Path], ReadResult]:
  """A file reader for formats with one document per file, parsed by `parse`."""

  def read(file: pathlib.Path, root: pathlib.Path) -> ReadResult:
    segments = parse(_read_lines(file), file)
    if not segments:
      return ReadResult([], 1)
    return ReadResult(
        [Document(segments, name=file.relative_to(root).as_posix())], 0
    )

  return read


def _json_segments(line: str, where: str) -> list[tuple[str, ...]]:
  """Non-empty segments of a JSONL record `{"segments": [[str, ...], ...]}`."""
  try:
    record = json.loads(line)
  except json.JSONDecodeError as e:
    raise DataError(f"{where}: not valid JSON ({e.msg})") from None
  if not isinstance(record, dict) or "segments" not in record:
    raise DataError(f'{where}: expected an object with a "segments" key')
  segments = record["segments"]
  if not isinstance(segments, list) or not all(
      isinstance(segment, list) and all(isinstance(s, str) for s in segment)
      for segment in segments
  ):
    raise DataError(f'{where}: "segments" must be a list of lists of strings')
  check_text((s for segment in segments for s in segment), where)
  cleaned = [tuple(s.strip() for s in seg if s.strip()) for seg in segments]
  return [segment for segment in cleaned if segment]


def read_jsonl_file(file: pathlib.Path, root: pathlib.Path) -> ReadResult:
  """The documents of one JSONL file, named `<path relative to root>:<line>`."""
  if not file.is_file():
    raise DataError(f"{file}: no such file")
  name = file.relative_to(root).as_posix()
  documents, num_skipped = [], 0
  for line_number, line in enumerate(_read_lines(file), start=1):
    if not line.strip():
      continue
    segments = _json_segments(line, f"{file}:{line_number}")
    if segments:
      documents.append(Document(segments, name=f"{name}:{line_number}"))
    else:
      num_skipped += 1
  return ReadResult(documents, num_skipped)


# Per format: the documents of one file (names relative to a root folder).
FILE_READERS: dict[str, Callable[[pathlib.Path, pathlib.Path], ReadResult]] = {
    "choi": _one_document_file(choi_segments),
    "wiki727k": _one_document_file(wiki727k_segments),
    "jsonl": read_jsonl_file,
}


def _split_root(path: PathLike, source: str) -> tuple[pathlib.Path, str, str]:
  """(root, file suffix, single file name or "") of a split's files."""
  path = pathlib.Path(path)
  if source != "jsonl":
    return path, "", ""
  if path.is_dir():
    return path, ".jsonl", ""
  if not path.is_file():
    raise DataError(f"{path}: no such file")
  return path.parent, ".jsonl", path.name


def split_files(
    path: PathLike, source: str
) -> tuple[pathlib.Path, list[tuple[str, int]]]:
  """(root, [(file relative to root, size)] in document order) of a split.

  `path` is a split folder, or for JSONL also a single file.
  """
  root, suffix, single = _split_root(path, source)
  if single:
    return root, [(single, (root / single).stat().st_size)]
  return root, data_files_and_sizes(root, suffix)


def _entry_digest(name: str, size: int) -> int:
  return int.from_bytes(
      hashlib.blake2b(f"{name}\0{size}".encode(), digest_size=16).digest(),
      "little",
  )


def listing_digest(files: Iterable[tuple[str, int]]) -> dict[str, Any]:
  """Count, total bytes and an order-free digest of [(name, size)] files.

  The digest is the sum of the entries' 128-bit hashes, so it can be taken
  while walking the folder in any order (`split_listing`).
  """
  count = total = digest = 0
  for name, size in files:
    count, total = count + 1, total + size
    digest = (digest + _entry_digest(name, size)) % (1 << 128)
  return {"files": count, "bytes": total, "digest": f"{digest:032x}"}


def split_listing(path: PathLike, source: str) -> dict[str, Any]:
  """`listing_digest` of `split_files(path, source)`, without the list.

  For a corpus of Wiki-727K's size the list of names would take hundreds of
  MB in every process that only checks that its shards are current.
  """
  root, suffix, single = _split_root(path, source)
  if single:
    return listing_digest(split_files(path, source)[1])
  return listing_digest(
      ("/".join(parts), size) for parts, size in _walk(str(root), (), suffix)
  )


def read_files(
    root: pathlib.Path, files: Sequence[tuple[str, int]], source: str
) -> ReadResult:
  """The documents of `files` (`split_files`) in order, and the empty ones."""
  documents, num_skipped = [], 0
  for name, _ in files:
    found, skipped = FILE_READERS[source](root / name, root)
    documents += found
    num_skipped += skipped
  return ReadResult(documents, num_skipped)


def read_choi_dir(path: PathLike) -> ReadResult:
  """Reads a folder of Choi-format files (searched recursively)."""
  return read_files(*split_files(path, "choi"), "choi")


def read_wiki727k_dir(path: PathLike) -> ReadResult:
  """Reads a folder of Wiki-727K files (searched recursively)."""
  return read_files(*split_files(path, "wiki727k"), "wiki727k")


def read_jsonl(path: PathLike) -> ReadResult:
  """Reads JSONL documents from a file or a folder of `*.jsonl` files.

  Each non-blank line is one document, `{"segments": [["sentence", ...], ...]}`;
  other keys are ignored. Empty sentences and segments are dropped.
  """
  return read_files(*split_files(path, "jsonl"), "jsonl")


def choi_text(document: Document) -> str:
  """A document in Choi format: segments framed by `==========` lines."""
  lines = [CHOI_SEPARATOR]
  for segment in document.segments:
    for sentence in segment:
      line = " ".join(sentence.split())
      if line.startswith(CHOI_SEPARATOR) or not line:
        raise ValueError(
            f"{document.name}: sentence {sentence!r} cannot be written in Choi"
            " format"
        )
      lines.append(line)
    lines.append(CHOI_SEPARATOR)
  return "\n".join(lines) + "\n"


def write_choi_dir(
    documents: Iterable[Document], path: PathLike
) -> list[pathlib.Path]:
  """Writes documents as a folder of Choi-format files `00000.ref`, ...

  Sentences are written one per line with their whitespace normalised, so
  `read_choi_dir` gives the documents back (with file names as names).

  Returns:
    The files written, in document order.
  """
  root = pathlib.Path(path)
  root.mkdir(parents=True, exist_ok=True)
  files = []
  for index, document in enumerate(documents):
    file = root / f"{index:05d}.ref"
    file.write_text(choi_text(document), encoding="utf-8")
    files.append(file)
  return files


def detect_format(path: PathLike) -> str:
  """Which reader fits a split folder or file: "jsonl", "choi" or "wiki727k"."""
  path = pathlib.Path(path)
  if path.suffix == ".jsonl" or (
      path.is_dir() and next(path.rglob("*.jsonl"), None) is not None
  ):
    return "jsonl"
  # The first few files decide; a corpus does not mix formats.
  for file in _data_files(path)[:10]:
    for line in _read_lines(file):
      text = line.strip()
      if text.startswith(CHOI_SEPARATOR):
        return "choi"
      if text.startswith(WIKI_HEADER_PREFIX + ","):
        return "wiki727k"
      if text:
        break
  raise DataError(
      f"{path}: cannot detect the format (no file starts with a Choi "
      f"'{CHOI_SEPARATOR}' or Wiki-727K '{WIKI_HEADER_PREFIX},' line and "
      "there are no .jsonl files); set data.source explicitly"
  )


READERS: dict[str, Callable[[PathLike], ReadResult]] = {
    "choi": read_choi_dir,
    "wiki727k": read_wiki727k_dir,
    "jsonl": read_jsonl,
}
