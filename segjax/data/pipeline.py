"""Labels, windows and batches: from a corpus to model inputs.

Batches hold `tokens [B, S, L]` int32, `labels [B, S]` int32 and
`sentence_mask [B, S]` bool, where S = `max_sentences` and L =
`tokenizer.max_tokens`. Labels follow SPEC section 1: 1 = last sentence of
its segment, 0 = otherwise, `ignore_index` for the last sentence of a document
and for padding. A window cut inside a document keeps the real label of its
last sentence: that sentence is a genuine prediction target.

Documents longer than S sentences are cut into windows. The windows of a
corpus are listed once, from its sentences per document, when the pipeline
is built; a batch gathers just its windows' sentence runs from the corpus
(`segjax.data.corpus`: documents in memory, or records of on-disk shards),
so the pipeline stays far ahead of the train step.

Multi-process runs: every process lists the same global sequence of windows
and the same global batches of `global_batch_size` rows, and process i keeps
rows `[i * b, (i + 1) * b)` with `b = global_batch_size // process_count`. So
P processes see exactly the global batches of one process, in the same order,
and each process reads and tokenizes only its own rows: its shard.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

from absl import logging
import grain
import numpy as np

from segjax.data.corpus import as_corpus
from segjax.data.corpus import boundary_labels
from segjax.data.corpus import Corpus
from segjax.data.documents import Document
from segjax.embedding_cache import sentence_digests
from segjax.data.text import Tokenizer

Batch = dict[str, np.ndarray]


def sentence_labels(document: Document, ignore_index: int) -> np.ndarray:
  """Training labels, int32 `[n]`: `boundary_labels` with the last ignored."""
  labels = boundary_labels(document)
  if labels.size:
    labels[-1] = ignore_index
  return labels


def window_starts(
    num_sentences: int, max_sentences: int, stride: int
) -> list[int]:
  """First sentence of each window covering a document of `num_sentences`.

  Windows start every `stride` sentences until one reaches the end, so every
  sentence is covered; the last window may be shorter than `max_sentences`.
  """
  if max_sentences < 1 or not 1 <= stride <= max_sentences:
    raise ValueError(
        f"need max_sentences >= 1 and 1 <= stride <= max_sentences, got "
        f"max_sentences={max_sentences}, stride={stride}"
    )
  starts = []
  for start in range(0, num_sentences, stride):
    starts.append(start)
    if start + max_sentences >= num_sentences:
      break
  return starts


class Window(NamedTuple):
  """A run of at most `max_sentences` consecutive sentences of a document."""

  start: int
  sentences: list[str]


def document_windows(
    document: Document, max_sentences: int, stride: int | None = None
) -> list[Window]:
  """The windows of a document (`stride` defaults to `max_sentences`)."""
  sentences = document.sentences
  return [
      Window(start, sentences[start : start + max_sentences])
      for start in window_starts(
          len(sentences), max_sentences, stride or max_sentences
      )
  ]


def list_windows(
    lengths: np.ndarray, max_sentences: int, stride: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`window_starts` of every document at once, vectorised.

  Returns:
    int32 `(window_doc, window_start, window_length)`, `[W]` each, windows
    in document order.
  """
  window_starts(0, max_sentences, stride)  # Validates the two sizes.
  lengths = np.asarray(lengths, np.int64)
  counts = np.where(
      lengths > max_sentences,
      -(-(lengths - max_sentences) // stride) + 1,
      np.minimum(lengths, 1),
  )
  window_doc = np.repeat(np.arange(len(lengths)), counts)
  first_window = np.cumsum(counts) - counts
  window_start = (np.arange(counts.sum()) - first_window[window_doc]) * stride
  window_length = np.minimum(lengths[window_doc] - window_start, max_sentences)
  return tuple(
      x.astype(np.int32) for x in (window_doc, window_start, window_length)
  )


@dataclasses.dataclass(frozen=True, eq=False)
class WindowTable:
  """Every window of a corpus, and what a batch of them is made of.

  A window is a run of at most `max_sentences` consecutive sentences of one
  document; gathering a batch reads just those runs from the corpus.

  Attributes:
    corpus: the documents (`corpus.Corpus`: in memory or on-disk shards).
    window_doc: `[W]` int32 document index of each window.
    window_start: `[W]` int32 first sentence of each window in its document.
    window_length: `[W]` int32 sentences in each window.
    max_sentences: S, the padded number of sentences per window.
    ignore_index: the label of ignored positions.
    embeddings: pretrained sentence vectors (an `EmbeddingCache` holding
      every sentence), or None.
    encoder_tokenizer: a pretrained encoder's tokenizer
      (`text.WordpieceTokenizer`) when the encoder is fine-tuned: batches
      then carry its `encoder_ids`; or None.
  """

  corpus: Corpus
  window_doc: np.ndarray
  window_start: np.ndarray
  window_length: np.ndarray
  max_sentences: int
  ignore_index: int
  embeddings: Any = None
  encoder_tokenizer: Any = None

  @property
  def num_windows(self) -> int:
    return len(self.window_doc)


def window_table(
    documents: Sequence[Document] | Corpus,
    tokenizer: Tokenizer,
    *,
    max_sentences: int,
    stride: int,
    ignore_index: int,
    embeddings: Any = None,
    encoder_tokenizer: Any = None,
) -> WindowTable:
  """Lists the windows of documents (or a `Corpus`); see `WindowTable`."""
  corpus = as_corpus(documents, tokenizer)
  window_doc, window_start, window_length = list_windows(
      corpus.lengths, max_sentences, stride
  )
  return WindowTable(
      corpus=corpus,
      window_doc=window_doc,
      window_start=window_start,
      window_length=window_length,
      max_sentences=max_sentences,
      ignore_index=ignore_index,
      embeddings=embeddings,
      encoder_tokenizer=encoder_tokenizer,
  )


def _with_labelled_windows_only(table: WindowTable) -> WindowTable:
  """The table without windows that have no label to learn from.

  Such windows are a lone document-final sentence (a one-sentence document
  or the tail window of a long one), whose label is ignored; they would only
  dilute batches.
  """
  lengths = table.corpus.lengths[table.window_doc]
  has_label = table.window_start < lengths - 1
  return dataclasses.replace(
      table,
      window_doc=table.window_doc[has_label],
      window_start=table.window_start[has_label],
      window_length=table.window_length[has_label],
  )


def _embedding_rows(embeddings, sentences: Sequence[str]) -> np.ndarray:
  """Cache rows of sentences; a ValueError names one the cache lacks."""
  rows = embeddings.rows(sentence_digests(sentences))
  if (rows < 0).any():
    missing = sentences[int(np.argmin(rows))]
    raise ValueError(
        f"the embedding cache {embeddings.folder} lacks the sentence "
        f"{missing[:80]!r} (and {int((rows < 0).sum()) - 1} more)"
    )
  return rows


def gather_windows(table: WindowTable, rows: np.ndarray) -> Batch:
  """Padded model inputs for windows `rows` (-1 = a fully masked padding row).

  Returns:
    `tokens [b, S, L]` int32, `labels [b, S]` int32, `sentence_mask [b, S]`,
    with an embedding cache `embeddings [b, S, D]` float16, with an encoder
    tokenizer `encoder_ids [b, S, L']` int32 (0 = padding).
  """
  rows = np.asarray(rows, np.int64)
  real = rows >= 0
  safe_rows = np.where(real, rows, 0)
  positions = np.arange(table.max_sentences)
  sentence_mask = real[:, None] & (
      positions < table.window_length[safe_rows][:, None]
  )
  pretrained = (
      table.embeddings is not None or table.encoder_tokenizer is not None
  )
  runs = table.corpus.gather(
      table.window_doc[rows[real]],
      table.window_start[rows[real]],
      table.window_length[rows[real]],
      with_sentences=pretrained,
  )
  tokens = np.zeros(sentence_mask.shape + (runs.tokens.shape[-1],), np.int32)
  # Boolean-mask assignment fills row-major: window by window, in order.
  tokens[sentence_mask] = runs.tokens
  labels = np.full(sentence_mask.shape, table.ignore_index, np.int32)
  labels[sentence_mask] = np.where(runs.is_last, table.ignore_index, runs.gold)
  batch = {"tokens": tokens, "labels": labels, "sentence_mask": sentence_mask}
  if table.embeddings is not None:
    embeddings = np.zeros(
        sentence_mask.shape + (table.embeddings.dim,), np.float16
    )
    embeddings[sentence_mask] = table.embeddings.vectors(
        _embedding_rows(table.embeddings, runs.sentences)
    )
    batch["embeddings"] = embeddings
  if table.encoder_tokenizer is not None:
    encoder_ids = np.zeros(
        sentence_mask.shape + (table.encoder_tokenizer.max_tokens,), np.int32
    )
    if runs.sentences:
      encoder_ids[sentence_mask] = table.encoder_tokenizer.encode(
          runs.sentences
      )
    batch["encoder_ids"] = encoder_ids
  return batch


def local_rows(
    global_batch_size: int, process_index: int, process_count: int
) -> slice:
  """The rows of every global batch that one process keeps."""
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(
        f"need 0 <= process_index < process_count, got {process_index} and "
        f"{process_count}"
    )
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(
        f"global_batch_size={global_batch_size} must be a positive multiple "
        f"of process_count={process_count}"
    )
  local_batch_size = global_batch_size // process_count
  return slice(
      process_index * local_batch_size, (process_index + 1) * local_batch_size
  )


@dataclasses.dataclass(frozen=True, eq=False)
class _LocalBatch:
  """grain map: a global batch of window ids -> this process's rows as inputs.

  A top-level class (not a closure) so grain can pickle it for worker
  processes.
  """

  table: WindowTable
  rows: slice

  def __call__(self, global_windows: np.ndarray) -> Batch:
    # Slice before gathering: a process only materialises its own rows.
    batch = gather_windows(self.table, global_windows[self.rows])
    batch["example_id"] = np.arange(
        self.rows.start, self.rows.stop, dtype=np.int32
    )
    return batch


def make_train_iterator(
    documents: Sequence[Document] | Corpus,
    tokenizer: Tokenizer,
    *,
    global_batch_size: int,
    max_sentences: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    stride: int | None = None,
    ignore_index: int,
    embeddings: Any = None,
    encoder_tokenizer: Any = None,
    read_options: grain.ReadOptions | None = None,
) -> grain.DatasetIterator:
  """An endless, checkpointable iterator over this process's training batches.

  The windows of all documents are shuffled with `seed` (a new permutation
  each epoch, also a function of `seed`) and grouped into global batches of
  `global_batch_size`; global batches run across epoch ends. Each yields

    tokens [b, S, L] int32, labels [b, S] int32, sentence_mask [b, S] bool,
    example_id [b] int32 (the row's index in the global batch),

  with `b = global_batch_size // process_count`. The batches do not depend on
  the number of processes: concatenating the local batches of all processes
  gives the global batch. `get_state()` / `set_state()` (or orbax via
  `grain.checkpoint.CheckpointSave`) resume exactly.

  Args:
    documents: the training documents, or a `Corpus` of them.
    tokenizer: turns sentences into token ids (of in-memory documents).
    global_batch_size: rows per step over all processes.
    max_sentences: S, sentences per window.
    seed: the shuffle seed (taken modulo 2**32).
    process_index: this process (`jax.process_index()`).
    process_count: number of processes (`jax.process_count()`).
    stride: first-sentence distance of consecutive windows of a long
      document; defaults to `max_sentences` (no overlap).
    ignore_index: label of ignored positions.
    embeddings: an `EmbeddingCache` holding every sentence: batches then
      also carry `embeddings [b, S, D]` float16.
    encoder_tokenizer: a `text.WordpieceTokenizer`: batches then also carry
      `encoder_ids [b, S, L']` (fine-tuning a pretrained encoder).
    read_options: grain prefetching; defaults to one background thread.

  Returns:
    A grain `DatasetIterator` of numpy batches.
  """
  rows = local_rows(global_batch_size, process_index, process_count)
  table = _with_labelled_windows_only(
      window_table(
          documents,
          tokenizer,
          max_sentences=max_sentences,
          stride=stride or max_sentences,
          ignore_index=ignore_index,
          embeddings=embeddings,
          encoder_tokenizer=encoder_tokenizer,
      )
  )
  if not table.num_windows:
    raise ValueError("no training window has a label (documents too short?)")
  logging.info(
      "Training windows: %d from %d documents (%.1f global batches of %d per"
      " epoch)",
      table.num_windows,
      len(documents),
      table.num_windows / global_batch_size,
      global_batch_size,
  )
  dataset = (
      grain.MapDataset.range(table.num_windows)
      .shuffle(seed=int(seed) % 2**32)
      .repeat(None)
      .batch(global_batch_size, drop_remainder=True)
      .map(_LocalBatch(table, rows))
  )
  # A batch is one gather (from memory, or a read of its rows' records): one
  # thread stays ahead of the step, and more would only contend for the GIL.
  read_options = read_options or grain.ReadOptions(
      num_threads=1, prefetch_buffer_size=4
  )
  return iter(dataset.to_iter_dataset(read_options))


class EvalBatches(Sequence):
  """This process's evaluation batches, gathered when read (see below).

  A sequence rather than a list, so that a large dev set is never held in
  memory as batches: each is gathered from the corpus when indexed.
  """

  def __init__(self, table: WindowTable, rows: slice, global_batch_size: int):
    self.table = table
    self.rows = rows
    self.global_batch_size = global_batch_size

  def __len__(self) -> int:
    return -(-self.table.num_windows // self.global_batch_size)

  def __getitem__(self, index: int) -> Batch:
    if not -len(self) <= index < len(self):
      raise IndexError(index)
    index %= len(self)
    first = index * self.global_batch_size
    windows = np.arange(first, first + self.global_batch_size)[self.rows]
    windows = np.where(windows < self.table.num_windows, windows, -1)
    valid = windows >= 0
    safe = np.maximum(windows, 0)
    batch = gather_windows(self.table, windows)
    batch["example_id"] = np.arange(
        self.rows.start, self.rows.stop, dtype=np.int32
    )
    batch["window_doc"] = np.where(
        valid, self.table.window_doc[safe], -1
    ).astype(np.int32)
    batch["window_start"] = np.where(
        valid, self.table.window_start[safe], 0
    ).astype(np.int32)
    batch["valid_example"] = valid
    return batch


def make_eval_batches(
    documents: Sequence[Document] | Corpus,
    tokenizer: Tokenizer,
    *,
    global_batch_size: int,
    max_sentences: int,
    stride: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    ignore_index: int,
    embeddings: Any = None,
    encoder_tokenizer: Any = None,
) -> EvalBatches:
  """This process's evaluation batches: every window exactly once globally.

  Windows overlap (`stride` defaults to `max_sentences // 2`) so that each
  sentence can be predicted with context on both sides; `stitch_window_probs`
  maps the predictions back to documents. Windows are in document order and
  the last global batch is padded with fully masked rows, so every process
  gets the same number of batches. Each batch has the training keys plus

    window_doc [b] int32 (document index, -1 for padding rows),
    window_start [b] int32 (first sentence of the window in its document),
    valid_example [b] bool (False for padding rows).

  Returns:
    The batches, `b = global_batch_size // process_count` rows each.
  """
  rows = local_rows(global_batch_size, process_index, process_count)
  table = window_table(
      documents,
      tokenizer,
      max_sentences=max_sentences,
      stride=stride or max(max_sentences // 2, 1),
      ignore_index=ignore_index,
      embeddings=embeddings,
      encoder_tokenizer=encoder_tokenizer,
  )
  return EvalBatches(table, rows, global_batch_size)


def document_lengths(documents: Sequence[Document] | Corpus) -> np.ndarray:
  """Sentences per document, int32 `[num_docs]`."""
  if hasattr(documents, "lengths"):
    return np.asarray(documents.lengths, np.int32)
  lengths = [doc.num_sentences for doc in documents]
  return np.array(lengths, np.int32).reshape(-1)


def stitch_window_probs(
    window_probs: np.ndarray,
    window_doc: np.ndarray,
    window_start: np.ndarray,
    doc_lengths: Sequence[int],
) -> list[np.ndarray]:
  """Per-window predictions back to one array per document.

  Where windows overlap, a sentence takes its prediction from the window in
  which it has the most context: the larger of its distances to the window's
  two edges, where an edge that is also the document's edge does not count
  (no context is missing there). This is the most centred window; ties go to
  the earlier window. A choice rather than averaging, because a prediction
  made near a cut lacks exactly the context that decides a boundary.

  Args:
    window_probs: `[N, S, ...]` predictions per window row (e.g. boundary
      probabilities `[N, S]`), from all processes' rows of all eval batches.
    window_doc: `[N]` document of each row, -1 for padding rows (skipped).
    window_start: `[N]` first sentence of each row in its document.
    doc_lengths: sentences per document (`document_lengths`).

  Returns:
    `[n_d, ...]` predictions for each document d.

  Raises:
    ValueError: a sentence is covered by no row (e.g. only one process's rows
      were passed).
  """
  window_probs = np.asarray(window_probs)
  stitched = [
      np.zeros((n,) + window_probs.shape[2:], window_probs.dtype)
      for n in doc_lengths
  ]
  best = [np.full(n, -1.0) for n in doc_lengths]
  for probs, doc, start in zip(window_probs, window_doc, window_start):
    if doc < 0:
      continue
    num_sentences = doc_lengths[doc]
    length = min(len(probs), num_sentences - start)
    positions = np.arange(length, dtype=np.float64)
    left = positions if start > 0 else np.full(length, np.inf)
    at_document_end = start + length >= num_sentences
    right = (
        np.full(length, np.inf) if at_document_end else length - 1 - positions
    )
    context = np.minimum(left, right)
    covered = slice(start, start + length)
    better = context > best[doc][covered]
    stitched[doc][covered][better] = probs[:length][better]
    best[doc][covered] = np.where(better, context, best[doc][covered])
  for doc, context in enumerate(best):
    if np.any(context < 0):
      raise ValueError(
          f"document {doc}: sentences {np.flatnonzero(context < 0).tolist()} "
          "are in no window; pass the rows of all processes and batches"
      )
  return stitched


def pad_documents(
    arrays: Sequence[np.ndarray], fill_value: Any = 0
) -> np.ndarray:
  """Per-document `[n_d, ...]` arrays stacked as `[num_docs, max n_d, ...]`."""
  arrays = [np.asarray(a) for a in arrays]
  max_length = max((len(a) for a in arrays), default=0)
  trailing = arrays[0].shape[1:] if arrays else ()
  dtype = arrays[0].dtype if arrays else np.float32
  out = np.full((len(arrays), max_length) + trailing, fill_value, dtype)
  for row, array in zip(out, arrays):
    row[: len(array)] = array
  return out


def padded_gold_and_mask(
    documents: Sequence[Document],
) -> tuple[np.ndarray, np.ndarray]:
  """Metrics inputs: gold int32 `[D, T]` (`boundary_labels`) and mask bool.

  T is the longest document; `mask` is True on every real sentence, the last
  one of each document included (SPEC section 6).
  """
  if hasattr(documents, "gold_labels"):
    labels = documents.gold_labels()
  else:
    labels = [boundary_labels(doc) for doc in documents]
  gold = pad_documents(labels, 0)
  mask = pad_documents([np.ones(len(g), bool) for g in labels], False)
  return gold.astype(np.int32), mask.astype(bool)
