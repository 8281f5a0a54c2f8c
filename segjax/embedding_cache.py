"""An on-disk cache of sentence embeddings, shared by every run of one encoder.

Frozen pretrained encoders make every sentence's vector a pure function of
its text and of the encoder, so each distinct sentence of a corpus is encoded
once and read from disk afterwards: by training, evaluation, `evaluate` and
`segment`, by reruns and resumes, by several runs that share the folder.

Layout of `<root>/<encoder key>/` (the key is a digest of the encoder's
identity: weights sha256, truncation length, pooling, normalisation, layers,
so a changed encoder never reads stale vectors):

  identity.json              the encoder identity the key was made from
  <shard>.vectors.npy        float16 [n, D], memory-mapped when read
  <shard>.keys.npy           uint64 [n]: a 64-bit BLAKE2b digest of each
                             sentence's UTF-8 text, sorted; row i of
                             `keys` is row i of `vectors`

A shard is written by one process at a time under a temporary name and
renamed when complete (vectors first, keys last), so a reader sees whole
shards only and a killed build loses just its unfinished shard. Nothing is
held in memory but the keys: vectors are read lazily, row by row, through the
memory map, so the cache may be far larger than memory (Wiki-727K: ~34M
sentences x 384 x 2 bytes = 26 GB).

Several processes build one cache together: each encodes the missing
sentences whose digest falls in its share (`digest % count == index`) and
writes its own shards; after a barrier every process `reload()`s and reads
everyone's. A 64-bit digest makes two different sentences collide with
probability ~n^2 / 2^65 (3e-5 for 34M sentences).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import pathlib
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tqdm

# Sentences encoded per write: bounds the float32 output held in memory.
_CHUNK = 8192


def sentence_digests(sentences: Iterable[str]) -> np.ndarray:
  """uint64 64-bit BLAKE2b digest of each sentence's UTF-8 text."""
  return np.fromiter(
      (
          int.from_bytes(
              hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(),
              "little",
          )
          for s in sentences
      ),
      np.uint64,
  )


def identity_key(identity: Mapping[str, Any]) -> str:
  """A short, stable folder name for an encoder identity."""
  text = json.dumps(identity, sort_keys=True)
  return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


class EmbeddingCache:
  """Float16 sentence vectors of one encoder, on disk, keyed by sentence text.

  Attributes:
    folder: `<root>/<identity_key(identity)>`.
    dim: the vectors' size D.
  """

  def __init__(
      self, root: str | os.PathLike, identity: Mapping[str, Any], dim: int
  ):
    self.folder = pathlib.Path(root) / identity_key(identity)
    self.dim = dim
    self.folder.mkdir(parents=True, exist_ok=True)
    identity_file = self.folder / "identity.json"
    if not identity_file.exists():
      _write_atomically(
          identity_file, json.dumps(dict(identity), sort_keys=True).encode()
      )
    self.reload()

  def reload(self) -> None:
    """(Re)reads the list of complete shards, e.g. after other processes wrote."""
    self._keys, self._vectors, offsets = [], [], [0]
    for keys_file in sorted(self.folder.glob("*.keys.npy")):
      vectors_file = keys_file.with_name(
          keys_file.name.replace(".keys.npy", ".vectors.npy")
      )
      keys = np.load(keys_file, mmap_mode="r")
      vectors = np.load(vectors_file, mmap_mode="r")
      if vectors.shape != (len(keys), self.dim):
        raise ValueError(
            f"{vectors_file}: shape {vectors.shape}, expected "
            f"({len(keys)}, {self.dim}); delete the shard to rebuild it"
        )
      self._keys.append(keys)
      self._vectors.append(vectors)
      offsets.append(offsets[-1] + len(keys))
    self._offsets = np.asarray(offsets, np.int64)

  def __len__(self) -> int:
    return int(self._offsets[-1])

  def rows(self, digests: np.ndarray) -> np.ndarray:
    """int64 cache row of each digest, -1 where the cache lacks it."""
    digests = np.asarray(digests, np.uint64)
    found = np.full(len(digests), -1, np.int64)
    for keys, offset in zip(self._keys, self._offsets):
      position = np.minimum(np.searchsorted(keys, digests), len(keys) - 1)
      hit = (found < 0) & (len(keys) > 0) & (keys[position] == digests)
      found[hit] = offset + position[hit]
    return found

  def vectors(self, rows: np.ndarray) -> np.ndarray:
    """float16 `[len(rows), D]` vectors of cache rows (all must exist)."""
    rows = np.asarray(rows, np.int64)
    out = np.empty((len(rows), self.dim), np.float16)
    shard = np.searchsorted(self._offsets, rows, side="right") - 1
    for index in np.unique(shard):
      selected = shard == index
      local = rows[selected] - self._offsets[index]
      out[selected] = self._vectors[index][local]
    return out

  def add_missing(
      self,
      sentences: Sequence[str],
      encode: Callable[[Sequence[str]], np.ndarray],
      *,
      process_index: int = 0,
      process_count: int = 1,
      progress: bool = True,
  ) -> int:
    """Encodes the sentences of this process's share that the cache lacks.

    Writes one new shard (in chunks, so memory stays bounded); other
    processes' shares are theirs to encode. Call `reload()` after every
    process has finished to read all shards.

    Returns:
      The number of sentences this process encoded.
    """
    sentences = list(dict.fromkeys(sentences))
    digests = sentence_digests(sentences)
    mine = (self.rows(digests) < 0) & (
        digests % np.uint64(process_count) == process_index
    )
    todo = np.flatnonzero(mine)
    # Equal digests of different texts would make one shard hold two rows
    # with one key; keep the first (see the module docstring on collisions).
    _, first = np.unique(digests[todo], return_index=True)
    todo = todo[np.sort(first)]
    if not len(todo):
      return 0
    order = todo[np.argsort(digests[todo], kind="stable")]
    name = f"p{process_index:05d}-{uuid.uuid4().hex[:12]}"
    vectors_file = self.folder / f"{name}.vectors.npy"
    temporary = self.folder / f".{name}.vectors.npy.tmp"
    out = np.lib.format.open_memmap(
        temporary, mode="w+", dtype=np.float16, shape=(len(order), self.dim)
    )
    bar = tqdm.tqdm(
        total=len(order),
        desc="encoding sentences",
        unit="sent",
        disable=not progress,
    )
    for start in range(0, len(order), _CHUNK):
      chunk = order[start : start + _CHUNK]
      out[start : start + len(chunk)] = encode([sentences[i] for i in chunk])
      bar.update(len(chunk))
    bar.close()
    out.flush()
    del out
    os.replace(temporary, vectors_file)
    _write_atomically(
        self.folder / f"{name}.keys.npy", _npy_bytes(digests[order])
    )
    self.reload()
    return len(order)


def _npy_bytes(array: np.ndarray) -> bytes:
  stream = io.BytesIO()
  np.save(stream, array)
  return stream.getvalue()


def _write_atomically(path: pathlib.Path, data: bytes) -> None:
  temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
  temporary.write_bytes(data)
  os.replace(temporary, path)


def cache_root(encoder_config: Any, workdir: str | os.PathLike) -> pathlib.Path:
  """`encoder.cache_dir`, or `<workdir>/embeddings` when it is empty."""
  return pathlib.Path(
      encoder_config.cache_dir or pathlib.Path(workdir) / "embeddings"
  )


def load_encoder(encoder_config: Any):
  """The `segjax.encoders.Encoder` an `encoder` config section names."""
  from segjax import encoders  # pylint: disable=g-import-not-at-top

  return encoders.load(
      encoder_config.name,
      max_seq_length=encoder_config.max_tokens or None,
      num_layers=encoder_config.num_layers or None,
  )


def build(
    encoder_config: Any,
    workdir: str | os.PathLike,
    sentences: Iterable[str],
    *,
    encoder: Any = None,
    process_index: int = 0,
    process_count: int = 1,
    sync: Callable[[], None] = lambda: None,
) -> tuple[EmbeddingCache, dict[str, Any]]:
  """The cache of a run's encoder, holding every one of `sentences`.

  Each process encodes its share of the missing sentences; `sync` (a
  barrier across processes) runs before all of them read all shards.

  Returns:
    (the cache, the encoder's identity).
  """
  encoder = encoder or load_encoder(encoder_config)
  cache = EmbeddingCache(
      cache_root(encoder_config, workdir), encoder.identity, encoder.dim
  )
  encode = functools.partial(
      encoder.encode, batch_size=encoder_config.batch_size
  )
  cache.add_missing(
      sentences,
      encode,
      process_index=process_index,
      process_count=process_count,
      progress=process_index == 0,
  )
  sync()
  cache.reload()
  return cache, encoder.identity
