"""Wiki-727K files read many at a time (what building shards reads) give the
file reader's documents, errors and token ids."""

import pathlib
import types
import zlib

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from segjax import data
from segjax.data import documents
from segjax.data import kernels
from segjax.data import shards
from segjax.data import text as text_lib
from segjax.data import wiki727k

# Every kind of line break and white space `str.splitlines` and `str.strip`
# know, next to word and other characters, a character that lowers to two
# ("İ") or differently at a word's end ("Σ"), and header-like pieces.
_CHARACTERS = list(
    "ab Z_1.,=*\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u2028\u2029\u3000"
    "é日😀\u200bİΣσ'"
) + [
    "\r\n",
    "***LIST***",
    "========,1,T.",
    "========, 2 ,x",
    "========,0,z",
    "========,01,",
    "========,1 2,t",
    "========,\u0663,t",
    "========,1",
]
_TEXTS = st.lists(st.sampled_from(_CHARACTERS), max_size=40).map("".join)


def _kind(line: str) -> int:
  if line.startswith(documents.WIKI_HEADER_PREFIX):
    return kernels.HEADER
  if line == documents.WIKI_LIST_MARKER:
    return kernels.LIST_MARKER
  return kernels.SENTENCE


@hypothesis.given(_TEXTS)
@hypothesis.settings(max_examples=500, deadline=None)
def test_lines_are_those_of_splitlines_and_strip_with_their_kind(text):
  raw = np.frombuffer(text.encode("utf-8"), np.uint8)
  lines = kernels.wiki727k_lines(raw, text_lib._char_classes())
  expected = [line.strip() for line in text.splitlines() if line.strip()]
  assert [text[a:b] for a, b, _, _, _ in lines] == expected
  assert [raw[a:b].tobytes().decode() for _, _, a, b, _ in lines] == expected
  for line, kind in zip(expected, lines[:, 4]):
    # The kernel vouches for the headers it calls valid; Python checks
    # the rest.
    if kind == kernels.HEADER:
      assert documents.is_wiki727k_header(line), line
    else:
      assert kind == _kind(line) or (
          kind == kernels.HEADER_TO_CHECK and _kind(line) == kernels.HEADER
      ), (line, kind)


@hypothesis.given(st.lists(_TEXTS, max_size=6), st.booleans())
@hypothesis.settings(max_examples=300, deadline=None)
def test_encode_text_gives_the_ids_of_the_sentences_it_spans(lines, lowercase):
  tokenizer = data.Tokenizer(
      num_buckets=1 << 10, max_tokens=5, lowercase=lowercase
  )
  text = "\n".join(lines)
  raw = np.frombuffer(text.encode("utf-8"), np.uint8)
  spans = kernels.wiki727k_lines(raw, text_lib._char_classes())[:, :2]
  sentences = [text[a:b] for a, b in spans]
  np.testing.assert_array_equal(
      tokenizer.encode_text(text, spans), tokenizer.encode(sentences)
  )


_FILES = {
    "a/plain.txt": (
        "========,1,Intro.\nFirst one.\nSecond one.\n"
        "========,2,History.\nThird.\n"
    ),
    "a/z_no_header.txt": "Just text.\n\nMore text without a header.",
    "b/crlf.txt": "========,1,A.\r\n  Padded line.  \r\n\r\n***LIST***\r\nNext.",
    "b/empty.txt": "",
    "b/headers_only.txt": "========,1,A.\n========,2,B.\n",
    "c/spaces.txt": (
        "\ufeffLead before any header.\n========,1,X.\n"
        "\u00a0nbsp\u00a0\n\x85\u2028line\u2029sep\x0bvt\x0cff\x1cfs\n"
        "========,3,Sub, with commas.\n"
        "İstanbul ΟΔΟΣ é\n========,2,Empty.\n========,2,Next.\nLast."
    ),
    "c/unicode_level.txt": "========,\u0663,Arabic-Indic three.\nOk.\n",
    "d/sub_header_first.txt": "========,1,A.\n========,2,B.\nOnly.\n",
}


def _write(root: pathlib.Path, files: dict[str, str]) -> list[str]:
  for name, content in files.items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(content.encode("utf-8"))
  return sorted(files)


def _file_reader_documents(root, names):
  found, skipped = [], 0
  for name in names:
    result = documents.FILE_READERS["wiki727k"](root / name, root)
    found += result.documents
    skipped += result.num_skipped
  return found, skipped


def _batch_documents(batch):
  """The `Document`s a `wiki727k.Batch` holds."""
  found, first = [], 0
  ends = np.flatnonzero(batch.gold) + 1
  for name, length in zip(batch.names, batch.lengths):
    doc_ends = ends[(ends > first) & (ends <= first + length)]
    segments = [
        [batch.text[a:b] for a, b in batch.sentences[start:end]]
        for start, end in zip(np.r_[first, doc_ends[:-1]], doc_ends)
    ]
    found.append(data.Document(segments, name=name))
    first += length
  return found


def test_a_batch_holds_the_file_readers_documents(tmp_path):
  names = _write(tmp_path, _FILES)
  batch = wiki727k.read_batch(tmp_path, names)
  expected, skipped = _file_reader_documents(tmp_path, names)
  assert _batch_documents(batch) == expected
  assert batch.num_skipped == skipped == 2  # empty.txt, headers_only.txt
  gold = np.concatenate([data.boundary_labels(d) for d in expected])
  np.testing.assert_array_equal(batch.gold, gold)


@pytest.mark.parametrize(
    "content, message",
    [
        ("Fine.\n========,x,Bad level.\n", r"bad\.txt:2: section level 'x'"),
        ("Fine.\n\n  =========,1,T.\n", r"bad\.txt:3: malformed section"),
        ("a\r\nb\r\n========,0,Zero.\n", r"bad\.txt:3: section level '0'"),
        ("ok\n".encode() + b"\xff\n", r"bad\.txt:2: not valid UTF-8"),
    ],
)
def test_a_bad_file_gets_the_file_readers_error(tmp_path, content, message):
  names = _write(tmp_path, {"good.txt": "========,1,A.\nYes.\n"})
  if isinstance(content, bytes):
    (tmp_path / "bad.txt").write_bytes(content)
  else:
    (tmp_path / "bad.txt").write_text(content, encoding="utf-8")
  with pytest.raises(data.DataError, match=message) as raised:
    wiki727k.read_batch(tmp_path, names + ["bad.txt"])
  with pytest.raises(data.DataError) as expected:
    _file_reader_documents(tmp_path, ["bad.txt"])
  assert str(raised.value) == str(expected.value)


class _WordEncoder:
  """A stand-in for a pretrained encoder's tokenizer: ids from word CRCs."""

  max_seq_length = 6
  module = types.SimpleNamespace(config=types.SimpleNamespace(vocab_size=999))

  def tokenize(self, sentences, length):
    ids = np.zeros((len(sentences), length), np.int32)
    for i, sentence in enumerate(sentences):
      for j, word in enumerate(sentence.split()[:length]):
        ids[i, j] = zlib.crc32(word.encode()) % 998 + 1
    return ids, ids != 0


_TOKENIZERS = {
    "hashed": lambda: data.Tokenizer(
        num_buckets=1 << 12, max_tokens=6, lowercase=True
    ),
    "hashed, cased": lambda: data.Tokenizer(
        num_buckets=1 << 12, max_tokens=6, lowercase=False
    ),
    "wordpiece": lambda: data.WordpieceTokenizer(_WordEncoder()),
}


@pytest.mark.parametrize("tokenizer_name", list(_TOKENIZERS))
def test_building_from_batches_gives_the_file_readers_records(
    tmp_path, tokenizer_name
):
  """`shards` reads Wiki-727K files in batches; the records (ids, gold,
  sentences) are those of reading every file into `Document`s. The first
  batch holds "İ", which lowers to two characters; the second does not."""
  files = dict(_FILES)
  rng = np.random.default_rng(0)
  words = ["alpha", "Beta", "γάμμα", "delta,", "ΣΟΦΟΣ", "x" * 30, "1.5%"]
  for d in range(3 * shards.TOKENIZE_DOCUMENTS // 2):
    files[f"gen/{d:04d}.txt"] = "".join(
        f"========,1,Part {s}.\n"
        + "".join(
            " ".join(rng.choice(words, size=rng.integers(1, 12))) + "\n"
            for _ in range(rng.integers(1, 5))
        )
        for s in range(rng.integers(1, 4))
    )
  names = _write(tmp_path, files)
  listing = [(name, 0) for name in names]
  tokenizer = _TOKENIZERS[tokenizer_name]()
  batched = list(
      shards._encoded_wiki727k(tmp_path, listing, tokenizer, skipped := [])
  )
  expected = list(
      shards._encoded_documents(
          tmp_path, listing, "wiki727k", tokenizer, expected_skipped := []
      )
  )
  assert sum(skipped) == sum(expected_skipped) == 2
  assert len(batched) == len(expected) == len(files) - 2
  for got, want in zip(batched, expected):
    assert got[0] == want[0] and got[3] == want[3]
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[2], want[2])
    assert got[1].dtype == want[1].dtype and got[2].dtype == want[2].dtype


@pytest.mark.parametrize(
    "spans", [[[0, 9]], [[-1, 2]], [[3, 1]], [[0, 3], [2, 5]]]
)
def test_encode_text_refuses_spans_outside_or_out_of_order(spans):
  tokenizer = data.Tokenizer(num_buckets=64, max_tokens=4, lowercase=True)
  with pytest.raises(ValueError, match="ordered, disjoint spans"):
    tokenizer.encode_text("abc def", spans)


def test_the_kernel_itself_accepts_plain_headers_and_defers_the_rest():
  text = (
      "========,1,Intro.\n========, 12 ,T\n========,0,Z\n========,\u0663,A\nx"
  )
  raw = np.frombuffer(text.encode("utf-8"), np.uint8)
  kinds = kernels.wiki727k_lines(raw, text_lib._char_classes())[:, 4]
  assert kinds.tolist() == [
      kernels.HEADER,
      kernels.HEADER,
      kernels.HEADER_TO_CHECK,  # Level 0: Python refuses it.
      kernels.HEADER_TO_CHECK,  # A decimal digit, but not ASCII.
      kernels.SENTENCE,
  ]


def test_a_word_has_one_fingerprint_wherever_it_lies():
  # The last words have fewer than 8 bytes after them, so their chunks are
  # put together byte by byte instead of read 8 at a time.
  words = ["extraordinarily", "ab", "zürich", "x"]
  text = " ".join(words * 2)
  raw = np.frombuffer(text.encode("utf-8"), np.uint8)
  chunks = np.ndarray(
      (len(raw) - 7,), np.dtype("<u8"), buffer=raw, strides=(1,)
  )
  empty_table = np.zeros((16, 2), np.uint64)
  ids, missing, fingerprints = kernels.token_ids(
      raw,
      chunks,
      np.array([[0, len(text)]]),
      16,
      text_lib._char_classes(),
      empty_table,
      64,
  )
  assert not ids.any() and len(missing) == 2 * len(words)
  spelled = [raw[a:b].tobytes().decode() for _, a, b in missing]
  assert spelled == words * 2
  assert (
      fingerprints[: len(words)].tolist() == fingerprints[len(words) :].tolist()
  )
  assert len(set(fingerprints.tolist())) == len(words)
