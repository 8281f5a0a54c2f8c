"""Where training numbers go: metrics.jsonl, TensorBoard and the console.

Only process 0 writes; the other processes get a writer that does nothing, so
the train loop can call it unconditionally. `read_events` reads a run's
metrics.jsonl back, `json_safe` makes any result strict JSON, and
`quiet_library_logs` keeps chatty libraries' INFO lines off the console.
"""

from __future__ import annotations

import json
import math
import pathlib
import sys
import time
from collections.abc import Mapping
from typing import Any

from absl import logging
import numpy as np

# One JSON object a line, appended as training goes.
METRICS_FILE = "metrics.jsonl"
# Libraries whose INFO records flood the log (orbax: a dozen per save).
QUIET_LIBRARIES = ("orbax",)


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


class MetricWriter:
  """Appends events to `<workdir>/metrics.jsonl` and TensorBoard files."""

  def __init__(self, workdir: str | pathlib.Path, *, enabled: bool = True):
    self.enabled = enabled
    self._jsonl = None
    self._tensorboard = None
    if not enabled:
      return
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    self._jsonl = open(workdir / METRICS_FILE, "a", encoding="utf-8")
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

    self._tensorboard = SummaryWriter(str(workdir / "tensorboard"))

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    """One event: `{"step": step, **metrics}`; numbers only."""
    if not self.enabled:
      return
    event = {"step": int(step), **json_safe(metrics)}
    self._jsonl.write(json.dumps(event) + "\n")
    self._jsonl.flush()
    for key, value in event.items():
      if key != "step" and isinstance(value, (int, float)):
        self._tensorboard.add_scalar(key, value, int(step))
    self._tensorboard.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
      self._tensorboard.close()


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
  """A tqdm bar with steps/s and ETA on a terminal; periodic log lines otherwise."""

  def __init__(self, *, start_step: int, total_steps: int, enabled: bool):
    self._bar = None
    self._step = start_step
    self._total = total_steps
    self._start_time = time.time()
    self._start_step = start_step
    if enabled and sys.stderr.isatty():
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top

      self._bar = tqdm(
          total=total_steps, initial=start_step, unit="step", dynamic_ncols=True
      )

  def steps_per_second(self) -> float:
    elapsed = time.time() - self._start_time
    return (self._step - self._start_step) / elapsed if elapsed > 0 else 0.0

  def update(self, step: int, summary: str = "") -> None:
    """Moves to `step`; `summary` (loss etc.) goes on the bar or a log line."""
    if self._bar is not None:
      self._bar.update(step - self._step)
      if summary:
        self._bar.set_postfix_str(summary)
    elif summary:
      rate = self.steps_per_second()
      eta = (self._total - step) / rate if rate > 0 else float("nan")
      logging.info(
          "step %d/%d  %.2f steps/s  eta %.0fs  %s",
          step,
          self._total,
          rate,
          eta,
          summary,
      )
    self._step = step

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


class QuietLibraries:
  """A log filter that drops the INFO records of `QUIET_LIBRARIES`."""

  def filter(self, record) -> bool:
    return record.levelno > logging.converter.STANDARD_INFO or not any(
        f"/{name}/" in record.pathname for name in QUIET_LIBRARIES
    )


def quiet_library_logs() -> None:
  """Installs `QuietLibraries` on absl's log handler (once)."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, QuietLibraries) for f in handler.filters):
    handler.addFilter(QuietLibraries())
