"""Where training numbers go: metrics.jsonl, TensorBoard and the console.

Only process 0 writes; the other processes get a writer that does nothing, so
the train loop can call it unconditionally. A resumed run first cuts
metrics.jsonl back to the restored step, so that every step is logged once. A
file that cannot be written (a full disk) raises `WriteError`, one line naming
the path and the free space. `read_events` reads a run's metrics.jsonl back,
`json_safe` makes any result strict JSON, and `quiet_library_logs` keeps
chatty libraries' INFO lines (and errors they re-raise) off the console.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import shutil
import sys
import time
from collections.abc import Mapping
from typing import Any

from absl import logging
import numpy as np

# One JSON object a line, appended as training goes.
METRICS_FILE = "metrics.jsonl"
# TensorBoard event files, written synchronously by `MetricWriter`.
TENSORBOARD_DIR = "tensorboard"
# Libraries whose INFO records flood the log (orbax: a dozen per save).
QUIET_LIBRARIES = ("orbax",)
# tensorstore's errors end with the errno of a failed system call.
_OS_ERROR_CODE = re.compile(r"\[os_error_code='(\d+)'\]")


class WriteError(RuntimeError):
  """A run's file could not be written; names it and the free space."""


def _free_space(path: pathlib.Path) -> str:
  """`"1.4 MB free"` on the file system of `path` (or its nearest parent)."""
  for folder in (path, *path.parents):
    if folder.exists():
      return f"{shutil.disk_usage(folder).free / 1e6:.1f} MB free"
  return "free space unknown"


def error_reason(error: BaseException) -> str:
  """The first line of an error, with tensorstore's errno spelled out."""
  if isinstance(error, OSError) and error.strerror:
    return error.strerror
  text = str(error).strip().splitlines()[0] if str(error).strip() else ""
  code = _OS_ERROR_CODE.search(text)
  if code:
    return f"{os.strerror(int(code[1]))} ({text.split(':', 1)[0]})"
  return text or type(error).__name__


def write_error(
    path: str | os.PathLike, error: BaseException, note: str = ""
) -> WriteError:
  """`cannot write PATH: reason (N MB free there)[; note]`."""
  path = pathlib.Path(path)
  return WriteError(
      f"cannot write {path}: {error_reason(error)} ({_free_space(path)} "
      f"there){'; ' + note if note else ''}"
  )


def json_safe(value: Any) -> Any:
  """`value` as strict-JSON data: NaN and inf become null.

  Mappings (keys as strings), lists and tuples are converted item by item;
  numpy and JAX arrays become (nested) lists, their scalars Python numbers.
  """
  if isinstance(value, Mapping):
    return {str(k): json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if hasattr(value, "shape"):  # numpy and JAX arrays and scalars.
    value = np.asarray(value).tolist()
    if isinstance(value, list):
      return json_safe(value)
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def read_events(workdir: str | pathlib.Path) -> list[dict[str, Any]]:
  """The events a run wrote to `<workdir>/metrics.jsonl`, in order.

  Empty when the file does not exist yet (the run has not started).
  """
  path = pathlib.Path(workdir) / METRICS_FILE
  if not path.is_file():
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def _events_up_to(path: pathlib.Path, step: int) -> list[str]:
  """The lines of metrics.jsonl a run resumed at `step` keeps.

  Events after `step` are dropped (the resumed run logs them again), and so
  are the final test scores, which the run writes again when it ends; so is
  a line cut off by a kill.
  """
  kept = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        event = json.loads(line)
      except json.JSONDecodeError:
        continue
      if event["step"] <= step and not any(
          k.startswith("test_") for k in event
      ):
        kept.append(json.dumps(event) + "\n")
  return kept


class MetricWriter:
  """Appends events to `<workdir>/metrics.jsonl` and TensorBoard files.

  With `resume_from` (the step a run starts from, 0 for a fresh start),
  metrics.jsonl is first rewritten to hold only the events up to that step,
  and TensorBoard is told to hide the later events of earlier attempts.
  TensorBoard events are written in this thread, not by tensorboardX's
  background writer, so that a failed write raises here, where it is
  reported, rather than killing a thread the next write would wait on.
  """

  def __init__(
      self,
      workdir: str | pathlib.Path,
      *,
      enabled: bool = True,
      resume_from: int | None = None,
  ):
    self.enabled = enabled
    self._jsonl = None
    self._tensorboard = None
    if not enabled:
      return
    workdir = pathlib.Path(workdir)
    self._path = workdir / METRICS_FILE
    # pylint: disable=g-import-not-at-top
    from tensorboardX import event_file_writer
    from tensorboardX.proto import event_pb2
    from tensorboardX import summary

    # pylint: enable=g-import-not-at-top
    self._event_pb2, self._summary = event_pb2, summary
    self._tensorboard_dir = tensorboard = workdir / TENSORBOARD_DIR
    try:
      tensorboard.mkdir(parents=True, exist_ok=True)
      if resume_from is not None and self._path.exists():
        kept = _events_up_to(self._path, resume_from)
        partial = self._path.with_name(METRICS_FILE + ".tmp")
        partial.write_text("".join(kept), encoding="utf-8")
        os.replace(partial, self._path)
      self._jsonl = open(self._path, "a", encoding="utf-8")
      # The process id keeps two writers started in the same second from
      # writing one file name.
      self._tensorboard = event_file_writer.EventsWriter(
          str(tensorboard / "events"), f".{os.getpid()}"
      )
      if resume_from is not None:
        # TensorBoard drops earlier files' events from this step on.
        self._tensorboard.write_event(
            event_pb2.Event(
                step=resume_from + 1,
                session_log=event_pb2.SessionLog(
                    status=event_pb2.SessionLog.START
                ),
            )
        )
        self._tensorboard.flush()
    except OSError as e:
      raise write_error(getattr(e, "filename", None) or workdir, e) from None

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    """One event: `{"step": step, **metrics}`; numbers only.

    Raises:
      WriteError: metrics.jsonl or the TensorBoard file could not be written.
    """
    if not self.enabled:
      return
    event = {"step": int(step), **json_safe(metrics)}
    try:
      self._jsonl.write(json.dumps(event) + "\n")
      self._jsonl.flush()
    except OSError as e:
      raise write_error(self._path, e) from None
    values = [
        self._summary.scalar(key, value).value[0]
        for key, value in event.items()
        if key != "step" and isinstance(value, (int, float))
    ]
    try:
      self._tensorboard.write_event(
          self._event_pb2.Event(
              wall_time=time.time(),
              step=int(step),
              summary=self._summary.Summary(value=values),
          )
      )
      self._tensorboard.flush()
    except OSError as e:
      raise write_error(self._tensorboard_dir, e) from None

  def close(self) -> None:
    """Closes both files; a failure was reported by the write that met it."""
    for file in (self._jsonl, self._tensorboard):
      if file is not None:
        try:
          file.close()
        except OSError:
          pass
    self._jsonl = self._tensorboard = None


def format_metrics(metrics: dict[str, Any]) -> str:
  """`key=value` pairs with 4 significant digits, for log lines."""
  parts = []
  for key, value in metrics.items():
    value = json_safe(value)
    parts.append(
        f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
    )
  return " ".join(parts)


class Progress:
  """A tqdm bar with steps/s and ETA on a terminal; periodic log lines otherwise.

  The rate is measured from the first update on, so that it leaves out the
  compilation of the first step; the first line has none.
  """

  def __init__(self, *, start_step: int, total_steps: int, enabled: bool):
    self._bar = None
    self._step = start_step
    self._total = total_steps
    self._clock = None  # (time, step) of the first update
    if enabled and sys.stderr.isatty():
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top

      self._bar = tqdm(
          total=total_steps, initial=start_step, unit="step", dynamic_ncols=True
      )

  def steps_per_second(self, step: int) -> float | None:
    """Steps per second from the first update to `step`; None before that."""
    if self._clock is None or step <= self._clock[1]:
      return None
    start_time, start_step = self._clock
    return (step - start_step) / max(time.time() - start_time, 1e-9)

  def update(self, step: int, summary: str = "") -> None:
    """Moves to `step`; `summary` (loss etc.) goes on the bar or a log line."""
    rate = self.steps_per_second(step)
    if self._clock is None:
      self._clock = (time.time(), step)
    if self._bar is not None:
      self._bar.update(step - self._step)
      if summary:
        self._bar.set_postfix_str(summary)
    elif summary and rate is None:
      logging.info("step %d/%d  %s", step, self._total, summary)
    elif summary:
      logging.info(
          "step %d/%d  %.2f steps/s  eta %.0fs  %s",
          step,
          self._total,
          rate,
          (self._total - step) / rate,
          summary,
      )
    self._step = step

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


class QuietLibraries:
  """A log filter for the records of `QUIET_LIBRARIES`.

  It drops their INFO records, and the errors they log with a traceback
  before re-raising them to the caller (orbax's failed asynchronous saves:
  a dozen tracebacks for one full disk), which segjax reports itself, once,
  as one line.
  """

  def filter(self, record) -> bool:
    if not any(f"/{name}/" in record.pathname for name in QUIET_LIBRARIES):
      return True
    if record.levelno >= logging.converter.STANDARD_ERROR:
      return record.exc_info is None
    return record.levelno > logging.converter.STANDARD_INFO


def quiet_library_logs() -> None:
  """Installs `QuietLibraries` on absl's log handler (once)."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, QuietLibraries) for f in handler.filters):
    handler.addFilter(QuietLibraries())
