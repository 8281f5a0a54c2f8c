"""Labels, windows and batches: from documents to model inputs.

Batches hold `tokens [B, S, L]` int32, `labels [B, S]` int32 and
`sentence_mask [B, S]` bool, where S = `max_sentences` and L =
`tokenizer.max_tokens`. Labels follow SPEC section 1: 1 = last sentence of
its segment, 0 = otherwise, `ignore_index` for the last sentence of a document
and for padding. A window cut inside a document keeps the real label of its
last sentence: that sentence is a genuine prediction target.

Documents longer than S sentences are cut into windows. The windows of a
corpus are listed once, when the pipeline is built, as runs of one flat
numbering of sentence rows; a batch is a numpy gather of token ids, and each
distinct sentence is tokenized the first time a batch needs it (then cached),
which keeps the input pipeline far ahead of the train step.

Multi-process runs: every process lists the same global sequence of windows
and the same global batches of `global_batch_size` rows, and process i keeps
rows `[i * b, (i + 1) * b)` with `b = global_batch_size // process_count`. So
P processes see exactly the global batches of one process, in the same order,
and each process tokenizes and materialises only its own rows: its shard.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

from absl import logging
import grain
import numpy as np

from segjax.data.documents import Document
from segjax.embedding_cache import sentence_digests
from segjax.data.text import Tokenizer

Batch = dict[str, np.ndarray]


def boundary_labels(document: Document) -> np.ndarray:
  """Gold labels of a document, int32 `[n]`: 1 at every segment's last sentence.

  The document's last sentence is 1 too (it ends a segment); this is the gold
  array for the metrics, which ignore that position anyway.
  """
  labels = np.zeros(document.num_sentences, np.int32)
  ends = np.cumsum([len(s) for s in document.segments], dtype=np.int64) - 1
  labels[ends] = 1
  return labels


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


class _LazyRows:
  """Token ids per distinct sentence, computed when first needed, then kept.

  The array is `np.zeros`, which pages in lazily, so sentences never
  gathered (other processes' rows) cost no memory. `tokenizer` has
  `max_tokens`, `id_dtype` and `encode(sentences) -> [n, max_tokens]`.
  """

  def __init__(self, tokenizer, num_sentences: int):
    self._tokenizer = tokenizer
    self._ids = np.zeros(
        (num_sentences, tokenizer.max_tokens), tokenizer.id_dtype
    )
    self._done = np.zeros(num_sentences, bool)

  def get(self, ids: np.ndarray, sentences: Sequence[str]) -> np.ndarray:
    missing = np.unique(ids[~self._done[ids]])
    if missing.size:
      encoded = self._tokenizer.encode([sentences[i] for i in missing])
      self._ids[missing] = encoded
      self._done[missing] = True
    return self._ids[ids]


@dataclasses.dataclass(frozen=True, eq=False)
class WindowTable:
  """Every window of a corpus; sentences are tokenized when first gathered.

  Sentence rows of all documents are numbered back to back; a window is a
  run of consecutive rows of one document. Token ids are computed on demand
  and cached per distinct sentence, so a process of a multi-process job only
  ever tokenizes the sentences of its own rows of each batch.

  Attributes:
    sentences: the distinct sentences of the corpus.
    sentence_ids: `[num_rows]` int64 index into `sentences` of every row.
    labels: `[num_rows]` int32 training labels (`sentence_labels`).
    window_doc: `[W]` int32 document index of each window.
    window_start: `[W]` int32 first sentence of each window in its document.
    window_offset: `[W]` int64 row of that sentence.
    window_length: `[W]` int32 sentences in each window.
    max_sentences: S, the padded number of sentences per window.
    ignore_index: the label of ignored positions.
    tokenizer: turns sentences into token ids.
    embeddings: pretrained sentence vectors (an `EmbeddingCache` holding
      every sentence), or None.
    embedding_rows: `[len(sentences)]` int64 cache row of each sentence.
    encoder_tokenizer: a pretrained encoder's tokenizer
      (`text.WordpieceTokenizer`) when the encoder is fine-tuned: batches
      then carry its `encoder_ids`; or None.
  """

  sentences: tuple[str, ...]
  sentence_ids: np.ndarray
  labels: np.ndarray
  window_doc: np.ndarray
  window_start: np.ndarray
  window_offset: np.ndarray
  window_length: np.ndarray
  max_sentences: int
  ignore_index: int
  tokenizer: Tokenizer
  embeddings: Any = None
  embedding_rows: np.ndarray | None = None
  encoder_tokenizer: Any = None
  _tokens: _LazyRows = dataclasses.field(init=False, repr=False)
  _encoder_ids: _LazyRows | None = dataclasses.field(init=False, repr=False)

  def __post_init__(self):
    lazy = lambda tokenizer: _LazyRows(tokenizer, len(self.sentences))
    object.__setattr__(self, "_tokens", lazy(self.tokenizer))
    object.__setattr__(
        self,
        "_encoder_ids",
        lazy(self.encoder_tokenizer) if self.encoder_tokenizer else None,
    )

  @property
  def num_windows(self) -> int:
    return len(self.window_doc)

  def tokens(self, rows: np.ndarray) -> np.ndarray:
    """Token ids `[len(rows), L]` of sentence rows, tokenizing new ones."""
    return self._tokens.get(self.sentence_ids[rows], self.sentences)

  def encoder_ids(self, rows: np.ndarray) -> np.ndarray:
    """The pretrained encoder's wordpiece ids `[len(rows), L']` of rows."""
    return self._encoder_ids.get(self.sentence_ids[rows], self.sentences)


def tokenize_windows(
    documents: Sequence[Document],
    tokenizer: Tokenizer,
    *,
    max_sentences: int,
    stride: int,
    ignore_index: int,
    embeddings: Any = None,
    encoder_tokenizer: Any = None,
) -> WindowTable:
  """Lists a corpus's windows (see `WindowTable`; tokens come on demand).

  Raises:
    ValueError: `embeddings` (an `EmbeddingCache`) lacks a sentence.
  """
  lengths = np.array([doc.num_sentences for doc in documents], np.int64)
  doc_offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
  # Distinct sentences are tokenized once: corpora built from a sentence
  # pool (like the pydoc one) repeat sentences many times.
  id_of_sentence = {}
  sentence_ids = np.fromiter(
      (
          id_of_sentence.setdefault(sentence, len(id_of_sentence))
          for doc in documents
          for sentence in doc.sentences
      ),
      np.int64,
      int(lengths.sum()),
  )
  labels = [sentence_labels(doc, ignore_index) for doc in documents]
  windows = [
      (index, start)
      for index, doc in enumerate(documents)
      for start in window_starts(doc.num_sentences, max_sentences, stride)
  ]
  window_doc = np.array([d for d, _ in windows], np.int32).reshape(-1)
  window_start = np.array([s for _, s in windows], np.int32).reshape(-1)
  sentences = tuple(id_of_sentence)
  embedding_rows = None
  if embeddings is not None:
    embedding_rows = embeddings.rows(sentence_digests(sentences))
    if (embedding_rows < 0).any():
      missing = sentences[int(np.argmin(embedding_rows))]
      raise ValueError(
          f"the embedding cache {embeddings.folder} lacks the sentence "
          f"{missing[:80]!r} (and {int((embedding_rows < 0).sum()) - 1} more)"
      )
  return WindowTable(
      sentences=sentences,
      sentence_ids=sentence_ids,
      labels=np.concatenate(labels) if labels else np.zeros(0, np.int32),
      window_doc=window_doc,
      window_start=window_start,
      window_offset=doc_offsets[window_doc] + window_start,
      window_length=np.minimum(
          lengths[window_doc] - window_start, max_sentences
      ).astype(np.int32),
      max_sentences=max_sentences,
      ignore_index=ignore_index,
      tokenizer=tokenizer,
      embeddings=embeddings,
      embedding_rows=embedding_rows,
      encoder_tokenizer=encoder_tokenizer,
  )


def _with_labelled_windows_only(table: WindowTable) -> WindowTable:
  """The table without windows that have no label to learn from.

  Such windows are a lone document-final sentence (a one-sentence document
  or the tail window of a long one); they would only dilute batches.
  """
  is_labelled = table.labels != table.ignore_index
  labelled = np.concatenate([[0], np.cumsum(is_labelled)])
  end = table.window_offset + table.window_length
  has_label = labelled[end] > labelled[table.window_offset]
  return dataclasses.replace(
      table,
      window_doc=table.window_doc[has_label],
      window_start=table.window_start[has_label],
      window_offset=table.window_offset[has_label],
      window_length=table.window_length[has_label],
  )


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
  flat = np.where(
      sentence_mask, table.window_offset[safe_rows][:, None] + positions, 0
  )
  tokens = np.zeros(
      sentence_mask.shape + (table.tokenizer.max_tokens,), np.int32
  )
  tokens[sentence_mask] = table.tokens(flat[sentence_mask])
  labels = np.where(sentence_mask, table.labels[flat], table.ignore_index)
  batch = {
      "tokens": tokens,
      "labels": labels.astype(np.int32),
      "sentence_mask": sentence_mask,
  }
  if table.embeddings is not None:
    rows_of = table.embedding_rows[table.sentence_ids[flat[sentence_mask]]]
    embeddings = np.zeros(
        sentence_mask.shape + (table.embeddings.dim,), np.float16
    )
    embeddings[sentence_mask] = table.embeddings.vectors(rows_of)
    batch["embeddings"] = embeddings
  if table.encoder_tokenizer is not None:
    encoder_ids = np.zeros(
        sentence_mask.shape + (table.encoder_tokenizer.max_tokens,), np.int32
    )
    encoder_ids[sentence_mask] = table.encoder_ids(flat[sentence_mask])
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
    documents: Sequence[Document],
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
    documents: the training documents.
    tokenizer: turns sentences into token ids.
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
      tokenize_windows(
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
  # The data are in memory and a batch is one gather: one thread suffices to
  # stay ahead of the step, and more would only contend for the GIL.
  read_options = read_options or grain.ReadOptions(
      num_threads=1, prefetch_buffer_size=4
  )
  return iter(dataset.to_iter_dataset(read_options))


def make_eval_batches(
    documents: Sequence[Document],
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
) -> list[Batch]:
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
  table = tokenize_windows(
      documents,
      tokenizer,
      max_sentences=max_sentences,
      stride=stride or max(max_sentences // 2, 1),
      ignore_index=ignore_index,
      embeddings=embeddings,
      encoder_tokenizer=encoder_tokenizer,
  )
  num_batches = -(-table.num_windows // global_batch_size)
  padded = np.full(num_batches * global_batch_size, -1, np.int64)
  padded[: table.num_windows] = np.arange(table.num_windows)
  batches = []
  for global_windows in padded.reshape(num_batches, global_batch_size):
    windows = global_windows[rows]
    valid = windows >= 0
    batch = gather_windows(table, windows)
    batch["example_id"] = np.arange(rows.start, rows.stop, dtype=np.int32)
    batch["window_doc"] = np.where(
        valid, table.window_doc[np.maximum(windows, 0)], -1
    ).astype(np.int32)
    batch["window_start"] = np.where(
        valid, table.window_start[np.maximum(windows, 0)], 0
    ).astype(np.int32)
    batch["valid_example"] = valid
    batches.append(batch)
  return batches


def document_lengths(documents: Sequence[Document]) -> np.ndarray:
  """Sentences per document, int32 `[num_docs]`."""
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
  gold = pad_documents([boundary_labels(doc) for doc in documents], 0)
  mask = pad_documents(
      [np.ones(doc.num_sentences, bool) for doc in documents], False
  )
  return gold.astype(np.int32), mask.astype(bool)
