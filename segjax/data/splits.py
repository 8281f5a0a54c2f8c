"""`load_splits`: the train/dev/test documents a data config asks for."""

from __future__ import annotations

import pathlib
from typing import Any, Sequence

from absl import logging
import numpy as np

from segjax.data import corpus as corpus_lib
from segjax.data import documents as documents_lib
from segjax.data import pydoc_corpus
from segjax.data.documents import DataError, Document

SPLITS = ("train", "dev", "test")
SOURCES = ("pydoc", "choi", "wiki727k", "jsonl", "auto")


def held_out_indices(name_ranks: np.ndarray, fraction: float) -> np.ndarray:
  """Sorted indices of the documents `hold_out` holds out, from name ranks."""
  if not 0 <= fraction < 1:
    raise ValueError(f"dev_fraction must be in [0, 1), got {fraction}")
  count = round(fraction * len(name_ranks))
  if fraction > 0 and len(name_ranks) >= 2:
    count = max(count, 1)
  return corpus_lib.lowest_ranks(name_ranks, count)


def hold_out(
    documents: Sequence[Document], fraction: float
) -> tuple[list[Document], list[Document]]:
  """Splits `documents` into (kept, held out) deterministically.

  The held-out documents are the `round(fraction * n)` (at least one when
  0 < fraction and n >= 2) whose names rank lowest (`corpus.name_rank`). The
  choice depends only on the names, not on the seed, the file order or where
  the data are stored; both parts keep the input order.
  """
  ranks = np.array([corpus_lib.name_rank(d.name) for d in documents], np.uint64)
  held = set(held_out_indices(ranks, fraction).tolist())
  return (
      [doc for i, doc in enumerate(documents) if i not in held],
      [doc for i, doc in enumerate(documents) if i in held],
  )


def split_path(
    root: pathlib.Path, split: str, source: str
) -> pathlib.Path | None:
  """Where a split lives under `root`: `split/`, or `split.jsonl` for JSONL."""
  if (root / split).is_dir():
    return root / split
  if source in ("jsonl", "auto") and (root / f"{split}.jsonl").is_file():
    return root / f"{split}.jsonl"
  return None


def _read_split(path: pathlib.Path, source: str) -> documents_lib.ReadResult:
  """Reads one split folder (or JSONL file) with the reader for `source`.

  Raises:
    DataError: besides malformed files, a split where no document has two
      segments: there is no boundary to learn or to score.
  """
  if source == "auto":
    source = documents_lib.detect_format(path)
    logging.info("Detected %s format in %s", source, path)
  result = documents_lib.READERS[source](path)
  check_has_boundaries(
      path.stem,
      path,
      source,
      [len(document.segments) for document in result.documents],
  )
  return result


def check_has_boundaries(
    split: str, path: pathlib.Path, source: str, segments: Sequence[int]
) -> None:
  """A DataError when no document of a split has two segments.

  There is no boundary to learn or to score; most likely the separators are
  missing or the files are in another format.
  """
  if len(segments) and max(segments) < 2:
    raise DataError(
        f"the {split} split ({path}): none of its {len(segments)} "
        f"documents has more than one segment in {source} format: nothing to "
        "learn or score; are its segment separators missing, or is it "
        "another format?"
    )


def split_locations(path: str, source: str) -> dict[str, pathlib.Path | None]:
  """Where each split of a dataset folder lives (None: it has none).

  Raises:
    DataError: `path` is not a folder, or it has no train split.
  """
  root = pathlib.Path(path)
  if not path or not root.is_dir():
    raise DataError(f"data.path {path!r} is not a directory")
  locations = {split: split_path(root, split, source) for split in SPLITS}
  if locations["train"] is None:
    jsonl_layout = (
        " or train.jsonl, dev.jsonl, test.jsonl"
        if source in ("jsonl", "auto")
        else ""
    )
    raise DataError(
        f"{root}: no train/ folder (expected train/, dev/, test/{jsonl_layout})"
    )
  return locations


def _file_splits(
    path: str, source: str, dev_fraction: float
) -> tuple[dict[str, list[Document]], dict[str, int], bool]:
  """Documents per split from a dataset folder, skipped counts, dev held out."""
  root = pathlib.Path(path)
  locations = split_locations(path, source)
  splits, skipped = {}, {}
  for split, location in locations.items():
    if location is None:
      splits[split], skipped[split] = [], 0
    else:
      splits[split], skipped[split] = _read_split(location, source)
  held_out = locations["dev"] is None
  if held_out:
    splits["train"], splits["dev"] = hold_out(splits["train"], dev_fraction)
    logging.warning(
        "%s has no dev split: holding out %d of %d training documents "
        "(data.dev_fraction=%g, chosen by a hash of the document names)",
        root,
        len(splits["dev"]),
        len(splits["dev"]) + len(splits["train"]),
        dev_fraction,
    )
  if locations["test"] is None:
    logging.warning("%s has no test split; the test set is empty", root)
  return splits, skipped, held_out


def load_splits(data_config: Any) -> dict[str, list[Document]]:
  """The train/dev/test documents described by a data config.

  Keys read (missing ones take the defaults in brackets):
    source ("pydoc"): "pydoc" (the embedded corpus, see `pydoc_corpus`),
      "choi", "wiki727k", "jsonl", or "auto" (detect from the files).
    path (""): for file sources, a folder with train/, dev/ and test/
      subfolders (for JSONL also train.jsonl, dev.jsonl, test.jsonl).
    dev_fraction (0.1): without a dev split, this share of train is held
      out as dev, chosen by document name (independent of the seed).
    max_documents (0): keep at most this many documents per split (the
      first ones, in file order); 0 keeps all.

  Returns:
    {"train": [...], "dev": [...], "test": [...]}.

  Raises:
    DataError: missing folders or malformed files (naming file and line).
    ValueError: an unknown source.
  """
  source = getattr(data_config, "source", "pydoc")
  if source not in SOURCES:
    raise ValueError(
        f"unknown data.source {source!r}; expected one of {SOURCES}"
    )
  max_documents = int(getattr(data_config, "max_documents", 0) or 0)
  if source == "pydoc":
    splits = {
        split: pydoc_corpus.pydoc_documents(split, max_documents or None)
        for split in SPLITS
    }
    skipped, held_out = dict.fromkeys(SPLITS, 0), False
  else:
    splits, skipped, held_out = _file_splits(
        str(getattr(data_config, "path", "") or ""),
        source,
        float(getattr(data_config, "dev_fraction", 0.1)),
    )
    if max_documents:
      splits = {split: docs[:max_documents] for split, docs in splits.items()}
  for split in SPLITS:
    docs = splits[split]
    logging.info(
        "Data %s/%s: %d documents, %d segments, %d sentences, %d empty "
        "skipped%s",
        source,
        split,
        len(docs),
        sum(len(doc.segments) for doc in docs),
        sum(doc.num_sentences for doc in docs),
        skipped[split],
        " (held out from train)" if split == "dev" and held_out else "",
    )
  if not splits["train"]:
    raise DataError(f"data.source={source!r}: the train split has no documents")
  return splits


def open_splits(
    data_config: Any,
    tokenizer,
    workdir,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> dict[str, corpus_lib.Corpus]:
  """The train/dev/test corpora of a data config, for training.

  The embedded pydoc corpus is read into memory (`load_splits`); a corpus
  folder is read through its shards of records (`shards.build` makes them on
  first use, in `data.cache_dir` or `<workdir>/data`), so a process holds a
  few numbers per document, whatever the corpus size. Held-out dev and
  `max_documents` select the same documents as `load_splits`.

  Raises:
    DataError: missing folders or malformed files (naming file and line).
  """
  # Imported here: shards imports this module.
  from segjax.data import shards  # pylint: disable=g-import-not-at-top

  if data_config.source == "pydoc":
    return {
        split: corpus_lib.InMemoryCorpus(documents, tokenizer)
        for split, documents in load_splits(data_config).items()
    }
  folder = shards.build(
      data_config,
      tokenizer,
      workdir,
      process_index=process_index,
      process_count=process_count,
  )
  manifest = shards.read_manifest(folder)
  splits, skipped = {}, {}
  for split in SPLITS:
    if split in manifest["splits"]:
      splits[split] = shards.open_split(
          folder, manifest, split, tokenizer.max_tokens
      )
      skipped[split] = manifest["splits"][split]["skipped"]
    else:
      splits[split] = splits["train"].subset([])
      skipped[split] = 0
  held_out = "dev" not in manifest["splits"]
  if held_out:
    train = splits["train"]
    dev = held_out_indices(train.name_ranks, data_config.dev_fraction)
    splits["dev"] = train.subset(dev)
    splits["train"] = train.subset(np.setdiff1d(np.arange(len(train)), dev))
    logging.warning(
        "%s has no dev split: holding out %d of %d training documents "
        "(data.dev_fraction=%g, chosen by a hash of the document names)",
        data_config.path,
        len(dev),
        len(train),
        data_config.dev_fraction,
    )
  if "test" not in manifest["splits"]:
    logging.warning("%s has no test split; the test set is empty", folder)
  if data_config.max_documents:
    splits = {
        split: corpus.subset(
            np.arange(min(len(corpus), data_config.max_documents))
        )
        for split, corpus in splits.items()
    }
  for split, corpus in splits.items():
    logging.info(
        "Data %s/%s: %d documents, %d sentences, %d empty skipped%s (shards"
        " in %s)",
        data_config.source,
        split,
        len(corpus),
        int(corpus.lengths.sum()),
        skipped[split],
        " (held out from train)" if split == "dev" and held_out else "",
        folder,
    )
  if not len(splits["train"]):
    raise DataError(
        f"data.source={data_config.source!r}: the train split has no documents"
    )
  return splits
