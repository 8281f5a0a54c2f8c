"""Benchmarks the jitted losses (forward + backward) against optax's CE and eager PyTorch.

  python tools/bench_losses.py [--repeats 30] [--no-write]
      [--losses FILE [--losses_label NAME]] [--torch_python PYTHON]

Shapes [256, 2048, C] for C = 2 and 5, every term of the boundary-aware loss
on. The baseline is `optax.softmax_cross_entropy_with_integer_labels` with
the same ignore-index masking and mean over valid tokens. All jitted
functions are timed in one interleaved loop.

`--losses FILE` also times another copy of `segjax/losses.py` in the same
loop (rows named NAME, default "before"), for a before/after table:

  git show HEAD:segjax/losses.py > /tmp/before_losses.py
  python tools/bench_losses.py --losses /tmp/before_losses.py

`--torch_python PYTHON` also times the boundary-aware loss in eager PyTorch,
run by that interpreter as `tools/bench_losses_torch.py` on the same inputs
(its docstring says how to make that environment), and checks that it gives
the same loss. Writes the `bench_losses` section of BENCHMARKS.md unless
`--no-write`; the section names the command that wrote it.
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import shlex
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax

import bench_report
from segjax import losses

SHAPE = (256, 2048)
IGNORE = -100
TORCH_SCRIPT = pathlib.Path(__file__).resolve().parent / "bench_losses_torch.py"


def optax_masked_ce(logits, labels):
  valid = labels != IGNORE
  per_token = optax.softmax_cross_entropy_with_integer_labels(
      logits, jnp.where(valid, labels, 0)
  )
  return jnp.sum(jnp.where(valid, per_token, 0.0)) / jnp.maximum(
      jnp.sum(valid), 1
  )


def inputs(num_classes: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(*SHAPE, num_classes)).astype(np.float32)
  # Segment-like labels: runs of a class, ~12% padding at the end of rows.
  labels = np.repeat(
      rng.integers(0, num_classes, size=(SHAPE[0], SHAPE[1] // 8)), 8, axis=1
  )
  lengths = rng.integers(SHAPE[1] * 3 // 4, SHAPE[1] + 1, size=SHAPE[0])
  labels[np.arange(SHAPE[1])[None, :] >= lengths[:, None]] = IGNORE
  return jnp.asarray(logits), jnp.asarray(labels, jnp.int32)


def boundary_hyperparameters(num_classes: int) -> dict:
  """Every term of the boundary-aware loss on (primary strategy)."""
  return dict(
      label_smoothing=0.2,
      class_weights=tuple(float(w) for w in np.linspace(1.0, 2.0, num_classes)),
      entropy_lambda=0.01,
      boundary_weight=2.0,
      boundary_radius=1,
      segment_consistency_lambda=0.05,
      conf_penalty_lambda=0.01,
      conf_threshold=0.9,
  )


def segjax_candidates(num_classes: int, module=losses):
  """The two losses of `module` (a copy of segjax.losses), every term on."""
  weights = boundary_hyperparameters(num_classes)["class_weights"]
  return {
      "cross_entropy (all terms)": lambda x, y: module.cross_entropy_loss(
          x, y, label_smoothing=0.1, class_weights=weights, entropy_lambda=0.01
      )[0],
      "boundary_aware (all terms)": lambda x, y: module.boundary_aware_loss(
          x, y, **boundary_hyperparameters(num_classes)
      )[0],
  }


def measure(num_classes: int, repeats: int, modules: dict):
  """{(implementation, loss): (median seconds, XLA temp MiB, loss value)}."""
  logits, labels = inputs(num_classes)
  functions = {("optax", "softmax CE (baseline)"): optax_masked_ce}
  for name, module in modules.items():
    for loss, fn in segjax_candidates(num_classes, module).items():
      functions[(name, loss)] = fn
  steps = {
      key: jax.jit(jax.value_and_grad(fn)).lower(logits, labels).compile()
      for key, fn in functions.items()
  }
  values = {
      key: float(jax.block_until_ready(step(logits, labels))[0])
      for key, step in steps.items()
  }
  seconds = bench_report.interleaved_calls(
      {
          key: functools.partial(step, logits, labels)
          for key, step in steps.items()
      },
      repeats=repeats,
  )
  return {
      key: (
          seconds[key],
          steps[key].memory_analysis().temp_size_in_bytes / 2**20,
          values[key],
      )
      for key in steps
  }


def measure_torch(num_classes: int, repeats: int, python: str) -> dict:
  """Runs tools/bench_losses_torch.py with `python` on this tool's inputs."""
  logits, labels = inputs(num_classes)
  with tempfile.TemporaryDirectory() as folder:
    path = pathlib.Path(folder) / "inputs.npz"
    np.savez(path, logits=np.asarray(logits), labels=np.asarray(labels))
    result = subprocess.run(
        [
            python,
            str(TORCH_SCRIPT),
            f"--inputs={path}",
            f"--repeats={repeats}",
            "--hyperparameters="
            + json.dumps(boundary_hyperparameters(num_classes)),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
  return json.loads(result.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=30)
  parser.add_argument("--no-write", action="store_true")
  parser.add_argument(
      "--losses",
      metavar="FILE",
      help="also time this copy of segjax/losses.py (an older revision, or a "
      "variant being tried), interleaved with the package's",
  )
  parser.add_argument(
      "--losses_label", default="before", help="the name of its rows"
  )
  parser.add_argument(
      "--torch_python",
      metavar="PYTHON",
      help="an interpreter with torch: also time eager PyTorch",
  )
  args = parser.parse_args()
  modules = {"segjax": losses}
  if args.losses:
    modules = {
        args.losses_label: bench_report.load_losses_copy(args.losses),
        "segjax": losses,
    }
  rows, notes = [], []
  for num_classes in (2, 5):
    shape = f"{SHAPE[0]}x{SHAPE[1]}x{num_classes}"
    result = measure(num_classes, args.repeats, modules)
    base = result[("optax", "softmax CE (baseline)")][0]
    for (name, loss), (seconds, temp, _) in result.items():
      rows.append(
          f"| {shape} | {name} | {loss} | {seconds * 1e3:.2f} ms | "
          f"{seconds / base:.2f}x | {temp:.1f} MiB |"
      )
      print(rows[-1], flush=True)
    if args.torch_python:
      torch = measure_torch(num_classes, args.repeats, args.torch_python)
      ours_seconds, _, ours_loss = result[
          ("segjax", "boundary_aware (all terms)")
      ]
      if not np.isclose(torch["loss"], ours_loss, rtol=1e-4):
        sys.exit(
            f"PyTorch loss {torch['loss']} differs from segjax's {ours_loss}"
        )
      rows.append(
          f"| {shape} | PyTorch {torch['torch_version']} eager, "
          f"{torch['threads']} threads | boundary_aware (all terms) | "
          f"{torch['seconds'] * 1e3:.2f} ms | {torch['seconds'] / base:.2f}x "
          "| |"
      )
      print(rows[-1], flush=True)
      notes.append(
          f"At {shape} segjax's jitted boundary_aware is "
          f"{torch['seconds'] / ours_seconds:.1f}x faster than eager PyTorch "
          "(same inputs, same loss value)."
      )
  command = shlex.join(["python", "tools/bench_losses.py", *sys.argv[1:]])
  body = bench_report.table_section(
      "Losses: jitted forward + backward (`tools/bench_losses.py`)",
      f"`{command}`: median of {args.repeats} interleaved repeats; "
      "boundary-aware with label smoothing, class weights, entropy, "
      "boundary weight 2 (radius 1), consistency and confidence terms all on. "
      "Goals: boundary_aware at most 1.5x the optax baseline at C = 2 and 3x "
      "at C = 5, and at least 5x faster than eager PyTorch at C = 2. XLA "
      "temp is the "
      "scratch memory XLA allocates for one call. " + " ".join(notes),
      [
          "shape [B, T, C]",
          "implementation",
          "loss",
          "median",
          "vs optax CE",
          "XLA temp",
      ],
      rows,
  )
  if not args.no_write:
    bench_report.write_section("bench_losses", body)


if __name__ == "__main__":
  main()
