"""Benchmarks the jitted losses (forward + backward) against optax's CE.

  python tools/bench_losses.py [--repeats 30] [--no-write] [--losses FILE]

Shapes [256, 2048, C] for C = 2 and 5, every term of the boundary-aware loss
on. The baseline is `optax.softmax_cross_entropy_with_integer_labels` with
the same ignore-index masking and mean over valid tokens. Writes the
`bench_losses` section of BENCHMARKS.md, except with `--losses`, which times
another copy of `segjax/losses.py` instead.
"""

from __future__ import annotations

import argparse
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import bench_report
from segjax import losses

SHAPE = (256, 2048)
IGNORE = -100


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


def candidates(num_classes: int, module=losses):
  """The timed functions; `module` provides the two losses."""
  weights = tuple(np.linspace(1.0, 2.0, num_classes))
  return {
      "optax CE (baseline)": optax_masked_ce,
      "cross_entropy (all terms)": lambda x, y: module.cross_entropy_loss(
          x, y, label_smoothing=0.1, class_weights=weights, entropy_lambda=0.01
      )[0],
      "boundary_aware (all terms)": lambda x, y: module.boundary_aware_loss(
          x,
          y,
          label_smoothing=0.2,
          class_weights=weights,
          entropy_lambda=0.01,
          boundary_weight=2.0,
          boundary_radius=1,
          segment_consistency_lambda=0.05,
          conf_penalty_lambda=0.01,
          conf_threshold=0.9,
      )[0],
  }


class Measurement(NamedTuple):
  seconds: float  # median wall time of one forward + backward
  temp_mib: float  # XLA's scratch buffer for one call
  page_faults: float  # minor page faults per call (the whole process)


def measure(
    num_classes: int, repeats: int, module=losses
) -> dict[str, Measurement]:
  logits, labels = inputs(num_classes)
  steps = {
      name: jax.jit(jax.value_and_grad(fn)).lower(logits, labels).compile()
      for name, fn in candidates(num_classes, module).items()
  }
  for step in steps.values():
    jax.block_until_ready(step(logits, labels))
  result = bench_report.interleaved_calls(
      {
          name: functools.partial(step, logits, labels)
          for name, step in steps.items()
      },
      repeats=repeats,
  )
  return {
      name: Measurement(
          seconds,
          steps[name].memory_analysis().temp_size_in_bytes / 2**20,
          faults,
      )
      for name, (seconds, faults) in result.items()
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=30)
  parser.add_argument("--no-write", action="store_true")
  bench_report.add_losses_option(parser)
  args = parser.parse_args()
  module = bench_report.losses_module(args)
  rows = []
  for num_classes in (2, 5):
    result = measure(num_classes, args.repeats, module)
    base = result["optax CE (baseline)"].seconds
    for name, m in result.items():
      rows.append(
          f"| {SHAPE[0]}x{SHAPE[1]}x{num_classes} | {name} | "
          f"{m.seconds * 1e3:.2f} ms | {m.seconds / base:.2f}x | "
          f"{m.temp_mib:.1f} MiB | {m.page_faults:,.0f} |"
      )
      print(rows[-1], flush=True)
  body = bench_report.table_section(
      "Losses: jitted forward + backward (`tools/bench_losses.py`)",
      f"Median of {args.repeats} interleaved repeats; boundary-aware with "
      "label smoothing, class weights, entropy, boundary weight 2 (radius 1), "
      "consistency and confidence terms all on. Goal: boundary_aware at most "
      "1.5x the optax baseline. XLA temp is the scratch buffer XLA:CPU "
      "allocates for one call; page faults are the process's minor faults "
      "per call (a scratch buffer above glibc's 32 MiB mmap threshold is "
      "mapped afresh, and faulted in, on every call).",
      [
          "shape [B, T, C]",
          "loss",
          "median",
          "vs optax CE",
          "XLA temp",
          "page faults / call",
      ],
      rows,
  )
  if not (args.no_write or args.losses):
    bench_report.write_section("bench_losses", body)


if __name__ == "__main__":
  main()
