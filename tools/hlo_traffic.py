"""Memory traffic of the compiled losses: scratch size, kernels, bytes moved.

  python tools/hlo_traffic.py [--num-classes 5] [--dtype float32] [--kernels]
      [--losses FILE]

For each candidate of `tools/bench_losses.py` (jitted forward + backward at
[256, 2048, C]) prints XLA's scratch ("temp") buffer, the number of
top-level kernels (fusions, custom calls) and the bytes they read and write:
the sum over top-level instructions of operand and result sizes. On a
memory-bound CPU the last column predicts the time ratio better than any
operation count. `--kernels` lists the heaviest kernels; `--losses` measures
another copy of `segjax/losses.py` (a variant being tried) instead.
"""

from __future__ import annotations

import argparse
import re

import jax

import bench_losses
import bench_report

_BYTES = {
    "pred": 1,
    "s8": 1,
    "u8": 1,
    "bf16": 2,
    "f16": 2,
    "s32": 4,
    "u32": 4,
    "f32": 4,
    "s64": 8,
    "f64": 8,
}
_SKIPPED = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast"}


def _array_bytes(shape_text: str) -> int:
  total = 0
  for dtype, dims in re.findall(r"\b(\w+)\[([\d,]*)\]", shape_text):
    if dtype not in _BYTES:
      continue
    count = 1
    for dim in filter(None, dims.split(",")):
      count *= int(dim)
    total += count * _BYTES[dtype]
  return total


def kernel_traffic(hlo_text: str) -> list[tuple[str, int, int]]:
  """(name, bytes read, bytes written) of each top-level kernel of ENTRY."""
  entry = hlo_text.split("\nENTRY", 1)[1]
  sizes, kernels = {}, []
  for line in entry.splitlines()[1:]:
    if " = " not in line:
      continue
    name, rhs = line.split(" = ", 1)
    name = name.replace("ROOT", "").strip()
    shape = (
        rhs[: rhs.index(")") + 1] if rhs.startswith("(") else rhs.split(" ")[0]
    )
    sizes[name] = _array_bytes(shape)
    opcode = re.search(r"\s([\w-]+)\(", rhs).group(1)
    if opcode in _SKIPPED:
      continue
    operand_text = rhs.split("), ")[0]
    operands = {a for a in re.findall(r"%[\w.\-]+", operand_text) if a in sizes}
    kernels.append((name, sum(sizes[a] for a in operands), sizes[name]))
  return kernels


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num-classes", type=int, default=5)
  parser.add_argument(
      "--dtype", default="float32", help="dtype of the logits, e.g. bfloat16"
  )
  parser.add_argument("--kernels", action="store_true")
  bench_report.add_losses_option(parser)
  args = parser.parse_args()
  module = bench_report.losses_module(args)
  logits, labels = bench_losses.inputs(args.num_classes)
  logits = logits.astype(args.dtype)
  mib = 2.0**20
  print(
      f"[{bench_losses.SHAPE[0]}, {bench_losses.SHAPE[1]}, "
      f"{args.num_classes}] {args.dtype} forward + backward"
  )
  print(
      f"{'loss':28s} {'temp':>9s} {'kernels':>8s} {'read':>10s} "
      f"{'written':>10s}"
  )
  for name, fn in bench_losses.candidates(args.num_classes, module).items():
    compiled = jax.jit(jax.value_and_grad(fn)).lower(logits, labels).compile()
    kernels = kernel_traffic(compiled.as_text())
    temp = compiled.memory_analysis().temp_size_in_bytes
    read = sum(r for _, r, _ in kernels)
    written = sum(w for _, _, w in kernels)
    print(
        f"{name:28s} {temp / mib:6.1f} MiB {len(kernels):8d} "
        f"{read / mib:6.1f} MiB {written / mib:6.1f} MiB"
    )
    if args.kernels:
      for kernel, r, w in sorted(kernels, key=lambda k: -(k[1] + k[2]))[:12]:
        print(
            f"    {kernel:40s} read {r / mib:6.1f} MiB  write {w / mib:6.1f} MiB"
        )


if __name__ == "__main__":
  main()
