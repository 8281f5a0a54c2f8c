"""Records back to back in a file, found by an array of byte offsets.

The shards' storage (`segjax.data.shards`): a part is `<name>.records`, its
records' bytes in order, and `<name>.offsets.npy`, int64 `[n + 1]` where
record i is bytes `offsets[i]:offsets[i + 1]`. Reading a record is one
`os.pread`. A reader holds in memory only what it reads: the offsets are
memory-mapped (8 bytes a record, paged in as used). ArrayRecord's reader,
tried first, keeps an index of about 300 bytes a record (measured: +185 MB
for 582K records), which made memory grow with the corpus.
"""

from __future__ import annotations

import os
import pathlib
from typing import Iterable, Sequence

import numpy as np

from segjax.data.documents import DataError

RECORDS = ".records"
OFFSETS = ".offsets.npy"


def write(path: pathlib.Path, records: Iterable[bytes]) -> int:
  """Writes `path.records` and `path.offsets.npy` (atomically); returns n."""
  path = pathlib.Path(path)
  data = path.with_name(path.name + RECORDS)
  offsets = [0]
  with open(f"{data}.partial", "wb") as f:
    for record in records:
      f.write(record)
      offsets.append(offsets[-1] + len(record))
  with open(f"{path}{OFFSETS}.partial", "wb") as f:
    np.save(f, np.array(offsets, np.int64))
  os.replace(f"{path}{OFFSETS}.partial", f"{path}{OFFSETS}")
  os.replace(f"{data}.partial", data)
  return len(offsets) - 1


class RecordFiles:
  """The records of several parts, in order: a grain random-access source.

  Implements grain's `RandomAccessDataSource` protocol (`__len__`,
  `__getitem__`, plus `__getitems__` for a batch of keys). Files are opened
  at their first read; pickling (for grain worker processes) keeps only the
  paths.
  """

  def __init__(self, paths: Sequence[str | os.PathLike]):
    self.paths = [pathlib.Path(p) for p in paths]
    self._offsets = []
    for path in self.paths:
      offsets = np.load(f"{path}{OFFSETS}", mmap_mode="r")
      data = path.with_name(path.name + RECORDS)
      size = data.stat().st_size if data.exists() else None
      if size != int(offsets[-1]):
        raise DataError(
            f"{data}: {size} bytes, but its offsets say {int(offsets[-1])}"
            " (truncated or replaced; delete the folder to rebuild it)"
        )
      self._offsets.append(offsets)
    counts = [len(o) - 1 for o in self._offsets]
    self._ends = np.cumsum(counts, dtype=np.int64)
    self._files = [None] * len(self.paths)

  def __len__(self) -> int:
    return int(self._ends[-1]) if len(self._ends) else 0

  def __getitem__(self, key: int) -> bytes:
    key = int(key)
    if not 0 <= key < len(self):
      raise IndexError(f"record {key} of {len(self)}")
    part = int(np.searchsorted(self._ends, key, side="right"))
    index = key - (int(self._ends[part - 1]) if part else 0)
    start, end = self._offsets[part][index : index + 2]
    if self._files[part] is None:
      path = self.paths[part]
      self._files[part] = os.open(
          path.with_name(path.name + RECORDS), os.O_RDONLY
      )
    return os.pread(self._files[part], int(end - start), int(start))

  def __getitems__(self, keys: Sequence[int]) -> list[bytes]:
    return [self[key] for key in keys]

  def __getstate__(self):
    return {"paths": self.paths}

  def __setstate__(self, state):
    self.__init__(state["paths"])

  def __del__(self):
    for fd in getattr(self, "_files", ()):
      if fd is not None:
        os.close(fd)
