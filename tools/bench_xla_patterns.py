"""Why the C > 2 loss path is written the way it is: the shipped loss against copies with one choice undone.

  python tools/bench_xla_patterns.py [--repeats 30] [--no-write]

Times jitted forward + backward of `boundary_aware_loss` (every term on) at
[256, 2048, 5], as `tools/bench_losses.py` does, for `segjax/losses.py` and
for separate copies of the module in which one helper is swapped for the
obvious form. Each copy computes the same values (the tool checks); only
the code XLA:CPU generates differs:

- gradient neighbours by pad: the gradient pass reads the previous and next
  tokens through a shifted pad instead of a constant-index gather; the pad
  puts a branch in the inner loop and the pass stops vectorising;
- one gather for both readers: the two kernels that read the previous
  token's exps use the same index constants; XLA then shares the gather and
  stores it as an extra [N, C] buffer, which lifts the scratch buffer over
  glibc's 32 MiB mmap threshold (every page faulted in on every call);
- masks by token predicate: [N, C] selects test a broadcast per-token
  predicate instead of comparing the class index with a per-token limit;
  the exp pass stops vectorising.
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np

import bench_losses
import bench_report

VARIANTS = (
    "as shipped",
    "gradient neighbours by pad",
    "one gather for both readers",
    "masks by token predicate",
)


def _variant(name: str):
  """A fresh copy of segjax/losses.py with the named choice undone."""
  module = bench_report.load_losses_copy(
      bench_report.REPO_ROOT / "segjax" / "losses.py"
  )
  neighbour, broadcast = module._neighbour, module._broadcast_tokens  # pylint: disable=protected-access
  if name == "gradient neighbours by pad":

    def by_pad(values, offset, *, wrap=False):
      if not wrap:  # only the gradient pass reads wrapped
        return neighbour(values, offset)
      return module._previous(values) if offset < 0 else module._following(values)  # pylint: disable=protected-access

    module._neighbour = by_pad  # pylint: disable=protected-access
  elif name == "one gather for both readers":
    module._neighbour = lambda values, offset, *, wrap=False: neighbour(  # pylint: disable=protected-access
        values, offset
    )
  elif name == "masks by token predicate":
    module._class_mask = lambda valid, shape: broadcast(valid, shape)  # pylint: disable=protected-access
  return module


def measure(repeats: int):
  logits, labels = bench_losses.inputs(5)
  steps = {}
  for name in VARIANTS:
    fn = bench_losses.candidates(5, _variant(name))[
        "boundary_aware (all terms)"
    ]
    steps[name] = (
        jax.jit(jax.value_and_grad(fn)).lower(logits, labels).compile()
    )
  reference = steps[VARIANTS[0]](logits, labels)
  for name, step in steps.items():  # the same function, whatever the form
    loss, grad = step(logits, labels)
    np.testing.assert_allclose(loss, reference[0], rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(
        grad, reference[1], rtol=1e-4, atol=1e-9, err_msg=name
    )
  result = bench_report.interleaved_calls(
      {
          name: functools.partial(step, logits, labels)
          for name, step in steps.items()
      },
      repeats=repeats,
  )
  return {
      name: (seconds, steps[name].memory_analysis().temp_size_in_bytes / 2**20)
      for name, (seconds, _) in result.items()
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=30)
  parser.add_argument("--no-write", action="store_true")
  args = parser.parse_args()
  result = measure(args.repeats)
  shipped = result[VARIANTS[0]][0]
  rows = []
  for name, (seconds, temp_mib) in result.items():
    rows.append(
        f"| {name} | {seconds * 1e3:.2f} ms | {seconds / shipped:.2f}x "
        f"| {temp_mib:.1f} MiB |"
    )
    print(rows[-1], flush=True)
  body = bench_report.table_section(
      "C > 2 loss: each codegen choice undone (`tools/bench_xla_patterns.py`)",
      "boundary_aware forward + backward at 256x2048x5, every term on, for "
      "the shipped `segjax/losses.py` and for copies with one helper swapped "
      f"for the obvious form (same values); median of {args.repeats} "
      "interleaved repeats. The tool's docstring says what each swap does.",
      ["variant", "median", "vs shipped", "XLA temp"],
      rows,
  )
  if not args.no_write:
    bench_report.write_section("bench_xla_patterns", body)


if __name__ == "__main__":
  main()
