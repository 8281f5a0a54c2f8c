"""Tests of segjax.data: readers, pydoc corpus, tokenizer, windows, batches."""

import hashlib
import json
import logging
import pathlib
import re
import subprocess
import sys

from e2e_helpers import assert_same_batches
import numpy as np
import pytest

from segjax import data
from segjax.data import pydoc_corpus

IGNORE = -100  # the SPEC default, as the configs set it


def _write(path: pathlib.Path, content: str | bytes) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  if isinstance(content, bytes):
    path.write_bytes(content)
  else:
    path.write_text(content, encoding="utf-8")
  return path


def _toy_documents(num_docs: int, seed: int = 0) -> list[data.Document]:
  """Documents of 1-30 sentences whose words identify document and sentence."""
  rng = np.random.default_rng(seed)
  documents = []
  for d in range(num_docs):
    lengths = rng.integers(1, 6, size=rng.integers(1, 7))
    sentence = iter(range(1000))
    segments = [
        [f"doc{d} sent{next(sentence)} seg{s}." for _ in range(n)]
        for s, n in enumerate(lengths)
    ]
    documents.append(data.Document(segments, name=f"toy/{d}"))
  return documents


TOKENIZER = data.Tokenizer(num_buckets=1 << 12, max_tokens=6, lowercase=True)


# ---------------------------------------------------------------- readers


def test_read_choi_dir_reads_nested_files_and_counts_empty(tmp_path):
  _write(
      tmp_path / "3-5" / "a.ref",
      "==========\nOne.\nTwo.\n==========\nThree.\n\n==========\n",
  )
  _write(tmp_path / "3-5" / "b.ref", "==========\n==========\n")
  _write(tmp_path / ".hidden" / "c.ref", "==========\nHidden.\n==========\n")
  documents, skipped = data.read_choi_dir(tmp_path)
  assert skipped == 1
  assert [d.name for d in documents] == ["3-5/a.ref"]
  assert documents[0].segments == (("One.", "Two."), ("Three.",))


def test_read_choi_dir_errors_name_file_and_line(tmp_path):
  bad = _write(tmp_path / "bad.ref", b"==========\nfine\ncaf\xe9\n")
  where = re.escape(f"{bad}:3:")
  with pytest.raises(data.DataError, match=f"{where} not valid UTF-8"):
    data.read_choi_dir(tmp_path)
  (tmp_path / "empty").mkdir()
  with pytest.raises(data.DataError, match="no data files"):
    data.read_choi_dir(tmp_path / "empty")
  with pytest.raises(data.DataError, match="not a directory"):
    data.read_choi_dir(tmp_path / "missing")


def test_read_wiki727k_dir_drops_lists_and_starts_segments_at_headers(tmp_path):
  _write(
      tmp_path / "0" / "doc",
      "\n".join(
          [
              "========,1,preface.",
              "Intro sentence.",
              "========,2,History.",
              "***LIST***",
              "========,3,Early years.",
              "First.",
              "***LIST***",
              "Second.",
              "========,2,Later, much later.",
              "Last.",
          ]
      ),
  )
  _write(tmp_path / "1" / "empty", "========,1,preface.\n***LIST***\n")
  documents, skipped = data.read_wiki727k_dir(tmp_path)
  assert skipped == 1
  assert documents[0].segments == (
      ("Intro sentence.",),
      ("First.", "Second."),
      ("Last.",),
  )


@pytest.mark.parametrize(
    "header, message",
    [
        ("========,x,Title.", "level 'x' is not a positive integer"),
        ("========,0,Title.", "level '0' is not a positive integer"),
        ("========Title.", "malformed section header"),
    ],
)
def test_read_wiki727k_dir_rejects_bad_headers(tmp_path, header, message):
  bad = _write(
      tmp_path / "doc", f"========,1,preface.\nText.\n{header}\nMore.\n"
  )
  where = re.escape(f"{bad}:3:")
  with pytest.raises(data.DataError, match=f"{where} .*{message}"):
    data.read_wiki727k_dir(tmp_path)


def test_read_jsonl_reads_documents_and_counts_empty(tmp_path):
  path = _write(
      tmp_path / "train.jsonl",
      "\n".join(
          [
              json.dumps({"segments": [["A.", " B. "], [], ["C."]], "id": 7}),
              "",
              json.dumps({"segments": [[], [" "]]}),
              json.dumps({"segments": [["D."]]}),
          ]
      ),
  )
  documents, skipped = data.read_jsonl(path)
  assert skipped == 1
  assert [d.segments for d in documents] == [
      (("A.", "B."), ("C.",)),
      (("D.",),),
  ]
  assert [d.name for d in documents] == ["train.jsonl:1", "train.jsonl:4"]
  assert data.read_jsonl(tmp_path).documents == documents  # A folder of files.


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not valid JSON"),
        ('{"sentences": []}', 'expected an object with a "segments" key'),
        ('[["A."]]', 'expected an object with a "segments" key'),
        ('{"segments": ["A.", "B."]}', '"segments" must be a list of lists'),
        ('{"segments": [[1, 2]]}', '"segments" must be a list of lists'),
        (
            '{"segments": [["Fine.", "Caf\\ud800."]]}',
            "not valid text: a lone surrogate '\\\\ud800' at character 3",
        ),
    ],
)
def test_read_jsonl_errors_name_file_and_line(tmp_path, line, message):
  path = _write(tmp_path / "x.jsonl", '{"segments": [["Fine."]]}\n\n' + line)
  where = re.escape(f"{path}:3:")
  with pytest.raises(data.DataError, match=f"{where} {message}"):
    data.read_jsonl(path)


def test_write_choi_dir_round_trips(tmp_path):
  documents = _toy_documents(5)
  data.write_choi_dir(documents, tmp_path)
  read, skipped = data.read_choi_dir(tmp_path)
  assert skipped == 0
  assert [d.segments for d in read] == [d.segments for d in documents]
  assert data.detect_format(tmp_path) == "choi"


# ---------------------------------------------------------------- splits


def _config(**overrides):
  # load_splits reads attributes only; a ConfigDict behaves the same.
  class Config:
    source, path, dev_fraction, max_documents = "auto", "", 0.1, 0

  config = Config()
  for key, value in overrides.items():
    setattr(config, key, value)
  return config


def test_load_splits_reads_wiki727k_layout(tmp_path):
  for split, count in [("train", 4), ("dev", 2), ("test", 3)]:
    for i in range(count):
      _write(
          tmp_path / split / f"{i}",
          f"========,1,preface.\nS{i}.\n" "========,2,Next.\nT.\n",
      )
  splits = data.load_splits(_config(source="auto", path=str(tmp_path)))
  assert {k: len(v) for k, v in splits.items()} == {
      "train": 4,
      "dev": 2,
      "test": 3,
  }
  splits = data.load_splits(
      _config(source="wiki727k", path=str(tmp_path), max_documents=2)
  )
  assert {k: len(v) for k, v in splits.items()} == {
      "train": 2,
      "dev": 2,
      "test": 2,
  }


def test_load_splits_holds_out_dev_deterministically(tmp_path, caplog):
  documents = _toy_documents(40)
  data.write_choi_dir(documents, tmp_path / "train")
  data.write_choi_dir(documents[:3], tmp_path / "test")
  config = _config(source="choi", path=str(tmp_path), dev_fraction=0.25)
  with caplog.at_level(logging.INFO):
    splits = data.load_splits(config)
  assert "holding out 10 of 40 training documents" in caplog.text
  assert len(splits["dev"]) == 10 and len(splits["train"]) == 30
  names = lambda docs: [d.name for d in docs]
  assert not set(names(splits["dev"])) & set(names(splits["train"]))
  again = data.load_splits(config)
  assert names(again["dev"]) == names(splits["dev"])
  # The held-out set depends on names only, not on the order of documents.
  _, dev = data.hold_out(list(reversed(splits["train"] + splits["dev"])), 0.25)
  assert sorted(names(dev)) == sorted(names(splits["dev"]))


def test_load_splits_reads_jsonl_files_and_reports_bad_config(tmp_path):
  for split in ("train", "dev", "test"):
    _write(
        tmp_path / f"{split}.jsonl",
        json.dumps({"segments": [["A b c."], ["D e f."]]}) + "\n",
    )
  splits = data.load_splits(_config(source="auto", path=str(tmp_path)))
  assert all(len(docs) == 1 for docs in splits.values())
  with pytest.raises(ValueError, match="unknown data.source"):
    data.load_splits(_config(source="csv", path=str(tmp_path)))
  with pytest.raises(data.DataError, match="not a directory"):
    data.load_splits(_config(source="choi", path=str(tmp_path / "nope")))
  with pytest.raises(data.DataError, match="no train/ folder"):
    data.load_splits(_config(source="choi", path=str(tmp_path)))


# ---------------------------------------------------------------- pydoc


def test_pydoc_splits_share_no_topic_and_documents_have_the_right_shape():
  topics = pydoc_corpus.all_topic_sentences()
  split_topics = pydoc_corpus.split_topics()
  train, dev, test = (set(split_topics[s]) for s in ("train", "dev", "test"))
  assert not (train & dev or train & test or dev & test)
  assert min(len(dev), len(test)) >= pydoc_corpus.MAX_SEGMENTS
  for split, names in split_topics.items():
    documents = data.pydoc_documents(split, 50)
    for document in documents:
      assert 4 <= len(document.segments) <= 10
      candidates = []
      for segment in document.segments:
        assert 3 <= len(segment) <= 11
        # Consecutive sentences of a topic of this split.
        owners = {
            name
            for name in names
            if any(
                topics[name][i : i + len(segment)] == segment
                for i in range(len(topics[name]))
            )
        }
        assert owners, (split, segment)
        candidates.append(owners)
      # Segments come from distinct topics (ambiguous duplicates aside).
      unique = [next(iter(c)) for c in candidates if len(c) == 1]
      assert len(unique) == len(set(unique))


def test_pydoc_documents_are_deterministic_and_prefix_stable():
  first = data.pydoc_documents("dev")
  assert len(first) == pydoc_corpus.DEFAULT_NUM_DOCUMENTS["dev"]
  pydoc_corpus._pydoc_documents.cache_clear()
  assert data.pydoc_documents("dev") == first
  assert data.pydoc_documents("dev", 20) == first[:20]
  with pytest.raises(ValueError, match="unknown split"):
    data.pydoc_documents("validation")


def test_load_splits_pydoc_caps_documents():
  splits = data.load_splits(_config(source="pydoc", max_documents=7))
  assert {k: len(v) for k, v in splits.items()} == {
      "train": 7,
      "dev": 7,
      "test": 7,
  }


# ---------------------------------------------------------------- text


def test_split_sentences():
  text = (
      "Hello world. This is e.g. Mr. Smith and J. Doe. It costs 3.5 "
      'dollars! Really?\n"Yes." The U.S. Army\nis big\n\nNew paragraph'
  )
  assert data.split_sentences(text) == [
      "Hello world.",
      "This is e.g. Mr. Smith and J. Doe.",
      "It costs 3.5 dollars!",
      "Really?",
      '"Yes."',
      "The U.S. Army is big",
      "New paragraph",
  ]
  assert data.split_sentences(" One. Two\n\n three \n", one_per_line=True) == [
      "One. Two",
      "three",
  ]


# Computed once with blake2b-64; a change means saved checkpoints would see
# different ids.
EXPECTED_IDS = [
    [1593, 8136, 2077, 25179, 0, 0],
    [976, 19709, 9224, 12925, 28493, 0],
    [30137, 23086, 184, 0, 0, 0],
]
SENTENCES = ["Hello, World!", "The segment ends here.", "Ünïcode café 42"]


def test_tokenizer_ids_are_stable_and_bounded():
  tokenizer = data.Tokenizer(num_buckets=1 << 15, max_tokens=6, lowercase=True)
  ids = tokenizer.encode(SENTENCES)
  assert ids.dtype == np.int32 and ids.tolist() == EXPECTED_IDS
  assert tokenizer.encode(["HELLO world"]).tolist()[0][:2] == [1593, 2077]
  small = data.Tokenizer(num_buckets=3, max_tokens=4, lowercase=True)
  ids = small.encode(["a b c d e f", ""])
  assert set(ids[0].tolist()) <= {1, 2} and ids[1].tolist() == [0] * 4
  cased = data.Tokenizer(num_buckets=1 << 15, max_tokens=32, lowercase=False)
  assert cased.encode(["Hello"])[0, 0] != cased.encode(["hello"])[0, 0]


TRICKY = [
    "",
    " ",
    "a",
    "İstanbul ΟΔΟΣ straße ǅungla",
    "ΟΔΟΣ. Σ aΣ'b ΣΑΣ",  # Final sigmas; lowers to the same length.
    "foo_bar__baz 12.5% (x)",
    "\u00a0x\u2003y\u3000z",
    "tab\there\nnew line",
    "🙂🙂 emoji\U0001F600abc",
    "a" * 100 + " " + "x y z " * 40,
    "...!!! ?",
    "١٢٣ digits 日本語のテキスト e\u0301cole",
    "\x00nul",
    "lone \ud800 surrogate\udfff",  # Refused by the readers; hashed here.
    "ASCII then é, ß, 日本 and 🙂 again",
]


@pytest.mark.parametrize("cache_size", [None, 7])
@pytest.mark.parametrize("lowercase", [True, False])
def test_tokenizer_ids_are_the_hashes_of_the_regex_words(
    lowercase, cache_size, monkeypatch
):
  """The array tokenizer gives `words`' tokens (the regex) and their hashes.

  Also when its cache of word hashes fills up and is cleared between and
  within the calls (`cache_size`).
  """
  from segjax.data import text

  if cache_size:
    monkeypatch.setattr(text._WordHashes, "MAX_SIZE", cache_size)
    monkeypatch.setattr(text, "_WORD_HASHES", text._WordHashes())

  tokenizer = data.Tokenizer(
      num_buckets=1 << 15, max_tokens=32, lowercase=lowercase
  )
  sentences = TRICKY + [s.upper() for s in TRICKY] + SENTENCES * 3
  # Without a character that lowers to several, a call lowers its text at
  # once ("ΟΔΟΣ" ends in a final sigma there too); with one, per sentence.
  same_length = [s for s in sentences if len(s.lower()) == len(s)]
  for batch in (sentences, same_length):
    expected = np.zeros((len(batch), 32), np.int32)
    for i, sentence in enumerate(batch):
      for j, word in enumerate(text.words(sentence, lowercase=lowercase)[:32]):
        expected[i, j] = text._word_hash(word) % ((1 << 15) - 1) + 1
    np.testing.assert_array_equal(tokenizer.encode(batch), expected)
    one_by_one = [tokenizer.encode([s])[0] for s in batch]
    np.testing.assert_array_equal(np.stack(one_by_one), expected)


def test_tokenizer_threads_sharing_its_caches_get_the_same_ids(monkeypatch):
  """Threads encoding at once (data loading, shard building) share the word
  hash cache; a small cache keeps it refilling."""
  import threading  # pylint: disable=g-import-not-at-top

  from segjax.data import text

  monkeypatch.setattr(text._WordHashes, "MAX_SIZE", 50)
  monkeypatch.setattr(text, "_WORD_HASHES", text._WordHashes())
  tokenizer = data.Tokenizer(num_buckets=1 << 15, max_tokens=32, lowercase=True)
  batches = [
      [f"word{t}x{i} {s}" for i in range(40) for s in TRICKY] for t in range(4)
  ]
  expected = []
  for batch in batches:
    rows = np.zeros((len(batch), 32), np.int32)
    for i, sentence in enumerate(batch):
      for j, word in enumerate(text.words(sentence)[:32]):
        rows[i, j] = text._word_hash(word) % ((1 << 15) - 1) + 1
    expected.append(rows)
  failures = []

  def encode(t):
    try:
      for _ in range(20):
        if not np.array_equal(tokenizer.encode(batches[t]), expected[t]):
          failures.append(f"thread {t}: other ids")
    except Exception as e:  # pylint: disable=broad-except
      failures.append(f"thread {t}: {e!r}")

  threads = [threading.Thread(target=encode, args=(t,)) for t in range(4)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert not failures


def test_character_classes_match_the_regex_for_every_code_point():
  from segjax.data import text

  classes = text._char_classes()
  word = re.compile(r"\w")
  space = re.compile(r"\s")
  expected = [
      1 if word.match(c) else 0 if space.match(c) else 2
      for c in map(chr, range(0x110000))
  ]
  np.testing.assert_array_equal(classes, np.array(expected, np.uint8))


def test_tokenizer_settings_round_trip_and_reject_other_hashes():
  tokenizer = data.Tokenizer(num_buckets=1000, max_tokens=7, lowercase=False)
  settings = json.loads(json.dumps(tokenizer.to_dict()))
  assert data.Tokenizer.from_dict(settings) == tokenizer
  with pytest.raises(ValueError, match="different ids"):
    data.Tokenizer.from_dict({**settings, "hash": "crc32"})
  with pytest.raises(ValueError, match="num_buckets"):
    data.Tokenizer(num_buckets=1, max_tokens=4, lowercase=True)


def test_tokenizer_and_pydoc_corpus_are_identical_in_another_process():
  script = (
      "import hashlib, json; from segjax import data;"
      "t = data.Tokenizer(num_buckets=1 << 15, max_tokens=6, lowercase=True);"
      f"ids = t.encode({SENTENCES!r}).tolist();"
      "docs = repr([d.segments for d in data.pydoc_documents('test', 30)]);"
      "print(json.dumps([ids, hashlib.sha256(docs.encode()).hexdigest()]))"
  )
  result = subprocess.run(
      [sys.executable, "-c", script],
      capture_output=True,
      text=True,
      check=True,
      env={"PYTHONHASHSEED": "12345", "PATH": ""},
      cwd=pathlib.Path(__file__).parent.parent,
  )
  ids, digest = json.loads(result.stdout)
  docs = repr([d.segments for d in data.pydoc_documents("test", 30)])
  assert ids == EXPECTED_IDS
  assert digest == hashlib.sha256(docs.encode()).hexdigest()


# ---------------------------------------------------------------- labels


def test_labels_follow_the_spec_convention():
  document = data.Document([["a", "b"], ["c"], ["d", "e", "f"]])
  assert data.boundary_labels(document).tolist() == [0, 1, 1, 0, 0, 1]
  assert data.sentence_labels(document, IGNORE).tolist() == [
      0,
      1,
      1,
      0,
      0,
      IGNORE,
  ]
  table = data.window_table(
      [document], TOKENIZER, max_sentences=4, stride=2, ignore_index=IGNORE
  )
  batch = data.gather_windows(table, np.array([0, 1, -1]))
  # A window cut inside the document keeps its last sentence's real label;
  # the document's last sentence and padding are ignored.
  assert batch["labels"].tolist() == [
      [0, 1, 1, 0],
      [1, 0, 0, IGNORE],
      [IGNORE] * 4,
  ]
  assert batch["sentence_mask"].tolist() == [
      [True] * 4,
      [True] * 4,
      [False] * 4,
  ]
  assert not batch["tokens"][2].any()
  gold, mask = data.padded_gold_and_mask([document, data.Document([["x"]])])
  assert gold.tolist() == [[0, 1, 1, 0, 0, 1], [1, 0, 0, 0, 0, 0]]
  assert mask.sum(axis=1).tolist() == [6, 1]


# ---------------------------------------------------------------- windows


@pytest.mark.parametrize(
    "n, size, stride, starts",
    [
        (0, 4, 4, []),
        (3, 4, 4, [0]),
        (4, 4, 4, [0]),
        (5, 4, 4, [0, 4]),
        (10, 4, 2, [0, 2, 4, 6]),
        (11, 4, 2, [0, 2, 4, 6, 8]),
    ],
)
def test_window_starts_cover_every_sentence(n, size, stride, starts):
  assert data.window_starts(n, size, stride) == starts
  document = data.Document.from_sentences([f"s{i}." for i in range(n)])
  windows = data.document_windows(document, size, stride)
  assert [w.start for w in windows] == starts
  covered = {w.start + i for w in windows for i in range(len(w.sentences))}
  assert covered == set(range(n))


def test_stitching_eval_windows_reproduces_per_sentence_values():
  documents = _toy_documents(9)
  lengths = data.document_lengths(documents)
  truth = [np.arange(n) + 100.0 * d for d, n in enumerate(lengths)]
  batches = data.make_eval_batches(
      documents,
      TOKENIZER,
      global_batch_size=4,
      max_sentences=5,
      stride=2,
      ignore_index=IGNORE,
  )
  window_doc = np.concatenate([b["window_doc"] for b in batches])
  window_start = np.concatenate([b["window_start"] for b in batches])
  probs = np.array(
      [
          np.pad(truth[d][s : s + 5], (0, 5 - len(truth[d][s : s + 5])))
          if d >= 0
          else np.full(5, np.nan)
          for d, s in zip(window_doc, window_start)
      ]
  )
  stitched = data.stitch_window_probs(probs, window_doc, window_start, lengths)
  for got, want in zip(stitched, truth):
    np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match="in no window"):
    data.stitch_window_probs(
        probs[:2], window_doc[:2], window_start[:2], lengths
    )


def test_stitching_prefers_the_most_centred_window():
  # Windows of 4 at starts 0, 2, 4 over 8 sentences; each row predicts its id.
  probs = np.repeat(np.array([[0.0], [1.0], [2.0]]), 4, axis=1)
  (stitched,) = data.stitch_window_probs(probs, [0, 0, 0], [0, 2, 4], [8])
  # Sentence 2: edge of window 1 (context 0) but inside window 0 (context 1).
  assert stitched.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]


# ---------------------------------------------------------------- batches


def _train_iterator(documents, **kwargs):
  options = dict(global_batch_size=4, max_sentences=5, seed=3)
  return data.make_train_iterator(
      documents, TOKENIZER, **(options | kwargs), ignore_index=IGNORE
  )


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_train_iterator_is_deterministic_from_the_seed():
  documents = _toy_documents(20)
  batches = _take(_train_iterator(documents), 6)
  first = batches[0]
  assert first["tokens"].shape == (4, 5, TOKENIZER.max_tokens)
  assert first["tokens"].dtype == np.int32 and first["labels"].dtype == np.int32
  assert first["sentence_mask"].dtype == bool
  assert first["example_id"].tolist() == [0, 1, 2, 3]
  assert_same_batches(batches, _take(_train_iterator(documents), 6))
  other = _take(_train_iterator(documents, seed=4), 6)
  assert any(
      not np.array_equal(a["tokens"], b["tokens"])
      for a, b in zip(batches, other)
  )


def _window_keys(batch):
  return [row.tobytes() for row in batch["tokens"]]


def test_train_iterator_visits_every_window_once_per_epoch_reshuffled():
  documents = _toy_documents(30)
  table = data.window_table(
      documents, TOKENIZER, max_sentences=5, stride=5, ignore_index=IGNORE
  )
  labelled = data.pipeline._with_labelled_windows_only(table)
  num_windows = labelled.num_windows
  all_keys = _window_keys(data.gather_windows(labelled, np.arange(num_windows)))
  iterator = _train_iterator(documents, global_batch_size=1)
  epochs = [
      [k for b in _take(iterator, num_windows) for k in _window_keys(b)]
      for _ in range(2)
  ]
  assert sorted(epochs[0]) == sorted(all_keys) == sorted(epochs[1])
  assert epochs[0] != epochs[1]


def test_train_iterator_resumes_exactly_from_its_state():
  documents = _toy_documents(12)
  iterator = _train_iterator(documents)
  _take(iterator, 7)  # Past the first epoch.
  state = iterator.get_state()
  expected = _take(iterator, 5)
  fresh = _train_iterator(documents)
  fresh.set_state(state)
  assert_same_batches(_take(fresh, 5), expected)


def test_processes_see_exactly_the_global_batches_of_one_process():
  documents = _toy_documents(25)
  global_batches = _take(_train_iterator(documents, global_batch_size=6), 8)
  local = [
      _take(
          _train_iterator(
              documents, global_batch_size=6, process_index=i, process_count=3
          ),
          8,
      )
      for i in range(3)
  ]
  for step, expected in enumerate(global_batches):
    for key in expected:
      np.testing.assert_array_equal(
          np.concatenate([local[i][step][key] for i in range(3)]),
          expected[key],
          err_msg=key,
      )
  with pytest.raises(ValueError, match="multiple of process_count"):
    _train_iterator(documents, global_batch_size=6, process_count=4)


def test_eval_batches_cover_every_window_once_with_padding_masked():
  documents = _toy_documents(11)
  table = data.window_table(
      documents, TOKENIZER, max_sentences=5, stride=2, ignore_index=IGNORE
  )
  per_process = [
      data.make_eval_batches(
          documents,
          TOKENIZER,
          global_batch_size=8,
          max_sentences=5,
          stride=2,
          process_index=i,
          process_count=2,
          ignore_index=IGNORE,
      )
      for i in range(2)
  ]
  num_batches = -(-table.num_windows // 8)
  assert len(per_process[0]) == len(per_process[1]) == num_batches
  rows = [
      (int(d), int(s))
      for batches in per_process
      for b in batches
      for d, s, v in zip(b["window_doc"], b["window_start"], b["valid_example"])
      if v
  ]
  assert sorted(rows) == sorted(
      zip(table.window_doc.tolist(), table.window_start.tolist())
  )
  for batches in per_process:
    for b in batches:
      assert b["tokens"].shape == (4, 5, TOKENIZER.max_tokens)
      padding = ~b["valid_example"]
      assert (b["window_doc"][padding] == -1).all()
      assert not b["sentence_mask"][padding].any()
      assert (b["labels"][padding] == IGNORE).all()
  assert per_process[1][-1]["example_id"].tolist() == [4, 5, 6, 7]


class _CountingTokenizer:
  """TOKENIZER, recording every sentence it is asked to encode."""

  max_tokens = TOKENIZER.max_tokens
  id_dtype = TOKENIZER.id_dtype

  def __init__(self):
    self.encoded = []

  def encode(self, sentences):
    self.encoded += list(sentences)
    return TOKENIZER.encode(sentences)


def test_only_the_gathered_rows_are_tokenized_and_only_once():
  """A process tokenizes the sentences of its own rows, not the corpus."""
  documents = _toy_documents(30)
  tokenizer = _CountingTokenizer()
  table = data.window_table(
      documents, tokenizer, max_sentences=5, stride=5, ignore_index=IGNORE
  )
  assert not tokenizer.encoded
  batch = data.gather_windows(table, np.array([0, 3]))
  sentences = [
      sentence
      for w in (0, 3)
      for sentence in documents[table.window_doc[w]].sentences[
          table.window_start[w] : table.window_start[w] + table.window_length[w]
      ]
  ]
  assert sorted(tokenizer.encoded) == sorted(set(sentences))
  np.testing.assert_array_equal(
      batch["tokens"][batch["sentence_mask"]], TOKENIZER.encode(sentences)
  )
  seen = len(tokenizer.encoded)
  data.gather_windows(table, np.array([3, 0]))
  assert len(tokenizer.encoded) == seen
