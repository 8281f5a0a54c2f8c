"""tools/hlo_traffic.py counts the bytes the compiled kernels move."""

import jax
import jax.numpy as jnp

from e2e_helpers import REPO, load_tool

hlo_traffic = load_tool("hlo_traffic")
bench_xla_patterns = load_tool("bench_xla_patterns")
bench_losses = load_tool("bench_losses")
bench_report = load_tool("bench_report")


def compiled_text(fn, *args):
  return jax.jit(fn).lower(*args).compile().as_text()


def test_one_elementwise_kernel_reads_and_writes_its_arrays():
  x = jnp.ones((1024,), jnp.float32)
  kernels = hlo_traffic.kernel_traffic(
      compiled_text(lambda v: jnp.exp(v) * 2, x)
  )
  assert [(read, written) for _, read, written in kernels] == [(4096, 4096)]


def test_two_inputs_and_a_narrower_output_are_counted():
  x = jnp.ones((64, 32), jnp.float32)
  labels = jnp.ones((64, 32), jnp.int32)
  kernels = hlo_traffic.kernel_traffic(
      compiled_text(
          lambda v, y: jnp.where(y > 0, v, 0.0).astype(jnp.bfloat16), x, labels
      )
  )
  assert sum(read for _, read, _ in kernels) == 2 * 64 * 32 * 4
  assert sum(written for _, _, written in kernels) == 64 * 32 * 2


def test_a_variant_of_the_losses_module_loads_and_runs():
  # A separate module object: `--losses` never touches the imported package.
  variant = bench_report.load_losses_copy(REPO / "segjax" / "losses.py")
  logits, labels = bench_losses.inputs(3)
  fn = bench_losses.candidates(3, variant)["boundary_aware (all terms)"]
  loss = fn(logits[:2, :16], labels[:2, :16])
  assert jnp.isfinite(loss)


def test_boundary_loss_scratch_stays_below_the_mmap_threshold():
  # glibc maps any allocation of 32 MiB or more afresh on every call, and
  # XLA:CPU allocates one scratch buffer per call: above the line every page
  # is faulted in again (about 2x the time, BENCHMARKS.md). A compiled
  # property, not a timing: it fails when a change makes XLA materialise an
  # extra [N, C] buffer (a shared shifted view, a masked copy).
  logits, labels = bench_losses.inputs(5)
  for dtype in (jnp.float32, jnp.bfloat16):
    fn = bench_losses.candidates(5)["boundary_aware (all terms)"]
    compiled = (
        jax.jit(jax.value_and_grad(fn))
        .lower(logits.astype(dtype), labels)
        .compile()
    )
    scratch = compiled.memory_analysis().temp_size_in_bytes
    assert scratch < 32 * 2**20, (dtype, scratch / 2**20)


def test_each_codegen_variant_computes_the_shipped_values():
  # bench_xla_patterns compares forms of one function; a swap that changed
  # the values would make its timings meaningless.
  logits, labels = bench_losses.inputs(5)
  logits, labels = logits[:4, :64], labels[:4, :64]
  results = {}
  for name in bench_xla_patterns.VARIANTS:
    fn = bench_losses.candidates(5, bench_xla_patterns._variant(name))[  # pylint: disable=protected-access
        "boundary_aware (all terms)"
    ]
    results[name] = jax.value_and_grad(fn)(logits, labels)
  loss, grad = results["as shipped"]
  for name, (other_loss, other_grad) in results.items():
    assert jnp.allclose(other_loss, loss, rtol=1e-6), name
    assert jnp.allclose(other_grad, grad, rtol=1e-5, atol=1e-9), name
