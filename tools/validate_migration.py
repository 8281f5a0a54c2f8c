"""Validates the migrated losses under every config file and variant.

  python tools/validate_migration.py [--configs configs/boundary.py,...]

Seven checks per configuration (loss type + variant), printed as a table of
PASSED / FAILED with the reason; exits 1 if any check fails:

  forward       finite float32 scalar, complete aux dict
  gradient      matches finite differences in float64 on a small case
  padding       NaN / inf / 1e30 at ignored positions change nothing
  extreme       logits of +-1e4 and +-1e30 give finite loss and gradients
  stability     bf16 inputs, an all-padding batch, single-token sequences
  sensitivity   each hyperparameter moves the loss the documented way
  config        the file and variant parse, validate and build their loss
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import traceback
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.test_util import check_grads

from segjax import config_lib
from segjax import losses

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_CONFIGS = ("configs/cross_entropy.py", "configs/boundary.py")
AUX_KEYS = {
    "cross_entropy": {"loss", "ce", "entropy"},
    "boundary_aware": {
        "loss",
        "ce",
        "entropy",
        "boundary_ce",
        "consistency",
        "confidence_penalty",
        "boundary_fraction",
    },
}


class CheckFailed(Exception):
  """A check's documented property does not hold; the message says which."""


def require(condition, message: str) -> None:
  if not bool(condition):
    raise CheckFailed(message)


@dataclasses.dataclass
class Setup:
  """One configuration under test: its loss section and built loss."""

  name: str
  loss_config: dict
  loss_fn: Callable

  @property
  def loss_type(self) -> str:
    return self.loss_config["type"]

  @property
  def num_classes(self) -> int:
    return self.loss_config["num_classes"]

  def loss_with(self, **overrides) -> Callable:
    """The loss with some hyperparameters changed (probes may leave the
    recommended ranges on purpose, so their warnings are silenced)."""
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
      return losses.create_loss({**self.loss_config, **overrides})
    finally:
      logging.set_verbosity(verbosity)


def segmented_case(
    seed: int,
    batch: int = 3,
    length: int = 24,
    num_classes: int = 2,
    scale: float = 2.0,
):
  """Logits and segment-style labels (1 ends a segment) with trailing padding."""
  rng = np.random.default_rng(seed)
  labels = (rng.random((batch, length)) < 0.2).astype(np.int32)
  if num_classes > 2:
    labels = labels * rng.integers(1, num_classes, size=(batch, length))
  labels[0, length // 2 :] = -100
  labels[:, -1] = -100
  logits = rng.normal(size=(batch, length, num_classes)) * scale
  return jnp.asarray(logits, jnp.float32), jnp.asarray(labels, jnp.int32)


def value_and_grad(loss_fn, logits, labels):
  return jax.value_and_grad(lambda x: loss_fn(x, labels)[0])(logits)


# ----------------------------------------------------------------------------
# The seven checks. Each raises CheckFailed (or any error) when it fails.
# ----------------------------------------------------------------------------


def check_forward(setup: Setup) -> None:
  logits, labels = segmented_case(0, num_classes=setup.num_classes)
  loss, aux = jax.jit(setup.loss_fn)(logits, labels)
  require(
      loss.shape == () and loss.dtype == jnp.float32,
      f"loss is {loss.dtype}{loss.shape}, expected a float32 scalar",
  )
  require(np.isfinite(loss), f"loss is {loss}")
  missing = AUX_KEYS[setup.loss_type] - set(aux)
  require(not missing, f"aux lacks {sorted(missing)}")
  bad = [
      k
      for k, v in aux.items()
      if v.shape != () or v.dtype != jnp.float32 or not np.isfinite(v)
  ]
  require(not bad, f"aux entries not finite float32 scalars: {bad}")


def check_gradient(setup: Setup) -> None:
  logits, labels = segmented_case(
      1, batch=2, length=9, num_classes=setup.num_classes
  )
  with jax.enable_x64(True):
    x = jnp.asarray(logits, jnp.float64)
    try:
      check_grads(
          lambda v: setup.loss_fn(v, labels)[0],
          (x,),
          order=1,
          modes=["rev"],
          eps=1e-6,
          atol=1e-6,
          rtol=1e-6,
      )
    except AssertionError as e:
      raise CheckFailed(
          "gradient differs from finite differences: "
          + str(e).strip().splitlines()[-1]
      ) from e


def check_padding(setup: Setup) -> None:
  logits, labels = segmented_case(2, num_classes=setup.num_classes)
  ignored = np.asarray(labels == -100)
  clean_loss, clean_grad = value_and_grad(setup.loss_fn, logits, labels)
  for garbage in (np.nan, np.inf, -np.inf, 1e30):
    dirty = jnp.where(ignored[..., None], jnp.float32(garbage), logits)
    loss, grad = value_and_grad(setup.loss_fn, dirty, labels)
    require(
        float(loss) == float(clean_loss),
        f"garbage {garbage} at ignored positions changed the loss",
    )
    require(
        np.array_equal(grad, clean_grad),
        f"garbage {garbage} at ignored positions changed the gradient",
    )
  require(
      not np.any(np.asarray(clean_grad)[ignored]),
      "ignored positions receive a gradient",
  )


def check_extreme(setup: Setup) -> None:
  logits, labels = segmented_case(3, num_classes=setup.num_classes)
  for magnitude in (1e4, 1e30):
    x = jnp.sign(logits) * magnitude
    loss, grad = value_and_grad(setup.loss_fn, x, labels)
    require(np.isfinite(loss), f"loss is {loss} for logits of +-{magnitude:g}")
    require(
        np.all(np.isfinite(grad)),
        f"non-finite gradient for logits of +-{magnitude:g}",
    )


def check_stability(setup: Setup) -> None:
  logits, labels = segmented_case(4, num_classes=setup.num_classes)
  loss16, aux16 = setup.loss_fn(logits.astype(jnp.bfloat16), labels)
  loss32, _ = setup.loss_fn(
      logits.astype(jnp.bfloat16).astype(jnp.float32), labels
  )
  require(
      loss16.dtype == jnp.float32
      and all(v.dtype == jnp.float32 for v in aux16.values()),
      "bf16 logits do not give float32 outputs",
  )
  require(
      np.isclose(loss16, loss32, rtol=1e-6),
      f"bf16 loss {loss16} differs from its float32 upcast {loss32}",
  )
  padding = jnp.full(labels.shape, -100, jnp.int32)
  loss, grad = value_and_grad(setup.loss_fn, logits, padding)
  require(
      float(loss) == 0.0 and not np.any(grad),
      f"all-padding batch gives loss {loss} / non-zero gradient",
  )
  single_logits, single_labels = logits[:, :1], jnp.zeros((3, 1), jnp.int32)
  loss, grad = value_and_grad(setup.loss_fn, single_logits, single_labels)
  require(
      np.isfinite(loss) and np.all(np.isfinite(grad)),
      f"single-token sequences give loss {loss}",
  )


def _gradient_share_at_boundaries(loss_fn, logits, labels) -> float:
  _, grad = value_and_grad(loss_fn, logits, labels)
  boundary = np.asarray(losses.boundary_positions(labels))
  norms = np.linalg.norm(np.asarray(grad), axis=-1)
  return float(norms[boundary].sum() / norms.sum())


def _entropy_after_step(loss_fn, logits, labels, learning_rate=1.0) -> float:
  _, grad = value_and_grad(loss_fn, logits, labels)
  _, aux = loss_fn(logits - learning_rate * grad, labels)
  return float(aux["entropy"])


def _optimal_top_probability(loss_fn, num_classes, steps=300) -> float:
  """Top probability at the minimum over one token's logits (gradient descent)."""
  labels = jnp.zeros((1, 1), jnp.int32)
  step = jax.jit(
      lambda x: x - 2.0 * jax.grad(lambda v: loss_fn(v, labels)[0])(x)
  )
  x = jnp.zeros((1, 1, num_classes))
  for _ in range(steps):
    x = step(x)
  return float(jax.nn.softmax(x)[0, 0].max())


def check_sensitivity(setup: Setup) -> None:
  cfg, c = setup.loss_config, setup.num_classes
  logits, labels = segmented_case(5, num_classes=c, scale=0.5)
  findings = []

  # Entropy bonus: a descent step with entropy_lambda > 0 leaves more entropy.
  more = _entropy_after_step(
      setup.loss_with(entropy_lambda=0.5), logits, labels
  )
  none = _entropy_after_step(
      setup.loss_with(entropy_lambda=0.0), logits, labels
  )
  require(
      more > none,
      f"entropy_lambda: entropy after a step {more:.4f} is "
      f"not above {none:.4f} without the bonus",
  )
  findings.append("entropy")

  # Label smoothing: the optimum's top probability drops as eps grows.
  eps = cfg["label_smoothing"]
  plain = {"entropy_lambda": 0.0, "class_weights": None}
  if setup.loss_type == "boundary_aware":
    plain.update(conf_penalty_lambda=0.0, segment_consistency_lambda=0.0)
  top_low = _optimal_top_probability(
      setup.loss_with(**plain, label_smoothing=eps), c
  )
  top_high = _optimal_top_probability(
      setup.loss_with(**plain, label_smoothing=eps + 0.1), c
  )
  require(
      top_high < top_low,
      f"label_smoothing: optimum top probability "
      f"{top_high:.4f} at eps+0.1 is not below {top_low:.4f}",
  )
  findings.append("label_smoothing")

  if setup.loss_type != "boundary_aware":
    return

  # Boundary weight: boundary positions take a larger share of the gradient.
  bw = cfg["boundary_weight"]
  share = _gradient_share_at_boundaries(
      setup.loss_with(boundary_weight=bw), logits, labels
  )
  share_more = _gradient_share_at_boundaries(
      setup.loss_with(boundary_weight=bw + 1.0), logits, labels
  )
  require(
      share_more > share,
      f"boundary_weight: boundary share of the "
      f"gradient norm {share_more:.4f} at bw+1 is not above {share:.4f}",
  )

  # Confidence penalty: up on over-confident logits, unchanged on calibrated.
  thr = cfg["conf_threshold"]
  lam = cfg["conf_penalty_lambda"]
  confident = jnp.where(jnp.arange(c) == 0, 20.0, -20.0) * jnp.ones(
      logits.shape
  )
  calibrated = jnp.zeros(logits.shape)
  for x, should_rise in ((confident, True), (calibrated, False)):
    low = float(setup.loss_with(conf_penalty_lambda=lam)(x, labels)[0])
    high = float(setup.loss_with(conf_penalty_lambda=lam + 0.05)(x, labels)[0])
    if should_rise:
      require(
          high > low,
          f"conf_penalty_lambda: loss on over-confident "
          f"logits {high:.5f} is not above {low:.5f}",
      )
    else:
      require(
          high == low,
          f"conf_penalty_lambda: loss on calibrated logits "
          f"moved from {low:.5f} to {high:.5f} (threshold {thr})",
      )

  # Segment consistency: penalises jagged predictions inside a segment.
  inside = jnp.zeros((1, 12), jnp.int32).at[0, -1].set(-100)
  jagged = jnp.where(
      (jnp.arange(12) % 2 == 0)[:, None] == (jnp.arange(c) == 0), 2.0, -2.0
  )[None]
  smooth = jnp.broadcast_to(jagged[:, :1], jagged.shape)
  lam = cfg["segment_consistency_lambda"]
  for x, should_rise in ((jagged, True), (smooth, False)):
    low = float(setup.loss_with(segment_consistency_lambda=lam)(x, inside)[0])
    high = float(
        setup.loss_with(segment_consistency_lambda=lam + 0.1)(x, inside)[0]
    )
    if should_rise:
      require(
          high > low,
          f"segment_consistency_lambda: loss on jagged "
          f"predictions {high:.5f} is not above {low:.5f}",
      )
    else:
      require(
          high == low,
          "segment_consistency_lambda: loss on smooth "
          f"predictions moved from {low:.5f} to {high:.5f}",
      )


def check_config(setup: Setup) -> None:
  expected = {"type"} | set(losses.COMMON_KEYS)
  if setup.loss_type == "boundary_aware":
    expected |= set(losses.BOUNDARY_KEYS)
  require(
      set(setup.loss_config) == expected,
      f"loss keys {sorted(setup.loss_config)} != {sorted(expected)}",
  )
  losses.validate_loss_config(setup.loss_config)


CHECKS = {
    "forward": check_forward,
    "gradient": check_gradient,
    "padding": check_padding,
    "extreme": check_extreme,
    "stability": check_stability,
    "sensitivity": check_sensitivity,
    "config": check_config,
}


# ----------------------------------------------------------------------------
# Driver.
# ----------------------------------------------------------------------------


def configurations(config_files) -> list[tuple[str, str]]:
  """(column name, config spec) for every file and each of its variants."""
  out = []
  for path in config_files:
    stem = pathlib.Path(path).stem
    out.append((stem, path))
    out.extend(
        (f"{stem}:{v}", f"{path}:{v}") for v in config_lib.config_variants(path)
    )
  return out


def run_checks(name: str, spec: str) -> dict[str, str | None]:
  """Runs every check on one configuration; None means passed."""
  try:
    loss_config = losses.validate_loss_config(config_lib.load_config(spec).loss)
    setup = Setup(name, loss_config, losses.create_loss(loss_config))
  except Exception as e:  # pylint: disable=broad-except
    reason = f"{type(e).__name__}: {e}"
    return {
        check: reason if check == "config" else "config did not load"
        for check in CHECKS
    }
  results = {}
  for check, fn in CHECKS.items():
    try:
      fn(setup)
      results[check] = None
    except CheckFailed as e:
      results[check] = str(e)
    except Exception as e:  # pylint: disable=broad-except
      results[check] = f"{type(e).__name__}: {e}"
      traceback.print_exc(file=sys.stderr)
  return results


def format_table(results: dict[str, dict[str, str | None]]) -> str:
  names = list(results)
  width = max(len(n) for n in names)
  check_width = max(len(c) for c in CHECKS)
  lines = [" " * check_width + "  " + "  ".join(n.ljust(width) for n in names)]
  for check in CHECKS:
    cells = ["PASSED" if results[n][check] is None else "FAILED" for n in names]
    lines.append(
        check.ljust(check_width)
        + "  "
        + "  ".join(c.ljust(width) for c in cells)
    )
  failures = [
      (n, c, r) for n in names for c, r in results[n].items() if r is not None
  ]
  if failures:
    lines.append("")
    lines.extend(f"FAILED {c} [{n}]: {r}" for n, c, r in failures)
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
      "--configs",
      default=",".join(str(REPO_ROOT / p) for p in DEFAULT_CONFIGS),
      help="comma-separated config files",
  )
  args = parser.parse_args(argv)
  results = {}
  for name, spec in configurations(args.configs.split(",")):
    results[name] = run_checks(name, spec)
    status = "ok" if all(r is None for r in results[name].values()) else "FAIL"
    print(f"checked {name}: {status}", file=sys.stderr, flush=True)
  print(format_table(results))
  failed = sum(r is not None for res in results.values() for r in res.values())
  total = sum(len(res) for res in results.values())
  print(f"\n{total - failed} passed, {failed} failed")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
