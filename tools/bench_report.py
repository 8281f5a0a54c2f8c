"""Shared helpers for the benchmark tools: machine description and BENCHMARKS.md sections."""

import importlib.util
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCHMARKS_MD = REPO_ROOT / "BENCHMARKS.md"
_HEADER = (
    "# Benchmarks\n\n"
    "Every table below is written by the tool named in its heading; "
    "`make bench` reruns them all.\n"
)


def machine_description() -> str:
  """One line naming the CPU, core count, Python and JAX versions."""
  import jax  # pylint: disable=g-import-not-at-top

  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      names = [
          l.split(":", 1)[1].strip() for l in f if l.startswith("model name")
      ]
    if names:
      cpu = names[0]
  except OSError:
    pass
  return (
      f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
      f"jax {jax.__version__}, backend {jax.default_backend()}"
  )


def median_seconds(fn, *, repeats: int, warmup: int = 2) -> float:
  """Median wall time of `fn()` (which must block on its result) over repeats."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def interleaved_calls(calls: dict, *, repeats: int) -> dict:
  """Median seconds per call of each `fn()`, blocked on its result.

  One call of each in turn, `repeats` rounds, so that load changes on a
  shared machine hit all of them alike.
  """
  import jax  # pylint: disable=g-import-not-at-top

  times = {name: [] for name in calls}
  for _ in range(repeats):
    for name, fn in calls.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(times[name]) for name in calls}


def write_section(name: str, body: str) -> None:
  """Replaces (or appends) the section `name` of BENCHMARKS.md with `body`."""
  text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else _HEADER
  start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
  block = f"{start}\n{body.rstrip()}\n{end}"
  pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
  if pattern.search(text):
    text = pattern.sub(lambda _: block, text)
  else:
    text = text.rstrip() + "\n\n" + block + "\n"
  BENCHMARKS_MD.write_text(text)


def table_section(
    title: str, description: str, columns: list[str], rows: list[str]
) -> str:
  """A BENCHMARKS.md section: heading, description, machine line, table."""
  return "\n".join(
      [
          f"## {title}",
          "",
          description,
          f"Machine: {machine_description()}.",
          "",
          "| " + " | ".join(columns) + " |",
          "|---|" + "---:|" * (len(columns) - 1),
          *rows,
      ]
  )


def load_module_copy(path, name: str) -> object:
  """A separate module object `name` from the Python file at `path`.

  Registered in `sys.modules`, where its dataclasses look their module up.
  """
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


def load_losses_copy(path) -> object:
  """A separate module object from a copy of segjax/losses.py at `path`."""
  return load_module_copy(path, "losses_variant")


def commit(tree: pathlib.Path) -> str:
  """The short commit of a checkout, to name its code in a table."""
  return subprocess.run(
      ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
      capture_output=True,
      text=True,
      check=True,
  ).stdout.strip()
