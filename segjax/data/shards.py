"""A corpus read once and stored as ArrayRecord shards, for random access.

`build` reads the raw corpus files of every split and writes, per split and
per building process, one ArrayRecord file with a record per document (token
ids, gold labels and sentences: `corpus.encode_record`) and small index
arrays (sentences, segments and name rank per document, gold labels).
`open_splits` opens them as `corpus.ShardedCorpus`es, which keep only the
index arrays in memory.

A shard folder is named by what its contents depend on: the data source and
path and the tokenizer settings (`built_from`). Its `manifest.json` also
lists every input file with its size; when the files change, the folder is
rebuilt. Layout:

  <folder>/manifest.json
  <folder>/<split>-<part>-of-<parts>.array_record   records, document order
  <folder>/<split>-<part>-of-<parts>.<array>.npy    lengths, segments,
                                                    ranks, gold
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import time
from typing import Any, Callable, Mapping, Sequence

from absl import logging
from array_record.python import array_record_module
import grain
import numpy as np
import tqdm

from segjax.data import corpus as corpus_lib
from segjax.data import documents as documents_lib
from segjax.data import splits as splits_lib
from segjax.data.documents import DataError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = splits_lib.SPLITS
# group_size:1 makes every record its own chunk: one read per random access.
WRITER_OPTIONS = "group_size:1"
INDEX_ARRAYS = ("lengths", "segments", "ranks", "gold")


def split_inputs(data_config: Any) -> dict[str, dict[str, Any]]:
  """The raw files of each split that exists: {split: {source, root, files}}.

  `files` are `[relative path, size in bytes]` in document order; `source` is
  the format read (detected when `data.source` is "auto").
  """
  root = pathlib.Path(data_config.path)
  locations = splits_lib.split_locations(data_config.path, data_config.source)
  inputs = {}
  for split, location in locations.items():
    if location is None:
      continue
    source = data_config.source
    if source == "auto":
      source = documents_lib.detect_format(location)
    split_root, files = documents_lib.split_files(location, source)
    inputs[split] = {
        "source": source,
        "root": os.path.relpath(split_root, root),
        "files": [list(file) for file in files],
    }
  return inputs


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


def _write_part(
    folder: pathlib.Path,
    name: str,
    documents: Any,
    tokenizer,
) -> None:
  """Writes the records and index arrays of one part (atomically, by rename)."""
  index = {key: [] for key in INDEX_ARRAYS}
  records = folder / f"{name}.array_record"
  partial = records.with_suffix(".partial")
  writer = array_record_module.ArrayRecordWriter(str(partial), WRITER_OPTIONS)
  try:
    for document in documents:
      gold = corpus_lib.boundary_labels(document)
      tokens = tokenizer.encode(document.sentences).astype(tokenizer.id_dtype)
      writer.write(corpus_lib.encode_record(tokens, gold, document.sentences))
      index["lengths"].append(document.num_sentences)
      index["segments"].append(len(document.segments))
      index["ranks"].append(corpus_lib.name_rank(document.name))
      index["gold"].append(gold.astype(np.uint8))
  except BaseException:
    writer.close()
    partial.unlink(missing_ok=True)
    raise
  writer.close()
  dtypes = {"lengths": np.int32, "segments": np.int32, "ranks": np.uint64}
  for key, values in index.items():
    array = (
        np.concatenate(values).astype(np.uint8)
        if key == "gold" and values
        else np.array(values, dtypes.get(key, np.uint8))
    )
    with open(folder / f"{name}.{key}.npy.partial", "wb") as f:
      np.save(f, array)
    os.replace(
        folder / f"{name}.{key}.npy.partial", folder / f"{name}.{key}.npy"
    )
  os.replace(partial, records)


def _documents(root: pathlib.Path, files: Sequence, source: str, skipped):
  """The documents of `files` one file at a time, counting empty ones."""
  for name, _ in files:
    found, num_skipped = documents_lib.FILE_READERS[source](root / name, root)
    skipped.append(num_skipped)
    yield from found


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
    documents = _documents(root, files, split_input["source"], counts)
    if progress:
      documents = tqdm.tqdm(
          documents, desc=f"shards {split} {part + 1}/{parts}", unit=" docs"
      )
    _write_part(folder, _part_name(split, part, parts), documents, tokenizer)
    skipped[split] = sum(counts)
  return skipped


def _first_difference(old: Mapping, new: Mapping) -> str | None:
  """A phrase naming the first way the input files changed, or None."""
  for split in SPLITS:
    if (split in old) != (split in new):
      return f"the {split} split {'appeared' if split in new else 'is gone'}"
    if split not in new:
      continue
    old_files = {name: size for name, size in old[split]["files"]}
    new_files = {name: size for name, size in new[split]["files"]}
    for name in sorted(old_files.keys() | new_files.keys()):
      if old_files.get(name) != new_files.get(name):
        return (
            f"{split}/{name}: {old_files.get(name, 'absent')} -> "
            f"{new_files.get(name, 'absent')} bytes"
        )
    if old[split]["source"] != new[split]["source"]:
      return f"the {split} split is now {new[split]['source']} format"
  return None


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


def _status_files(folder: pathlib.Path, part: int) -> list[pathlib.Path]:
  """(done, failed): where a building process reports how its part went."""
  return [folder / f"part-{part:05d}.{status}" for status in ("done", "failed")]


def _wait_for_parts(folder: pathlib.Path, parts: int) -> dict[str, int]:
  """Waits until every process reported its part; sums the skipped counts.

  Raises:
    DataError: a process failed on bad input (its message), on every
      process, so that none waits forever at a barrier for a dead one.
  """
  waiting_since = time.time()
  while True:
    statuses = [_status_files(folder, part) for part in range(parts)]
    for done, failed in statuses:
      if failed.exists():
        raise DataError(failed.read_text())
    if all(done.exists() for done, _ in statuses):
      break
    if time.time() - waiting_since > 60:
      logging.info("Waiting for the other processes' shards in %s", folder)
      waiting_since = time.time()
    time.sleep(0.2)
  total = {}
  for done, _ in statuses:
    for split, count in json.loads(done.read_text()).items():
      total[split] = total.get(split, 0) + count
  return total


def build(
    data_config: Any,
    tokenizer,
    workdir,
    *,
    process_index: int = 0,
    process_count: int = 1,
    sync: Callable[[], None] = lambda: None,
    progress: bool = True,
) -> pathlib.Path:
  """Makes the shard folder of a corpus current; returns it.

  Every process of a job calls this: if the manifest is missing or its input
  files differ from the current ones, process i writes part i of every split
  (its block of the input files), and process 0 writes the manifest once
  all parts exist. `sync` is a barrier across the processes.

  Raises:
    DataError: missing folders, malformed files (naming file and line), a
      split without boundaries.
  """
  folder = shard_folder(data_config, tokenizer, workdir)
  inputs = split_inputs(data_config)
  manifest = read_manifest(folder)
  if manifest is not None:
    change = _first_difference(manifest["splits"], inputs)
    if change is None:
      return folder
    logging.warning(
        "The corpus changed since %s was built (%s): rebuilding", folder, change
    )
  else:
    logging.info("Building the shards of %s in %s", data_config.path, folder)
  folder.mkdir(parents=True, exist_ok=True)
  for status in _status_files(folder, process_index):
    status.unlink(missing_ok=True)
  sync()  # No process reads a status before every stale one is gone.
  done, failed = _status_files(folder, process_index)
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
    failed.write_text(str(e))
    raise
  done.write_text(json.dumps(skipped))
  total_skipped = _wait_for_parts(folder, process_count)
  entries = {
      split: {
          **split_input,
          "parts": [
              _part_name(split, part, process_count)
              for part in range(process_count)
          ],
          "skipped": total_skipped[split],
      }
      for split, split_input in inputs.items()
  }
  # On every process, so that none waits at the barrier for one that failed.
  for split, entry in entries.items():
    _check_split_has_boundaries(folder, data_config.path, split, entry)
  if process_index == 0:
    _write_manifest(
        folder,
        {"built_from": built_from(data_config, tokenizer), "splits": entries},
    )
  sync()
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
  # `file[0:n]` with the counts of the index: the source then opens no file
  # to count its records, and a reader only once a batch needs it.
  files = [
      f"{folder / p}.array_record[0:{len(n)}]"
      for p, n in zip(parts, index["lengths"])
  ]
  return corpus_lib.ShardedCorpus(
      source=grain.sources.ArrayRecordDataSource(files),
      records=np.arange(len(lengths)),
      lengths=lengths,
      name_ranks=np.concatenate(index["ranks"]),
      max_tokens=max_tokens,
      gold=corpus_lib.FlatGold(index["gold"]),
  )
