"""tools/hlo_traffic.py counts the bytes the compiled kernels move."""

import argparse

import jax
import jax.numpy as jnp

from e2e_helpers import REPO, load_tool

hlo_traffic = load_tool("hlo_traffic")
bench_losses = load_tool("bench_losses")
bench_report = load_tool("bench_report")


def compiled_text(fn, *args):
  return jax.jit(fn).lower(*args).compile().as_text()


def test_one_elementwise_kernel_reads_and_writes_its_arrays():
  x = jnp.ones((1024,), jnp.float32)
  kernels = hlo_traffic.kernel_traffic(compiled_text(lambda v: jnp.exp(v) * 2, x))
  assert [(read, written) for _, read, written in kernels] == [(4096, 4096)]


def test_two_inputs_and_a_narrower_output_are_counted():
  x = jnp.ones((64, 32), jnp.float32)
  labels = jnp.ones((64, 32), jnp.int32)
  kernels = hlo_traffic.kernel_traffic(compiled_text(
      lambda v, y: jnp.where(y > 0, v, 0.0).astype(jnp.bfloat16), x, labels))
  assert sum(read for _, read, _ in kernels) == 2 * 64 * 32 * 4
  assert sum(written for _, _, written in kernels) == 64 * 32 * 2


def test_a_variant_of_the_losses_module_loads_and_runs():
  # A separate module object: `--losses` never touches the imported package.
  variant = bench_report.losses_module(argparse.Namespace(
      losses=str(REPO / "segjax" / "losses.py")))
  logits, labels = bench_losses.inputs(3)
  fn = bench_losses.candidates(3, variant)["boundary_aware (all terms)"]
  loss = fn(logits[:2, :16], labels[:2, :16])
  assert jnp.isfinite(loss)
