"""Shards of records of a corpus folder: same batches as in memory, rebuilt
when the corpus changes, built by several processes, and read by training."""

import json
import subprocess
import sys
import threading

from e2e_helpers import assert_same_batches
from e2e_helpers import cli_env
from e2e_helpers import REPO
from e2e_helpers import run_module
from e2e_helpers import tiny_config
import ml_collections
import numpy as np
import pytest

from segjax import data
from segjax.data import shards

TOKENIZER = data.Tokenizer(num_buckets=1 << 12, max_tokens=6, lowercase=True)
IGNORE = -100


def _documents(num_docs, seed=0, prefix="doc"):
  """Documents of 1-6 segments of 1-5 sentences; words name doc and sentence."""
  rng = np.random.default_rng(seed)
  documents = []
  for d in range(num_docs):
    counter = iter(range(1000))
    segments = [
        [f"{prefix}{d} sent{next(counter)} seg{s}." for _ in range(n)]
        for s, n in enumerate(rng.integers(1, 6, size=rng.integers(1, 7)))
    ]
    documents.append(data.Document(segments, name=f"{d:03d}"))
  return documents


def _corpus_folder(root, splits=("train", "test"), sizes=(40, 9)):
  for split, size in zip(splits, sizes):
    data.write_choi_dir(_documents(size, seed=len(split)), root / split)
  return root


def _data_config(path, cache_dir="", **overrides):
  return ml_collections.ConfigDict(
      dict(
          source="choi",
          path=str(path),
          dev_fraction=0.2,
          max_documents=0,
          cache_dir=str(cache_dir),
      )
      | overrides
  )


def _train_batches(documents, n=12, **kwargs):
  iterator = data.make_train_iterator(
      documents,
      TOKENIZER,
      **(dict(global_batch_size=4, max_sentences=5, seed=3) | kwargs),
      ignore_index=IGNORE,
  )
  return [next(iterator) for _ in range(n)]


def _eval_batches(documents, **kwargs):
  return list(
      data.make_eval_batches(
          documents,
          TOKENIZER,
          **(dict(global_batch_size=6, max_sentences=5, stride=2) | kwargs),
          ignore_index=IGNORE,
      )
  )


@pytest.mark.parametrize("seed", range(5))
def test_list_windows_is_window_starts_of_every_document(seed):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(0, 30, size=50)
  size = int(rng.integers(1, 8))
  stride = int(rng.integers(1, size + 1))
  docs, starts, window_lengths = data.list_windows(lengths, size, stride)
  expected = [
      (d, s, min(size, n - s))
      for d, n in enumerate(lengths)
      for s in data.window_starts(int(n), size, stride)
  ]
  assert list(zip(docs.tolist(), starts.tolist(), window_lengths.tolist())) == (
      expected
  )


@pytest.mark.parametrize("max_documents", [0, 7])
def test_shards_give_the_batches_of_the_documents_in_memory(
    tmp_path, max_documents
):
  config = _data_config(
      _corpus_folder(tmp_path / "corpus"), max_documents=max_documents
  )
  in_memory = data.load_splits(config)
  sharded = data.open_splits(config, TOKENIZER, tmp_path / "work")
  assert isinstance(sharded["train"], data.ShardedCorpus)
  assert sharded.keys() == in_memory.keys()
  for split, documents in in_memory.items():
    corpus = sharded[split]
    assert len(corpus) == len(documents) > 0
    np.testing.assert_array_equal(
        corpus.lengths, data.document_lengths(documents)
    )
    for got, want in zip(corpus.gold_labels(), documents):
      np.testing.assert_array_equal(got, data.boundary_labels(want))
    assert list(corpus.sentences()) == [
        s for doc in documents for s in doc.sentences
    ]
    assert_same_batches(_eval_batches(corpus), _eval_batches(documents))
    # A process's share of the last eval batch may be padding only.
    padding = data.gather_windows(
        data.window_table(
            corpus, TOKENIZER, max_sentences=5, stride=5, ignore_index=IGNORE
        ),
        np.array([-1, -1]),
    )
    assert not padding["sentence_mask"].any()
    assert (padding["labels"] == IGNORE).all()
  assert_same_batches(
      _train_batches(sharded["train"]), _train_batches(in_memory["train"])
  )
  # Held-out dev: the same documents as `load_splits` picks.
  gold = data.padded_gold_and_mask(sharded["dev"])
  for got, want in zip(gold, data.padded_gold_and_mask(in_memory["dev"])):
    np.testing.assert_array_equal(got, want)


def _sharded_train(tmp_path):
  """The train split of a small corpus folder, read through its shards."""
  return data.open_splits(
      _data_config(_corpus_folder(tmp_path / "corpus")),
      TOKENIZER,
      tmp_path / "work",
  )["train"]


def test_processes_read_exactly_the_global_batches_from_shards(tmp_path):
  corpus = _sharded_train(tmp_path)
  expected = _train_batches(corpus, global_batch_size=6, n=8)
  local = [
      _train_batches(
          corpus, global_batch_size=6, n=8, process_index=i, process_count=3
      )
      for i in range(3)
  ]
  for step, batch in enumerate(expected):
    for key in batch:
      np.testing.assert_array_equal(
          np.concatenate([local[i][step][key] for i in range(3)]), batch[key]
      )


def test_train_iterator_over_shards_resumes_exactly_from_its_state(tmp_path):
  corpus = _sharded_train(tmp_path)

  def iterator():
    return data.make_train_iterator(
        corpus,
        TOKENIZER,
        global_batch_size=4,
        max_sentences=5,
        seed=3,
        ignore_index=IGNORE,
    )

  first = iterator()
  for _ in range(13):  # Past the first epoch.
    next(first)
  state = first.get_state()
  fresh = iterator()
  fresh.set_state(state)
  assert_same_batches(
      [next(fresh) for _ in range(5)], [next(first) for _ in range(5)]
  )


def _build_in_threads(config, workdir, num_processes):
  """`shards.build` as `num_processes` processes would run it, in threads."""
  errors = [None] * num_processes

  def run(index):
    try:
      shards.build(
          config,
          TOKENIZER,
          workdir,
          process_index=index,
          process_count=num_processes,
          progress=False,
      )
    except data.DataError as e:
      errors[index] = str(e)

  threads = [
      threading.Thread(target=run, args=(i,)) for i in range(num_processes)
  ]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join(timeout=60)
  assert not any(thread.is_alive() for thread in threads), "a process hangs"
  return errors


def test_shards_built_by_several_processes_hold_the_same_corpus(tmp_path):
  config = _data_config(_corpus_folder(tmp_path / "corpus"))
  assert _build_in_threads(config, tmp_path / "three", 3) == [None] * 3
  manifest = shards.read_manifest(
      shards.shard_folder(config, TOKENIZER, tmp_path / "three")
  )
  assert len(manifest["splits"]["train"]["parts"]) == 3
  one = data.open_splits(config, TOKENIZER, tmp_path / "one")
  three = data.open_splits(config, TOKENIZER, tmp_path / "three")
  for split in ("train", "dev", "test"):
    assert_same_batches(_eval_batches(three[split]), _eval_batches(one[split]))
  assert_same_batches(
      _train_batches(three["train"]), _train_batches(one["train"])
  )


def test_a_process_takes_only_reports_of_a_build_of_the_same_inputs(
    tmp_path, monkeypatch
):
  root = _corpus_folder(tmp_path / "corpus")
  config = _data_config(root)
  assert _build_in_threads(config, tmp_path / "work", 2) == [None] * 2
  folder = shards.shard_folder(config, TOKENIZER, tmp_path / "work")
  manifest = shards.read_manifest(folder)

  class Waited(Exception):
    pass

  def build_alone():
    shards.build(
        config,
        TOKENIZER,
        tmp_path / "work",
        process_count=2,
        progress=False,
    )

  with monkeypatch.context() as patch:
    patch.setattr(shards.time, "sleep", lambda seconds: _raise(Waited()))
    # Same inputs: process 1's report from the last build still holds, so
    # process 0, rebuilding alone, need not wait and writes the same manifest.
    (folder / shards.MANIFEST).unlink()
    build_alone()
    assert shards.read_manifest(folder) == manifest
    # Other inputs: that report is not process 1's part of this build.
    data.write_choi_dir(_documents(3, prefix="new"), root / "train")
    with pytest.raises(Waited):
      build_alone()


def _raise(error):
  raise error


def test_a_bad_file_stops_every_building_process_with_its_line(tmp_path):
  root = _corpus_folder(tmp_path / "corpus")
  (root / "train" / "zz_last.ref").write_bytes(b"==========\n\xff\n")
  errors = _build_in_threads(_data_config(root), tmp_path / "work", 2)
  # The file is in the second process's block; both stop with its message.
  assert errors[0] == errors[1]
  assert "zz_last.ref:2: not valid UTF-8" in errors[0]


def test_a_split_without_boundaries_stops_every_building_process(tmp_path):
  root = _corpus_folder(tmp_path / "corpus")
  data.write_choi_dir(
      [data.Document([["One segment only."]], name="x")] * 3, root / "dev"
  )
  errors = _build_in_threads(_data_config(root), tmp_path / "work", 2)
  assert errors[0] == errors[1]
  assert "the dev split" in errors[0] and "more than one segment" in errors[0]


def test_shards_are_reused_and_rebuilt_when_the_corpus_changes(
    tmp_path, caplog
):
  root = _corpus_folder(tmp_path / "corpus")
  config = _data_config(root, cache_dir=tmp_path / "cache")
  folder = shards.build(config, TOKENIZER, tmp_path / "run1", progress=False)
  assert folder.parent == tmp_path / "cache"
  records = folder / "train-00000-of-00001.records"
  built = records.stat().st_mtime_ns
  # Another run with the same corpus and tokenizer reuses the shards.
  assert shards.build(config, TOKENIZER, tmp_path / "run2") == folder
  assert records.stat().st_mtime_ns == built
  # Another tokenizer gets its own folder.
  other = data.Tokenizer(num_buckets=64, max_tokens=6, lowercase=True)
  assert shards.shard_folder(config, other, tmp_path / "run2") != folder
  # A changed file is noticed, named, and the shards rebuilt.
  changed = root / "train" / "00003.ref"
  changed.write_text(changed.read_text() + "One more sentence.\n==========\n")
  before = len(data.open_splits(config, TOKENIZER, "unused")["train"])
  assert "train/00003.ref" in caplog.text and "rebuilding" in caplog.text
  corpus = data.open_splits(config, TOKENIZER, "unused")["train"]
  assert len(corpus) == before
  (doc,) = [
      d for d in data.load_splits(config)["train"] if d.name == "00003.ref"
  ]
  assert doc.sentences[-1] == "One more sentence."
  sizes = dict(
      map(tuple, json.loads((folder / "train.files.json").read_text()))
  )
  assert sizes["00003.ref"] == changed.stat().st_size


def test_preprocess_builds_what_training_reads(tmp_path):
  root = _corpus_folder(
      tmp_path / "corpus", ("train", "dev", "test"), (24, 6, 6)
  )
  flags = [
      "--config=configs/boundary.py:smoke",
      f"--workdir={tmp_path / 'run'}",
      "--config.data.source=auto",
      f"--config.data.path={root}",
      f"--config.data.cache_dir={tmp_path / 'cache'}",
  ]
  # Two processes, as on two hosts: they meet in the shard folder, and
  # neither imports JAX (`-X importtime` lists every module imported).
  logs = [tmp_path / f"process{index}.log" for index in range(2)]
  pair = [
      subprocess.Popen(
          [sys.executable, "-X", "importtime", "-m", "segjax.preprocess"]
          + flags[:-1]
          + [
              f"--config.data.cache_dir={tmp_path / 'pair'}",
              "--coordinator_address=127.0.0.1:1",  # Not dialled.
              "--num_processes=2",
              f"--process_id={index}",
          ],
          stdout=subprocess.DEVNULL,
          stderr=log.open("w"),  # A pipe could fill up and stall the pair.
          cwd=REPO,
          env=cli_env(),
      )
      for index, log in enumerate(logs)
  ]
  for process, log in zip(pair, logs):
    process.wait(timeout=300)
    stderr = log.read_text()
    assert process.returncode == 0, stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines()}
    assert "numpy" in imported and "jax" not in imported
  result = run_module("segjax.preprocess", *flags)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "train 24 documents, dev 6 documents, test 6 documents" in (
      result.stdout
  )
  (one,) = (tmp_path / "cache").iterdir()
  (two,) = (tmp_path / "pair").iterdir()
  assert one.name == two.name
  for split in ("train", "dev", "test"):
    records = [
        [
            source[i]
            for source in [
                shards.records_lib.RecordFiles(
                    [
                        folder / part
                        for part in shards.read_manifest(folder)["splits"][
                            split
                        ]["parts"]
                    ]
                )
            ]
            for i in range(len(source))
        ]
        for folder in (one, two)
    ]
    assert records[0] == records[1] and records[0]
  (folder,) = (tmp_path / "cache").iterdir()
  built = folder / "train-00000-of-00001.records"
  mtime = built.stat().st_mtime_ns
  result = run_module(
      "segjax.train",
      *flags,
      "--config.train.num_steps=4",
      "--config.train.eval_every=2",
      "--config.train.checkpoint_every=2",
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert "test Pk" in result.stdout
  assert "Building the shards" not in result.stderr
  assert built.stat().st_mtime_ns == mtime
  bad = run_module("segjax.preprocess", "--config=configs/boundary.py:smoke")
  assert bad.returncode == 1
  assert (
      bad.stderr.strip()
      .splitlines()[-1]
      .startswith("segjax.preprocess: error: data.source='pydoc' is embedded")
  )


def test_training_on_a_corpus_folder_builds_its_shards_in_the_workdir(
    tmp_path,
):
  from segjax import trainer  # pylint: disable=g-import-not-at-top

  root = _corpus_folder(tmp_path / "corpus")
  config = tiny_config(
      **{
          "data.source": "choi",
          "data.path": str(root),
          "train.num_steps": 2,
          "train.eval_every": 2,
          "train.checkpoint_every": 2,
      }
  )
  results = trainer.train_and_evaluate(config, tmp_path / "run")
  (folder,) = (tmp_path / "run" / "data").iterdir()
  assert (folder / shards.MANIFEST).is_file()
  assert results["test_num_documents"] == 9


def test_record_files_read_each_record_of_every_part_and_pickle(tmp_path):
  from segjax.data import records
  import pickle

  parts = [[b"a", b"", b"ccc"], [b"dd" * 1000]]
  for i, part in enumerate(parts):
    assert records.write(tmp_path / f"p{i}", part) == len(part)
  source = records.RecordFiles([tmp_path / "p0", tmp_path / "p1"])
  flat = [r for part in parts for r in part]
  assert len(source) == 4
  assert source.__getitems__([3, 0, 2, 1]) == [flat[i] for i in (3, 0, 2, 1)]
  assert pickle.loads(pickle.dumps(source))[3] == flat[3]
  with pytest.raises(IndexError):
    source[4]


def test_a_truncated_record_file_is_refused_by_name(tmp_path):
  from segjax.data import records

  records.write(tmp_path / "p", [b"abc", b"def"])
  with open(tmp_path / "p.records", "r+b") as f:
    f.truncate(4)
  with pytest.raises(data.DataError, match=r"p\.records: 4 bytes.*say 6"):
    records.RecordFiles([tmp_path / "p"])


def test_the_listing_digest_is_taken_without_the_list_and_order_free(tmp_path):
  from segjax.data import documents

  root = _corpus_folder(tmp_path / "corpus")
  _, files = documents.split_files(root / "train", "choi")
  listing = documents.split_listing(root / "train", "choi")
  assert listing == documents.listing_digest(files)
  assert listing == documents.listing_digest(reversed(files))
  assert listing["files"] == len(files)
  renamed = [(name + "x", size) for name, size in files]
  assert documents.listing_digest(renamed)["digest"] != listing["digest"]
