"""Data parallelism: one per-device step function, run by pmap or shard_map.

The step functions in `segjax.trainer` are written for one device holding a
slice of the global batch, with a named axis `batch` for collectives. This
module maps them over every device of every process:

* `pmap` (default): state replicated on each local device (leading axis),
  batch reshaped to [local devices, per-device batch, ...].
* `shard_map`: `jax.jit(jax.shard_map(...))` over a 1-D `Mesh` of all devices
  with axis `batch`: state replicated (`P()`), batch sharded (`P("batch")`).
  This is what JAX recommends for new code (pmap is in maintenance mode).

Both take and return host-side (numpy) pytrees at the edges (`put_state`,
`get_state`), so checkpoints do not depend on the mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.jax_utils
import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "batch"
MODES = ("pmap", "shard_map")


def _first_local_copy(x):
  """Host copy of a replicated array (works for multi-process global arrays)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(x.addressable_data(0))
  return np.asarray(x)


class DataParallel:
  """Runs per-device functions with axis `batch` over all devices."""

  def __init__(self, mode: str = "pmap"):
    if mode not in MODES:
      raise ValueError(
          f"parallel.mode={mode!r} is unknown; valid modes: "
          f"{', '.join(MODES)}"
      )
    self.mode = mode
    self.num_devices = jax.device_count()
    self.num_local_devices = jax.local_device_count()
    if mode == "shard_map":
      self.mesh = jax.make_mesh(
          (self.num_devices,), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,)
      )
      self._replicated = NamedSharding(self.mesh, P())
      self._sharded = NamedSharding(self.mesh, P(AXIS))

  # -- state ------------------------------------------------------------------

  def put_state(self, host_state: Any) -> Any:
    """Places a host pytree on every device, replicated."""
    if self.mode == "pmap":
      return flax.jax_utils.replicate(host_state)
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(
            np.shape(x), self._replicated, lambda index: np.asarray(x)[index]
        ),
        host_state,
    )

  def get_state(self, device_state: Any) -> Any:
    """The host (numpy) copy of a replicated pytree."""
    if self.mode == "pmap":
      return jax.device_get(flax.jax_utils.unreplicate(device_state))
    return jax.tree.map(_first_local_copy, device_state)

  # -- batches ----------------------------------------------------------------

  def put_batch(self, local_batch: dict[str, np.ndarray]) -> Any:
    """This process's rows of the global batch, split over devices."""
    leading = {len(v) for v in local_batch.values()}
    (rows,) = leading
    if rows % self.num_local_devices:
      raise ValueError(
          f"{rows} rows per process do not split over "
          f"{self.num_local_devices} local devices"
      )
    if self.mode == "pmap":
      per_device = rows // self.num_local_devices
      return jax.tree.map(
          lambda x: x.reshape(self.num_local_devices, per_device, *x.shape[1:]),
          local_batch,
      )
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self._sharded, x),
        local_batch,
    )

  def local_rows(self, device_output: Any) -> Any:
    """Per-row outputs of a mapped function back to this process's rows (numpy)."""
    if self.mode == "pmap":
      return jax.tree.map(
          lambda x: np.asarray(x).reshape(-1, *x.shape[2:]), device_output
      )
    return jax.tree.map(
        lambda x: np.concatenate(
            [
                np.asarray(s.data)
                for s in sorted(
                    x.addressable_shards, key=lambda s: s.index[0].start or 0
                )
            ]
        ),
        device_output,
    )

  def replicated_value(self, device_output: Any) -> Any:
    """Host copy of an output that is the same on every device (metrics)."""
    if self.mode == "pmap":
      return jax.tree.map(lambda x: np.asarray(x[0]), device_output)
    return jax.tree.map(_first_local_copy, device_output)

  # -- compilation ------------------------------------------------------------

  def map_step(self, fn: Callable, *, donate_state: bool = True) -> Callable:
    """`fn(state, batch) -> (state, metrics)` on every device.

    The state is donated; metrics come back replicated.
    """
    donate = (0,) if donate_state else ()
    if self.mode == "pmap":
      return jax.pmap(fn, axis_name=AXIS, donate_argnums=donate)
    mapped = jax.shard_map(
        fn, mesh=self.mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P())
    )
    return jax.jit(mapped, donate_argnums=donate)

  def map_rows(self, fn: Callable) -> Callable:
    """`fn(state, batch) -> (per-row outputs, replicated outputs)` on every device."""
    if self.mode == "pmap":
      return jax.pmap(fn, axis_name=AXIS)
    mapped = jax.shard_map(
        fn, mesh=self.mesh, in_specs=(P(), P(AXIS)), out_specs=(P(AXIS), P())
    )
    return jax.jit(mapped)


def allgather_rows(tree: Any) -> Any:
  """Concatenates every process's rows, in process order (numpy)."""
  if jax.process_count() == 1:
    return tree
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  stacked = multihost_utils.process_allgather(tree)  # [processes, rows, ...]
  return jax.tree.map(
      lambda x: np.asarray(x).reshape(-1, *x.shape[2:]), stacked
  )


def sum_across_processes(tree: Any) -> Any:
  """Sums a pytree of int64 arrays over processes, exactly (numpy).

  Every process gets the same sums. The values travel as int32 pairs: with
  x64 off, JAX would cast int64 to int32.
  """
  if jax.process_count() == 1:
    return tree
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  as_int32 = (
      lambda x: np.ascontiguousarray(x, np.int64).reshape(-1).view(np.int32)
  )
  stacked = multihost_utils.process_allgather(jax.tree.map(as_int32, tree))
  return jax.tree.map(
      lambda x, like: np.ascontiguousarray(np.asarray(x, np.int32))
      .view(np.int64)
      .sum(axis=0)
      .reshape(np.shape(like)),
      stacked,
      tree,
  )
