r"""Segments text with a trained run: the command line of `segjax.Segmenter`.

  python -m segjax.segment --workdir=runs/boundary article.txt
  cat article.txt | python -m segjax.segment --workdir=runs/boundary -
  python -m segjax.segment --workdir=runs/boundary --output_format=jsonl \
      --max_segment_sentences=20 reports/ 'notes/**/*.txt' -
  python -m segjax.segment --workdir=runs/boundary --input_format=jsonl \
      --output_format=jsonl documents.jsonl > segmented.jsonl

Inputs: files, folders (every file below, recursively, in sorted order,
hidden ones skipped), globs (quoted; `**` for any depth) and `-` (standard
input). Documents are read one at a time and written as they are segmented.

--input_format
  text    each file is one document of raw text, split into --unit:
          sentences (pysbd; --splitter=regex for the dependency-free
          fallback `segjax.data.split_sentences`, which keeps no character
          offsets), paragraphs (separated by blank lines) or lines;
  lines   text with one unit per line: the same as --unit=line, and what
          --one_per_line (kept from earlier versions) means;
  jsonl   one document a line, {"id": ..., "text": "..."} (split as text is)
          or {"id": ..., "sentences": ["...", ...]}; the id defaults to
          FILE:LINE.

--output_format (--format is an alias)
  text    the units one a line, a `==========` line between segments; when
          there may be several documents, each starts with `==> ID <==`;
  json    per document an object: id, sentences (the units),
          boundary_probabilities, threshold, segments (lists of units),
          sentence_spans ([start, end) unit indices of each segment) and
          character_spans ([start, end) offsets of each segment into the
          document's decoded text, a byte-order mark dropped; null for
          given sentences and --splitter=regex);
          one object for a single file or -, else an array of them;
  jsonl   the same objects, one a line.

Boundaries: every unit whose probability passes --threshold (default: the
run's dev-tuned one), or the most probable segmentation under
--min_segment_sentences, --max_segment_sentences and --num_segments
(`segjax.decoding`); a document that cannot meet them is decoded under
relaxed ones, with a warning naming it.

Bad input (an unreadable file, bytes that are not UTF-8, a broken JSONL
line, a document without text) is one line on stderr naming FILE[:LINE].
--on_error=continue (the default) segments the other documents and exits 1
at the end; --on_error=stop exits 1 there, after writing the documents
before it. A model that gives NaN or inf probabilities stops the run.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import pathlib
import sys
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, TextIO

from absl import app
from absl import flags

from segjax import checkpoints
from segjax import data
from segjax import decoding
from segjax import encoders
from segjax import inference
from segjax import metric_writers
from segjax import segmenter as segmenter_lib
from segjax import sentences as sentences_lib
from segjax.data import documents as documents_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", "best", "best, latest, or a step number."
)
_INPUT_FORMAT = flags.DEFINE_enum(
    "input_format",
    "text",
    ["text", "lines", "jsonl"],
    "text: a document per file; lines: one unit per line; jsonl: a document"
    ' per line, {"id", "text"} or {"id", "sentences"}.',
)
_UNIT = flags.DEFINE_enum(
    "unit",
    None,
    list(segmenter_lib.UNITS),
    "What raw text is split into and segments group (default: sentence).",
)
_ONE_PER_LINE = flags.DEFINE_bool(
    "one_per_line", False, "Each non-blank line is one unit (--unit=line)."
)
_SPLITTER = flags.DEFINE_enum(
    "splitter",
    "pysbd",
    ["pysbd", "regex"],
    "Sentence splitter: pysbd, or the regular-expression fallback (no"
    " character offsets).",
)
_OUTPUT_FORMAT = flags.DEFINE_enum(
    "output_format", None, ["text", "json", "jsonl"], "Default: text."
)
_FORMAT = flags.DEFINE_enum(
    "format", None, ["text", "json", "jsonl"], "Alias of --output_format."
)
_THRESHOLD = flags.DEFINE_float(
    "threshold",
    None,
    "Decision threshold in [0, 1]; default: the run's dev-tuned one.",
)
_MIN_SEGMENT = flags.DEFINE_integer(
    "min_segment_sentences", None, "At least this many units per segment."
)
_MAX_SEGMENT = flags.DEFINE_integer(
    "max_segment_sentences", None, "At most this many units per segment."
)
_NUM_SEGMENTS = flags.DEFINE_integer(
    "num_segments", None, "Exactly this many segments per document."
)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 32, "Documents per model call.", lower_bound=1
)
_ON_ERROR = flags.DEFINE_enum(
    "on_error",
    "continue",
    ["continue", "stop"],
    "A bad document: report it and go on (exit 1 at the end), or stop.",
)
SEPARATOR = "=========="
STDIN = "<stdin>"
_LINE_ADVICE = "pass --unit=line (or --one_per_line)"


# ----------------------------------------------------------------------------
# Reading documents.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InputDocument:
  """One document to segment.

  Attributes:
    id: what names it in the output (a JSONL line's "id", else `source`).
    source: FILE or FILE:LINE (`<stdin>` for standard input), for messages.
    content: raw text, or the units of an already split document.
  """

  id: Any
  source: str
  content: str | list[str]


def _is_glob(path: str) -> bool:
  return any(ch in path for ch in "*?[")


def input_files(paths: Iterable[str]) -> Iterator[str | data.DataError]:
  """The files `paths` name, in order; "-" for standard input.

  A folder gives every file below it in sorted order (hidden ones skipped),
  a glob its matches in sorted order. A path that names nothing gives a
  DataError in its place.
  """
  for path in paths:
    if path == "-" or pathlib.Path(path).is_file():
      yield path
    elif pathlib.Path(path).is_dir():
      try:
        yield from map(str, documents_lib._data_files(pathlib.Path(path)))  # pylint: disable=protected-access
      except data.DataError as e:
        yield e
    elif _is_glob(path):
      matches = sorted(glob.glob(path, recursive=True))
      if not matches:
        yield data.DataError(f"{path}: no file matches")
      yield from input_files(matches)
    else:
      yield data.DataError(f"{path}: no such file or directory")


def _read_bytes(path: str, stdin: BinaryIO) -> bytes:
  """The bytes of `path` or of standard input ("-").

  Raises:
    data.DataError: unreadable, naming the file.
  """
  try:
    if path == "-":
      return stdin.read()
    return pathlib.Path(path).read_bytes()
  except OSError as e:
    raise data.DataError(f"{path}: {e.strerror or e}") from None


def text_document(path: str, stdin: BinaryIO) -> InputDocument:
  """A file (or standard input) as one document of raw text.

  Raises:
    data.DataError: unreadable, not UTF-8, or blank (names file and line).
  """
  source = STDIN if path == "-" else path
  text = data.decode_text(_read_bytes(path, stdin), source)
  if not text.strip():
    raise data.DataError(f"{source}: no text")
  return InputDocument(source, source, text)


def _json_document(line: str, source: str) -> InputDocument:
  """One JSONL line as a document; DataError naming `source` if invalid."""
  try:
    record = json.loads(line.strip())
  except json.JSONDecodeError as e:
    raise data.DataError(
        f"{source}: not valid JSON ({e.msg}: column {e.colno})"
    ) from None
  if not isinstance(record, dict) or ("text" in record) == (
      "sentences" in record
  ):
    raise data.DataError(
        f'{source}: expected an object with "text" or "sentences" (one of'
        " them)"
    )
  content = record.get("text", record.get("sentences"))
  if "text" in record:
    if not isinstance(content, str):
      raise data.DataError(f'{source}: "text" must be a string')
    if not content.strip():
      raise data.DataError(f"{source}: no text")
  else:
    if not isinstance(content, list) or not all(
        isinstance(s, str) for s in content
    ):
      raise data.DataError(f'{source}: "sentences" must be a list of strings')
    if not content:
      raise data.DataError(f"{source}: no sentences")
  data.check_text([content] if "text" in record else content, source)
  return InputDocument(record.get("id", source), source, content)


def jsonl_documents(
    path: str, stdin: BinaryIO
) -> Iterator[InputDocument | data.DataError]:
  """The documents of a JSONL file, one per non-blank line, read lazily.

  A bad line gives a DataError naming FILE:LINE in its place; the other
  lines are still read.
  """
  name = STDIN if path == "-" else path
  try:
    lines = stdin if path == "-" else open(path, "rb")  # pylint: disable=consider-using-with
  except OSError as e:
    yield data.DataError(f"{path}: {e.strerror or e}")
    return
  try:
    for number, raw in enumerate(lines, start=1):
      source = f"{name}:{number}"
      try:
        line = raw.decode("utf-8-sig")
      except UnicodeDecodeError as e:
        yield data.DataError(f"{source}: not valid UTF-8 ({e.reason})")
        continue
      if not line.strip():
        continue
      try:
        yield _json_document(line, source)
      except data.DataError as e:
        yield e
  except OSError as e:
    yield data.DataError(f"{name}: {e.strerror or e}")
  finally:
    if path != "-":
      lines.close()


def read_documents(
    paths: Iterable[str], input_format: str, stdin: BinaryIO
) -> Iterator[InputDocument | data.DataError]:
  """Every document of `paths`, lazily; a DataError for each bad one."""
  for path in input_files(paths):
    if isinstance(path, data.DataError):
      yield path
    elif input_format == "jsonl":
      yield from jsonl_documents(path, stdin)
    else:
      try:
        yield text_document(path, stdin)
      except data.DataError as e:
        yield e


# ----------------------------------------------------------------------------
# Writing segmentations.
# ----------------------------------------------------------------------------


def document_record(
    document: InputDocument,
    segmentation: segmenter_lib.Segmentation,
    threshold: float,
) -> dict[str, Any]:
  """The JSON object of one segmented document."""
  character_spans = segmentation.character_spans
  return {
      "id": document.id,
      "sentences": segmentation.units,
      "boundary_probabilities": [
          round(float(p), 6) for p in segmentation.probabilities
      ],
      "threshold": threshold,
      "segments": segmentation.segments,
      "sentence_spans": [list(span) for span in segmentation.spans],
      "character_spans": (
          None
          if character_spans is None
          else [list(span) for span in character_spans]
      ),
  }


class Writer:
  """Writes records to `out` as they come, in `output_format`.

  `single`: the input is one document, written without a header (text) or
  as one object (json) rather than an array.
  """

  def __init__(self, out: TextIO, output_format: str, *, single: bool):
    self.out, self.format, self.single = out, output_format, single
    self.count = 0

  def write(self, record: dict[str, Any]) -> None:
    if self.format == "text":
      text = f"\n{SEPARATOR}\n".join("\n".join(s) for s in record["segments"])
      if not self.single:  # A blank line between documents, as head(1).
        header = f"==> {record['id']} <==\n"
        text = ("\n" if self.count else "") + header + text
      text += "\n"
    elif self.format == "json" and self.single:
      text = json.dumps(record, allow_nan=False, indent=1) + "\n"
    elif self.format == "json":
      text = ("[\n" if not self.count else ",\n") + json.dumps(
          record, allow_nan=False
      )
    else:
      text = json.dumps(record, allow_nan=False) + "\n"
    self.out.write(text)
    self.out.flush()
    self.count += 1

  def close(self) -> None:
    """Ends a json array (empty if nothing was written)."""
    if self.format == "json" and not self.single:
      self.out.write("\n]\n" if self.count else "[]\n")
      self.out.flush()


# ----------------------------------------------------------------------------
# Segmenting.
# ----------------------------------------------------------------------------


def _relaxation_warning(
    source: str, segmentation: segmenter_lib.Segmentation, requested, unit
) -> str | None:
  """Names the constraints a document was decoded under, if not the request."""
  changed = [
      f"{name}={got} (asked {asked})"
      for name, asked, got in zip(
          decoding.Constraints._fields, requested, segmentation.constraints
      )
      if asked != got
  ]
  if not changed:
    return None
  return (
      f"{source}: {len(segmentation.units)} {unit}s cannot meet the"
      f" constraints; decoded with {', '.join(changed)}"
  )


def _long_sentence_hint(segmentation: segmenter_lib.Segmentation) -> str | None:
  spans = [
      sentences_lib.Span(text, start, end)
      for text, (start, end) in zip(segmentation.units, segmentation.offsets)
  ]
  return sentences_lib.long_sentence_warning(spans, advice=_LINE_ADVICE)


def segment_documents(
    segmenter: segmenter_lib.Segmenter,
    documents: Iterable[InputDocument | data.DataError],
    writer: Writer,
    *,
    unit: str = "sentence",
    splitter: str = "pysbd",
    on_error: str = "continue",
    threshold: float | None = None,
    batch_size: int = 32,
    err: TextIO | None = None,
    **constraints,
) -> tuple[int, int]:
  """Segments and writes each document; reports each bad one on `err`.

  Warnings (a document decoded under relaxed constraints, implausibly long
  sentences) go to `err` (default: stderr) too, one line each.

  `constraints`: min_segment_sentences, max_segment_sentences, num_segments.

  Returns:
    (documents seen, documents that failed); with on_error="stop", reading
    ends at the first that fails.

  Raises:
    inference.NonFiniteOutput: the model gives NaN or inf probabilities.
  """
  err = err or sys.stderr
  counts = collections.Counter()
  pending = collections.deque()

  def items():
    for document in documents:
      counts["seen"] += 1
      if isinstance(document, data.DataError):
        counts["failed"] += 1
        print(f"segjax.segment: error: {document}", file=err)
        if on_error == "stop":
          return
        continue
      pending.append(document)
      if splitter == "regex" and isinstance(document.content, str):
        yield data.split_sentences(document.content)
      else:
        yield document.content

  requested = decoding.Constraints(
      constraints.get("min_segment_sentences") or 1,
      constraints.get("max_segment_sentences"),
      constraints.get("num_segments"),
  )
  threshold = segmenter.threshold if threshold is None else threshold
  for segmentation in segmenter.segmentations(
      items(),
      batch_size=batch_size,
      unit=unit,
      threshold=threshold,
      **constraints,
  ):
    document = pending.popleft()
    given = "sentence" if isinstance(document.content, list) else unit
    warnings = [
        _relaxation_warning(document.source, segmentation, requested, given)
    ]
    if unit == "sentence" and segmentation.offsets is not None:
      hint = _long_sentence_hint(segmentation)
      warnings.append(hint and f"{document.source}: {hint}")
    for warning in filter(None, warnings):
      print(f"segjax.segment: warning: {warning}", file=err)
    writer.write(document_record(document, segmentation, threshold))
  return counts["seen"], counts["failed"]


def _flag_options() -> dict[str, Any]:
  """The unit, splitter, formats and decoding options the flags ask for.

  Raises:
    app.UsageError: flags that contradict each other.
  """
  unit = _UNIT.value
  if _ONE_PER_LINE.value or _INPUT_FORMAT.value == "lines":
    if unit not in (None, "line"):
      raise app.UsageError(
          f"--unit={unit} contradicts --one_per_line/--input_format=lines"
          " (one unit per line)"
      )
    unit = "line"
  unit = unit or "sentence"
  if _SPLITTER.value != "pysbd" and unit != "sentence":
    raise app.UsageError("--splitter applies to --unit=sentence only")
  if (
      _FORMAT.value
      and _OUTPUT_FORMAT.value
      and _FORMAT.value != _OUTPUT_FORMAT.value
  ):
    raise app.UsageError("--format and --output_format differ")
  return dict(
      unit=unit,
      splitter=_SPLITTER.value,
      output_format=_OUTPUT_FORMAT.value or _FORMAT.value or "text",
      on_error=_ON_ERROR.value,
      threshold=_THRESHOLD.value,
      batch_size=_BATCH_SIZE.value,
      min_segment_sentences=_MIN_SEGMENT.value,
      max_segment_sentences=_MAX_SEGMENT.value,
      num_segments=_NUM_SEGMENTS.value,
  )


def main(argv):
  metric_writers.quiet_library_logs()
  paths = argv[1:]
  if not paths:
    raise app.UsageError("give input files, folders, globs, or - for stdin")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  options = _flag_options()
  output_format = options.pop("output_format")
  try:
    decoding.check_constraints(
        min_segment_sentences=options["min_segment_sentences"],
        max_segment_sentences=options["max_segment_sentences"],
        num_segments=options["num_segments"],
        threshold=0.5 if options["threshold"] is None else options["threshold"],
    )
    segmenter = segmenter_lib.Segmenter.from_workdir(
        _WORKDIR.value, _CHECKPOINT.value
    )
  except (
      ValueError,
      OSError,
      data.DataError,
      encoders.LoadError,
      checkpoints.CheckpointError,
  ) as e:
    sys.exit(f"segjax.segment: error: {e}")
  single = (
      len(paths) == 1
      and _INPUT_FORMAT.value != "jsonl"
      and (paths[0] == "-" or pathlib.Path(paths[0]).is_file())
  )
  writer = Writer(sys.stdout, output_format, single=single)
  documents = read_documents(paths, _INPUT_FORMAT.value, sys.stdin.buffer)
  try:
    seen, failed = segment_documents(segmenter, documents, writer, **options)
  except inference.NonFiniteOutput as e:
    sys.exit(f"segjax.segment: error: {e}")
  finally:
    writer.close()
  if failed and options["on_error"] == "continue" and seen > 1:
    sys.exit(f"segjax.segment: error: {failed} of {seen} documents failed")
  if failed:
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
