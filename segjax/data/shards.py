"""A corpus read once and stored as shards of records, for random access.

`build` reads the raw corpus files of every split and writes, per split and
per building process, one record file with a record per document (token
ids, gold labels and sentences: `corpus.encode_record`; the file format is
`segjax.data.records`) and small index arrays (sentences, segments and name
rank per document, gold labels). `open_splits` opens them as
`corpus.ShardedCorpus`es, which keep only the index arrays in memory.

A shard folder is named by what its contents depend on: the data source and
path and the tokenizer settings (`built_from`). Its `manifest.json` also
holds each split's file count, total size and a digest of the names and
sizes (`documents.split_listing`); when they change, the folder is rebuilt,
and the warning names the first changed file (from `<split>.files.json`,
the list itself). Layout:

  <folder>/manifest.json
  <folder>/<split>.files.json                    [[file, size], ...]
  <folder>/<split>-<part>-of-<parts>.records     records, document order
  <folder>/<split>-<part>-of-<parts>.offsets.npy their byte offsets
  <folder>/<split>-<part>-of-<parts>.<array>.npy lengths, segments,
                                                 ranks, gold
  <folder>/part-<part>.status.json               how building it went
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from absl import logging
import numpy as np
import tqdm

from segjax.data import corpus as corpus_lib
from segjax.data import documents as documents_lib
from segjax.data import records as records_lib
from segjax.data import splits as splits_lib
from segjax.data import wiki727k as wiki727k_lib
from segjax.data.documents import DataError

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
SPLITS = splits_lib.SPLITS
# Documents read and tokenized together while building (bounded memory, few
# calls).
TOKENIZE_DOCUMENTS = 256
INDEX_ARRAYS = ("lengths", "segments", "ranks", "gold")


def _split_sources(data_config: Any) -> Iterator[tuple[str, Any, str]]:
  """(split, location, format read) of each split that exists."""
  locations = splits_lib.split_locations(data_config.path, data_config.source)
  for split, location in locations.items():
    if location is None:
      continue
    source = data_config.source
    if source == "auto":
      source = documents_lib.detect_format(location)
    yield split, location, source


def split_inputs(data_config: Any) -> dict[str, dict[str, Any]]:
  """The raw files of each split that exists: {split: {source, root, files}}.

  `files` are `[relative path, size in bytes]` in document order; `source` is
  the format read (detected when `data.source` is "auto").
  """
  root = pathlib.Path(data_config.path)
  inputs = {}
  for split, location, source in _split_sources(data_config):
    split_root, files = documents_lib.split_files(location, source)
    inputs[split] = {
        "source": source,
        "root": os.path.relpath(split_root, root),
        "files": [list(file) for file in files],
    }
  return inputs


def split_listings(data_config: Any) -> dict[str, dict[str, Any]]:
  """{split: {source, listing}}: what the manifest checks, without lists."""
  return {
      split: {
          "source": source,
          "listing": documents_lib.split_listing(location, source),
      }
      for split, location, source in _split_sources(data_config)
  }


def built_from(data_config: Any, tokenizer) -> dict[str, Any]:
  """What the shards' contents depend on (besides the input files)."""
  return {
      "format": FORMAT_VERSION,
      "source": data_config.source,
      "path": str(pathlib.Path(data_config.path).resolve()),
      "tokenizer": tokenizer.to_dict(),
  }


def shard_folder(data_config: Any, tokenizer, workdir) -> pathlib.Path:
  """`<data.cache_dir or workdir/data>/<source>-<hash of built_from>`."""
  root = pathlib.Path(data_config.cache_dir or pathlib.Path(workdir) / "data")
  key = json.dumps(built_from(data_config, tokenizer), sort_keys=True)
  digest = hashlib.sha256(key.encode()).hexdigest()[:16]
  return root / f"{data_config.source}-{digest}"


def _part_name(split: str, part: int, parts: int) -> str:
  return f"{split}-{part:05d}-of-{parts:05d}"


def _block(items: Sequence, part: int, parts: int) -> Sequence:
  """The `part`-th of `parts` contiguous, near-equal blocks of `items`."""
  return items[part * len(items) // parts : (part + 1) * len(items) // parts]


def _write_part(folder: pathlib.Path, name: str, encoded: Iterable) -> None:
  """Writes the records and index arrays of one part (atomically, by rename).

  `encoded`: (name, token ids, gold labels, sentences) per document.
  """
  index = {key: [] for key in INDEX_ARRAYS}

  def records():
    for document_name, tokens, gold, sentences in encoded:
      yield corpus_lib.encode_record(tokens, gold, sentences)
      index["lengths"].append(len(gold))
      index["segments"].append(int(np.count_nonzero(gold)))
      index["ranks"].append(corpus_lib.name_rank(document_name))
      index["gold"].append(gold)

  records_lib.write(folder / name, records())
  dtypes = {"lengths": np.int32, "segments": np.int32, "ranks": np.uint64}
  for key, values in index.items():
    array = (
        np.concatenate(values).astype(np.uint8)
        if key == "gold" and values
        else np.array(values, dtypes.get(key, np.uint8))
    )
    _save_atomically(folder / f"{name}.{key}.npy", array)


def _batches(items: Iterable, size: int) -> Iterator[list]:
  """Lists of `size` consecutive items (the last one shorter)."""
  batch = []
  for item in items:
    batch.append(item)
    if len(batch) == size:
      yield batch
      batch = []
  if batch:
    yield batch


def _save_atomically(path: pathlib.Path, array: np.ndarray) -> None:
  with open(f"{path}.partial", "wb") as f:
    np.save(f, array)
  os.replace(f"{path}.partial", path)


def _encoded_documents(root, files, source, tokenizer, skipped) -> Iterator:
  """`_write_part`'s tuples of the documents of `files`, read one at a time.

  Appends each file's count of skipped (empty) documents to `skipped`.
  """

  def documents():
    for name, _ in files:
      found, num_skipped = documents_lib.FILE_READERS[source](root / name, root)
      skipped.append(num_skipped)
      yield from found

  for batch in _batches(documents(), TOKENIZE_DOCUMENTS):
    tokens = tokenizer.encode([s for d in batch for s in d.sentences])
    tokens = tokens.astype(tokenizer.id_dtype)
    ends = np.cumsum([d.num_sentences for d in batch])
    for document, doc_tokens in zip(batch, np.split(tokens, ends[:-1])):
      gold = corpus_lib.boundary_labels(document).astype(np.uint8)
      yield document.name, doc_tokens, gold, document.sentences


def _encoded_wiki727k(root, files, tokenizer, skipped) -> Iterator:
  """`_encoded_documents` of Wiki-727K files, read many at a time.

  The same tuples, found in batches of files (`wiki727k.read_batch`) and
  tokenized where they lie in the batch's text.
  """
  for names in _batches([name for name, _ in files], TOKENIZE_DOCUMENTS):
    batch = wiki727k_lib.read_batch(root, names)
    skipped.append(batch.num_skipped)
    tokens = tokenizer.encode_text(batch.text, batch.sentences)
    tokens = tokens.astype(tokenizer.id_dtype)
    ends = np.cumsum(batch.lengths)
    # Flat lists: a list per sentence would keep the garbage collector busy.
    firsts, lasts = batch.sentences.T.tolist()
    for name, start, end in zip(batch.names, ends - batch.lengths, ends):
      sentences = [
          batch.text[a:b] for a, b in zip(firsts[start:end], lasts[start:end])
      ]
      yield name, tokens[start:end], batch.gold[start:end], sentences


def build_parts(
    data_config: Any,
    tokenizer,
    folder: pathlib.Path,
    inputs: Mapping[str, Any],
    *,
    part: int,
    parts: int,
    progress: bool = True,
) -> dict[str, int]:
  """Writes part `part` of `parts` of every split: its block of the files.

  Returns:
    {split: empty documents skipped in this part}.
  """
  folder.mkdir(parents=True, exist_ok=True)
  skipped = {}
  for split, split_input in inputs.items():
    root = pathlib.Path(data_config.path) / split_input["root"]
    files = _block(split_input["files"], part, parts)
    counts = []
    if split_input["source"] == "wiki727k":
      encoded = _encoded_wiki727k(root, files, tokenizer, counts)
    else:
      encoded = _encoded_documents(
          root, files, split_input["source"], tokenizer, counts
      )
    if progress:
      encoded = tqdm.tqdm(
          encoded, desc=f"shards {split} {part + 1}/{parts}", unit=" docs"
      )
    _write_part(folder, _part_name(split, part, parts), encoded)
    skipped[split] = sum(counts)
  return skipped


def _change(
    folder: pathlib.Path,
    built: Mapping,
    current: Mapping,
    inputs: Callable[[], Mapping],
) -> str | None:
  """A phrase naming the first way the input files changed, or None.

  `inputs` gives `split_inputs` (the full listing), only when a file changed.
  """
  for split in SPLITS:
    if (split in built) != (split in current):
      return (
          f"the {split} split {'appeared' if split in current else 'is gone'}"
      )
    if split not in current:
      continue
    if built[split]["source"] != current[split]["source"]:
      return f"the {split} split is now {current[split]['source']} format"
    if built[split]["listing"] != current[split]["listing"]:
      return _first_changed_file(folder, split, inputs()[split]["files"])
  return None


def _first_changed_file(folder: pathlib.Path, split: str, files) -> str:
  """`split/file: old -> new bytes` for the first file that differs."""
  try:
    old = dict(
        map(tuple, json.loads((folder / f"{split}.files.json").read_text()))
    )
  except (OSError, ValueError):
    return f"the {split} split's files differ"
  new = dict(map(tuple, files))
  for name in sorted(old.keys() | new.keys()):
    if old.get(name) != new.get(name):
      return (
          f"{split}/{name}: {old.get(name, 'absent')} -> "
          f"{new.get(name, 'absent')} bytes"
      )
  return f"the {split} split's files differ"


def read_manifest(folder: pathlib.Path) -> dict[str, Any] | None:
  try:
    return json.loads((folder / MANIFEST).read_text())
  except (OSError, ValueError):
    return None


def _write_manifest(folder: pathlib.Path, manifest: Mapping) -> None:
  partial = folder / f"{MANIFEST}.partial"
  partial.write_text(json.dumps(manifest))
  os.replace(partial, folder / MANIFEST)


def _check_split_has_boundaries(folder, path, split, entry) -> None:
  splits_lib.check_has_boundaries(
      split,
      pathlib.Path(path) / entry["root"],
      entry["source"],
      np.concatenate(
          [np.load(folder / f"{p}.segments.npy") for p in entry["parts"]]
      ),
  )


def _status_file(folder: pathlib.Path, part: int) -> pathlib.Path:
  """Where the process building `part` reports how it went."""
  return folder / f"part-{part:05d}.status.json"


def _report(folder: pathlib.Path, part: int, status: Mapping) -> None:
  path = _status_file(folder, part)
  partial = path.with_name(path.name + ".partial")
  partial.write_text(json.dumps(status))
  os.replace(partial, path)


def _status(folder: pathlib.Path, part: int, attempt: str) -> dict | None:
  """The report of `part` by a build of the same inputs in as many parts.

  One from an earlier build (not yet replaced by its process) is as good as
  a new one: that build wrote the very same files, or failed on the same
  line. Another build's report, or none, is None.
  """
  try:
    status = json.loads(_status_file(folder, part).read_text())
  except (OSError, ValueError):
    return None
  return status if status.get("attempt") == attempt else None


def _wait(what: str, ready: Callable[[], Any]) -> Any:
  """Polls `ready()` until it returns something true, logging every minute."""
  waiting_since = time.time()
  while not (result := ready()):
    if time.time() - waiting_since > 60:
      logging.info("Waiting for %s", what)
      waiting_since = time.time()
    time.sleep(0.2)
  return result


def _wait_for_parts(
    folder: pathlib.Path, parts: int, attempt: str
) -> dict[str, int]:
  """Waits until every part is reported; sums the skipped counts.

  Raises:
    DataError: a process failed on bad input (its message), on every
      process, so that none waits forever for a dead one.
  """

  def reports():
    statuses = [_status(folder, part, attempt) for part in range(parts)]
    for status in statuses:
      if status is not None and "error" in status:
        raise DataError(status["error"])
    return None if None in statuses else statuses

  total = {}
  for status in _wait(f"the other processes' shards in {folder}", reports):
    for split, count in status["skipped"].items():
      total[split] = total.get(split, 0) + count
  return total


def build(
    data_config: Any,
    tokenizer,
    workdir,
    *,
    process_index: int = 0,
    process_count: int = 1,
    progress: bool = True,
) -> pathlib.Path:
  """Makes the shard folder of a corpus current; returns it.

  Every process of a job calls this: if the manifest is missing or its input
  files differ from the current ones, process i writes part i of every split
  (its block of the input files) and reports it in the folder; process 0
  writes the manifest once every part is reported, and the others wait for
  it. The processes meet through the folder only (shared by all hosts, as
  training needs it anyway), so no barrier or JAX is needed.

  Raises:
    DataError: missing folders, malformed files (naming file and line), a
      split without boundaries.
  """
  folder = shard_folder(data_config, tokenizer, workdir)
  manifest = read_manifest(folder)
  # Listed at most once: for the change message and then for the build.
  listed_inputs = functools.cache(lambda: split_inputs(data_config))
  if manifest is not None:
    change = _change(
        folder, manifest["splits"], split_listings(data_config), listed_inputs
    )
    if change is None:
      return folder
    logging.warning(
        "The corpus changed since %s was built (%s): rebuilding", folder, change
    )
  else:
    logging.info("Building the shards of %s in %s", data_config.path, folder)
  inputs = listed_inputs()
  listings = {
      split: documents_lib.listing_digest(split_input["files"])
      for split, split_input in inputs.items()
  }
  attempt = hashlib.sha256(
      json.dumps([listings, process_count], sort_keys=True).encode()
  ).hexdigest()[:16]
  folder.mkdir(parents=True, exist_ok=True)
  _status_file(folder, process_index).unlink(missing_ok=True)
  try:
    skipped = build_parts(
        data_config,
        tokenizer,
        folder,
        inputs,
        part=process_index,
        parts=process_count,
        progress=progress and process_index == 0,
    )
  except DataError as e:
    _report(folder, process_index, {"attempt": attempt, "error": str(e)})
    raise
  _report(folder, process_index, {"attempt": attempt, "skipped": skipped})
  total_skipped = _wait_for_parts(folder, process_count, attempt)
  entries = {
      split: {
          "source": split_input["source"],
          "root": split_input["root"],
          "listing": listings[split],
          "parts": [
              _part_name(split, part, process_count)
              for part in range(process_count)
          ],
          "skipped": total_skipped[split],
      }
      for split, split_input in inputs.items()
  }
  # On every process, so that none waits for a manifest that never comes.
  for split, entry in entries.items():
    _check_split_has_boundaries(folder, data_config.path, split, entry)
  manifest = {
      "built_from": built_from(data_config, tokenizer),
      "splits": entries,
  }
  if process_index == 0:
    for split, split_input in inputs.items():
      partial = folder / f"{split}.files.json.partial"
      partial.write_text(json.dumps(split_input["files"]))
      os.replace(partial, folder / f"{split}.files.json")
    _write_manifest(folder, manifest)
  else:
    written = json.loads(json.dumps(manifest))
    _wait(
        f"process 0 to write {folder / MANIFEST}",
        lambda: read_manifest(folder) == written,
    )
  return folder


def open_split(
    folder: pathlib.Path, manifest: Mapping, split: str, max_tokens: int
) -> corpus_lib.ShardedCorpus:
  """A split's documents as a `ShardedCorpus` (index arrays in memory)."""
  parts = manifest["splits"][split]["parts"]
  index = {
      key: [np.load(folder / f"{p}.{key}.npy", mmap_mode="r") for p in parts]
      for key in INDEX_ARRAYS
  }
  lengths = np.concatenate(index["lengths"]).astype(np.int32)
  source = records_lib.RecordFiles([folder / p for p in parts])
  if len(source) != len(lengths):
    raise DataError(
        f"{folder}: the {split} split has {len(source)} records but"
        f" {len(lengths)} documents in its index; delete the folder to"
        " rebuild it"
    )
  return corpus_lib.ShardedCorpus(
      source=source,
      records=np.arange(len(lengths)),
      lengths=lengths,
      name_ranks=np.concatenate(index["ranks"]),
      max_tokens=max_tokens,
      gold=corpus_lib.FlatGold(index["gold"]),
  )
