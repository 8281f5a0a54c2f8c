"""The segmentation model: sentence encoder -> document encoder -> tags.

A hierarchical Flax (linen) model over windows of sentences:

  tokens [B, S, L] -> SentenceEncoder -> sentence_projection --+
        |                                                      + -> [B, S, H]
        +-> cohesion_features [B, S, F] -> cohesion_projection -+
                                                               |
         logits [B, S, C] float32 <- classifier <- document encoder
                                      (pre-LN transformer | BiLSTM)

The sentence encoder embeds hashed token ids and pools them (masked mean and
max), optionally after a small transformer over the tokens. The document
encoder contextualises the sentences of a window; its transformer uses learned
relative-position attention biases, so windows of any length work.

Lexical cohesion (`cohesion_window > 0`, on by default). Embeddings learned on
the training topics say little about unseen topics; what carries over is
*whether neighbouring sentences share words*. So every sentence also gets
TextTiling-style block similarities (`cohesion_features`): the cosine between
the bags of words of the k sentences before a gap and the k after it, for
k = 1..`cohesion_window`, at the gaps around the sentence. Bags are exact over
hashed token ids (no vocabulary, no projection) and weighted by the inverse
document frequency of each id *within the window* (`window_idf`), which needs
no training statistics and so treats unseen topics like seen ones. A
convolution over 5 sentences projects the features, so a local dip of
similarity is visible before any attention. On the pydoc data (topic-disjoint
splits) the features take test Pk from ~0.45 to ~0.25.

Dropout is per example: every example has its own PRNG key (the trainer folds
the step and the example's index in the global batch into a base key), so a
dropout mask depends on the example, never on the device it lands on, and a
global batch gives the same update on any number of devices.

Padding: sentences with `sentence_mask` False never influence real sentences
(their tokens are zeroed, attention ignores them, the BiLSTM stops at each
row's length). The mask must be a prefix of each row (left-aligned windows),
which is what `segjax.data` produces.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any
import zlib

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from segjax import config_lib

SENTENCE_ENCODERS = ("hashed", "pretrained")
DOCUMENT_ENCODERS = ("transformer", "bilstm")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# Token distances beyond this share one attention bias in the sentence
# transformer: word order matters locally, and any sentence length works.
_MAX_TOKEN_DISTANCE = 16
# Sentences the convolution over the cohesion features spans (see __call__).
_COHESION_KERNEL = 5
# Tokens per row that `window_document_frequency` can pack: 2**16 leaves 15
# bits of the int32 sort key for the id.
_MAX_POSITION_BITS = 16


# ----------------------------------------------------------------------------
# Per-example dropout.
# ----------------------------------------------------------------------------


def _call_site_id(path: Sequence[str]) -> int:
  """A stable 31-bit id of a module path (the same in every process and run)."""
  return zlib.crc32("/".join(path).encode()) & 0x7FFFFFFF


def _example_keep_mask(
    module: nn.Module,
    example_rngs: jax.Array | None,
    keep_prob: float,
    shape: Sequence[int],
) -> jax.Array:
  """bool `[B, *shape]`: example b's draw from `fold_in(example_rngs[b], site)`.

  `site` is a stable id of the calling module's path, so call sites draw
  independent masks, and an example's mask depends only on its own key (not
  on the device or its row in the local batch).
  """
  if example_rngs is None:
    raise ValueError("train=True with dropout needs example_rngs")
  site = _call_site_id(module.path)
  return jax.vmap(
      lambda key: jax.random.bernoulli(
          jax.random.fold_in(key, site), keep_prob, tuple(shape)
      )
  )(example_rngs)


class PerExampleDropout(nn.Module):
  """Inverted dropout whose mask is drawn from each example's own key.

  Flax's `nn.Dropout` draws from the device's 'dropout' stream, so the mask
  of an example would depend on where it lands; see `_example_keep_mask`.

  Attributes:
    rate: probability of zeroing an element.
  """

  rate: float

  @nn.compact
  def __call__(
      self, x: jax.Array, example_rngs: jax.Array | None, *, deterministic: bool
  ) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    keep_prob = 1.0 - self.rate
    keep = _example_keep_mask(self, example_rngs, keep_prob, x.shape[1:])
    return jnp.where(keep, x / keep_prob, 0).astype(x.dtype)


class WordDropout(nn.Module):
  """Removes whole tokens from a token mask, per example.

  Pooling then averages over the remaining tokens. Cheaper than dropout on
  every embedding feature (one draw per token rather than `embed_dim`), and
  a sentence must be recognised from a subset of its words, which discourages
  memorising the few words that identify a training topic.

  Attributes:
    rate: probability of dropping a token.
  """

  rate: float

  @nn.compact
  def __call__(
      self,
      token_mask: jax.Array,
      example_rngs: jax.Array | None,
      *,
      deterministic: bool,
  ) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return token_mask
    return token_mask & _example_keep_mask(
        self, example_rngs, 1.0 - self.rate, token_mask.shape[1:]
    )


# ----------------------------------------------------------------------------
# Lexical-cohesion features.
# ----------------------------------------------------------------------------


def _shift(x: jax.Array, offset: int) -> jax.Array:
  """`x[:, i + offset]` along axis 1, 0 where `i + offset` is out of range."""
  size = x.shape[1]
  if offset == 0:
    return x
  if abs(offset) >= size:
    return jnp.zeros_like(x)
  padding = [(0, 0)] * x.ndim
  if offset > 0:
    padding[1] = (0, offset)
    return jnp.pad(x[:, offset:], padding)
  padding[1] = (-offset, 0)
  return jnp.pad(x[:, :offset], padding)


def _differs_from_previous(x: jax.Array) -> jax.Array:
  """bool: `x[:, i] != x[:, i - 1]` along axis 1, True at i = 0."""
  first = jnp.ones((x.shape[0], 1), bool)
  return jnp.concatenate([first, x[:, 1:] != x[:, :-1]], axis=1)


def window_document_frequency(tokens: jax.Array) -> jax.Array:
  """For every token, the number of sentences of its row that contain its id.

  Computed by sorting, once per row, the token ids packed with their
  positions into one int32 key (sorting one key is ~5x faster on CPU than
  sorting key-value pairs, and far cheaper than comparing all S*L x S*L token
  pairs). Ids are reduced modulo 2**(31 - position bits) to fit, which is
  exact for ids below 2**15 (the default `num_buckets`) with up to S * L =
  2**16 tokens per row; larger ids may rarely share a count.

  Args:
    tokens: int `[B, S, L]`.

  Returns:
    int32 `[B, S, L]` (padding id 0 gets a count too; callers mask it).
  """
  batch, sentences, length = tokens.shape
  size = sentences * length
  position_bits = max((size - 1).bit_length(), 1)
  if position_bits > _MAX_POSITION_BITS:
    raise ValueError(
        f"window_document_frequency: S * L = {size} tokens per row; at most "
        f"{2**_MAX_POSITION_BITS} supported"
    )
  id_mask = (1 << (31 - position_bits)) - 1
  index = jnp.arange(size, dtype=jnp.int32)
  packed = (
      (tokens.reshape(batch, size).astype(jnp.int32) & id_mask) << position_bits
  ) | index
  packed = jnp.sort(packed, axis=1)
  ids = packed >> position_bits
  position = packed & ((1 << position_bits) - 1)
  # Sorted by (id, position): each id is one run, and within it each
  # sentence is a sub-run; count the sub-runs of every run.
  new_id = _differs_from_previous(ids)
  new_pair = new_id | _differs_from_previous(position // length)
  pairs_so_far = jnp.cumsum(new_pair, axis=1, dtype=jnp.int32)
  run_first = lax.cummax(jnp.where(new_id, index, 0), axis=1)
  run_ends = jnp.concatenate([new_id[:, 1:], jnp.ones((batch, 1), bool)], 1)
  run_last = lax.cummin(jnp.where(run_ends, index, size), axis=1, reverse=True)
  counts = (
      jnp.take_along_axis(pairs_so_far, run_last, axis=1)
      - jnp.take_along_axis(pairs_so_far, run_first, axis=1)
      + 1
  )
  # Back to token order: sort again by position, the count in the low bits.
  count_bits = max(sentences.bit_length(), 1)
  restored = jnp.sort((position << count_bits) | counts, axis=1)
  return (restored & ((1 << count_bits) - 1)).reshape(tokens.shape)


def window_idf(tokens: jax.Array, sentence_mask: jax.Array) -> jax.Array:
  """Inverse document frequency of each token within its window, float32.

  `log((n + 1) / (df + 0.5))` with n the window's sentences and df those
  containing the token; 0 for padding tokens. Words spread over the whole
  window (function words, the domain's everyday words) weigh little, words
  confined to a few neighbouring sentences (a segment's topic words) weigh
  most. Needs no vocabulary and no training statistics, so it behaves the same
  on unseen topics; on the pydoc data it beats uniform weights by ~0.1 Pk and
  even IDF from the training corpus.
  """
  n = sentence_mask.sum(axis=1, dtype=jnp.int32)[:, None, None]
  df = window_document_frequency(tokens)
  idf = jnp.log((n + 1.0) / (df + 0.5))
  return jnp.where(tokens != 0, idf, 0.0)


def sentence_gram_band(
    tokens: jax.Array, token_weights: jax.Array, max_offset: int
) -> jax.Array:
  """Dot products of the weighted bags of words of nearby sentences.

  With `c_i(t)` the count of token id t in sentence i and `w_t` its weight,
  `out[b, i, d] = sum_t w_t^2 c_i(t) c_{i+d}(t)` for d = 0..max_offset (0
  past the end). Exact, and cheaper than bags over the hashed vocabulary:
  each token of sentence i counts its copies in sentence i+d by comparing ids
  (L x L integer compares, which XLA vectorises well; a float einsum over the
  same comparisons is ~30x slower on CPU), then adds `w_t^2` per copy.

  Args:
    tokens: int `[B, S, L]` token ids, 0 = padding (contributes nothing).
    token_weights: float `[B, S, L]` weight of each token; equal ids in a row
      must have equal weights (true of `window_idf`).
    max_offset: largest sentence distance d.

  Returns:
    float32 `[B, S, max_offset + 1]`.
  """
  squared = jnp.where(tokens != 0, token_weights, 0.0).astype(jnp.float32) ** 2
  columns = []
  for offset in range(max_offset + 1):
    same = tokens[..., :, None] == _shift(tokens, offset)[..., None, :]
    copies = same.sum(axis=-1, dtype=jnp.int32)
    columns.append((squared * copies).sum(axis=-1))
  return jnp.stack(columns, axis=-1)


def band_to_matrix(band: jax.Array) -> jax.Array:
  """The symmetric `[B, S, S]` matrix of a band, zero beyond its width.

  `out[b, i, j] = band[b, min(i, j), |i - j|]` when `|i - j| <= D`.
  """
  size, max_offset = band.shape[1], band.shape[2] - 1
  rows, cols = np.indices((size, size))
  distance = np.abs(rows - cols)
  values = band[:, np.minimum(rows, cols), np.minimum(distance, max_offset)]
  return jnp.where(distance <= max_offset, values, 0.0)


def gap_similarities(gram: jax.Array, window: int) -> jax.Array:
  """Block cosine similarities at the gap after each sentence.

  `out[b, i, k-1]` is the cosine between the summed bags of sentences
  `i-k+1..i` and `i+1..i+k` (TextTiling's block comparison), k = 1..window.
  Blocks are cut at the ends of the row; an empty block gives 0. Every block
  sum is read off 2-D prefix sums of the Gram matrix.

  Args:
    gram: `[B, S, S]` dot products of the sentences' bags of words, exact at
      least up to distance `2 * window - 1`.
    window: the largest block size.

  Returns:
    float32 `[B, S, window]`.
  """
  size = gram.shape[1]
  prefix = jnp.pad(gram.cumsum(axis=1).cumsum(axis=2), ((0, 0), (1, 0), (1, 0)))

  def block_sum(row_start, row_end, col_start, col_end):
    return (
        prefix[:, row_end, col_end]
        - prefix[:, row_start, col_end]
        - prefix[:, row_end, col_start]
        + prefix[:, row_start, col_start]
    )

  gap = np.arange(size)[:, None]
  k = np.arange(1, window + 1)[None, :]
  start = np.clip(gap - k + 1, 0, size)
  middle = np.broadcast_to(np.clip(gap + 1, 0, size), start.shape)
  end = np.clip(gap + k + 1, 0, size)
  cross = block_sum(start, middle, middle, end)
  norm_before = block_sum(start, middle, start, middle)
  norm_after = block_sum(middle, end, middle, end)
  # The floor keeps empty blocks (norm 0, cross 0) at 0 instead of NaN.
  return cross * lax.rsqrt(jnp.maximum(norm_before * norm_after, 1e-12))


def cohesion_features(
    tokens: jax.Array, sentence_mask: jax.Array, window: int
) -> jax.Array:
  """Topic-independent boundary evidence for each sentence.

  Bags of words are weighted by `window_idf`. For sentence i: the block
  similarities (`gap_similarities`, k = 1..window) at the gap before it,
  after it (the boundary its label is about) and after the next sentence, so
  that a dip is visible locally, plus two flags saying whether a previous /
  next sentence exists (a 0 similarity at a window edge is no evidence of a
  boundary). Parameter-free: nothing here can memorise a training topic.

  Args:
    tokens: int `[B, S, L]`, padding sentences already zeroed.
    sentence_mask: bool `[B, S]`.
    window: largest block size (>= 1).

  Returns:
    float32 `[B, S, 3 * window + 2]`, zero on padding sentences.
  """
  weights = window_idf(tokens, sentence_mask)
  band = sentence_gram_band(tokens, weights, 2 * window - 1)
  gap = gap_similarities(band_to_matrix(band), window)
  return _gap_context(gap, sentence_mask)


def _gap_context(gap: jax.Array, sentence_mask: jax.Array) -> jax.Array:
  """Each sentence's gaps before, after and after the next, plus two flags
  saying whether a previous / next sentence exists; zero on padding."""
  mask = sentence_mask.astype(jnp.float32)[..., None]
  return (
      jnp.concatenate(
          [
              _shift(gap, -1),
              gap,
              _shift(gap, 1),
              _shift(mask, -1),
              _shift(mask, 1),
          ],
          axis=-1,
      )
      * mask
  )


def semantic_cohesion_features(
    embeddings: jax.Array, sentence_mask: jax.Array, window: int
) -> jax.Array:
  """Embedding-based boundary evidence, laid out as `cohesion_features`.

  The cosine between the summed sentence embeddings of the k sentences
  before a gap and the k after it, k = 1..window (the signal embedding-based
  segmenters threshold), read off the Gram matrix of the embeddings with
  `gap_similarities`. Parameter-free.

  Args:
    embeddings: float `[B, S, D]`, zero on padding sentences.
    sentence_mask: bool `[B, S]`.
    window: largest block size (>= 1).

  Returns:
    float32 `[B, S, 3 * window + 2]`, zero on padding sentences.
  """
  vectors = embeddings.astype(jnp.float32)
  gram = jnp.einsum("bsd,btd->bst", vectors, vectors)
  return _gap_context(gap_similarities(gram, window), sentence_mask)


# ----------------------------------------------------------------------------
# Transformer (pre-LN, relative position biases).
# ----------------------------------------------------------------------------


def _locality_init(key, shape, dtype=jnp.float32):
  """Relative-bias table `[2 D + 1, heads]` starting at `-|distance| / 2**h`.

  Head h starts out attending mostly within ~2**h positions (as ALiBi), so
  that neighbouring sentences, where boundaries are decided, matter from the
  first step; training is free to change it.
  """
  del key
  size, num_heads = shape
  distance = np.abs(np.arange(size) - size // 2)[:, None]
  slopes = 2.0 ** -np.arange(num_heads)[None, :]
  return jnp.asarray(-distance * slopes, dtype)


class RelativePositionBias(nn.Module):
  """A learned attention bias per head and clipped distance `key - query`.

  Relative rather than absolute positions: a window may have any length and
  start anywhere in a document, and a boundary is about neighbours.
  """

  num_heads: int
  max_distance: int
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, length: int) -> jax.Array:
    """The bias, float32 `[num_heads, length, length]`."""
    table = self.param(
        "bias",
        _locality_init,
        (2 * self.max_distance + 1, self.num_heads),
        self.param_dtype,
    )
    positions = np.arange(length)
    distance = np.clip(
        positions[None, :] - positions[:, None],
        -self.max_distance,
        self.max_distance,
    )
    return jnp.transpose(table[distance + self.max_distance], (2, 0, 1))


class SelfAttention(nn.Module):
  """Multi-head self-attention over axis -2 with a key mask and position bias.

  Any number of leading batch axes (the sentence transformer runs on
  `[B, S, L, E]`, the document transformer on `[B, S, H]`). The softmax is
  computed in float32 whatever `dtype` is.
  """

  num_heads: int
  max_distance: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    features = x.shape[-1]
    if features % self.num_heads:
      raise ValueError(
          f"features {features} not divisible by num_heads {self.num_heads}"
      )
    head_dim = features // self.num_heads
    dense = lambda shape, axis, name: nn.DenseGeneral(
        shape,
        axis=axis,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name=name,
    )
    qkv = dense((3, self.num_heads, head_dim), -1, "qkv")(x)
    query, key, value = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
    scores = jnp.einsum("...qhd,...khd->...hqk", query, key).astype(jnp.float32)
    scores = scores / np.sqrt(head_dim) + RelativePositionBias(
        self.num_heads, self.max_distance, self.param_dtype, name="position"
    )(x.shape[-2])
    # A finite fill: a row whose keys are all masked (a padding row) gets
    # uniform weights instead of NaN.
    scores = jnp.where(mask[..., None, None, :], scores, -1e9)
    weights = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
    attended = jnp.einsum("...hqk,...khd->...qhd", weights, value)
    return dense(features, (-2, -1), "out")(attended)


class TransformerEncoder(nn.Module):
  """Pre-LN transformer blocks over axis -2, then a final LayerNorm."""

  num_layers: int
  num_heads: int
  mlp_dim: int
  dropout_rate: float
  max_distance: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(
      self,
      x: jax.Array,
      mask: jax.Array,
      example_rngs: jax.Array | None,
      *,
      deterministic: bool,
  ) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    drop = lambda y: PerExampleDropout(self.dropout_rate)(
        y, example_rngs, deterministic=deterministic
    )
    for _ in range(self.num_layers):
      y = nn.LayerNorm(**kw)(x)
      y = SelfAttention(self.num_heads, self.max_distance, **kw)(y, mask)
      x = x + drop(y)
      y = nn.LayerNorm(**kw)(x)
      y = nn.gelu(nn.Dense(self.mlp_dim, **kw)(y))
      y = nn.Dense(x.shape[-1], **kw)(y)
      x = x + drop(y)
    return nn.LayerNorm(**kw)(x)


# ----------------------------------------------------------------------------
# BiLSTM.
# ----------------------------------------------------------------------------


class BiLSTMEncoder(nn.Module):
  """Stacked bidirectional LSTMs over left-aligned variable-length rows.

  `seq_lengths` stops the forward pass at each row's last sentence and starts
  the backward pass there (`nn.Bidirectional` reverses with `keep_order`), so
  padding never reaches a real sentence. Each direction has
  `hidden_dim // 2` units.
  """

  num_layers: int
  hidden_dim: int
  dropout_rate: float
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(
      self,
      x: jax.Array,
      mask: jax.Array,
      example_rngs: jax.Array | None,
      *,
      deterministic: bool,
  ) -> jax.Array:
    lengths = mask.sum(axis=-1).astype(jnp.int32)
    rnn = lambda: nn.RNN(
        nn.OptimizedLSTMCell(
            self.hidden_dim // 2, dtype=self.dtype, param_dtype=self.param_dtype
        )
    )
    for layer in range(self.num_layers):
      if layer:
        x = PerExampleDropout(self.dropout_rate)(
            x, example_rngs, deterministic=deterministic
        )
      x = nn.Bidirectional(rnn(), rnn())(x, seq_lengths=lengths)
    return nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype)(x)


# ----------------------------------------------------------------------------
# Sentence encoder.
# ----------------------------------------------------------------------------


def masked_mean_max(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean and max of `x [..., L, E]` over the positions where `mask [..., L]`.

  Empty rows give zeros (count floored at 1, max taken over a finite fill and
  then replaced), never NaN or -inf.

  Returns:
    `[..., 2 * E]`: the mean, then the max.
  """
  mask = mask[..., None]
  count = mask.sum(axis=-2)
  mean = jnp.where(mask, x, 0).sum(axis=-2) / jnp.maximum(count, 1).astype(
      x.dtype
  )
  largest = jnp.where(mask, x, jnp.finfo(x.dtype).min).max(axis=-2)
  largest = jnp.where(count > 0, largest, 0)
  return jnp.concatenate([mean, largest], axis=-1)


class HashedSentenceEncoder(nn.Module):
  """Hashed-token embeddings, `num_layers` token transformer blocks (maybe 0),
  mean+max pooling.

  Returns `[B, S, hidden_dim]` sentence vectors.
  """

  num_buckets: int
  embed_dim: int
  hidden_dim: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  dropout_rate: float
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(
      self,
      tokens: jax.Array,
      example_rngs: jax.Array | None,
      *,
      deterministic: bool,
  ) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    token_mask = WordDropout(self.dropout_rate)(
        tokens != 0, example_rngs, deterministic=deterministic
    )
    x = nn.Embed(self.num_buckets, self.embed_dim, name="embed", **kw)(tokens)
    if self.num_layers:
      x = TransformerEncoder(
          self.num_layers,
          self.num_heads,
          self.mlp_dim,
          self.dropout_rate,
          _MAX_TOKEN_DISTANCE,
          **kw,
      )(x, token_mask, example_rngs, deterministic=deterministic)
    pooled = PerExampleDropout(self.dropout_rate)(
        masked_mean_max(x, token_mask),
        example_rngs,
        deterministic=deterministic,
    )
    return nn.gelu(nn.Dense(self.hidden_dim, **kw)(pooled))


# ----------------------------------------------------------------------------
# The model.
# ----------------------------------------------------------------------------


class SegmentationModel(nn.Module):
  """Per-sentence boundary logits for windows of sentences.

  Attributes:
    num_buckets: token id space (the tokenizer's `num_buckets`).
    num_classes: output classes (2: inside / last sentence of a segment).
    embed_dim: token embedding size.
    hidden_dim: sentence vector and document encoder width.
    num_layers: document encoder layers.
    num_heads: attention heads (both transformers).
    mlp_dim: transformer MLP width.
    dropout_rate: word dropout on tokens, dropout on pooled sentence
      vectors, residual branches and between BiLSTM layers.
    sentence_encoder: "hashed" (`HashedSentenceEncoder` over `tokens`) or
      "pretrained" (projects the `embeddings` of a pretrained encoder,
      computed outside the model: `segjax.encoders`, `embedding_cache`).
    token_layers: hashed encoder only: transformer blocks over the tokens
      before pooling (0 = pool the word embeddings).
    semantic_cohesion: pretrained only: block cosine similarities of the
      sentence embeddings at each gap (k = 1..cohesion_window), beside the
      lexical ones.
    document_encoder: "transformer" or "bilstm".
    max_sentences: the document transformer learns an attention bias for
      each sentence distance below this (longer windows work too: farther
      sentences share the farthest bias).
    cohesion_window: largest block size of the lexical-cohesion features; 0
      disables them.
    dtype: computation dtype, "float32" or "bfloat16" (TPU); logits are
      always float32.
    encoder: a pretrained sentence encoder (`encoders.BertEncoder`) to
      fine-tune inside the model, reading `encoder_ids`; None reads
      precomputed `embeddings` instead.
    param_dtype: parameter dtype.
  """

  num_buckets: int
  num_classes: int
  embed_dim: int
  hidden_dim: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  dropout_rate: float
  sentence_encoder: str
  token_layers: int
  document_encoder: str
  max_sentences: int
  cohesion_window: int
  semantic_cohesion: bool
  dtype: str
  encoder: nn.Module | None = None
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    # The lists the config is validated against are the ones dispatched on.
    config_lib.check_choice(
        "model.sentence_encoder", self.sentence_encoder, SENTENCE_ENCODERS
    )
    config_lib.check_choice(
        "model.document_encoder", self.document_encoder, DOCUMENT_ENCODERS
    )
    config_lib.check_choice("model.dtype", self.dtype, DTYPES)
    super().__post_init__()

  def _encode(self, encoder_ids: jax.Array | None) -> jax.Array:
    """`[B, S, D]` embeddings of every sentence, through `encoder`."""
    if encoder_ids is None:
      raise ValueError("a model with an encoder needs encoder_ids")
    batch, sentences, length = encoder_ids.shape
    ids = encoder_ids.reshape(batch * sentences, length)
    return self.encoder(ids, ids != 0).reshape(batch, sentences, -1)

  @nn.compact
  def __call__(
      self,
      tokens: jax.Array,
      sentence_mask: jax.Array,
      embeddings: jax.Array | None = None,
      encoder_ids: jax.Array | None = None,
      *,
      train: bool,
      example_rngs: jax.Array | None = None,
  ) -> jax.Array:
    """Boundary logits.

    Args:
      tokens: int `[B, S, L]` hashed token ids, 0 = padding (the hashed
        encoder's input, and the lexical cohesion features').
      sentence_mask: bool `[B, S]`, True on real sentences (a prefix of each
        row).
      embeddings: float `[B, S, D]` pretrained sentence embeddings (for
        `sentence_encoder="pretrained"` without `encoder`).
      encoder_ids: int `[B, S, L']` the encoder's wordpiece ids, 0 = padding
        (for a model with an `encoder`).
      train: apply dropout.
      example_rngs: `[B]` PRNG keys, one per example; needed when training
        with dropout.

    Returns:
      float32 `[B, S, num_classes]`.
    """
    kw = dict(dtype=DTYPES[self.dtype], param_dtype=self.param_dtype)
    deterministic = not train
    tokens = jnp.where(sentence_mask[..., None], tokens, 0)
    if self.sentence_encoder == "hashed":
      sentences = HashedSentenceEncoder(
          self.num_buckets,
          self.embed_dim,
          self.hidden_dim,
          self.token_layers,
          self.num_heads,
          self.mlp_dim,
          self.dropout_rate,
          **kw,
      )(tokens, example_rngs, deterministic=deterministic)
    else:
      if self.encoder is not None:
        embeddings = self._encode(encoder_ids)
      if embeddings is None:
        raise ValueError("sentence_encoder='pretrained' needs embeddings")
      embeddings = jnp.where(sentence_mask[..., None], embeddings, 0).astype(
          jnp.float32
      )
      sentences = PerExampleDropout(self.dropout_rate)(
          embeddings, example_rngs, deterministic=deterministic
      )
    x = nn.Dense(self.hidden_dim, name="sentence_projection", **kw)(sentences)
    features = []
    if self.cohesion_window:
      features.append(
          cohesion_features(tokens, sentence_mask, self.cohesion_window)
      )
      if self.sentence_encoder == "pretrained" and self.semantic_cohesion:
        features.append(
            semantic_cohesion_features(
                embeddings, sentence_mask, self.cohesion_window
            )
        )
    if features:
      # A boundary shows as a dip of similarity relative to the nearby gaps:
      # a convolution over 5 sentences sees it before any attention layer.
      x = x + nn.Conv(
          self.hidden_dim, (_COHESION_KERNEL,), name="cohesion_projection", **kw
      )(jnp.concatenate(features, axis=-1).astype(kw["dtype"]))
    x = jnp.where(sentence_mask[..., None], x, 0)
    if self.document_encoder == "transformer":
      encoder = TransformerEncoder(
          self.num_layers,
          self.num_heads,
          self.mlp_dim,
          self.dropout_rate,
          self.max_sentences - 1,
          **kw,
      )
    else:
      encoder = BiLSTMEncoder(
          self.num_layers, self.hidden_dim, self.dropout_rate, **kw
      )
    x = encoder(x, sentence_mask, example_rngs, deterministic=deterministic)
    return nn.Dense(
        self.num_classes,
        dtype=jnp.float32,
        param_dtype=self.param_dtype,
        name="classifier",
    )(x)


# ----------------------------------------------------------------------------
# Helpers for the trainer.
# ----------------------------------------------------------------------------


def init_params(
    model: SegmentationModel,
    rng: jax.Array,
    *,
    batch_size: int,
    max_sentences: int,
    max_tokens: int,
    embedding_dim: int = 0,
) -> Any:
  """The model's initial parameters, from dummy inputs of the given shape.

  `embedding_dim` is the pretrained encoder's D (pretrained models only).
  """
  tokens = jnp.ones((batch_size, max_sentences, max_tokens), jnp.int32)
  sentence_mask = jnp.ones((batch_size, max_sentences), bool)
  embeddings = encoder_ids = None
  if model.encoder is not None:
    # Parameter shapes do not depend on the token count: keep it small.
    encoder_ids = jnp.ones((batch_size, max_sentences, 8), jnp.int32)
  elif model.sentence_encoder == "pretrained":
    embeddings = jnp.ones((batch_size, max_sentences, embedding_dim))
  variables = model.init(
      rng, tokens, sentence_mask, embeddings, encoder_ids, train=False
  )
  return variables["params"]


def batch_inputs(batch: Mapping[str, Any]) -> tuple[Any, ...]:
  """The positional inputs of `SegmentationModel` from a pipeline batch."""
  return (
      batch["tokens"],
      batch["sentence_mask"],
      batch.get("embeddings"),
      batch.get("encoder_ids"),
  )


def count_params(params: Any) -> int:
  """Number of scalars in a parameter tree."""
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def _check_model_keys(model_config: Any, others: Mapping[str, Any]) -> None:
  """Refuses a `model` section that is not this version's fields (but `others`).

  A run trained by another segjax version names keys this one lacks, or
  lacks keys it needs: its model cannot be rebuilt as it was trained.
  """
  fields = {
      f.name: f
      for f in dataclasses.fields(SegmentationModel)
      if f.init and f.name not in others
  }
  keys = set(model_config.keys())
  unknown = sorted(keys - set(fields))
  missing = sorted(
      name
      for name, f in fields.items()
      if name not in keys
      and f.default is dataclasses.MISSING
      and f.default_factory is dataclasses.MISSING
  )
  if unknown or missing:
    differences = [f"model.{k} is not a key of this version" for k in unknown]
    differences += [f"model.{k} is missing" for k in missing]
    raise config_lib.ConfigError(
        f"the config's model section does not match this segjax version"
        f" ({'; '.join(differences)}): a run trained by another version?"
        " Train it again with this one"
    )


def model_from_config(config: Any, encoder: Any = None) -> SegmentationModel:
  """The model of a run's config: its `model` section plus three facts that
  other sections own (the tokenizer's id space, the loss's classes, the
  window length), and with `encoder.fine_tune` the pretrained `encoder`
  (an `encoders.Encoder`) inside it, its blocks rematerialised."""
  others = dict(
      num_buckets=config.tokenizer.num_buckets,
      num_classes=config.loss.num_classes,
      max_sentences=config.data.max_sentences,
      encoder=None,
  )
  _check_model_keys(config.model, others)
  if config.model.sentence_encoder == "pretrained" and config.encoder.fine_tune:
    if encoder is None:
      raise ValueError("encoder.fine_tune=True needs the loaded encoder")
    others["encoder"] = encoder.module.clone(
        remat=True, dtype=DTYPES[config.model.dtype]
    )
  return SegmentationModel(**config.model, **others)
