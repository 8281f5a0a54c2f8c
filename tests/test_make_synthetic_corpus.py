"""Tests for tools/make_synthetic_corpus.py: layout, reading back, statistics."""

import pathlib
import re
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from e2e_helpers import load_tool
from e2e_helpers import REPO
from segjax import data
from segjax.data import documents

TOOL = REPO / "tools" / "make_synthetic_corpus.py"
NUM_DOCUMENTS = 60
SPLITS = ("train", "dev", "test")
SHARES = {"train": 582_160, "dev": 72_354, "test": 73_232}
SUMMARY = re.compile(
    r"(train|dev|test) ([\d,]+) documents ([\d,]+) segments ([\d,]+) "
    r"sentences ([\d,]+) bytes"
)
HEADER = re.compile(r"========,(\d+),(.+)\.")
DOCUMENT_PATH = re.compile(r"(train|dev|test)/\d\d/\d\d/doc_\d{7}")

msc = load_tool("make_synthetic_corpus")


def _start(*args):
  return subprocess.Popen(
      [sys.executable, str(TOOL), *args],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      cwd=REPO,
  )


def _finish(process):
  stdout, stderr = process.communicate(timeout=120)
  return process.returncode, stdout, stderr


def _reported(stdout):
  """split -> (documents, segments, sentences, bytes) from the summary."""
  (line,) = stdout.strip().splitlines()
  return {
      m[1]: tuple(int(n.replace(",", "")) for n in m.groups()[1:])
      for m in SUMMARY.finditer(line)
  }


def _load(path, source):
  return data.load_splits(
      ml_collections.ConfigDict(
          dict(source=source, path=str(path), dev_fraction=0.1, max_documents=0)
      )
  )


def _files(root):
  return {
      p.relative_to(root).as_posix(): p.read_bytes()
      for p in sorted(root.rglob("*"))
      if p.is_file()
  }


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
  """format -> (folder, reported counts): one CLI run each, side by side."""
  root = tmp_path_factory.mktemp("corpora")
  runs = {
      fmt: _start(
          f"--output={root / fmt}",
          f"--documents={NUM_DOCUMENTS}",
          f"--format={fmt}",
      )
      for fmt in msc.FORMATS
  }
  result = {}
  for fmt, process in runs.items():
    returncode, stdout, stderr = _finish(process)
    assert returncode == 0, stderr
    result[fmt] = (root / fmt, _reported(stdout))
  return result


@pytest.mark.parametrize("fmt", msc.FORMATS)
def test_splits_read_back_with_the_reported_counts(corpora, fmt):
  path, reported = corpora[fmt]
  splits = _load(path, fmt)
  sizes = {split: len(docs) for split, docs in splits.items()}
  assert sizes == msc.split_sizes(NUM_DOCUMENTS)
  for split in SPLITS:
    share = SHARES[split] / sum(SHARES.values())
    assert abs(sizes[split] - share * NUM_DOCUMENTS) <= 1
  for split, docs in splits.items():
    assert all(doc.segments for doc in docs)
    assert any(len(doc.segments) >= 2 for doc in docs)
    assert reported[split][:3] == (
        len(docs),
        sum(len(doc.segments) for doc in docs),
        sum(doc.num_sentences for doc in docs),
    )
    sentences = [s for doc in docs for s in doc.sentences]
    assert len(set(sentences)) > 0.99 * len(sentences)


def test_both_formats_hold_the_same_documents(corpora):
  wiki = _load(corpora["wiki727k"][0], "wiki727k")
  jsonl = _load(corpora["jsonl"][0], "jsonl")
  for split in SPLITS:
    assert [d.segments for d in wiki[split]] == [
        d.segments for d in jsonl[split]
    ]


def test_wiki727k_layout_and_headers(corpora):
  assert msc.WIKI_HEADER_PREFIX == documents.WIKI_HEADER_PREFIX
  path, reported = corpora["wiki727k"]
  files = _files(path)
  assert all(DOCUMENT_PATH.fullmatch(name) for name in files)
  folders = [name.rsplit("/", 1)[0] for name in files]
  assert max(map(folders.count, folders)) <= msc.FILES_PER_FOLDER
  for split in SPLITS:
    assert reported[split][3] == sum(
        len(text) for name, text in files.items() if name.startswith(split)
    )
  for text in files.values():
    headers = [
        line
        for line in text.decode().splitlines()
        if line.startswith(documents.WIKI_HEADER_PREFIX)
    ]
    levels = []
    for line in headers:
      level, title = HEADER.fullmatch(line).groups()
      assert line == documents.wiki727k_header(int(level), title)
      levels.append(int(level))
    assert levels[0] == 1 and set(levels) <= {1, 2}


def test_bytes_per_sentence_near_the_measured_shape(corpora):
  reported = corpora["wiki727k"][1].values()
  per_sentence = sum(r[3] for r in reported) / sum(r[2] for r in reported)
  assert 0.85 * 143 < per_sentence < 1.15 * 143


@pytest.mark.parametrize("fmt", msc.FORMATS)
def test_same_seed_same_bytes_other_seed_other_bytes(corpora, fmt, tmp_path):
  msc.generate(tmp_path / "same", NUM_DOCUMENTS, seed=0, output_format=fmt)
  msc.generate(tmp_path / "other", NUM_DOCUMENTS, seed=1, output_format=fmt)
  expected = _files(corpora[fmt][0])
  assert _files(tmp_path / "same") == expected
  other = _files(tmp_path / "other")
  assert other.keys() == expected.keys() and other != expected


def test_document_shapes_follow_the_documented_targets():
  segments, lengths = msc.document_shapes(np.random.default_rng(0), 5000)
  assert len(lengths) == segments.sum() and lengths.min() >= 1
  assert segments.mean() == pytest.approx(4, rel=0.15)
  assert (segments >= 2).mean() > 0.9
  assert lengths.mean() == pytest.approx(13.6, rel=0.15)
  assert lengths.sum() / len(segments) == pytest.approx(54, rel=0.15)
  # Heavy tail: the median segment is well below the mean.
  assert np.median(lengths) < 0.75 * lengths.mean()
  words = msc.sentence_words(np.random.default_rng(0), 5000)
  assert words.mean() == pytest.approx(20, rel=0.15) and words.min() >= 3


def test_multi_segment_documents_get_two_segments():
  segments, _ = msc.document_shapes(
      np.random.default_rng(0), 2000, multi_segment=range(2000)
  )
  assert segments.min() >= 2


def test_vocabulary_distinct_made_up_words_from_the_seed():
  words = msc.make_vocabulary(np.random.default_rng(3), 5000)
  assert len(set(words)) == 5000
  assert all(w.isalpha() and w.islower() for w in words)
  again = msc.make_vocabulary(np.random.default_rng(3), 5000)
  assert (words == again).all()


@pytest.mark.parametrize("problem", ["too_few_documents", "output_not_empty"])
def test_bad_flag_is_one_line_naming_it(tmp_path, problem):
  output = tmp_path / "out"
  if problem == "output_not_empty":
    output.mkdir()
    (output / "notes.txt").write_text("an earlier run\n")
    bad, args = f"--output={output}", [f"--output={output}", "--documents=5"]
  else:
    bad, args = "--documents=2", [f"--output={output}", "--documents=2"]
  returncode, stdout, stderr = _finish(_start(*args))
  assert returncode != 0 and not stdout
  (line,) = stderr.strip().splitlines()
  assert bad in line
  assert sorted(p.name for p in tmp_path.rglob("*")) == (
      ["notes.txt", "out"] if problem == "output_not_empty" else []
  )
