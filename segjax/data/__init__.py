"""segjax input data: readers, the embedded pydoc corpus, tokenizer, batches.

Typical use (what the trainer does):

  splits = data.load_splits(config.data)
  tokenizer = data.Tokenizer(**config.tokenizer)
  train_iter = data.make_train_iterator(
      splits["train"], tokenizer, global_batch_size=..., max_sentences=...,
      seed=config.seed, process_index=jax.process_index(),
      process_count=jax.process_count(), ignore_index=config.loss.ignore_index)
  eval_batches = data.make_eval_batches(splits["dev"], tokenizer, ...)
"""

from segjax.data.corpus import as_corpus
from segjax.data.corpus import Corpus
from segjax.data.corpus import InMemoryCorpus
from segjax.data.corpus import name_rank
from segjax.data.corpus import ShardedCorpus
from segjax.data.documents import check_text
from segjax.data.documents import choi_text
from segjax.data.documents import DataError
from segjax.data.documents import decode_text
from segjax.data.documents import detect_format
from segjax.data.documents import Document
from segjax.data.documents import read_choi_dir
from segjax.data.documents import read_jsonl
from segjax.data.documents import read_wiki727k_dir
from segjax.data.documents import ReadResult
from segjax.data.documents import write_choi_dir
from segjax.data.corpus import boundary_labels
from segjax.data.pydoc_corpus import pydoc_documents
from segjax.data.splits import hold_out
from segjax.data.splits import load_splits
from segjax.data.splits import open_splits
from segjax.data.splits import SOURCES
from segjax.data.text import split_sentences
from segjax.data.text import Tokenizer
from segjax.data.text import WordpieceTokenizer

# Windows and batches, the part that imports grain (and through it JAX), load
# on first use: building shards (`segjax.preprocess`) needs neither.
_PIPELINE_NAMES = frozenset(
    {
        "document_lengths",
        "document_windows",
        "EvalBatches",
        "gather_windows",
        "list_windows",
        "local_rows",
        "make_eval_batches",
        "make_train_iterator",
        "pad_documents",
        "padded_gold_and_mask",
        "sentence_labels",
        "stitch_window_probs",
        "Window",
        "window_starts",
        "window_table",
        "WindowTable",
    }
)


def __getattr__(name):
  if name in _PIPELINE_NAMES:
    from segjax.data import pipeline  # pylint: disable=g-import-not-at-top

    return getattr(pipeline, name)
  raise AttributeError(f"module 'segjax.data' has no attribute {name!r}")
