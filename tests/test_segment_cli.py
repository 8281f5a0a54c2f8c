"""The `segment` command line: inputs, formats, units, constraints, bad input.

Reading and bad-input messages are tested without a model; formats, units
and constraints in-process over the shared tiny run (`segment_documents` is
what `main` runs); two subprocess runs check the command end to end.
"""

import io
import json

import numpy as np
import pytest

from e2e_helpers import run_module
from segjax import data
from segjax import segment
from segjax import segmenter as segmenter_lib

PROSE = (
    "The cat sat on the mat. It was warm there.\n\n"
    "Stocks fell sharply today.  Investors were\nworried. Bonds rose.\n"
)


def _write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return path


def _messages(items):
  return [str(item) for item in items if isinstance(item, data.DataError)]


def _same_text(original, start, end, units):
  """The span of the original holds exactly these units, as written."""
  return " ".join(original[start:end].split()) == " ".join(units)


# ----------------------------------------------------------------------------
# Reading, without a model.
# ----------------------------------------------------------------------------


def test_files_folders_globs_and_stdin_are_read_in_order(tmp_path):
  one = _write(tmp_path / "one.txt", "First file.")
  _write(tmp_path / "docs" / "b.txt", "Folder b.")
  _write(tmp_path / "docs" / "a" / "z.txt", "Folder a/z.")
  _write(tmp_path / "docs" / ".hidden", "Never read.")
  _write(tmp_path / "more" / "x.md", "Glob x.")
  _write(tmp_path / "more" / "y.txt", "Not matched.")
  paths = [str(one), str(tmp_path / "docs"), str(tmp_path / "more/*.md"), "-"]
  assert list(segment.input_files(paths)) == [
      str(one),
      str(tmp_path / "docs" / "a" / "z.txt"),
      str(tmp_path / "docs" / "b.txt"),
      str(tmp_path / "more" / "x.md"),
      "-",
  ]
  stdin = io.BytesIO("From stdin, é.".encode())
  documents = list(segment.read_documents(paths, "text", stdin))
  assert [d.content for d in documents] == [
      "First file.",
      "Folder a/z.",
      "Folder b.",
      "Glob x.",
      "From stdin, é.",
  ]
  assert documents[-1].id == documents[-1].source == "<stdin>"


def test_bad_input_is_named_by_file_and_line_and_the_rest_is_read(tmp_path):
  jsonl = tmp_path / "docs.jsonl"
  jsonl.write_bytes(
      b'{"id": "a", "text": "One. Two."}\n'
      b"\n"
      b'{"id": "b", "text": "Broken\n'
      b'{"sentences": ["caf\xe9"]}\n'
      b'{"text": "x", "sentences": ["y"]}\n'
      b'{"sentences": ["Given.", "Split."]}\n'
      b'{"id": "e", "text": "  "}\n'
      b'{"sentences": ["Half \\udfff a pair."]}\n'
  )
  items = list(segment.read_documents([str(jsonl)], "jsonl", io.BytesIO()))
  good = [i for i in items if not isinstance(i, data.DataError)]
  assert [(d.id, d.content) for d in good] == [
      ("a", "One. Two."),
      (f"{jsonl}:6", ["Given.", "Split."]),
  ]
  assert _messages(items) == [
      f"{jsonl}:3: not valid JSON (Unterminated string starting at: column"
      " 21)",
      f"{jsonl}:4: not valid UTF-8 (invalid continuation byte)",
      f'{jsonl}:5: expected an object with "text" or "sentences" (one of'
      " them)",
      f"{jsonl}:7: no text",
      f"{jsonl}:8: not valid text: a lone surrogate '\\udfff' at character"
      " 5 of 'Half \\udfff a pair.'",
  ]
  latin1 = tmp_path / "latin1.txt"
  latin1.write_bytes("Ligne un.\nDeuxième ligne.\n".encode("latin-1"))
  empty = _write(tmp_path / "empty.txt", "\n \n")
  paths = [str(latin1), str(empty), str(tmp_path / "none.txt"), "nothing/*.x"]
  assert _messages(segment.read_documents(paths, "text", io.BytesIO())) == [
      f"{latin1}:2: not valid UTF-8 (invalid continuation byte)",
      f"{empty}: no text",
      f"{tmp_path / 'none.txt'}: no such file or directory",
      "nothing/*.x: no file matches",
  ]


# ----------------------------------------------------------------------------
# Segmenting in-process, over the shared tiny run.
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def segmenter(trained_run):
  return segmenter_lib.Segmenter.from_workdir(trained_run)


def _segmented(segmenter, documents, output_format, single=False, **options):
  """(stdout, stderr, (seen, failed)) of `segment_documents`."""
  out, err = io.StringIO(), io.StringIO()
  writer = segment.Writer(out, output_format, single=single)
  counts = segment.segment_documents(
      segmenter, documents, writer, err=err, **options
  )
  writer.close()
  return out.getvalue(), err.getvalue(), counts


def _documents(*contents):
  return [
      segment.InputDocument(f"doc{i}", f"doc{i}.txt", c)
      for i, c in enumerate(contents)
  ]


@pytest.mark.slow
def test_every_output_format_writes_the_api_segmentation(segmenter):
  documents = _documents(PROSE, ["Given one.", "Given two.", "Three."])
  expected = list(
      segmenter.segmentations([d.content for d in documents], batch_size=1)
  )
  jsonl, err, counts = _segmented(segmenter, documents, "jsonl", batch_size=1)
  assert counts == (2, 0) and not err
  records = [json.loads(line) for line in jsonl.splitlines()]
  array, _, _ = _segmented(segmenter, documents, "json")
  assert json.loads(array) == records
  single, _, _ = _segmented(segmenter, documents[:1], "json", single=True)
  assert json.loads(single) == records[0]
  for record, result in zip(records, expected):
    assert record["sentences"] == result.units
    assert record["segments"] == result.segments
    assert record["sentence_spans"] == [list(s) for s in result.spans]
    np.testing.assert_allclose(
        record["boundary_probabilities"], result.probabilities, atol=1e-6
    )
    assert record["threshold"] == segmenter.threshold
  # Character spans map each segment back onto the original text; given
  # sentences have none.
  first, given = records
  assert first["sentences"][-2:] == ["Investors were worried.", "Bonds rose."]
  for (start, end), units in zip(first["character_spans"], first["segments"]):
    assert _same_text(PROSE, start, end, units)
  assert given["character_spans"] is None and given["id"] == "doc1"
  text, _, _ = _segmented(segmenter, documents, "text")
  blocks = text.split("\n\n")
  assert [b.splitlines()[0] for b in blocks] == ["==> doc0 <==", "==> doc1 <=="]
  for block, record in zip(blocks, records):
    body = "\n".join(block.splitlines()[1:])
    assert body.split(f"\n{segment.SEPARATOR}\n") == [
        "\n".join(s) for s in record["segments"]
    ]


@pytest.mark.slow
def test_paragraph_units_and_constraints_are_honoured(segmenter):
  paragraphs = "\n\n".join(
      f"Paragraph {i} begins here.\nIt goes on for\na while." for i in range(7)
  )
  jsonl, err, _ = _segmented(
      segmenter,
      _documents(paragraphs),
      "jsonl",
      unit="paragraph",
      min_segment_sentences=2,
      max_segment_sentences=3,
  )
  (record,) = map(json.loads, jsonl.splitlines())
  assert record["sentences"] == [
      f"Paragraph {i} begins here. It goes on for a while." for i in range(7)
  ]
  lengths = [end - start for start, end in record["sentence_spans"]]
  assert sum(lengths) == 7 and min(lengths) >= 2 and max(lengths) <= 3
  for (start, end), units in zip(record["character_spans"], record["segments"]):
    assert _same_text(paragraphs, start, end, units)
    assert not paragraphs[start:end].startswith("\n")
  assert not err
  # An exact count; where a document cannot meet it, a one-line warning.
  counted, err, _ = _segmented(
      segmenter, _documents(PROSE, "Only. Two."), "jsonl", num_segments=3
  )
  long, short = map(json.loads, counted.splitlines())
  assert len(long["segments"]) == 3 and len(short["segments"]) == 2
  assert err == (
      "segjax.segment: warning: doc1.txt: 2 sentences cannot meet the"
      " constraints; decoded with num_segments=2 (asked 3)\n"
  )


@pytest.mark.slow
def test_a_bad_document_is_reported_and_the_others_written_or_it_stops(
    segmenter,
):
  documents = _documents("First doc. Here.", "Second doc.", "Third. Doc.")
  documents[1] = data.DataError("doc1.txt:4: not valid UTF-8")
  out, err, counts = _segmented(segmenter, documents, "json", batch_size=2)
  assert counts == (3, 1)
  assert [r["id"] for r in json.loads(out)] == ["doc0", "doc2"]
  assert err == "segjax.segment: error: doc1.txt:4: not valid UTF-8\n"
  out, err, counts = _segmented(
      segmenter, documents, "json", batch_size=2, on_error="stop"
  )
  assert counts == (2, 1) and [r["id"] for r in json.loads(out)] == ["doc0"]
  nothing, _, _ = _segmented(segmenter, documents[1:2], "json")
  assert json.loads(nothing) == []


# ----------------------------------------------------------------------------
# The command end to end.
# ----------------------------------------------------------------------------


@pytest.mark.slow
def test_several_inputs_to_jsonl_with_a_bad_file_in_between(
    trained_run, tmp_path
):
  first = _write(tmp_path / "first.txt", PROSE)
  _write(tmp_path / "folder" / "b.txt", "Folder text. Here it is.")
  _write(tmp_path / "folder" / "a" / "c.txt", "Nested. Text.")
  (tmp_path / "folder" / "bad.txt").write_bytes(b"Ok.\nNot \xff utf-8.\n")
  _write(tmp_path / "globbed" / "g.txt", "Globbed one. Globbed two.")
  result = run_module(
      "segjax.segment",
      f"--workdir={trained_run}",
      "--output_format=jsonl",
      "--max_segment_sentences=2",
      str(first),
      str(tmp_path / "folder"),
      str(tmp_path / "globbed" / "*.txt"),
      "-",
      stdin="From standard input. Second sentence. Third.",
  )
  assert result.returncode == 1, result.stderr[-3000:]
  records = [json.loads(line) for line in result.stdout.splitlines()]
  assert [r["id"] for r in records] == [
      str(first),
      str(tmp_path / "folder" / "a" / "c.txt"),
      str(tmp_path / "folder" / "b.txt"),
      str(tmp_path / "globbed" / "g.txt"),
      "<stdin>",
  ]
  for record in records:
    original = (
        "From standard input. Second sentence. Third."
        if record["id"] == "<stdin>"
        else open(record["id"], encoding="utf-8").read()
    )
    for (start, end), units in zip(
        record["character_spans"], record["segments"]
    ):
      assert _same_text(original, start, end, units)
    assert max(e - s for s, e in record["sentence_spans"]) <= 2
  errors = [l for l in result.stderr.splitlines() if ": error: " in l]
  assert errors == [
      f"segjax.segment: error: {tmp_path / 'folder' / 'bad.txt'}:2: not valid"
      " UTF-8 (invalid start byte)",
      "segjax.segment: error: 1 of 6 documents failed",
  ]


@pytest.mark.slow
def test_jsonl_input_stops_at_a_broken_line_with_valid_json_before_it(
    trained_run, tmp_path
):
  jsonl = tmp_path / "docs.jsonl"
  jsonl.write_text(
      '{"id": "a", "text": "One topic. Still it.\\n\\nAnother one."}\n'
      '{"id": "b", "sentences": ["Given.", "Already split."]}\n'
      '{"id": "c", "text": \n'
      '{"id": "d", "text": "Never reached."}\n'
  )
  result = run_module(
      "segjax.segment",
      f"--workdir={trained_run}",
      "--input_format=jsonl",
      "--format=json",
      "--unit=paragraph",
      "--on_error=stop",
      "--threshold=0.0",
      str(jsonl),
  )
  assert result.returncode == 1
  records = json.loads(result.stdout)
  assert [r["id"] for r in records] == ["a", "b"]
  assert records[0]["segments"] == [["One topic. Still it."], ["Another one."]]
  assert records[1]["segments"] == [["Given."], ["Already split."]]
  assert "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      f"segjax.segment: error: {jsonl}:3: not valid JSON (Expecting value:"
      " column 20)"
  )
