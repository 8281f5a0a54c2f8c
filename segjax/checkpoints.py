"""Checkpoints in `<workdir>/checkpoints`: train state, metadata, data position.

Each step directory holds three items written by orbax's `CheckpointManager`:
`state` (parameters, optimizer state, step, dropout key), `meta` (JSON: the
resolved config, tokenizer settings, the decision threshold of the latest
evaluation, a checksum of every array of the state) and `data` (the grain
iterator position, one file per process), so a resumed run continues with
exactly the batches it would have seen.

A step is saved *before* it is evaluated, so that a failing or killed
evaluation loses no training. Its dev metrics (and tuned threshold) are
recorded afterwards in `evals.json` beside the steps, since orbax takes
ranking metrics only at save time. Retention keeps the latest `keep` steps
and the step with the best recorded metric (`_BestEvaluated`, an orbax
preservation policy that reads those records).

Reading is checked: what orbax, tensorstore or grain raise for a damaged
file, and an array whose checksum differs from the saved one (bytes
overwritten in place read back without an error), raise
`UnreadableCheckpoint` naming the step. `first_readable` falls back to an
older step and sets the unreadable ones aside as `<step>.unreadable`. A
failed write raises `metric_writers.WriteError` naming the path and the free
space, and a state holding NaN or inf is never written (`NonFiniteState`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging as std_logging
import os
import pathlib
import sys
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from absl import logging
import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from segjax import metric_writers

ITEMS = ("state", "meta", "data")
# {step: dev metrics of that step's evaluation}, beside the step folders.
EVALS_FILE = "evals.json"
# What a damaged or missing file raises through orbax: tensorstore's errors
# (DATA_LOSS, OUT_OF_RANGE, ...) and JSON's are ValueErrors, a missing file
# an OSError, metadata without an expected entry a KeyError or TypeError.
READ_ERRORS = (OSError, ValueError, KeyError, TypeError)
# What a failed write raises through orbax (tensorstore's RESOURCE_EXHAUSTED
# for a full disk is a ValueError).
WRITE_ERRORS = (OSError, ValueError, RuntimeError)


class CheckpointError(Exception):
  """A checkpoint that cannot be read or saved; the message names it."""


class UnreadableCheckpoint(CheckpointError):
  """One step's checkpoint is damaged or incomplete."""

  def __init__(self, directory: pathlib.Path, step: int, reason: str):
    self.step = step
    self.reason = reason
    super().__init__(
        f"checkpoint {directory / str(step)} is unreadable: {reason}"
    )


class NonFiniteState(CheckpointError):
  """A train state holding NaN or inf, which is never saved."""


# ----------------------------------------------------------------------------
# Checks of a state's arrays.
# ----------------------------------------------------------------------------


def _key_name(key: Any) -> str:
  for attribute in ("key", "name", "idx"):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def leaf_checksums(tree: Any) -> dict[str, str]:
  """crc32 of every array of a pytree, by its path (`params/Dense_0/kernel`).

  Paths do not depend on the container types, so the checksums of a
  TrainState and of a restored `{"params": ...}` dict agree leaf by leaf.
  """
  sums = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    array = np.ascontiguousarray(np.asarray(leaf)).reshape(-1)
    name = "/".join(_key_name(k) for k in path)
    sums[name] = f"{zlib.crc32(array.view(np.uint8)):08x}"
  return sums


def non_finite_count(tree: Any) -> int:
  """How many floating-point values of a pytree are NaN or inf."""
  return sum(
      int(np.size(x) - np.count_nonzero(np.isfinite(x)))
      for x in map(np.asarray, jax.tree.leaves(tree))
      if jax.dtypes.issubdtype(x.dtype, np.inexact)
  )


# ----------------------------------------------------------------------------
# Library noise around failed reads and read-only opens.
# ----------------------------------------------------------------------------


def _is_closed_loop_callback(unraisable) -> bool:
  """tensorstore's completion callbacks after orbax closed its event loop.

  When one read of a restore fails, orbax closes its event loop while
  tensorstore still completes the other reads; each completion then raises
  "Event loop is closed" into `sys.unraisablehook` (hundreds of tracebacks
  after the one error that matters, which segjax reports).
  """
  return (
      unraisable.exc_type is RuntimeError
      and str(unraisable.exc_value) == "Event loop is closed"
  )


def _ignore_closed_loop_callbacks() -> None:
  hook = sys.unraisablehook
  if getattr(hook, "segjax_filter", False):
    return

  def filtered(unraisable):
    if not _is_closed_loop_callback(unraisable):
      hook(unraisable)

  filtered.segjax_filter = True
  sys.unraisablehook = filtered


class _UnretrievedTaskErrors(std_logging.Filter):
  """asyncio's "Task exception was never retrieved" records.

  When one tensorstore write of a save (a full disk) or read of a restore (a
  damaged file) fails, its siblings fail too, and orbax awaits only the
  first: asyncio logs each other one with its traceback when the task is
  collected, after segjax has reported the failure in one line.
  """

  def filter(self, record: std_logging.LogRecord) -> bool:
    return "exception was never retrieved" not in record.getMessage()


def _quiet_unretrieved_task_errors() -> None:
  logger = std_logging.getLogger("asyncio")
  if not any(isinstance(f, _UnretrievedTaskErrors) for f in logger.filters):
    logger.addFilter(_UnretrievedTaskErrors())


@contextlib.contextmanager
def _absl_warnings_off():
  """Opening read-only makes orbax warn twice that it is read-only."""
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(verbosity)


# ----------------------------------------------------------------------------
# The checkpointer.
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class _BestEvaluated:
  """orbax preservation policy: keeps the step whose recorded metric is best."""

  checkpointer: Checkpointer

  def should_preserve(self, checkpoints, *, context) -> list[bool]:
    del context
    scored = self.checkpointer.scored_steps([c.step for c in checkpoints])
    return [bool(scored) and c.step == scored[0] for c in checkpoints]


class Checkpointer:
  """Saves and restores train state, metadata and the data iterator."""

  def __init__(
      self,
      workdir: str | pathlib.Path,
      *,
      best_metric: str,
      best_mode: str,
      keep: int | None = None,
  ):
    """Opens `<workdir>/checkpoints`; read-only (for inference) without `keep`.

    Args:
      workdir: the run's folder.
      best_metric: the eval metric that ranks steps (`train.best_metric`).
      best_mode: "min" or "max" (`train.best_mode`).
      keep: latest steps kept besides the best (`train.keep_checkpoints`).
    """
    _ignore_closed_loop_callbacks()
    self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
    self.best_metric = best_metric
    self.best_mode = best_mode
    self.read_only = keep is None
    self._evals = self._read_evals()
    self._in_flight = None  # the step of the save not known to be complete
    self._failed = False
    policy = checkpoint_managers.AnyPreservationPolicy(
        [checkpoint_managers.LatestN(n=keep or 1), _BestEvaluated(self)]
    )
    with _absl_warnings_off() if self.read_only else contextlib.nullcontext():
      options = ocp.CheckpointManagerOptions(
          preservation_policy=policy,
          create=not self.read_only,
          read_only=self.read_only,
          # A save cut off by a full disk or a kill leaves a temporary folder.
          cleanup_tmp_directories=not self.read_only,
      )
      self.manager = ocp.CheckpointManager(
          self.directory, options=options, item_names=ITEMS
      )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  # -- evaluation records -----------------------------------------------------

  def _read_evals(self) -> dict[int, dict[str, Any]]:
    path = self.directory / EVALS_FILE
    if not path.is_file():
      return {}
    try:
      return {int(k): v for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError) as e:
      logging.warning(
          "%s is unreadable (%s): no step has dev metrics to rank it",
          path,
          metric_writers.error_reason(e),
      )
      return {}

  def _write_evals(self) -> None:
    if self.read_only or jax.process_index() != 0:
      return
    path = self.directory / EVALS_FILE
    partial = path.with_name(EVALS_FILE + ".tmp")
    try:
      partial.write_text(
          json.dumps({str(k): v for k, v in sorted(self._evals.items())})
      )
      os.replace(partial, path)
    except OSError as e:
      raise metric_writers.write_error(path, e) from None

  def record_eval(self, step: int, metrics: dict[str, Any]) -> None:
    """Records a saved step's dev metrics: they rank it for `best`."""
    self._evals[step] = metric_writers.json_safe(metrics)
    self._write_evals()

  def eval_metrics(self, step: int) -> dict[str, Any] | None:
    """The dev metrics recorded for `step`, or None (not evaluated)."""
    return self._evals.get(step)

  def threshold(self, step: int, meta: dict[str, Any]) -> float | None:
    """The decision threshold tuned at `step`, else the last one before it.

    Tuned on all of dev (`final_val_threshold`) when the periodic
    evaluations scored a subset (`train.eval_max_documents`).
    """
    evals = self._evals.get(step) or {}
    return evals.get(
        "final_val_threshold", evals.get("val_threshold", meta.get("threshold"))
    )

  def scored_steps(self, steps: Sequence[int]) -> list[int]:
    """Those of `steps` with a recorded `best_metric`, best first."""
    sign = 1 if self.best_mode == "min" else -1
    values = {
        s: (self._evals.get(s) or {}).get(self.best_metric) for s in steps
    }
    return sorted(
        (s for s, value in values.items() if value is not None),
        key=lambda s: (sign * values[s], s),
    )

  def ranked_steps(self) -> list[int]:
    """Every kept step: best metric first, then the unevaluated newest first."""
    steps = self.all_steps()
    scored = self.scored_steps(steps)
    return scored + sorted(set(steps) - set(scored), reverse=True)

  def best_step(self) -> int | None:
    """The kept step with the best `best_metric`, else the latest one."""
    ranked = self.ranked_steps()
    return ranked[0] if ranked else None

  # -- writing ----------------------------------------------------------------

  def _write_failure(self, step: int, error: BaseException):
    self._failed = True
    _quiet_unretrieved_task_errors()
    self.manager.reload()
    latest = self.manager.latest_step()
    return metric_writers.write_error(
        self.directory / str(step),
        error,
        "the last complete checkpoint is "
        + (f"step {latest}" if latest is not None else "none"),
    )

  def save(
      self, step: int, host_state: Any, meta: dict[str, Any], data_iterator: Any
  ) -> None:
    """Starts an asynchronous save of `step` (after the previous one completes).

    Raises:
      NonFiniteState: the state holds NaN or inf (nothing is written).
      metric_writers.WriteError: this or the previous save failed.
    """
    bad = non_finite_count(host_state)
    if bad:
      raise NonFiniteState(
          f"refusing to save step {step}: {bad} values of the train state "
          "are NaN or inf"
      )
    self.wait()
    if self._evals.pop(step, None) is not None:  # an older checkpoint's
      self._write_evals()
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(host_state),
        meta=ocp.args.JsonSave(
            {**meta, "checksums": leaf_checksums(host_state)}
        ),
        data=grain.checkpoint.CheckpointSave(data_iterator),
    )
    self._in_flight = step
    try:
      self.manager.save(step, args=args, force=True)
    except WRITE_ERRORS as e:
      raise self._write_failure(step, e) from None

  def wait(self) -> None:
    """Waits for the save in flight; WriteError if it failed."""
    try:
      self.manager.wait_until_finished()
    except WRITE_ERRORS as e:
      raise self._write_failure(self._in_flight, e) from None
    self._in_flight = None

  def close(self) -> None:
    """Waits for the last save (WriteError if it failed) and closes."""
    try:
      if not self._failed:
        self.wait()
    finally:
      with contextlib.suppress(*WRITE_ERRORS):
        self.manager.close()

  # -- reading ----------------------------------------------------------------

  def _read(self, step: int, **items) -> dict[str, Any]:
    try:
      return self.manager.restore(step, args=ocp.args.Composite(**items))
    except READ_ERRORS as e:
      _quiet_unretrieved_task_errors()
      raise UnreadableCheckpoint(
          self.directory, step, metric_writers.error_reason(e)
      ) from None

  def _verify(self, step: int, tree: Any, meta: dict[str, Any]) -> None:
    """Every array of `tree` has the checksum it was saved with."""
    saved = meta.get("checksums")
    if saved is None:  # written before checkpoints carried checksums
      return
    for name, checksum in leaf_checksums(tree).items():
      if saved.get(name) != checksum:
        raise UnreadableCheckpoint(
            self.directory,
            step,
            f"{name} reads back different from what was saved (crc32 "
            f"{checksum}, saved {saved.get(name)}): a damaged file",
        )

  def restore(
      self, step: int, abstract_state: Any, data_iterator: Any | None = None
  ) -> tuple[Any, dict[str, Any]]:
    """(state, meta) of `step`; also moves `data_iterator` to its position.

    Raises:
      UnreadableCheckpoint: a damaged or missing file, or a checksum mismatch.
    """
    items = {
        "state": ocp.args.StandardRestore(abstract_state),
        "meta": ocp.args.JsonRestore(),
    }
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self._read(step, **items)
    self._verify(step, restored["state"], restored["meta"])
    return restored["state"], restored["meta"]

  def restore_params(self, step: int, abstract_params: Any) -> Any:
    """The model parameters of `step` (or the subtrees `abstract_params` has).

    For inference and for initialising from a run: no optimizer state.

    Raises:
      UnreadableCheckpoint: a damaged or missing file, or a checksum mismatch.
    """
    target = {"params": abstract_params}
    state = ocp.args.PyTreeRestore(
        item=target,
        restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True,
    )
    restored = self._read(step, state=state, meta=ocp.args.JsonRestore())
    self._verify(step, restored["state"], restored["meta"])
    return restored["state"]["params"]

  def restore_meta(self, step: int) -> dict[str, Any]:
    """The metadata of `step`; UnreadableCheckpoint if it is damaged."""
    return self._read(step, meta=ocp.args.JsonRestore())["meta"]

  def first_readable(
      self, steps: Sequence[int], read: Callable[[int], Any]
  ) -> tuple[int, Any]:
    """`(step, read(step))` for the first of `steps` that reads back.

    `read` raises `UnreadableCheckpoint` for a damaged step. Each one before
    the step used is logged in one line and, unless read-only, set aside as
    `<step>.unreadable`, where nothing restores or overwrites it.

    Raises:
      CheckpointError: none of `steps` reads back (each is named).
    """
    failures = []
    for step in steps:
      try:
        result = read(step)
      except UnreadableCheckpoint as e:
        failures.append(e)
        continue
      names = self.set_aside([f.step for f in failures], "unreadable")
      for failure, name in zip(failures, names):
        aside = f"set aside as {name}, " if name else ""
        logging.warning("%s; %susing step %d", failure, aside, step)
      return step, result
    raise CheckpointError(
        f"no readable checkpoint in {self.directory}: "
        + "; ".join(f"step {f.step}: {f.reason}" for f in failures)
    )

  def set_aside(self, steps: Sequence[int], why: str) -> list[str | None]:
    """Renames steps' folders `<step>.<why>[N]`, where orbax sees none of them.

    Process 0 renames; every process calls this. Read-only, nothing moves.

    Returns:
      The new folder names (None each when read-only).
    """
    if self.read_only or not steps:
      return [None] * len(steps)
    self.wait()
    names = []
    for step in steps:
      target = self.directory / f"{step}.{why}"
      for n in itertools.count(2):
        if not target.exists():
          break
        target = target.with_name(f"{step}.{why}{n}")
      names.append(target.name)
      if jax.process_index() == 0:
        os.replace(self.directory / str(step), target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

      multihost_utils.sync_global_devices("checkpoints set aside")
    self.manager.reload()
    return names
